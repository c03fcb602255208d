"""Temporal models over snippet features: ``[B, T, D] -> [B, T, C]``.

STALE's temporal embedding is a multi-head self-attention encoder without positional encoding
(STALE Eq. 1); its Table 6 compares it with a dilated 1-D CNN and MS-TCN. Every model starts with a
per-snippet linear projection D -> C, so features of any size (512-d CLIP, 2048-d I3D) fit.
"""
from __future__ import annotations

import torch
from torch import nn


class TransformerEmbedding(nn.Module):
    """Self-attention over the T snippets, (F, F, F) as (query, key, value); no positional encoding,
    which STALE found detrimental (STALE Eq. 1)."""

    def __init__(self, in_dim: int, dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.proj(x))


class DilatedResidual(nn.Module):
    """x + W_1x1 ReLU(conv_dilated(x)): the residual layer of MS-TCN, also used by the 1-D CNN."""

    def __init__(self, dim: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation)
        self.out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        return x + self.dropout(self.out(torch.relu(self.conv(x))))


class DilatedCNN(nn.Module):
    """STALE Table 6 "1D CNN": dilation rates 1, 3, 5, two layers each."""

    def __init__(self, in_dim: int, dim: int, dilations=(1, 3, 5), layers_per_rate: int = 2, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.layers = nn.Sequential(*[DilatedResidual(dim, d, dropout) for d in dilations
                                      for _ in range(layers_per_rate)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.proj(x).transpose(1, 2)).transpose(1, 2)


class MSTCN(nn.Module):
    """Multi-stage temporal convolutional network (Farha & Gall, CVPR 2019).

    Each stage is a 1x1 convolution, ``layers`` residual layers with dilation 1, 2, 4, ... and a 1x1
    output convolution; every stage after the first refines the previous stage's output. MS-TCN
    outputs frame-wise class scores and passes their softmax to the next stage; here a stage outputs
    C-dim features for the heads that follow, so the next stage takes them as they are.

    Initialisation (ours; the architecture is unchanged): the stages' 1x1 convolutions start
    orthogonal with zero bias and every residual branch's output convolution at zero, so the network
    starts as a rotation of the projected input. With PyTorch's default initialisation the chain of
    four plain 1x1 convolutions left F_vis nearly the same at every snippet (spread 0.21 around an
    offset of 1.27; the transformer: 5.4 around 5.8), and at STALE's default learning rate activations
    grew ~100x, class separation collapsed and no split made a single true positive (avg mAP 0.0 on all
    ten; development benchmark, splits 0-3: 0.0 / 0.0 / 0.2 / 0.0 before, 16.3 / 5.9 / 8.6 / 9.4 after).
    """

    def __init__(self, in_dim: int, dim: int, stages: int = 2, layers: int = 7, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)

        def stage() -> nn.Sequential:
            residuals = [DilatedResidual(dim, 2 ** i, dropout) for i in range(layers)]
            return nn.Sequential(nn.Conv1d(dim, dim, 1), *residuals, nn.Conv1d(dim, dim, 1))

        self.stages = nn.Sequential(*[stage() for _ in range(stages)])
        for stage_ in self.stages:
            for conv in (stage_[0], stage_[-1]):
                nn.init.orthogonal_(conv.weight)
                nn.init.zeros_(conv.bias)
            for residual in stage_[1:-1]:
                nn.init.zeros_(residual.out.weight)
                nn.init.zeros_(residual.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.proj(x).transpose(1, 2)).transpose(1, 2)


TEMPORAL_MODELS = {"transformer": TransformerEmbedding, "cnn_1d": DilatedCNN, "ms_tcn": MSTCN}


def temporal_model(kind: str, in_dim: int, dim: int, **options) -> nn.Module:
    """Build one of :data:`TEMPORAL_MODELS` by name; ``options`` go to its constructor."""
    if kind not in TEMPORAL_MODELS:
        raise ValueError(f"temporal model must be one of {', '.join(TEMPORAL_MODELS)}, got {kind!r}")
    return TEMPORAL_MODELS[kind](in_dim, dim, **options)
