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


class ConditionalMaskHead(nn.Module):
    """``F [B, T, C] -> mask logits [B, T, T]``: per-snippet conditional filters with local context.

    Why not :class:`DynamicMaskHead`: its filters depend on F(t) only through a softmax over a few
    shared kernels, F carries no local context (a Transformer without positions), and the only
    pairwise input is (i - t)/T. Its masks came out as high on the video's other instances as on the
    seed's own (AUDIT.md). This head gives the filters and the mask features what separating two
    instances takes:

    - local context: a stack of dilated residual 1-D convolutions over F (dilations 1, 2, 4, 8: a
      receptive field of 31 snippets) gives H, which can see where the action around t starts and ends;
    - conditional filters (CondInst, Tian et al. 2020): a linear controller turns H(t) into all the
      weights of snippet t's first layer and the biases of the other two, so each location filters the
      sequence its own way (the second and third layers' weights are shared: per-location weights there
      cost a batched product of tiny matrices per snippet, 2-3x the time of the whole head);
    - pairwise inputs of each (t, i): (i - t)/T and the background mass between t and i,
      log(1 + |c(i) - c(t)|), c = cumsum(b), b = sigmoid of a learned per-snippet background score of H.
      A snippet of another instance lies past background: this channel lets a filter stop there.

        m_t(i) = w_3 relu( W_2 relu( W_1(t) [G(i); (i - t)/T; log(1 + |c(i) - c(t)|)] + b_1(t) ) + b_2(t) ) + b_3(t)
    """

    def __init__(self, dim: int, width: int = 32, mask_dim: int = 8, hidden: int = 8, dilations=(1, 2, 4, 8)):
        super().__init__()
        self.proj = nn.Conv1d(dim, width, 1)
        self.context = nn.ModuleList(nn.Conv1d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.mask_features = nn.Linear(width, mask_dim)  # G
        self.background = nn.Linear(width, 1)  # b
        self.in_channels, self.hidden = mask_dim + 2, hidden
        self.controller = nn.Linear(width, self.in_channels * hidden + 2 * hidden + 1)  # W_1(t), b_1(t), b_2(t), b_3(t)
        with torch.no_grad():  # the generated weights start at nn.Linear's scale
            self.controller.weight[:self.in_channels * hidden].mul_(1 / math.sqrt(self.in_channels))
        self.layer2 = nn.Linear(hidden, hidden, bias=False)
        self.layer3 = nn.Linear(hidden, 1, bias=False)

    def forward(self, f: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits [B, R, T] of the snippets ``rows`` [B, R] (default: all T, in order)."""
        B, T, _ = f.shape
        h = self.proj(f.transpose(1, 2))
        for conv in self.context:
            h = h + torch.relu(conv(h))
        h = h.transpose(1, 2)  # [B, T, width]
        g = self.mask_features(h)  # [B, T, m]
        c = torch.cumsum(torch.sigmoid(self.background(h)).squeeze(-1), dim=1)  # [B, T]
        if rows is None:
            rows = torch.arange(T, device=f.device).expand(B, T)
        R = rows.shape[1]
        h_t = h.gather(1, rows[..., None].expand(-1, -1, h.shape[-1]))  # the seeds' context, [B, R, width]
        between = torch.log1p((c[:, :, None] - c.gather(1, rows)[:, None, :]).abs())  # [B, i, t]
        position = torch.arange(T, device=f.device, dtype=f.dtype)
        relative = (position[None, :, None] - rows[:, None, :].to(f.dtype)) / T  # [B, i, t] = (i - t) / T
        m, n = g.shape[-1], self.in_channels * self.hidden
        params = self.controller(h_t)
        w1 = params[..., :n].view(B, R, self.in_channels, self.hidden)  # W_1(t)
        b1, b2, b3 = params[..., n:n + self.hidden], params[..., n + self.hidden:-1], params[..., -1]
        # activations are [B, i, t, channels]; layer 1's G part for every t at once: [B, i, m] x [B, m, t·hidden]
        x = torch.bmm(g, w1[:, :, :m].permute(0, 2, 1, 3).reshape(B, m, R * self.hidden)).view(B, T, R, self.hidden)
        x = x + relative[..., None] * w1[:, None, :, m] + between[..., None] * w1[:, None, :, m + 1]
        x = self.layer2(torch.relu(x + b1[:, None])) + b2[:, None]
        x = self.layer3(torch.relu(x)).squeeze(-1) + b3[:, None]  # [B, i, t]
        return x.transpose(1, 2)  # row t = the mask predicted from snippet t
