"""Ti-FAD: "Text-Infused Attention and Foreground-Aware Modeling for Zero-Shot Temporal Action Detection"
(Lee, Kim & Lee, NeurIPS 2024), on top of OV-ActionFormer (:mod:`methods.ovactionformer`).

    class texts z_k -> linear -> text tokens T [B, K, C], carried through every encoder block
    each block (ActionFormer's, then):
      T <- T + MSA(LN(T))                                      text self-attention
      class score map  s_t = max_k cos(Z_t, T_k)               text-video similarity of every snippet
      salient snippets  μ_1..μ_k = the top ``sam_topk`` · L of s    (k per level)
      SAM(t) = max_j exp(-½ ((t - μ_j) / σ_{μ_j})²)             Gaussian salient attentive mask, σ predicted
                                                                per snippet (conv + softplus) or fixed
      TiCA, mutual cross-attention:
        Z <- Z + X-MHA(q = LN(Z), kv = LN(T))                   video attends to the texts
        T <- T + X-MHA(q = LN(T), kv = LN(Z), prior log SAM)    texts attend to the snippets, within the SAM
      FFNs on Z and T
    classification: cos(h(t), T_k^final) at a learnable scale (the text tokens of the last block, per video)
    foreground-aware heads (FAD), on every pyramid location:
      hard (H-FAD): is the location a positive (foreground) location?   focal loss, binary target
      soft (S-FAD): how central is it in its instance?                   focal loss, Gaussian target
      score = sqrt(σ(cls) · σ(soft)) · σ(fg)
    loss = w_cls L_cls + λ_reg L_DIoU + w_fg L_fg + w_soft L_soft (each / #positives)

Sources and choices. The paper's text was not available to us; its abstract, figure and table captions
name the parts (the cross-modal baseline with mutual cross-attention in every layer, TiCA with the salient
attentive mask (SAM) from the text-video similarity, a Gaussian kernel with learnable σ, the soft and hard
foreground-aware heads, each ablated) and the released code (github.com/YearangLee/Ti-FAD, read for
understanding only) gave the rest. Where the two may differ we follow the paper's description and keep the
code's behaviour behind a switch:
- SAM is an attention *prior over the snippets*: added as log SAM to the logits of the texts' attention over
  the snippets (``sam_apply: text_to_video``). The released code instead multiplies each snippet's
  attention logits over the texts by its SAM value (``sam_apply: code``), a per-snippet temperature;
- the Gaussians of the salient snippets are combined by their maximum (``sam_combine: max``); the code sums
  them after merging centres closer than a threshold that scales with the level's length and divides by the
  maximum (``merged_sum``; ``sam_merge`` is that threshold as a fraction of the level: ActivityNet 10/96,
  THUMOS14 100/1152 in the code; our merge groups centres by gaps between neighbours, the code by a running
  average);
- the class score map is the cosine (the code: raw dot products of un-normalised tokens);
- S-FAD's target is a Gaussian of the location's distance to its instance's centre, σ = ``soft_sigma`` of the
  half-length (``soft_target: centre``); the code's target is exp(-½ max(d_s, d_e)²) of the stride-normalised
  boundary distances (``soft_target: code``), which is near 0 except on instances of about two strides;
- every update of the text tokens (self-attention, cross-attention, FFN) and the video's update by the texts go
  through a per-channel layer scale initialised at ``fusion_scale_init`` = 1e-4 (Grounding DINO's bi-attention
  block, which the released cross-attention adapts, has such scales; the released code does not use them).
  Without them the text→video updates pulled every class token towards the same video content and the
  classifier collapsed: 12 tiny training videos fitted to 0.40 mAP@0.5 instead of 1.0 (0.42 with the scales at
  0.1; tests/test_ovactionformer.py's overfitting set);
- one FFN per stream after the cross-attention (the code has one inside its cross-attention module and
  another after it), a scalar classifier bias (the code adds a learned text-dependent bias), regression with
  ActionFormer's ReLU (the code: softplus), the focal loss for both FAD heads as in the code.
Switches for the suite's ablation variants: ``cross_modal`` (off: OV-ActionFormer's encoder, no text in the
blocks; then ``sam`` must be off too), ``sam`` (off: the cross-modal baseline's plain mutual cross-attention),
``soft_fad``, ``hard_fad``. Reduced as OV-ActionFormer (frozen features, width 64, 4 levels, T = 100);
``PAPER`` holds the released configs' values (the paper's Table of hyper-parameters was not available).
The defaults are OV-ActionFormer's, not tuned for Ti-FAD. Measured once on the development benchmark (synthetic
default profile, seed 1, class split 0 at 75/25): avg mAP 2.1 (4.2 at tIoU 0.5; OV-ActionFormer 6.0 / 14.6),
320 steps (10 epochs, plateau), 184 CPU s of training (0.55 s a step of 16 videos against OV-ActionFormer's
0.20: the K text tokens of every video go through every block) and 23 s of inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from benchmark.harness.registry import ConfigError, register_method
from methods.ovactionformer import (Config as BaseConfig, Head, LocalBlock, OvActionFormer, OvActionFormerNet,
                                    Output, Targets, assign_targets, attend)
from methods.modules.losses import sigmoid_focal_loss

SAM_APPLY = ("text_to_video", "code")
SAM_COMBINE = ("max", "merged_sum")
SOFT_TARGETS = ("centre", "code")


@dataclass(frozen=True)
class Config(BaseConfig):
    cross_modal: bool = True  # text tokens and mutual cross-attention in every block (the cross-modal baseline)
    sam: bool = True  # salient attentive mask in the cross-attention (TiCA)
    sam_topk: float = 0.1  # fraction of a level's snippets taken as salient
    sam_sigma: float = 0.0  # Gaussian width in snippets of the level; 0 = predicted per snippet (learnable)
    sam_combine: str = "max"  # max (paper reading) | merged_sum (released code)
    sam_merge: float = 0.1  # merged_sum: merge salient snippets closer than this fraction of the level
    sam_apply: str = "text_to_video"  # text_to_video: log-prior over snippets | code: scales video->text logits
    soft_fad: bool = True  # S-FAD head
    hard_fad: bool = True  # H-FAD head
    soft_target: str = "centre"  # centre (paper reading) | code
    soft_sigma: float = 0.5  # S-FAD target width, fraction of the half-length (soft_target: centre)
    fusion_scale_init: float = 1e-4  # layer scale of every update of the text tokens and of the video by the texts
    w_cls: float = 1.0
    w_fg: float = 1.0
    w_soft: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        for key, allowed in (("sam_apply", SAM_APPLY), ("sam_combine", SAM_COMBINE), ("soft_target", SOFT_TARGETS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"tifad: {key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        problems = [
            (self.sam and not self.cross_modal, "sam needs cross_modal (the mask acts on the cross-attention)"),
            (not 0 < self.sam_topk <= 1, f"sam_topk must be in (0, 1], got {self.sam_topk}"),
            (self.sam_sigma < 0 or self.sam_merge < 0, "sam_sigma and sam_merge must be >= 0"),
            (self.soft_sigma <= 0, f"soft_sigma must be > 0, got {self.soft_sigma}"),
            (min(self.w_cls, self.w_fg, self.w_soft, self.fusion_scale_init) < 0,
             "loss weights and fusion_scale_init must be >= 0"),
        ]
        for bad, message in problems:
            if bad:
                raise ConfigError(f"tifad: {message}")


# The released configs (configs/anet_i3d.yaml, thumos14_i3d.yaml and the loss 0.5 L_cls + L_reg + L_fg + L_soft
# of its training code); the rest of the architecture is ActionFormer's (methods.ovactionformer.PAPER).
_PAPER_COMMON = {"embed_layers": 2, "stem_layers": 2, "levels": 6, "head_layers": 3, "center_radius": 1.5,
                 "dim": 256, "pre_nms_topk": 2000, "w_cls": 0.5, "reg_weight": 1.0,
                 "convergence": {"rule": "epochs", "warmup_steps": 0}}
PAPER = {
    "activitynet": {**_PAPER_COMMON, "heads": 4, "window": 7, "abs_position": True, "lr": 1e-4, "epochs": 11,
                    "batch_size": 16, "weight_decay": 0.05, "grad_clip": 1.0, "label_smoothing": 0.1,
                    "sam_topk": 0.1, "sam_merge": 10 / 96, "soft_nms_sigma": 0.6, "max_detections": 100},
    "thumos14": {**_PAPER_COMMON, "window": 19, "lr": 1e-4, "epochs": 16, "batch_size": 2, "weight_decay": 0.01,
                 "grad_clip": 0.1, "sam_topk": 0.01, "sam_merge": 100 / 1152, "max_detections": 200},
}


class CrossAttention(nn.Module):
    """X-MHA: queries from one stream, keys and values from the other."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, query, source, bias=None, logit_scale=None):
        return self.out(attend(self.q(query), self.k(source), self.v(source), self.heads, bias, logit_scale))


