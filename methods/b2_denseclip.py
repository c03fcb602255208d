"""B-II: the one-stage DenseCLIP-style baseline of STALE (§4.1 "Competitors" (3), Tables 1-2).

DenseCLIP (Rao et al., CVPR 2022) turns CLIP's image-text matching into dense pixel-text matching,
with *context-aware prompting*: class text embeddings are refined by the image they are matched
against. Here pixels are snippets and the image is the video:

    X [B, T, D] --temporal encoder--> F [B, T, C] --W_v--> V [B, T, E]        (snippets in text space)
    t = CLIP_text([ctx_1..ctx_n, name_k]) for the K classes, + a learned background   [K+1, E]
    t <- t + γ ⊙ Dec(t, [mean_t V; V])          post-model prompting: text queries attend to the video
    S = norm(V) · norm(t)ᵀ / τ                  dense snippet-text score map [B, T, K+1]
    (a, s, e) = σ(H_loc(F))                     class-agnostic actionness, start, end [B, T, 3]

and the loss is per-snippet cross-entropy of S over the K seen classes + background, plus weighted
BCE on actionness, start and end. Inference groups snippets into class-agnostic segments
(actionness runs at several thresholds and start/end peak pairs, ``methods.modules.grouping``),
labels each by its mean class probabilities (top-k), scores it as class probability × mean
actionness × start and end probabilities at its boundaries, and applies Soft-NMS. Unlike STALE, every snippet (background included) is matched
and updates the text: no class-agnostic representation masking, the difference Table 1 measures.

Deviations from DenseCLIP (an image segmenter) and why:
- no image backbone: the frozen video features are the "dense visual embeddings"; a small temporal
  encoder (no positional encoding, as STALE's) and a linear map W_v into the text space stand in
  for CLIP's attention-pooled feature map; the global token z̄ is the temporal mean of V;
- TAD needs a background class and boundaries: a learned background embedding (as STALE's) is
  appended to the K class embeddings, and a localisation head (actionness/start/end, BMN-like
  targets) replaces the FPN segmentation decoder; the score map itself is the classifier (DenseCLIP's
  "identity head" with its τ = 0.07) instead of being concatenated into a decoder;
- the CoOp contexts (shared by all classes) start as every learned-prompt method's here
  (``benchmark.text.prompts.N_CTX`` / ``CTX_INIT``: 4 random vectors, as DenseCLIP's; PAPER: 8);
- the text tower is frozen by default (DenseCLIP: lr_mult 0); ``fine_tune_text`` unfreezes it;
- class probabilities at test time are the softmax over the K test classes, background left out:
  the localisation head decides foreground, the classifier only which class;
- defaults are shrunk for the 2-core synthetic suite (``hidden`` 32, one decoder layer of width 32,
  no dropout, lr 5e-3) and train by the benchmark's convergence rule (``methods.modules.convergence``:
  until L on held-out training videos stops improving); ``PAPER`` (``recipe: paper``) restores
  DenseCLIP's decoder (3 layers, width 256, dropout 0.1), optimiser (AdamW, lr 1e-4, weight decay
  1e-4) and STALE's fixed 15 epochs, since STALE trained B-II with its own recipe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.harness.registry import ConfigError, Method, register_method
from benchmark.text.clip import load_text_tower
from benchmark.text.prompts import CTX_INIT, N_CTX, PromptLearner
from methods.modules import convergence
from methods.modules.convergence import Convergence
from methods.modules.grouping import (boundary_pairs, label_given_segments, segment_means, segments_to_detections,
                                      threshold_runs, top_k_labels, unique_segments)
from methods.modules.losses import weighted_bce
from methods.modules.temporal import TransformerEmbedding
from methods.modules.training import as_tensor, autocast, device_of, minibatches, seed_everything


@dataclass(frozen=True)
class Config:
    # temporal encoder (snippet features -> F_vis)
    hidden: int = 32  # C
    temporal_layers: int = 1
    temporal_heads: int = 2
    # prompting
    n_ctx: int = N_CTX  # learnable contexts shared by all classes, when ctx_init is "" (random init, as DenseCLIP)
    ctx_init: str = CTX_INIT  # or the contexts start as these words' embeddings (sets n_ctx)
    fine_tune_text: bool = False
    decoder_width: int = 32
    decoder_layers: int = 1
    decoder_heads: int = 2
    gamma_init: float = 1e-4  # γ, per channel: keeps the language prior at the start
    tau: float = 0.07  # temperature of the snippet-text score map
    dropout: float = 0.0
    # localisation targets and loss
    boundary_radius: int = 1  # start/end target: the boundary snippet and this many on each side
    loc_weight: float = 1.0
    # training: the shared convergence rule (methods/modules/convergence.py); epochs is its cap
    convergence: Convergence = Convergence()
    epochs: int = 30  # the cap (synthetic suite: the plateau stops after 12-17)
    batch_size: int = 16
    lr: float = 5e-3
    weight_decay: float = 1e-4
    # inference
    actionness_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    peak_fraction: float = 0.5  # boundary candidates: local peaks or >= this fraction of the video's max
    max_boundary_candidates: int = 6
    min_length: int = 1  # snippets
    top_k_labels: int = 2
    soft_nms_sigma: float = 0.5
    max_detections: int = 100


def check_config(cfg: Config) -> None:
    """One-line errors for values the model cannot run with."""
    problems = [
        (cfg.hidden % cfg.temporal_heads != 0, f"hidden={cfg.hidden} must be divisible by temporal_heads={cfg.temporal_heads}"),
        (cfg.decoder_width % cfg.decoder_heads != 0, f"decoder_width={cfg.decoder_width} must be divisible by decoder_heads={cfg.decoder_heads}"),
        (min(cfg.hidden, cfg.temporal_layers, cfg.decoder_layers, cfg.n_ctx, cfg.epochs, cfg.batch_size) < 1,
         "hidden, temporal_layers, decoder_layers, n_ctx, epochs and batch_size must be >= 1"),
        (cfg.tau <= 0 or cfg.lr <= 0, f"tau and lr must be > 0, got tau={cfg.tau}, lr={cfg.lr}"),
        (not cfg.actionness_thresholds or not all(0 < t < 1 for t in cfg.actionness_thresholds),
         f"actionness_thresholds must be a non-empty tuple in (0, 1), got {cfg.actionness_thresholds}"),
        (not 0 < cfg.peak_fraction <= 1, f"peak_fraction must be in (0, 1], got {cfg.peak_fraction}"),
        (min(cfg.top_k_labels, cfg.max_detections, cfg.min_length, cfg.max_boundary_candidates) < 1,
         "top_k_labels, max_detections, min_length and max_boundary_candidates must be >= 1"),
        (not 0 <= cfg.dropout < 1 or cfg.boundary_radius < 0 or cfg.soft_nms_sigma <= 0,
         "dropout must be in [0, 1), boundary_radius >= 0, soft_nms_sigma > 0"),
    ]
    for bad, message in problems:
        if bad:
            raise ConfigError(f"b2_denseclip: {message}")


class ContextDecoder(nn.Module):
    """DenseCLIP's post-model prompting decoder: text queries, visual context as keys and values."""

    def __init__(self, embed_dim: int, cfg: Config):
        super().__init__()
        width = cfg.decoder_width
        self.memory_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(width, cfg.decoder_heads, 4 * width, cfg.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.decoder_layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        memory, x = self.memory_proj(visual), self.text_proj(text)
        for layer in self.layers:
            x = layer(x, memory)  # self-attention among classes, cross-attention to the snippets, MLP
        return self.out_proj(x)


class DenseClipTAD(nn.Module):
    def __init__(self, in_dim: int, tower, class_names, cfg: Config):
        super().__init__()
        embed_dim = tower.embed_dim
        self.prompt = PromptLearner(tower, class_names, None if cfg.ctx_init else cfg.n_ctx, cfg.ctx_init or None,
                                    with_background=True, fine_tune_text=cfg.fine_tune_text)
        self.temporal = TransformerEmbedding(in_dim, cfg.hidden, cfg.temporal_layers, cfg.temporal_heads, cfg.dropout)
        self.visual_proj = nn.Linear(cfg.hidden, embed_dim)  # W_v: snippets into the text space
        self.context_decoder = ContextDecoder(embed_dim, cfg)
        self.gamma = nn.Parameter(torch.full((embed_dim,), cfg.gamma_init))
        self.loc_head = nn.Sequential(nn.Conv1d(cfg.hidden, cfg.hidden, 3, padding=1), nn.ReLU(),
                                      nn.Conv1d(cfg.hidden, 3, 1))
        self.tau = cfg.tau

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D], text [K+1, E] -> (score map [B, T, K+1], actionness/start/end logits [B, T, 3])."""
        f = self.temporal(x)  # F_vis [B, T, C]
        v = self.visual_proj(f)  # [B, T, E]
        context = torch.cat([v.mean(dim=1, keepdim=True), v], dim=1)  # visual context [z̄; z]
        t = text.expand(len(x), -1, -1)
        t = t + self.gamma * self.context_decoder(t, context)  # t <- t + γ ⊙ Dec(t, [z̄; z])
        scores = F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).transpose(1, 2) / self.tau  # S = v̂ t̂ᵀ / τ
        loc = self.loc_head(f.transpose(1, 2)).transpose(1, 2)  # logits of actionness, start, end
        return scores, loc


def boundary_targets(masks: np.ndarray, fg: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Start/end targets [N, T] from the per-snippet instance masks: 1 within ``radius`` of the first
    (last) snippet of every instance that owns a snippet."""
    N, T = fg.shape
    n, t = np.nonzero(fg)
    rows = masks[n, t].astype(bool)  # the instance mask of each action snippet
    first, last = rows.argmax(axis=1), T - 1 - rows[:, ::-1].argmax(axis=1)
    start, end = np.zeros((N, T), np.float32), np.zeros((N, T), np.float32)
    for shift in range(-radius, radius + 1):
        start[n, np.clip(first + shift, 0, T - 1)] = 1.0
        end[n, np.clip(last + shift, 0, T - 1)] = 1.0
    return start, end


