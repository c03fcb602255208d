"""Dynamic 1-D convolutions with a filter generated at every snippet location: a mask head.

STALE's action mask localiser (§3.2 (II), Eq. 8) predicts, for every snippet t, a 1-D mask m_t over
all T snippets with "a stack of three 1-D dynamic convolution layers", whose filters are generated
"at each snippet location", so that each location learns the context of its own action instance.

Here the filters of location t are a softmax-attention mixture of ``n`` shared kernels, with the
attention computed from F(t) (dynamic convolution, Chen et al., CVPR 2020), and they are applied
along the whole sequence, so the three layers turn the sequence into m_t (as the per-instance
dynamic mask heads of CondInst, Tian et al., ECCV 2020, do for images):

    W_l(t) = sum_k pi_lk(t) W_lk,    pi_l(t) = softmax(a_l(F(t)) / tau)
    m_t(i) = sigmoid( W_3(t) relu( W_2(t) relu( W_1(t) [G(i); (i - t) / T] ) ) )

The layers are pointwise along i (kernel size 1). ``G`` is a learned projection of F to a few
channels, and ``(i - t) / T`` tells each filter where its own snippet is (CondInst's relative
coordinates): without it, and without positional encodings (STALE uses none), nothing could tell
the snippets of two instances that look alike apart. A mask head with *static* filters reading
F(t) alone and emitting one channel per absolute position i (what the released code does) cannot
know where t is, since self-attention without positions is permutation-equivariant.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class DynamicMaskHead(nn.Module):
    """``F [B, T, C] -> mask logits [B, T, T]``; row t is the mask predicted from snippet t."""

    def __init__(self, dim: int, mask_dim: int = 16, hidden: int = 8, layers: int = 3, num_kernels: int = 4,
                 temperature: float = 1.0):
        super().__init__()
        self.num_kernels, self.temperature = num_kernels, temperature
        self.mask_features = nn.Linear(dim, mask_dim)  # G
        sizes = [mask_dim + 1] + [hidden] * (layers - 1) + [1]
        width = max(dim // 4, 4)
        self.attention = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, layers * num_kernels))
        self.kernels = nn.ParameterList()
        self.biases = nn.ParameterList()
        for c_in, c_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(c_in)  # each kernel initialised like an nn.Linear
            self.kernels.append(nn.Parameter(torch.empty(num_kernels, c_in, c_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_kernels, c_out).uniform_(-bound, bound)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        B, T, _ = f.shape
        pi = torch.softmax(self.attention(f).view(B, T, len(self.kernels), self.num_kernels) / self.temperature, dim=-1)
        position = torch.arange(T, device=f.device, dtype=torch.float32)
        relative = ((position[None, :] - position[:, None]) / T).to(f.dtype)  # [t, i] = (i - t) / T
        g = self.mask_features(f)  # [B, T, m]
        # activations are [B, t, channels, i]: for each t a 1-D signal over i, as nn.Conv1d lays them out.
        # Layer 1 reads [G(i); (i - t) / T]: the mixture commutes with the linear map, so every kernel is
        # applied to G once and the results are mixed per t (no [B, T, m + 1, T] input is built).
        kernel, bias, p = self.kernels[0], self.biases[0], pi[:, :, 0]
        x = torch.einsum("btk,bkdi->btdi", p, torch.einsum("bim,kmd->bkdi", g, kernel[:, :-1]))
        x = x + relative[None, :, None, :] * (p @ kernel[:, -1]).unsqueeze(-1) + (p @ bias).unsqueeze(-1)
        for layer in range(1, len(self.kernels)):
            w = torch.einsum("btk,kcd->btdc", pi[:, :, layer], self.kernels[layer])  # the filter of each location t
            x = torch.matmul(w, torch.relu(x)) + (pi[:, :, layer] @ self.biases[layer]).unsqueeze(-1)
        return x.squeeze(2)
