"""OV-ActionFormer: the open-vocabulary one-stage ActionFormer baseline (Zhang, Wu & Li, ECCV 2022), as the
common base of Ti-FAD and its successors. Read top to bottom; the parts are named as in ActionFormer's §3.

    snippet features X [B, T, D]
      -> projection: two 1-D convolutions (kernel 3) + LayerNorm + ReLU
      -> encoder: pre-LN transformer blocks with *local* self-attention (window w)
           ``stem_layers`` blocks at stride 1, then one block per extra pyramid level, each
           downsampling by 2 (strided depthwise convolutions on q, k, v; max-pooled skip)
         -> feature pyramid Z = {Z^1 .. Z^L}, Z^l of length ceil(T / 2^(l-1))
      -> decoder: heads shared over levels, 1-D convolutions + LayerNorm + ReLU:
           classification: h(t) in the text space, p(a_t = k) = σ(s · cos(h(t), z_k) + b)
                           z_k frozen CLIP embeddings of the class names, s learnable (open-vocabulary)
           regression: (d^s_t, d^e_t) = ReLU(λ_l · g(t)) distances to start / end, in strides of level l
    loss: sigmoid focal loss over the K seen classes (every location) + λ_reg · DIoU (positives),
          both / #positives
    labels: a location is positive for an instance if it lies within r·stride of its centre (centre
          sampling) and its largest distance to the boundaries is in the level's regression range; several:
          the shortest instance
    inference: every (location, class) above 0.001, top-k, decoded segments, Soft-NMS per class

Reduced for the embedded benchmark (frozen snippet features, T = 100, 64-d, 2 CPU cores): width 64 instead
of 256/512, one stem block and a 4-level pyramid (ActionFormer: 2 stem blocks, 6 levels), window 9, heads of
width 64; ``PAPER`` restores the paper's sizes and schedule per dataset. Our choices where ActionFormer has
another or none:
- classification is open-vocabulary: the class head outputs a vector in the text space, compared by cosine
  with the frozen class-name embeddings (``benchmark.text.clip.class_embeddings``, the run's hand-crafted
  templates, as every frozen-text method here) at a learnable logit scale (initialised at CLIP's 1/0.07),
  plus a bias initialised at the focal-loss prior π = 0.01 (ActionFormer's ``cls_prior_prob``);
- the losses are divided by the batch's number of positive locations; ActionFormer divides by an EMA of it,
  for its batches of 2 videos (our batches of 16 have a stable count, and the held-out loss then needs no
  state carried between batches);
- local attention is full attention with a band mask |i - j| <= w // 2 (the same attention as
  ActionFormer's chunked implementation, simpler at T <= 192);
- every video has the same T (the benchmark rescales features), so there is no padding mask and no
  ``max_seq_len`` / position-embedding interpolation; ``abs_position`` adds ActionFormer's sinusoidal
  embedding (its ActivityNet setting);
- Soft-NMS is the benchmark's (``benchmark.evaluation.postprocess.soft_nms``: Gaussian decay exp(-tIoU²/σ)),
  per class (ActionFormer's ``multiclass_nms``; ``multiclass_nms: false`` suppresses over all classes at
  once, as its ActivityNet config does when it fuses an external classifier), no score voting;
- no stochastic depth (``droppath``) and no EMA of the weights; a linear warm-up then the benchmark's
  convergence rule (methods/modules/convergence.py: held-out seen-class training videos, patience, one lr
  decay) replaces the cosine schedule; ``PAPER`` runs the papers' fixed epochs (``rule: epochs``).
The defaults are not tuned. Measured once on the development benchmark (synthetic default profile, seed 1, class
split 0 at 75/25; never the suite's seed): avg mAP 6.0 (14.6 at tIoU 0.5) on the unseen classes, 448 steps (14
epochs, stopped on the plateau), 103 CPU s of training and 21 s of inference on one thread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.evaluation.postprocess import snippets_to_seconds, soft_nms
from benchmark.harness.registry import ConfigError, Method, register_method
from methods.modules import convergence
from methods.modules.convergence import Convergence
from methods.modules.grouping import label_given_segments
from methods.modules.losses import sigmoid_focal_loss
from methods.modules.training import as_tensor, autocast, device_of, minibatches, seed_everything

CLIP_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature


@dataclass(frozen=True)
class Config:
    """Defaults are small and fast (the embedded synthetic suite); ``PAPER`` holds the papers' values."""

    # projection and encoder
    dim: int = 64  # embedding, pyramid and head width
    embed_layers: int = 2  # convolutions of the projection
    heads: int = 4
    window: int = 9  # local self-attention window (odd); 0 = global attention
    stem_layers: int = 1  # transformer blocks at full resolution
    levels: int = 4  # pyramid levels; each after the first adds one downsampling block
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    abs_position: bool = False  # sinusoidal position embedding (ActionFormer's ActivityNet setting)
    head_layers: int = 3  # convolutions of each head, the output one included
    # labels and losses
    regression_base: int = 4  # level l >= 1 regresses max distances in [base·2^(l-1), base·2^l] snippets
    #                           (level 0 from 0, the last level to infinity)
    center_radius: float = 1.5  # centre sampling, in strides of the level
    prior_prob: float = 0.01  # initial σ(b) of the classifier (and of every sigmoid head)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    reg_weight: float = 1.0  # λ_reg
    # inference
    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 1000
    min_length: float = 0.05  # snippets
    multiclass_nms: bool = True
    soft_nms_sigma: float = 0.5
    max_detections: int = 100
    top_k_labels: int = 2  # classify_segments: labels per given segment
    # training: the shared convergence rule (methods/modules/convergence.py); epochs is its cap
    convergence: Convergence = Convergence(warmup_steps=40)
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # max gradient norm (ActionFormer's clip_grad_l2norm); 0 = none

    def __post_init__(self):
        name = type(self).__module__.rsplit(".", 1)[-1]
        for key in ("dim", "embed_layers", "heads", "stem_layers", "levels", "head_layers", "regression_base",
                    "pre_nms_topk", "max_detections", "top_k_labels", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}: {key} must be >= 1, got {getattr(self, key)}")
        problems = [
            (self.dim % self.heads != 0, f"dim={self.dim} must be divisible by heads={self.heads}"),
            (self.window < 0 or (self.window > 0 and self.window % 2 == 0),
             f"window must be 0 (global) or an odd number of snippets, got {self.window}"),
            (not 0 < self.prior_prob < 1, f"prior_prob must be in (0, 1), got {self.prior_prob}"),
            (not 0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (not 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (min(self.center_radius, self.soft_nms_sigma, self.lr, self.mlp_ratio) <= 0,
             "center_radius, soft_nms_sigma, lr and mlp_ratio must be > 0"),
            (min(self.focal_alpha, self.focal_gamma, self.reg_weight, self.weight_decay, self.grad_clip,
                 self.pre_nms_thresh, self.min_length) < 0, "loss weights, thresholds and grad_clip must be >= 0"),
        ]
        for bad, message in problems:
            if bad:
                raise ConfigError(f"{name}: {message}")


# ActionFormer's recipes (paper §4 "Implementation details", its released configs anet_i3d.yaml / thumos_i3d.yaml
# and the defaults of its libs/core/config.py: 2 stem blocks, 6 levels, regression ranges from 4, 3-layer heads,
# 5 warm-up epochs). The epochs are the configs' training epochs plus the 5 warm-up ones. T comes from the suite.
_PAPER_COMMON = {"embed_layers": 2, "stem_layers": 2, "levels": 6, "heads": 4, "head_layers": 3, "center_radius": 1.5,
                 "weight_decay": 0.05, "grad_clip": 1.0, "pre_nms_topk": 2000}
PAPER = {
    "activitynet": {**_PAPER_COMMON, "dim": 256, "window": 7, "abs_position": True, "lr": 1e-3, "epochs": 15,
                    "batch_size": 16, "label_smoothing": 0.1, "reg_weight": 2.0, "soft_nms_sigma": 0.75,
                    "max_detections": 100, "convergence": {"rule": "epochs", "warmup_steps": 0}},
    "thumos14": {**_PAPER_COMMON, "dim": 512, "window": 19, "lr": 1e-4, "epochs": 50, "batch_size": 2,
                 "max_detections": 200, "convergence": {"rule": "epochs", "warmup_steps": 0}},
}


# ---------------------------------------------------------------------------------------------
# Projection and encoder
# ---------------------------------------------------------------------------------------------

def sinusoid(T: int, dim: int) -> torch.Tensor:
    """[T, dim] transformer position embedding / sqrt(dim), as ActionFormer adds it."""
    position = torch.arange(T, dtype=torch.float32)[:, None]
    rate = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(T, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
    return table / math.sqrt(dim)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, bias: torch.Tensor | None = None,
           logit_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of q [B, Lq, C] over k, v [B, Lk, C]. ``bias`` [B or 1, 1 or heads, Lq, Lk] is added to
    the logits (a mask: -inf); ``logit_scale`` [B, Lq] multiplies each query's logits (Ti-FAD's released code)."""
    B, Lq, C = q.shape
    split = lambda x: x.view(B, -1, heads, C // heads).transpose(1, 2)
    logits = split(q) @ split(k).transpose(-2, -1) / math.sqrt(C // heads)  # [B, h, Lq, Lk]
    if logit_scale is not None:
        logits = logits * logit_scale[:, None, :, None]
    if bias is not None:
        logits = logits + bias
    return (logits.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, Lq, C)


def band(L: int, window: int, device) -> torch.Tensor | None:
    """[1, 1, L, L] additive mask of local attention: 0 within |i - j| <= window // 2, -inf outside."""
    if window <= 0 or window >= 2 * L - 1:
        return None
    i = torch.arange(L, device=device)
    return torch.where((i[:, None] - i[None, :]).abs() <= window // 2, 0.0, -math.inf)[None, None]


class LocalBlock(nn.Module):
    """ActionFormer's transformer block, pre-LN:
    Z' = pool(Z) + MSA_local(LN(Z)), q/k/v from (strided) depthwise convolutions; Z'' = Z' + MLP(LN(Z'))."""

    def __init__(self, cfg: Config, stride: int):
        super().__init__()
        dim, kernel = cfg.dim, (stride + 1 if stride > 1 else 3)
        self.heads, self.window = cfg.heads, cfg.window
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.convs = nn.ModuleList([nn.Conv1d(dim, dim, kernel, stride, kernel // 2, groups=dim, bias=False)
                                    for _ in range(3)])  # q, k, v (downsampling when stride 2)
        self.conv_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])
        self.proj = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])
        self.out = nn.Linear(dim, dim)
        self.skip = nn.MaxPool1d(kernel, stride, kernel // 2) if stride > 1 else nn.Identity()
        hidden = int(cfg.mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(cfg.dropout))
        self.drop = nn.Dropout(cfg.dropout)

    def self_attention(self, z: torch.Tensor) -> torch.Tensor:
        """[B, L, C] -> [B, L', C]: pool(z) + local attention of the (downsampled) q over (downsampled) k, v."""
        h = self.norm1(z).transpose(1, 2)
        q, k, v = (p(n(c(h).transpose(1, 2))) for c, n, p in zip(self.convs, self.conv_norms, self.proj))
        out = self.out(attend(q, k, v, self.heads, band(q.shape[1], self.window, z.device)))
        return self.skip(z.transpose(1, 2)).transpose(1, 2) + self.drop(out)

    def forward(self, z: torch.Tensor, text: torch.Tensor | None = None):
        z = self.self_attention(z)
        return z + self.mlp(self.norm2(z)), text


class Head(nn.Module):
    """A head shared over the pyramid: (layers - 1) x [conv k3, LayerNorm, ReLU], then an output conv k3.

    The levels run as one sequence with a zero column between consecutive levels, re-zeroed after every layer:
    each level sees exactly the zero padding of its own convolution, in one call instead of one per level."""

    def __init__(self, dim: int, out: int, layers: int, prior_prob: float | None = None):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(dim, dim, 3, padding=1, bias=False) for _ in range(layers - 1)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(layers - 1)])
        self.output = nn.Conv1d(dim, out, 3, padding=1)
        nn.init.zeros_(self.output.bias)
        if prior_prob is not None:  # a sigmoid output starting at σ = prior_prob (focal-loss stability)
            nn.init.constant_(self.output.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """[B, L_l, C] per level -> [B, P, out], the levels' locations one after the other."""
        h = torch.cat([F.pad(z.transpose(1, 2), (0, 1)) for z in pyramid], -1)  # [B, C, P + levels]
        keep = torch.cat([F.pad(z.new_ones(z.shape[1]), (0, 1)) for z in pyramid])
        for conv, norm in zip(self.convs, self.norms):
            h = torch.relu(norm(conv(h).transpose(1, 2)).transpose(1, 2)) * keep
        return self.output(h)[..., keep.bool()].transpose(1, 2)


@dataclass
class Output:
    cls_logits: torch.Tensor  # [B, P, K] over the P locations of every level, level by level
    offsets: torch.Tensor  # [B, P, 2] distances to start / end, in strides of the location's level
    extra: dict  # further per-location logits [B, P] of subclasses' heads (Ti-FAD: "fg", "soft")


class OvActionFormerNet(nn.Module):
    """Embedding -> pyramid encoder -> classification (vs text) and regression heads. Subclasses swap the blocks
    (:meth:`make_block`), the text the classifier sees (:meth:`text_tokens`, :meth:`classifier_text`) and add heads."""

    def __init__(self, cfg: Config, feat_dim: int, text_dim: int):
        super().__init__()
        self.cfg = cfg
        convs = [nn.Conv1d(feat_dim if i == 0 else cfg.dim, cfg.dim, 3, padding=1, bias=False)
                 for i in range(cfg.embed_layers)]
        self.embed = nn.ModuleList(convs)
        self.embed_norms = nn.ModuleList([nn.LayerNorm(cfg.dim) for _ in convs])
        strides = [1] * cfg.stem_layers + [2] * (cfg.levels - 1)
        self.blocks = nn.ModuleList([self.make_block(cfg, s) for s in strides])
        self.cls_head = Head(cfg.dim, self.class_dim(text_dim), cfg.head_layers)
        self.reg_head = Head(cfg.dim, 2, cfg.head_layers)
        self.reg_scale = nn.Parameter(torch.ones(cfg.levels))  # λ_l, one per level
        self.logit_scale = nn.Parameter(torch.tensor(CLIP_LOGIT_SCALE))
        self.cls_bias = nn.Parameter(torch.tensor(-math.log((1 - cfg.prior_prob) / cfg.prior_prob)))

    def make_block(self, cfg: Config, stride: int) -> nn.Module:
        return LocalBlock(cfg, stride)

    def class_dim(self, text_dim: int) -> int:
        """Width of the classification embedding h(t): the text space."""
        return text_dim

    def text_tokens(self, text: torch.Tensor, batch: int) -> torch.Tensor | None:
        """What the encoder blocks read of the class texts: nothing here (no cross-modal fusion)."""
        return None

    def classifier_text(self, text: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """[K, E] or [B, K, E]: the class vectors h(t) is compared with; here the frozen embeddings."""
        return text

    def encode(self, x: torch.Tensor, text: torch.Tensor):
        """x [B, T, D] -> (pyramid [B, T_l, C] per level, the blocks' text tokens or None)."""
        h = x
        for conv, norm in zip(self.embed, self.embed_norms):
            h = torch.relu(norm(conv(h.transpose(1, 2)).transpose(1, 2)))
        if self.cfg.abs_position:
            h = h + sinusoid(h.shape[1], h.shape[2]).to(h)
        tokens = self.text_tokens(text, x.shape[0])
        pyramid = []
        for i, block in enumerate(self.blocks):
            h, tokens = block(h, tokens)
            if i >= self.cfg.stem_layers - 1:  # the last stem block's output is level 1, each later block one more
                pyramid.append(h)
        return pyramid, tokens

    def heads(self, pyramid: list[torch.Tensor], tokens) -> dict:
        """Per-location logits of any further heads (subclasses), each [B, P]."""
        return {}

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> Output:
        """x [B, T, D] snippet features, text [K, E] frozen class embeddings."""
        pyramid, tokens = self.encode(x, text)
        classes = F.normalize(self.classifier_text(text, tokens), dim=-1)
        h = F.normalize(self.cls_head(pyramid), dim=-1)  # [B, P, E]
        similarity = h @ (classes.transpose(-2, -1) if classes.dim() == 3 else classes.T)
        cls = self.logit_scale.exp().clamp(max=100) * similarity + self.cls_bias  # open-vocabulary classifier
        level = torch.cat([torch.full((z.shape[1],), i, device=x.device) for i, z in enumerate(pyramid)])
        offsets = torch.relu(self.reg_scale[level, None] * self.reg_head(pyramid))
        return Output(cls, offsets, self.heads(pyramid, tokens))


# ---------------------------------------------------------------------------------------------
# Locations and label assignment
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Points:
    """Every location of the pyramid, level by level: centre (snippet grid units), stride, regression range."""

    centre: np.ndarray  # [P]
    stride: np.ndarray  # [P]
    low: np.ndarray  # [P]
    high: np.ndarray  # [P]
    lengths: tuple[int, ...]

    @classmethod
    def make(cls, T: int, cfg: Config) -> "Points":
        centre, stride, low, high, lengths = [], [], [], [], []
        L = T
        for level in range(cfg.levels):
            s = 2 ** level
            centre.append((np.arange(L) + 0.5) * s)  # location i of level l covers snippets [i s, (i + 1) s)
            stride.append(np.full(L, s, np.float64))
            low.append(np.full(L, 0.0 if level == 0 else cfg.regression_base * 2 ** (level - 1)))
            high.append(np.full(L, np.inf if level == cfg.levels - 1 else cfg.regression_base * 2 ** level))
            lengths.append(L)
            L = (L + 1) // 2  # stride-2 convolution / pooling with padding 1
        return cls(*(np.concatenate(a) for a in (centre, stride, low, high)), tuple(lengths))


@dataclass(frozen=True)
class Targets:
    cls: np.ndarray  # [N, P, K] float32 one-hot (several instances of equal length: several ones)
    offsets: np.ndarray  # [N, P, 2] distances to start / end of the assigned instance, in strides
    positive: np.ndarray  # [N, P] bool
    centre_weight: np.ndarray  # [N, P] float32: position of a positive location in its instance (Ti-FAD's soft target)


def assign_targets(videos, classes, T: int, points: Points, cfg: Config, soft_target: str = "centre",
                   soft_sigma: float = 0.5) -> Targets:
    """ActionFormer's label assignment (centre sampling, regression ranges, shortest instance) for every video.
    Instances are in seconds; locations in snippets.

    ``centre_weight`` (used by Ti-FAD's soft foreground head): ``centre``: exp(-½ (2 (t - c) / (σ len))²) of the
    location t's distance to its instance's centre c (1 at the centre, exp(-½ σ⁻²) at the boundaries);
    ``code``: exp(-½ max(d_s, d_e)²) of the stride-normalised distances, as Ti-FAD's released code computes it.
    """
    index = {c: k for k, c in enumerate(classes)}
    N, P, K = len(videos), len(points.centre), len(classes)
    cls = np.zeros((N, P, K), np.float32)
    offsets = np.zeros((N, P, 2), np.float32)
    positive = np.zeros((N, P), bool)
    weight = np.zeros((N, P), np.float32)
    c, stride = points.centre[:, None], points.stride[:, None]
    for n, video in enumerate(videos):
        if not video.instances:
            continue
        segs = np.clip(np.array([[i.start, i.end] for i in video.instances], np.float64), 0, video.duration)
        segs = segs * T / video.duration
        labels = np.array([index[i.label] for i in video.instances])
        start, end = segs[None, :, 0], segs[None, :, 1]  # [1, M]
        left, right = c - start, end - c  # [P, M]
        middle = (start + end) / 2
        inside = ((c - np.maximum(middle - cfg.center_radius * stride, start) > 0)
                  & (np.minimum(middle + cfg.center_radius * stride, end) - c > 0))  # centre sampling
        reach = np.maximum(left, right)
        in_range = (reach >= points.low[:, None]) & (reach <= points.high[:, None])
        length = np.where(inside & in_range, end - start, np.inf)  # [P, M]
        shortest = length.min(1)
        pos = np.isfinite(shortest)
        ties = (length <= shortest[:, None] + 1e-3) & np.isfinite(length)
        for m in range(len(labels)):  # one-hot of every tied instance's class
            cls[n, ties[:, m], labels[m]] = 1.0
        chosen = length.argmin(1)
        rows = np.arange(P)
        d = np.stack([left[rows, chosen], right[rows, chosen]], 1) / points.stride[:, None]
        offsets[n][pos] = d[pos]
        positive[n] = pos
        if soft_target == "centre":
            span = (end - start)[0, chosen]
            w = np.exp(-0.5 * (2 * (points.centre - middle[0, chosen]) / (soft_sigma * np.maximum(span, 1e-6))) ** 2)
        else:
            w = np.exp(-0.5 * d.max(1) ** 2)
        weight[n] = np.where(pos, w, 0.0)
    return Targets(cls, offsets, positive, weight)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed 1-D DIoU loss of (start, end) distances from the same location [M, 2]:
    1 - IoU + (centre distance / enclosing length)²."""
    ps, pe, ts, te = pred[:, 0], pred[:, 1], target[:, 0], target[:, 1]
    inter = torch.minimum(ps, ts) + torch.minimum(pe, te)
    union = (ps + pe) + (ts + te) - inter
    iou = inter / union.clamp(min=1e-8)
    enclosing = torch.maximum(ps, ts) + torch.maximum(pe, te)
    rho = 0.5 * ((pe - ps) - (te - ts))
    return (1 - iou + (rho / enclosing.clamp(min=1e-8)) ** 2).sum()


# ---------------------------------------------------------------------------------------------
# The method plugin
# ---------------------------------------------------------------------------------------------

@register_method("ovactionformer")
class OvActionFormer(Method):
    """Open-vocabulary ActionFormer (module doc): pyramid of local-attention transformers, per-location
    classification against frozen class-text embeddings and boundary regression, Soft-NMS."""

    Config = Config
    PAPER = PAPER
    Net = OvActionFormerNet
    reports_epochs = True

    def __init__(self, config: Config, context):
        super().__init__(config, context)
        self.model: OvActionFormerNet | None = None
        self.points: Points | None = None
        self._final: tuple | None = None  # (test view, outputs) of the trained model, for the analysis hooks

    def _log(self, line: str) -> None:
        self.context.log(f"{self.name}: {line}")

    def class_text(self, classes) -> torch.Tensor:
        """[K, E] frozen unit-norm class embeddings (the run's templates), cached by the text encoder."""
        from benchmark.text.clip import class_embeddings  # loads open_clip: only when a job runs

        if self.context.text_encoder is None:
            raise ConfigError(f"{self.name}: needs a text encoder (MethodContext.text_encoder)")
        emb = class_embeddings(self.context.text_encoder, list(classes), self.context.cache_dir)
        return torch.as_tensor(emb, device=device_of(self.context))

    def targets(self, videos, classes, T: int) -> Targets:
        return assign_targets(videos, classes, T, self.points, self.config)

    def losses(self, out: Output, cls: torch.Tensor, offsets: torch.Tensor, positive: torch.Tensor,
               weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """ActionFormer's loss terms for a batch, each / #positive locations (``weight``: Ti-FAD's soft targets)."""
        cfg = self.config
        npos = positive.sum().clamp(min=1)
        target = cls * (1 - cfg.label_smoothing) + cfg.label_smoothing / (cls.shape[-1] + 1)
        losses = {"cls": sigmoid_focal_loss(out.cls_logits.float(), target, cfg.focal_gamma, cfg.focal_alpha).sum() / npos,
                  "reg": diou_loss_1d(out.offsets.float()[positive], offsets[positive]) / npos}
        return losses

    def loss_weights(self) -> dict[str, float]:
        return {"cls": 1.0, "reg": self.config.reg_weight}

    def fit(self, train_view) -> None:
        cfg, device = self.config, device_of(self.context)
        text = self.class_text(train_view.classes)  # first: building the text tower (cold cache) draws torch's RNG
        generator = seed_everything(self.context.seed)
        N, T, D = train_view.features.shape
        self.points = Points.make(T, cfg)
        targets = self.targets(train_view.videos, train_view.classes, T)
        self.model = model = self.Net(cfg, D, text.shape[1]).to(device)
        decay = [p for p in model.parameters() if p.dim() > 1]  # no weight decay on norms, biases and scales
        rest = [p for p in model.parameters() if p.dim() <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, fused=True)
        fitted, held = convergence.holdout_split(N, cfg.convergence, self.context.seed)
        data = [as_tensor(train_view.features, device), as_tensor(targets.cls, device),
                as_tensor(targets.offsets, device), as_tensor(targets.positive, device, torch.bool),
                as_tensor(targets.centre_weight, device)]
        fit_data = [t[torch.as_tensor(fitted)] for t in data]
        held_data = [t[torch.as_tensor(held)] for t in data]
        weights = self.loss_weights()

        def step(idx) -> dict[str, float]:
            x, *batch = (t[idx] for t in fit_data)
            with autocast(device):
                losses = self.losses(model(x, text), *batch)
                loss = sum(weights[k] * v for k, v in losses.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            return {k: v.item() for k, v in losses.items()}

        def heldout_loss() -> float:
            total = 0.0
            for idx in minibatches(len(held), 4 * cfg.batch_size, None, shuffle=False):
                x, *batch = (t[idx] for t in held_data)
                with autocast(device):
                    losses = self.losses(model(x, text), *batch)
                total += sum(weights[k] * float(v) for k, v in losses.items()) * len(idx) / len(held)
            return total

        self._final = None
        record = convergence.train(cfg.convergence, cfg.epochs, len(fitted), cfg.batch_size, step,
                                   heldout_loss if len(held) else None, model, optimizer, generator, self._log,
                                   on_epoch=self.context.epoch_end)
        self.context.ledger.trained(self.name, record)
        self._log(f"trained {record['steps']} steps ({record['epochs']} epochs), stopped: {record['stopped']}")

    def location_scores(self, out: Output) -> torch.Tensor:
        """[B, P, K] detection score of each (location, class); Ti-FAD fuses its foreground heads here."""
        return torch.sigmoid(out.cls_logits.float())

    @torch.no_grad()
    def outputs(self, test_view) -> tuple[np.ndarray, np.ndarray]:
        """Scores [N, P, K] of the test classes and segments [N, P, 2] (snippet grid units) of every location."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: predict() before fit()")
        cfg, device, model = self.config, device_of(self.context), self.model.eval()
        text = self.class_text(test_view.classes)
        x = as_tensor(test_view.features, device)
        centre = torch.as_tensor(self.points.centre, dtype=torch.float32, device=device)
        stride = torch.as_tensor(self.points.stride, dtype=torch.float32, device=device)
        scores, segments = [], []
        for idx in minibatches(len(x), 4 * cfg.batch_size, None, shuffle=False):
            with autocast(device):
                out = model(x[idx], text)
            scores.append(self.location_scores(out).cpu())
            d = out.offsets.float() * stride[:, None]
            segments.append(torch.stack([centre - d[..., 0], centre + d[..., 1]], -1).clamp(0, test_view.T).cpu())
        return torch.cat(scores).numpy(), torch.cat(segments).numpy()

    def predict(self, test_view) -> dict[str, list[dict]]:
        scores, segments = self.outputs(test_view)
        return {video.id: video_detections(self.config, scores[n], segments[n], test_view.classes, test_view.T,
                                           video.duration) for n, video in enumerate(test_view.videos)}

    def final_outputs(self, test_view) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`outputs` of the trained model, computed once per test view for the analysis hooks."""
        if self._final is None or self._final[0] is not test_view:
            self._final = (test_view, self.outputs(test_view))
        return self._final[1]

    def snippet_scores(self, scores: np.ndarray) -> np.ndarray:
        """[N, P, K] location scores -> [N, T, K]: each snippet takes, per class, the best score of the locations
        covering it on every level (location i of level l covers snippets [i 2^l, (i + 1) 2^l)), so that a long
        segment is read from the coarse levels that are trained to detect it."""
        T, out, offset = self.points.lengths[0], None, 0
        for level, length in enumerate(self.points.lengths):
            covering = np.minimum(np.arange(T) >> level, length - 1) + offset
            out = scores[:, covering] if out is None else np.maximum(out, scores[:, covering])
            offset += length
        return out

    def classify_segments(self, test_view, segments: dict[str, list[list[float]]]) -> dict[str, list[dict]]:
        """Given segments (seconds) labelled by the mean over their snippets of :meth:`snippet_scores`: the
        ``top_k_labels`` best classes, score = that mean (ActionFormer has no such readout; ours)."""
        scores, _ = self.final_outputs(test_view)
        return label_given_segments(test_view, self.snippet_scores(scores), segments, self.config.top_k_labels)

    def proposals(self, test_view) -> dict[str, list[dict]]:
        """Class-agnostic: every location's decoded segment scored by its best class, the inference of
        :func:`video_detections` over that one score (Soft-NMS, at most ``max_detections``)."""
        scores, segments = self.final_outputs(test_view)
        out = {}
        for n, video in enumerate(test_view.videos):
            found = video_detections(self.config, scores[n].max(-1, keepdims=True), segments[n], ["action"],
                                     test_view.T, video.duration)
            out[video.id] = [{"segment": d["segment"], "score": d["score"]} for d in found]
        return out


def video_detections(cfg: Config, scores: np.ndarray, segments: np.ndarray, names, T: int,
                     duration: float) -> list[dict]:
    """One video's detections from its location scores [P, K] and segments [P, 2] (ActionFormer's inference):
    candidates above ``pre_nms_thresh``, the ``pre_nms_topk`` best, longer than ``min_length``; Soft-NMS (per class
    unless ``multiclass_nms`` is off); the ``max_detections`` best, in seconds."""
    flat = scores.ravel()
    candidates = np.flatnonzero(flat > cfg.pre_nms_thresh)
    candidates = candidates[np.argsort(-flat[candidates], kind="stable")[:cfg.pre_nms_topk]]
    location, label = np.divmod(candidates, scores.shape[1])
    segs, score = segments[location].astype(np.float64), flat[candidates].astype(np.float64)
    keep = segs[:, 1] - segs[:, 0] > cfg.min_length
    segs, score, label = segs[keep], score[keep], label[keep]
    groups = [np.flatnonzero(label == k) for k in np.unique(label)] if cfg.multiclass_nms else [np.arange(len(label))]
    picked, decayed = [], []
    for group in groups:
        kept, kept_scores = soft_nms(segs[group], score[group], cfg.soft_nms_sigma, max_keep=cfg.max_detections)
        picked.append(group[kept])
        decayed.append(kept_scores)
    if not picked:
        return []
    picked, decayed = np.concatenate(picked), np.concatenate(decayed)
    order = np.argsort(-decayed, kind="stable")[:cfg.max_detections]
    seconds = snippets_to_seconds(segs[picked[order]], T, duration)
    return [{"segment": [float(s), float(e)], "label": str(names[label[picked[i]]]), "score": float(decayed[i])}
            for (s, e), i in zip(seconds, order)]