def localisation_score(loc: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Class-agnostic confidence of segments [lo, hi) of one video: mean actionness × p_start(lo) ×
    p_end(hi - 1), BSN's proposal score with mean actionness as the content term. Mean actionness
    alone cannot tell an action from its own sub-segments; the boundary terms can."""
    return segment_means(loc[:, 0], segments) * loc[segments[:, 0], 1] * loc[segments[:, 1] - 1, 2]


@register_method("b2_denseclip")
class DenseClipBaseline(Method):
    """B-II: dense snippet-text matching with context-aware prompting + class-agnostic localisation."""

    Config = Config
    # The paper recipe, as overrides of the defaults: DenseCLIP's context decoder (3 layers of width 256,
    # 4 heads, dropout 0.1), 8 contexts and optimiser (AdamW, lr 1e-4, weight decay 1e-4); STALE's 15
    # epochs and a temporal encoder of CLIP's width. Batch size is in neither paper.
    PAPER = {"hidden": 512, "temporal_heads": 8, "n_ctx": 8, "ctx_init": "", "decoder_width": 256,
             "decoder_layers": 3, "decoder_heads": 4, "dropout": 0.1, "epochs": 15, "batch_size": 16, "lr": 1e-4,
             "weight_decay": 1e-4, "convergence": {"rule": "epochs"}}

    def __init__(self, config: Config, context):
        check_config(config)
        super().__init__(config, context)
        self.model: DenseClipTAD | None = None

    def fit(self, train_view) -> None:
        cfg, device = self.config, device_of(self.context)
        generator = seed_everything(self.context.seed)
        tower = load_text_tower(self.context.text_encoder, device)
        self.model = model = DenseClipTAD(train_view.features.shape[-1], tower, train_view.classes, cfg).to(device)
        targets = train_view.targets
        start, end = boundary_targets(targets.masks, targets.fg, cfg.boundary_radius)
        data = [as_tensor(train_view.features, device), as_tensor(targets.cls, device, torch.int64),
                as_tensor(np.stack([targets.fg, start, end], axis=-1), device)]  # x, cls, loc targets [N, T, 3]
        fitted, held = convergence.holdout_split(len(train_view.videos), cfg.convergence, self.context.seed)
        x, cls, loc_target = (t[torch.as_tensor(fitted)] for t in data)  # the videos trained on
        held_data = [t[torch.as_tensor(held)] for t in data]
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def step(idx) -> dict[str, float]:
            with autocast(device):
                losses = self.losses(x[idx], cls[idx], loc_target[idx])
            optimiser.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimiser.step()
            return {name: value.item() for name, value in losses.items()}

        def heldout_loss() -> float:  # video-weighted mean of L over the held-out videos
            total = 0.0
            for idx in minibatches(len(held), 4 * cfg.batch_size, None, shuffle=False):
                with autocast(device):
                    total += float(self.losses(*(t[idx] for t in held_data))["loss"]) * len(idx)
            return total / len(held)

        record = convergence.train(cfg.convergence, cfg.epochs, len(fitted), cfg.batch_size, step,
                                   heldout_loss if len(held) else None, model, optimiser, generator,
                                   lambda line: self.context.log(f"b2_denseclip: {line}"))
        self.context.ledger.trained("b2_denseclip", record)
        self.context.log(f"b2_denseclip: trained {record['steps']} steps ({record['epochs']} epochs), "
                         f"stopped: {record['stopped']}")

    def losses(self, x: torch.Tensor, cls: torch.Tensor, loc_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """L = CE(S, y) over K+1 classes + λ_loc · Σ wBCE over actionness, start, end."""
        scores, loc = self.model(x, self.model.prompt())  # text tower once per step, for all classes
        classification = F.cross_entropy(scores.flatten(0, 1).float(), cls.flatten())
        localisation = sum(weighted_bce(loc[..., j].float(), loc_target[..., j]) for j in range(3))
        return {"loss": classification + self.config.loc_weight * localisation,
                "classification": classification, "localisation": localisation}

    @torch.no_grad()
    def snippet_outputs(self, test_view) -> tuple[np.ndarray, np.ndarray]:
        """Per snippet: class probabilities over the test classes [N, T, K] (background left out: the
        localisation head decides foreground) and actionness/start/end [N, T, 3]."""
        if self.model is None:
            raise RuntimeError("b2_denseclip: predict before fit")
        device = device_of(self.context)
        model = self.model.eval()
        model.prompt.set_class_names(test_view.classes)
        text = model.prompt()
        x = as_tensor(test_view.features, device)
        probs, locs = [], []
        for idx in minibatches(len(x), 4 * self.config.batch_size, None, shuffle=False):
            with autocast(device):
                scores, loc = model(x[idx], text)
            probs.append(torch.softmax(scores[..., :-1].float(), dim=-1).cpu())
            locs.append(torch.sigmoid(loc.float()).cpu())
        return torch.cat(probs).numpy(), torch.cat(locs).numpy()

    def candidate_segments(self, loc: np.ndarray) -> np.ndarray:
        """Class-agnostic segments of one video [M, 2] (snippets): actionness runs + boundary pairs."""
        cfg, T = self.config, len(loc)
        runs = threshold_runs(loc[:, 0], cfg.actionness_thresholds, cfg.min_length)
        pairs = boundary_pairs(loc[:, 1], loc[:, 2], cfg.peak_fraction, T, cfg.max_boundary_candidates)
        return unique_segments(np.concatenate([runs, pairs]), cfg.min_length)

    def predict(self, test_view) -> dict[str, list[dict]]:
        cfg, classes = self.config, np.asarray(test_view.classes)
        probs, loc = self.snippet_outputs(test_view)
        detections = {}
        for n, video in enumerate(test_view.videos):
            segments = self.candidate_segments(loc[n])
            class_probs = segment_means(probs[n], segments)
            rows, labels = top_k_labels(class_probs, cfg.top_k_labels)
            scores = class_probs[rows, labels] * localisation_score(loc[n], segments)[rows]
            detections[video.id] = segments_to_detections(segments[rows], classes[labels], scores, test_view.T,
                                                           video.duration, cfg.soft_nms_sigma, cfg.max_detections)
        return detections

    def proposals(self, test_view) -> dict[str, list[dict]]:
        """Class-agnostic segments with their localisation scores (Soft-NMS, at most max_detections)."""
        cfg = self.config
        _, loc = self.snippet_outputs(test_view)
        out = {}
        for n, video in enumerate(test_view.videos):
            segments = self.candidate_segments(loc[n])
            found = segments_to_detections(segments, [""] * len(segments), localisation_score(loc[n], segments),
                                           test_view.T, video.duration, cfg.soft_nms_sigma, cfg.max_detections)
            out[video.id] = [{"segment": d["segment"], "score": d["score"]} for d in found]
        return out

    def classify_segments(self, test_view, segments: dict[str, list[list[float]]]) -> dict[str, list[dict]]:
        """Given segments (seconds) labelled by their mean class probabilities: top-k labels, score = prob."""
        probs, _ = self.snippet_outputs(test_view)
        return label_given_segments(test_view, probs, segments, self.config.top_k_labels)

