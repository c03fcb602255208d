"""BMN, the Boundary-Matching Network (Lin et al., ICCV 2019): the class-agnostic proposal generator
that B-I and EffPrompt share. Trained once per (dataset, split, config, seed) on the seen-class
training videos and cached (:func:`fit_bmn`, :func:`bmn_proposals`); it is not a detection method.

On a video of T snippet features X [T, D_in], with boundary location l at time l / T of the video:

    F = base(X)                              base module: two grouped temporal convolutions   [C1, T]
    P_S, P_E = σ(tem_s(F)), σ(tem_e(F))      temporal evaluation module: start / end probability  [T]
    S[c, n, d, t] = Σ_τ F_p[c, τ] W[τ, n, d, t]   BM layer: N points sampled in the proposal
                                             (start t, duration d + 1), widened by half its length
                                             on each side, by linear interpolation  [C2, N, D, T]
    M_CR, M_CC = σ(pem_2d(conv_N(S)))        proposal evaluation module: BM confidence maps  [D, T]

where F_p = pem_1d(F) and conv_N is the N×1×1 3-D convolution that folds the N samples. Proposal
(d, t) is the snippet range [t, t + d + 1); D (the longest duration) is T by default.

Losses (the paper's training section, with the released code's constants): L = L_TEM + L_C + λ·L_R,
λ = 10, and Adam's weight decay 1e-4 as the L2 term, where
- L_TEM = L_bl(P_S, G_S) + L_bl(P_E, G_E); G_S(l) = 1 if the anchor [l − ½, l + ½] lies more than
  half inside a start region [s − 3/2, s + 3/2] of some instance (end: likewise);
- L_bl is the weighted binary logistic loss, weights α± = ½·n / n± (n± = positive / negative count);
- G_C(d, t) = max IoU of proposal (d, t) with the instances; L_C = L_bl(M_CC, G_C > 0.9) over the
  valid map entries (t + d < T); L_R = ½·Σ w (M_CR − G_C)² / Σ w, w = 1 on every G_C > 0.7 and on a
  random sample of the entries with 0.3 < G_C ≤ 0.7 and 0 < G_C ≤ 0.3, about as many as positives.

Inference: boundary candidates are the local peaks of P_S (P_E) and the locations above half
its maximum (plus the first location for starts, the last for ends); every candidate pair with a
valid map entry scores p = P_S(t)·P_E(t + d + 1)·M_CC(d, t)·M_CR(d, t); Gaussian Soft-NMS keeps at
most 100 proposals a video.

Speed: the BM layer and conv_N are both linear, so they are applied in the other order — first
K[o, c, n] over the C2 channels (``[B, O, N, T]``, N times less memory than S), then one product
with the sampling tensor W, reshaped to a sparse [D·T, N·T] matrix with a few non-zeros per
(n, d, t) (``SparseProduct``, built once). Same numbers as the paper's order, tested against a
direct loop; the result comes out channels-last, the layout the 2-D convolutions run fastest in.

Deviations from the paper / released code, all small: linear interpolation drops sample points
outside the video (the released code's ``math.modf`` clamps points in (−1, 0) onto snippet 0);
Soft-NMS is the shared Gaussian one without BMN's width-dependent threshold; the defaults are
shrunk for the 2-core synthetic suite (``PAPER_BMN`` restores the paper's sizes and schedule).

Training follows the benchmark's convergence rule (:mod:`methods.modules.convergence`): held-out
training videos, L on them once an epoch, lr / 10 and then a stop on a plateau, ``epochs`` the cap;
``PAPER_BMN`` keeps the paper's fixed 9 epochs (rule ``epochs``).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.evaluation.postprocess import snippets_to_seconds, soft_nms
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.compute import Cost, Ledger, measure
from benchmark.harness.registry import ConfigError
from methods.modules import convergence
from methods.modules.convergence import Convergence
from methods.modules.training import as_tensor, autocast, device_of, minibatches, seed_everything

CACHE_FORMAT = 3  # bump when training or inference changes what a cached artifact holds


@dataclass(frozen=True)
class BMNConfig:
    # architecture (paper: 256 / 128 / 512, N = 32, 3 points a bin, D = T = 100 on ActivityNet)
    hidden_1d: int = 64  # C1: base module and TEM
    hidden_2d: int = 8  # C2: BM-layer input and 2-D PEM convolutions (the cost: they run on the D×T map)
    hidden_3d: int = 16  # output channels of conv_N
    groups: int = 4  # grouped temporal convolutions of the base module and TEM
    num_samples: int = 8  # N points per proposal
    samples_per_bin: int = 3  # interpolated points averaged into each of the N samples
    boundary_ratio: float = 0.5  # the sampled region extends the proposal by this fraction of its length, each side
    max_duration: int = 0  # D in snippets; 0 means T
    # training: the shared convergence rule (methods/modules/convergence.py); epochs is its cap
    convergence: Convergence = Convergence()
    epochs: int = 20  # the cap (synthetic suite: the plateau stops after 11-13)
    decay_epochs: int = 0  # rule epochs: the last epochs (all, if more than epochs) at lr / 10 (paper: 9, the last 2)
    batch_size: int = 16
    lr: float = 4e-3  # paper: 1e-3 over 9 epochs
    weight_decay: float = 1e-4
    reg_weight: float = 10.0  # λ of L_R
    # inference (not part of the trained model's cache key)
    peak_fraction: float = 0.5  # boundary candidates above this fraction of the video's maximum
    soft_nms_sigma: float = 0.4
    max_proposals: int = 100


PAPER_BMN = BMNConfig(hidden_1d=256, hidden_2d=128, hidden_3d=512, num_samples=32, epochs=9, decay_epochs=2, lr=1e-3,
                      convergence=Convergence(rule="epochs"))
INFERENCE_FIELDS = ("peak_fraction", "soft_nms_sigma", "max_proposals")


def check_bmn_config(cfg: BMNConfig, where: str = "bmn") -> None:
    """One-line errors for values the network cannot run with."""
    problems = [
        (min(cfg.hidden_1d, cfg.hidden_2d, cfg.hidden_3d, cfg.groups, cfg.num_samples, cfg.samples_per_bin) < 1,
         "hidden sizes, groups, num_samples and samples_per_bin must be >= 1"),
        (cfg.hidden_1d % cfg.groups != 0, f"hidden_1d={cfg.hidden_1d} must be divisible by groups={cfg.groups}"),
        (cfg.num_samples * cfg.samples_per_bin < 2, "num_samples * samples_per_bin must be >= 2"),
        (cfg.boundary_ratio < 0 or cfg.max_duration < 0, "boundary_ratio and max_duration must be >= 0"),
        (min(cfg.epochs, cfg.batch_size) < 1 or cfg.decay_epochs < 0,
         f"epochs and batch_size must be >= 1 and decay_epochs >= 0, got {cfg.epochs}, {cfg.batch_size}, "
         f"{cfg.decay_epochs}"),
        (cfg.lr <= 0 or cfg.weight_decay < 0 or cfg.reg_weight < 0, "lr must be > 0, weight_decay and reg_weight >= 0"),
        (not 0 < cfg.peak_fraction <= 1 or cfg.soft_nms_sigma <= 0 or cfg.max_proposals < 1,
         "peak_fraction must be in (0, 1], soft_nms_sigma > 0 and max_proposals >= 1"),
    ]
    for bad, message in problems:
        if bad:
            raise ConfigError(f"{where}: {message}")


# ---------------------------------------------------------------------------------------------
# The boundary-matching layer


def sampling_weights(T: int, D: int, N: int, per_bin: int, ratio: float) -> tuple[np.ndarray, ...]:
    """Non-zeros of the BM sampling tensor W[τ, n, d, t], as arrays (τ, n, d·T + t, weight).

    As in the released code, proposal (d, t) is sampled over locations [t, t + d] (its label covers
    [t, t + d + 1)) widened to [t − r·(d + 1), t + d + r·(d + 1)]. That region holds N·per_bin evenly
    spaced points (ends included); each is linearly interpolated between its two neighbouring
    snippets, points outside the video are dropped, and bin n averages its per_bin points. Entries
    with t + d >= T (past the video's end) stay zero.
    """
    d, t = np.meshgrid(np.arange(D), np.arange(T), indexing="ij")
    d, t = d[t + d < T], t[t + d < T]  # valid (duration, start) pairs
    length = d + 1.0
    lo, hi = t - ratio * length, t + d + ratio * length
    k = np.arange(N * per_bin)
    points = lo[:, None] + (hi - lo)[:, None] * k / (N * per_bin - 1)  # [pairs, N·per_bin]
    below = np.floor(points)
    frac = points - below
    pair = np.broadcast_to((d * T + t)[:, None], points.shape)
    n = np.broadcast_to(k // per_bin, points.shape)
    parts = []
    for tau, w in ((below, 1.0 - frac), (below + 1, frac)):
        inside = (tau >= 0) & (tau <= T - 1) & (w > 0)
        parts.append((tau[inside].astype(np.int64), n[inside], pair[inside], w[inside] / per_bin))
    return tuple(np.concatenate(column) for column in zip(*parts))


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int) -> tuple[torch.Tensor, ...]:
    """CSR arrays (row offsets, columns, values) of a sparse matrix; duplicates summed."""
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    first = np.r_[True, (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])]
    group = np.cumsum(first) - 1
    values = np.bincount(group, weights=values)
    rows, cols = rows[first], cols[first]
    offsets = np.searchsorted(rows, np.arange(n_rows))  # start of each row (empty rows allowed)
    return (torch.as_tensor(offsets, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64),
            torch.as_tensor(values, dtype=torch.float32))


def _sparse_mm(csr: tuple[torch.Tensor, ...], dense: torch.Tensor) -> torch.Tensor:
    """[R, S] sparse (CSR) @ [S, M] dense, as a weighted ``embedding_bag`` sum (fast on CPU and GPU)."""
    offsets, cols, values = csr
    return F.embedding_bag(cols, dense, offsets, mode="sum", per_sample_weights=values.to(dense.dtype))


class SparseProduct(torch.autograd.Function):
    """y = A z for a constant sparse A; the backward is Aᵀ g, with Aᵀ precomputed (also CSR)."""

    @staticmethod
    def forward(ctx, dense, a, a_t):
        ctx.a_t = a_t
        return _sparse_mm(a, dense.detach())  # detached: embedding_bag's cheaper forward-only kernel

    @staticmethod
    def backward(ctx, grad):
        return _sparse_mm(ctx.a_t, grad.contiguous()), None, None


class BoundaryMatching(nn.Module):
    """BM layer followed by conv_N, the N×1×1 3-D convolution over the N samples:

        Y[o, d, t] = b_o + Σ_{c,n} K[o, c, n] Σ_τ F_p[c, τ] W[τ, n, d, t]
                   = b_o + Σ_{n,τ} Z[o, n, τ] W[τ, n, d, t],   Z[o, n, τ] = Σ_c K[o, c, n] F_p[c, τ]
    """

    def __init__(self, in_channels: int, out_channels: int, T: int, D: int, N: int, per_bin: int, ratio: float):
        super().__init__()
        self.T, self.D, self.N = T, D, N
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, N))  # K, conv_N's kernel
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv3d's default initialisation
        bound = 1 / (in_channels * N) ** 0.5
        nn.init.uniform_(self.bias, -bound, bound)
        tau, n, pair, w = sampling_weights(T, D, N, per_bin, ratio)
        sample = n * T + tau  # W as a [N·T, D·T] matrix; we keep CSR arrays of Wᵀ (forward) and of W (backward)
        for name, arrays in (("sampling", _csr(pair, sample, w, D * T)), ("sampling_t", _csr(sample, pair, w, N * T))):
            for part, x in zip(("offsets", "columns", "values"), arrays):
                self.register_buffer(f"{name}_{part}", x, persistent=False)  # rebuilt from the config

    def _matrix(self, name: str) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"{name}_{part}") for part in ("offsets", "columns", "values"))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, O, D, T], in channels-last memory layout (what the 2-D convolutions run fastest on)."""
        B, O = f.shape[0], self.weight.shape[0]
        z = torch.einsum("ocn,bct->ntbo", self.weight, f).reshape(self.N * self.T, B * O)
        y = SparseProduct.apply(z, self._matrix("sampling"), self._matrix("sampling_t"))  # [D·T, B·O]
        y = y.view(self.D, self.T, B, O).permute(2, 0, 1, 3).contiguous() + self.bias  # [B, D, T, O]
        return y.permute(0, 3, 1, 2)


class BMN(nn.Module):
    def __init__(self, in_dim: int, T: int, cfg: BMNConfig):
        super().__init__()
        C1, C2, C3, g = cfg.hidden_1d, cfg.hidden_2d, cfg.hidden_3d, cfg.groups
        self.T, self.D = T, min(cfg.max_duration or T, T)
        self.base = nn.Sequential(nn.Conv1d(in_dim, C1, 3, padding=1, groups=_groups(in_dim, g)), nn.ReLU(),
                                  nn.Conv1d(C1, C1, 3, padding=1, groups=g), nn.ReLU())
        self.tem_start = nn.Sequential(nn.Conv1d(C1, C1, 3, padding=1, groups=g), nn.ReLU(), nn.Conv1d(C1, 1, 1))
        self.tem_end = nn.Sequential(nn.Conv1d(C1, C1, 3, padding=1, groups=g), nn.ReLU(), nn.Conv1d(C1, 1, 1))
        self.pem_1d = nn.Sequential(nn.Conv1d(C1, C2, 3, padding=1), nn.ReLU())
        self.boundary_matching = BoundaryMatching(C2, C3, T, self.D, cfg.num_samples, cfg.samples_per_bin,
                                                  cfg.boundary_ratio)
        self.pem_2d = nn.Sequential(nn.ReLU(), nn.Conv2d(C3, C2, 1), nn.ReLU(),
                                    nn.Conv2d(C2, C2, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(C2, C2, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(C2, 2, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x [B, T, D_in] -> logits of P_S, P_E [B, T] and of M_CR, M_CC [B, D, T]."""
        f = self.base(x.transpose(1, 2))
        maps = self.pem_2d(self.boundary_matching(self.pem_1d(f)))
        return {"start": self.tem_start(f)[:, 0], "end": self.tem_end(f)[:, 0],
                "regression": maps[:, 0], "classification": maps[:, 1]}


def _groups(channels: int, groups: int) -> int:
    """The paper's 4 groups on the input convolution need D_in divisible by 4; fall back to 1."""
    return groups if channels % groups == 0 else 1


def valid_map(T: int, D: int, device=None) -> torch.Tensor:
    """[D, T] bool: proposal (d, t) ends inside the video (t + d < T)."""
    d = torch.arange(D, device=device)[:, None]
    t = torch.arange(T, device=device)[None, :]
    return t + d < T


# ---------------------------------------------------------------------------------------------
# Targets and losses


def instance_table(videos, T: int) -> np.ndarray:
    """Every video's instances as [N, M, 2] boundaries in snippet units (seconds · T / duration),
    clipped to [0, T]; padded with far-away zero-length segments, which match nothing."""
    M = max((len(v.instances) for v in videos), default=0)
    table = np.full((len(videos), max(M, 1), 2), -1e4, np.float32)
    for i, v in enumerate(videos):
        for j, inst in enumerate(v.instances):
            table[i, j] = np.clip([inst.start * T / v.duration, inst.end * T / v.duration], 0, T)
    return table


def _overlap(a0, a1, b0, b1) -> torch.Tensor:
    return (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0)


def bmn_targets(instances: torch.Tensor, T: int, D: int) -> dict[str, torch.Tensor]:
    """G_S, G_E [B, T] (IoA of each anchor with the start / end regions) and G_C [B, D, T] (max IoU
    of each proposal with the instances, 0 where invalid), from instances [B, M, 2] in snippet units."""
    s, e = instances[..., 0, None], instances[..., 1, None]  # [B, M, 1]
    loc = torch.arange(T, device=instances.device, dtype=instances.dtype)
    half_region = 1.5  # the released code's start / end region: 3 snippets wide

    def boundary(b):  # IoA of anchor [l - 1/2, l + 1/2] (length 1) with [b - 3/2, b + 3/2]
        return _overlap(loc - 0.5, loc + 0.5, b - half_region, b + half_region).amax(dim=1)

    p0 = loc.view(1, 1, T)
    p1 = p0 + torch.arange(1, D + 1, device=instances.device, dtype=instances.dtype).view(1, D, 1)
    s4, e4 = s[..., None], e[..., None]  # [B, M, 1, 1]
    inter = _overlap(p0.unsqueeze(1), p1.unsqueeze(1), s4, e4)  # [B, M, D, T]
    iou = inter / ((p1 - p0).unsqueeze(1) + (e4 - s4) - inter)
    confidence = iou.amax(dim=1) * valid_map(T, D, instances.device)
    return {"start": boundary(s), "end": boundary(e), "confidence": confidence}


def binary_logistic(logits: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """L_bl = −(1/n) Σ [α₊ b log p + α₋ (1 − b) log(1 − p)] over the n valid entries, p = σ(logits),
    α± = ½·n / n± (the released code's coefficients: each side weighs ½ whatever the imbalance).
    With −log σ(x) = softplus(−x), this is ½ (mean loss over positives + mean loss over negatives)."""
    valid = torch.ones_like(logits) if valid is None else valid.to(logits.dtype)
    pos = positive.to(logits.dtype) * valid
    neg = valid - pos
    positives = (pos * F.softplus(-logits)).sum() / pos.sum().clamp(min=1)
    negatives = (neg * F.softplus(logits)).sum() / neg.sum().clamp(min=1)
    return 0.5 * (positives + negatives)


def regression_loss(logits: torch.Tensor, g: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_R = ½·Σ w (σ(x) − g)² / Σ w, w = 1 on g > 0.7 and on samples of 0.3 < g ≤ 0.7 and 0 < g ≤ 0.3,
    each kept with probability n_high / n_bin (at most 1), so the three bins come out about equal."""
    high = g > 0.7
    medium = (g > 0.3) & ~high
    low = (g > 0) & (g <= 0.3) & valid
    n_high = high.sum()
    u = torch.rand_like(g)
    w = high | (medium & (u < n_high / medium.sum().clamp(min=1))) | (low & (u < n_high / low.sum().clamp(min=1)))
    w = w.to(logits.dtype)
    return 0.5 * (w * (torch.sigmoid(logits) - g) ** 2).sum() / w.sum().clamp(min=1)


def bmn_loss(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
             reg_weight: float) -> dict[str, torch.Tensor]:
    """L = L_TEM + L_C + λ·L_R, the paper's objective with the released code's λ = 10."""
    valid = valid_map(out["classification"].shape[-1], out["classification"].shape[-2], out["start"].device)
    g = target["confidence"]
    tem = binary_logistic(out["start"], target["start"] > 0.5) + binary_logistic(out["end"], target["end"] > 0.5)
    cls = binary_logistic(out["classification"], g > 0.9, valid.expand_as(g))
    reg = regression_loss(out["regression"], g, valid)
    return {"loss": tem + cls + reg_weight * reg, "tem": tem, "pem_classification": cls, "pem_regression": reg}


# ---------------------------------------------------------------------------------------------
# Training and inference


def train_bmn(features: np.ndarray, instances: np.ndarray, cfg: BMNConfig, seed: int, device: torch.device,
              log=print) -> tuple[BMN, dict]:
    """Train on features [N, T, D_in] with instances [N, M, 2] (snippet units) by ``cfg.convergence``;
    returns the model and the training record."""
    generator = seed_everything(seed)
    N, T, in_dim = features.shape
    model = BMN(in_dim, T, cfg).to(device)
    fitted, held = (torch.as_tensor(i) for i in convergence.holdout_split(N, cfg.convergence, seed))
    x, gt = as_tensor(features, device), as_tensor(instances, device)
    x_fit, gt_fit, x_held, gt_held = x[fitted], gt[fitted], x[held], gt[held]
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def losses(x, gt) -> dict[str, torch.Tensor]:
        with autocast(device):
            out = model(x)
        return bmn_loss({k: v.float() for k, v in out.items()}, bmn_targets(gt, T, model.D), cfg.reg_weight)

    def step(idx) -> dict[str, float]:
        loss = losses(x_fit[idx], gt_fit[idx])["loss"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return {"loss": loss.item()}

    def heldout_loss() -> float:
        """Video-weighted mean of L over the held-out videos; L_R's random sample drawn from a fixed
        seed, so every evaluation weighs the same entries and training's random stream is untouched."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return sum(float(losses(x_held[idx], gt_held[idx])["loss"]) * len(idx)
                       for idx in minibatches(len(held), cfg.batch_size, None, shuffle=False)) / len(held)

    record = convergence.train(cfg.convergence, cfg.epochs, len(fitted), cfg.batch_size, step,
                               heldout_loss if len(held) else None, model, optimiser, generator,
                               lambda line: log(f"bmn: {line}"), decay_epochs=cfg.decay_epochs)
    log(f"bmn: trained {record['steps']} steps ({record['epochs']} epochs), stopped: {record['stopped']}")
    return model, record


@torch.no_grad()
def bmn_maps(model: BMN, features: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Probabilities P_S, P_E [N, T] and M_CR, M_CC [N, D, T] for every video."""
    device = next(model.parameters()).device
    x = as_tensor(features, device)
    parts = []
    for idx in minibatches(len(x), batch_size, None, shuffle=False):
        with autocast(device):
            parts.append({k: torch.sigmoid(v.float()).cpu() for k, v in model(x[idx]).items()})
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in ("start", "end", "regression", "classification")}


def boundary_candidates(prob: np.ndarray, peak_fraction: float, keep: int) -> np.ndarray:
    """[T] bool: interior local peaks, locations above ``peak_fraction`` of the maximum, and ``keep``."""
    candidate = prob > peak_fraction * prob.max()
    candidate[1:-1] |= (prob[1:-1] > prob[:-2]) & (prob[1:-1] > prob[2:])
    candidate[keep] = True
    return candidate


def video_proposals(maps: dict[str, np.ndarray], cfg: BMNConfig) -> tuple[np.ndarray, np.ndarray]:
    """One video's maps -> (segments [P, 2] in snippet units, score [P]) before Soft-NMS.

    Pairs (start t, end t + d + 1) with both boundaries candidates; the end must be a location
    (t + d + 1 < T), as in the released code. p = P_S(t)·P_E(t + d + 1)·M_CC(d, t)·M_CR(d, t).
    """
    start, end = maps["start"], maps["end"]
    D, T = maps["classification"].shape
    starts = boundary_candidates(start, cfg.peak_fraction, 0)
    ends = boundary_candidates(end, cfg.peak_fraction, T - 1)
    d, t = np.nonzero(valid_map(T, D).numpy())
    e = t + d + 1
    d, t, e = d[e < T], t[e < T], e[e < T]
    keep = starts[t] & ends[e]
    d, t, e = d[keep], t[keep], e[keep]
    score = start[t] * end[e] * maps["classification"][d, t] * maps["regression"][d, t]
    return np.stack([t, e], axis=1).astype(np.float64), score.astype(np.float64)


def proposal_table(maps: dict[str, np.ndarray], videos, cfg: BMNConfig) -> SegmentTable:
    """Soft-NMS'd proposals of every video, in seconds, label "" (class-agnostic)."""
    rows = []
    for n, video in enumerate(videos):
        segments, score = video_proposals({k: v[n] for k, v in maps.items()}, cfg)
        seconds = snippets_to_seconds(segments, len(maps["start"][n]), video.duration)
        keep, kept = soft_nms(seconds, score, cfg.soft_nms_sigma, max_keep=cfg.max_proposals)
        rows += [(video.id, seconds[i, 0], seconds[i, 1], "", s) for i, s in zip(keep, kept)]
    return SegmentTable.from_rows(rows, with_score=True)


# ---------------------------------------------------------------------------------------------
# The cached artifact: one trained BMN per (training data, config, seed), proposals per test set


@dataclass
class TrainedBMN:
    model: BMN
    config: BMNConfig
    directory: Path | None  # this training run's cache directory (named by its key); None without a cache


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).data)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _videos_fingerprint(videos) -> list:
    return [(v.id, v.duration, [(i.start, i.end, i.label) for i in v.instances]) for v in videos]


def _locked(directory: Path):
    """An exclusive lock on ``directory``'s lock file, so parallel jobs build an artifact once."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _atomic_save(path: Path, save) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save(tmp)
    os.replace(tmp, path)


def _save_table(path: Path, table: SegmentTable) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a path
        np.savez(f, video=table.video, t0=table.t0, t1=table.t1, score=table.score)


def fit_bmn(train_view, cfg: BMNConfig, context) -> TrainedBMN:
    """The BMN of this training view: loaded from ``context.cache_dir`` if there, else trained (once,
    under a file lock) and stored. The key covers the training videos, their instances, classes and
    features (a checksum), the model/training config and the seed, so splits never share a model."""
    check_bmn_config(cfg)
    device = device_of(context)

    def train() -> tuple[BMN, dict]:
        instances = instance_table(train_view.videos, train_view.T)
        return train_bmn(train_view.features, instances, cfg, context.seed, device, context.log)

    if context.cache_dir is None:
        with measure() as cost:
            model, record = train()
        context.ledger.charge("bmn", cost, built_here=True)
        context.ledger.trained("bmn", record)
        return TrainedBMN(model, cfg, None)
    model_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in INFERENCE_FIELDS}
    model_cfg["decay_epochs"] = min(cfg.decay_epochs, cfg.epochs)  # the same schedule, the same model
    key = _digest(CACHE_FORMAT, model_cfg, context.seed, train_view.T, list(train_view.classes),
                  _videos_fingerprint(train_view.videos), train_view.features)
    directory = Path(context.cache_dir) / "bmn" / key
    path = directory / "model.pt"
    with _locked(directory):
        if path.is_file():
            model = BMN(train_view.features.shape[-1], train_view.T, cfg).to(device)
            model.load_state_dict(torch.load(path, map_location=device))
            stored = json.loads((directory / "config.json").read_text())
            cost, record = Cost(**stored["cost"]), stored["training"]
            context.ledger.charge("bmn", cost, built_here=False)
            context.log(f"bmn: trained model loaded from {path}")
        else:
            with measure() as cost:
                model, record = train()
            context.ledger.charge("bmn", cost, built_here=True)
            stored = {"config": model_cfg, "seed": context.seed, "videos": len(train_view.videos),
                      "cost": dataclasses.asdict(cost), "training": record}
            _atomic_save(directory / "config.json", lambda p: p.write_text(json.dumps(stored, indent=1)))
            _atomic_save(path, lambda p: torch.save(model.state_dict(), p))  # last: its presence means done
    context.ledger.trained("bmn", record)
    return TrainedBMN(model.eval(), cfg, directory)


def bmn_proposals(bmn: TrainedBMN, test_view, ledger: Ledger | None = None) -> SegmentTable:
    """Class-agnostic proposals of every test video (seconds, ≤ max_proposals each), cached per
    (trained model, test videos and features, inference settings); their cost is charged to
    ``ledger`` like the model's."""
    if test_view.T != bmn.model.T:
        raise ConfigError(f"bmn: trained on T={bmn.model.T} snippets, test view has T={test_view.T}")
    cfg = bmn.config
    ledger = ledger or Ledger()

    def compute() -> SegmentTable:
        with measure() as cost:
            table = proposal_table(bmn_maps(bmn.model, test_view.features), test_view.videos, cfg)
        ledger.charge("bmn_proposals", cost, built_here=True)
        return table, cost

    if bmn.directory is None:
        return compute()[0]
    inference = {k: getattr(cfg, k) for k in INFERENCE_FIELDS}
    key = _digest(inference, [(v.id, v.duration) for v in test_view.videos], test_view.features)
    path = bmn.directory / f"proposals-{key}.npz"
    with _locked(bmn.directory):
        if not path.is_file():
            table, cost = compute()
            _atomic_save(path, lambda p: _save_table(p, table))
            path.with_suffix(".json").write_text(json.dumps({"cost": dataclasses.asdict(cost)}))
        else:
            ledger.charge("bmn_proposals", Cost(**json.loads(path.with_suffix(".json").read_text())["cost"]),
                          built_here=False)
    data = np.load(path)
    return SegmentTable(data["video"], data["t0"], data["t1"], np.full(len(data["video"]), "", dtype=str),
                        data["score"])