class TiCABlock(LocalBlock):
    """ActionFormer's block with the text stream and text-infused cross-attention (module doc)."""

    def __init__(self, cfg: Config, stride: int):
        super().__init__(cfg, stride)
        dim, hidden = cfg.dim, int(cfg.mlp_ratio * cfg.dim)
        self.cfg = cfg
        self.text_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])
        self.text_self = CrossAttention(dim, cfg.heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.video_from_text = CrossAttention(dim, cfg.heads)
        self.text_from_video = CrossAttention(dim, cfg.heads)
        self.text_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                      nn.Linear(hidden, dim), nn.Dropout(cfg.dropout))
        # layer scales (Grounding DINO's bi-attention, which the released code adapts): text self-attention,
        # video <- text, text <- video, text FFN
        self.gammas = nn.Parameter(torch.full((4, dim), cfg.fusion_scale_init))
        self.sigma = nn.Conv1d(dim, 1, 3, padding=1) if cfg.sam and cfg.sam_sigma == 0 else None
        if self.sigma is not None:  # start at σ ≈ 2 snippets
            nn.init.zeros_(self.sigma.weight)
            nn.init.constant_(self.sigma.bias, math.log(math.expm1(2.0)))

    def salient_mask(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """SAM [B, L] in (0, 1] from the video z [B, L, C] and the text tokens [B, K, C]."""
        cfg, (B, L, _) = self.cfg, z.shape
        score = (F.normalize(z, dim=-1) @ F.normalize(text, dim=-1).transpose(1, 2)).amax(-1)  # class score map
        k = max(1, int(L * cfg.sam_topk))
        centres = score.topk(k, dim=1).indices.sort(dim=1).values  # [B, k]
        if self.sigma is not None:
            sigma = F.softplus(self.sigma(z.transpose(1, 2)).squeeze(1)) + 1e-3  # [B, L]
        else:
            sigma = z.new_full((B, L), cfg.sam_sigma)
        grid = torch.arange(L, device=z.device, dtype=z.dtype)
        if cfg.sam_combine == "max":
            width = sigma.gather(1, centres)
            return torch.exp(-0.5 * ((grid - centres[..., None]) / width[..., None]) ** 2).amax(1)
        # released code: centres closer than sam_merge · L merged into their mean, Gaussians summed, / max
        new = torch.cat([torch.ones_like(centres[:, :1], dtype=torch.bool),
                         centres.diff(dim=1) > cfg.sam_merge * L], dim=1)
        group = F.one_hot(new.long().cumsum(1) - 1, k).to(z.dtype)  # [B, k centres, k groups]
        count = group.sum(1)
        mean = (group * centres[..., None].to(z.dtype)).sum(1) / count.clamp(min=1)
        width = sigma.gather(1, mean.round().long().clamp(0, L - 1))
        bumps = torch.exp(-0.5 * ((grid - mean[..., None]) / width[..., None]) ** 2) * (count > 0)[..., None]
        total = bumps.sum(1)
        return total / (total.amax(1, keepdim=True) + 1e-5)

    def forward(self, z: torch.Tensor, text: torch.Tensor):
        z = self.self_attention(z)
        t = self.text_norms[0](text)
        text = text + self.gammas[0] * self.text_self(t, t)
        sam = self.salient_mask(z, text) if self.cfg.sam else None
        zn, tn = self.cross_norm(z), self.text_norms[1](text)
        if sam is not None and self.cfg.sam_apply == "code":
            dz, dt = self.video_from_text(zn, tn, logit_scale=sam), self.text_from_video(tn, zn)
        else:
            prior = None if sam is None else torch.log(sam + 1e-6)[:, None, None, :]
            dz, dt = self.video_from_text(zn, tn), self.text_from_video(tn, zn, bias=prior)
        z, text = z + self.gammas[1] * self.drop(dz), text + self.gammas[2] * self.drop(dt)
        return z + self.mlp(self.norm2(z)), text + self.gammas[3] * self.text_mlp(self.text_norms[2](text))


class TiFADNet(OvActionFormerNet):
    def __init__(self, cfg: Config, feat_dim: int, text_dim: int):
        super().__init__(cfg, feat_dim, text_dim)
        self.text_in = nn.Linear(text_dim, cfg.dim) if cfg.cross_modal else None
        self.fg_head = Head(cfg.dim, 1, cfg.head_layers, cfg.prior_prob) if cfg.hard_fad else None
        self.soft_head = Head(cfg.dim, 1, cfg.head_layers, cfg.prior_prob) if cfg.soft_fad else None

    def make_block(self, cfg: Config, stride: int) -> nn.Module:
        return TiCABlock(cfg, stride) if cfg.cross_modal else LocalBlock(cfg, stride)

    def class_dim(self, text_dim: int) -> int:
        return self.cfg.dim if self.cfg.cross_modal else text_dim

    def text_tokens(self, text: torch.Tensor, batch: int) -> torch.Tensor | None:
        return self.text_in(text).expand(batch, -1, -1) if self.text_in is not None else None

    def classifier_text(self, text: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        return tokens if tokens is not None else text

    def heads(self, pyramid, tokens) -> dict:
        return {name: head(pyramid).squeeze(-1)
                for name, head in (("fg", self.fg_head), ("soft", self.soft_head)) if head is not None}


@register_method("tifad")
class TiFAD(OvActionFormer):
    """Ti-FAD (module doc): OV-ActionFormer with text-infused cross-attention and foreground-aware heads."""

    Config = Config
    PAPER = PAPER
    Net = TiFADNet

    def targets(self, videos, classes, T: int) -> Targets:
        cfg = self.config
        return assign_targets(videos, classes, T, self.points, cfg, cfg.soft_target, cfg.soft_sigma)

    def losses(self, out: Output, cls, offsets, positive, weight) -> dict[str, torch.Tensor]:
        cfg = self.config
        losses = super().losses(out, cls, offsets, positive, weight)
        npos = positive.sum().clamp(min=1)
        if "fg" in out.extra:  # H-FAD: foreground location or not
            losses["fg"] = sigmoid_focal_loss(out.extra["fg"].float(), positive.float(), cfg.focal_gamma,
                                              cfg.focal_alpha).sum() / npos
        if "soft" in out.extra:  # S-FAD: the soft (Gaussian) foreground target
            losses["soft"] = sigmoid_focal_loss(out.extra["soft"].float(), weight, cfg.focal_gamma,
                                                cfg.focal_alpha).sum() / npos
        return losses

    def loss_weights(self) -> dict[str, float]:
        cfg = self.config
        return {"cls": cfg.w_cls, "reg": cfg.reg_weight, "fg": cfg.w_fg, "soft": cfg.w_soft}

    def location_scores(self, out: Output) -> torch.Tensor:
        p = torch.sigmoid(out.cls_logits.float())
        if "soft" in out.extra:
            p = torch.sqrt(p * torch.sigmoid(out.extra["soft"].float())[..., None])
        if "fg" in out.extra:
            p = p * torch.sigmoid(out.extra["fg"].float())[..., None]
        return p
