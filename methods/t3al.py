"""T3AL: test-time adaptation for zero-shot temporal action localisation (Liberatori et al., CVPR 2024).

No training video is looked at: every test video is handled on its own (a sample-based method), with
a few optimisation steps on that video alone, and the adapted parameters are reset before the next.
Sources: the paper (arXiv 2404.05426) and the released code
(github.com/benedettaliberatori/T3AL: src/models/components/tt_method.py, loss.py, configs/model/tt_*.yaml).
The paper's method section could not be read here (only the abstract, the overview caption and summaries):
where it is not known to say otherwise the code is followed, and each choice is said below.

Per test video with snippet features x_t (CLIP joint space, D == E) and the test classes' text
embeddings z_k (the run's prompt templates, unit norm; the code prompts "a video of action {c}"):

1. Video-level pseudo-label (paper: "compare the average visual frames with the textual class names";
   code: ``infer_pseudo_labels``): ŷ = argmax_k softmax(s · cos(mean_t x_t, z_k)), the top-1 class of
   the mean of the raw snippet features (the code computes a top-3 but uses only its first entry).
2. Self-supervised test-time adaptation (paper: fine-tune only the vision and language projectors,
   encoders frozen, re-initialised after every video). Pre-extracted features have no CLIP projection
   layer left to tune, so a learnable linear map W_v [D, D] on the snippet features and one W_t [E, E]
   on the text embeddings stand in for them, both initialised at the identity, one pair per video
   (batched: per-video parameters, ``torch.bmm``). Each of ``steps`` steps (code: 15 ActivityNet, 60
   THUMOS14): the adapted cosine similarity of every snippet to the adapted pseudo-label text is
   smoothed, and the M = round(``pseudo_fraction`` · T) most similar snippets are the pseudo-positives,
   the M least similar the pseudo-negatives (paper: confident foreground / background frames; the code
   instead spreads n frames evenly over its top-(100·n mod T) frames, or over the whole video when
   T <= 100·n, with a random ±10-frame jitter: a frame-rate rule that does not carry over to T snippets
   and is not reproduced; M = 10% of T is a priori, close to the code's n = 20 frames of a ~200-feature
   ActivityNet video). Loss (code default ``ltype: BYOLfeat``; the stored repository, all 41 commits,
   has no "HybridLoss", only ``ByolLoss``): the BYOL-style 2 - 2·cos between the vector of pseudo-positive
   and pseudo-negative similarities and the target (1, ..., 1, 0, ..., 0), label-smoothed by 0.2 (code),
   plus a BYOL term pulling each pseudo-positive feature towards the pseudo-label text. The code reduces
   that second term with a sum over positives and a mean over the D dimensions (a weight of M / D against
   the first term); ``feature_loss="byol"`` (default) takes the per-positive mean of 2 - 2·cos, the usual
   BYOL form (the paper calls its loss BYOL-like), ``"code"`` the released reduction, ``"none"`` drops
   the term (code ``ltype: BYOL``). At the code's learning rates the three gave the same margins to 1e-5 on a planted case.
   Adam, weight decay 1e-4, lr 1e-5 on the text map and 1e-5 x 0.001 on the visual one (code). The code
   also tunes the logit scale: the first term is invariant to it and the second does not use it, so it
   gets no gradient and is left fixed (s = the text tower's logit scale, 100 for CLIP).
3. Localisation (code ``select_segments``): the adapted similarity to the pseudo-label, smoothed
   (centred moving average of ``smoothing`` snippets; code: 20 frames on THUMOS14, none in its final
   ActivityNet setting), is thresholded at its mean over the video (the code's THUMOS14 rule; its final
   ActivityNet commit thresholds un-normalised 100·cos at 0.7, which keeps almost every frame, not used);
   consecutive snippets above it are a segment; the code closes gaps of up to ``stride`` frames (20 /
   200) and drops one-frame segments: ``merge_gap`` = 0 snippets, ``min_length`` = 2 snippets a priori.
   A segment's score is p(ŷ | segment) = softmax_k(s · cos(mean adapted feature of the segment, adapted
   z_k)) at ŷ (code: ``compute_score`` on the segment means, read at the pseudo-label in ``evaluate``).
   ``remove_background`` subtracts the video's mean feature before scoring (code: on for THUMOS14, off
   for ActivityNet). The paper's third step, text-guided region suppression with CoCa frame captions
   (a proposal survives if its caption embedding resembles those of more than half the others), needs a
   captioning model and the frames, which are not here: it is left out. Class-agnostic Soft-NMS (no-op on
   the disjoint segments a threshold gives) and at most ``max_detections`` a video, as every plugin here.
4. Label: ``single_label=True`` (code; the paper's one video-level pseudo-label) gives every segment of a
   video the video's pseudo-label; ``False`` labels each segment by its own class probabilities (as above,
   adapted), its ``top_k_labels`` best classes (default 1).

Compute: the adaptation runs in ``predict`` (and in the analysis hooks, cached per view); the runner's
``predict`` phase measures its wall/CPU time and counts its optimizer steps (one per step per chunk of
``_CHUNK`` videos) through the global hook, so nothing is charged by hand; there is no training record.

No hyper-parameter was tuned on test classes: values are the code's ActivityNet config or a priori.
Deterministic (no randomness at all) and independent of ``context.seed``.

What the loss does: it is the cosine between the vector of pseudo-positive / pseudo-negative similarities and
the smoothed target, so it drives the negatives' similarity towards a small positive fraction of the
positives' (about 0.04 with M = 10 here), not below zero: with positive cosines, as CLIP's are (modality gap), it
pulls the positives up relative to the negatives; on features whose negatives have negative cosine it
raises them towards 0 and narrows the margin (seen on a planted case; tests/test_t3al.py uses positive ones).
At the code's learning rates one video's 15 steps move the similarities by about 1e-3.

Development benchmark (synthetic default profile, seed 1, 75/25 split 0; measured once, defaults above,
nothing tuned), mAP in %:
  t3al (single_label)  avg 2.31, @0.5 5.27   predict 2.3 s wall / 1.6 s CPU, 120 optimizer steps
  clip_training_free   avg 1.96, @0.5 4.86   predict 2.0 s wall / 1.4 s CPU
  analyses of the same jobs: with ground-truth labels t3al 6.04 vs 4.73 (its localisation is the better), with
  ground-truth segments 12.44 vs 35.03 (one video-level pseudo-label caps its classification).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.harness.registry import ConfigError, Method, register_method
from benchmark.text.clip import class_embeddings, load_text_tower
from methods.modules.grouping import (runs, seconds_to_snippets, segment_means, segments_to_detections,
                                      top_k_labels, moving_average)

FEATURE_LOSSES = ("byol", "code", "none")
_CHUNK = 32  # videos adapted at once (memory: 4 · D² floats of parameters and Adam state per video)


@dataclass(frozen=True)
class Config:
    steps: int = 15  # adaptation steps per video (code: ActivityNet 15, THUMOS14 60)
    lr_text: float = 1e-5  # Adam on the text map (code)
    lr_visual: float = 1e-8  # Adam on the visual map (code: lr x 0.001)
    weight_decay: float = 1e-4  # code
    pseudo_fraction: float = 0.1  # M = round(fraction · T) pseudo-positives and as many pseudo-negatives
    label_smoothing: float = 0.2  # code's ByolLoss
    feature_loss: str = "byol"  # byol (paper's form) | code (released reduction) | none (code ltype BYOL)
    smoothing: int = 5  # snippets, odd (1 = none)
    remove_background: bool = False  # subtract the video's mean feature (code: THUMOS14 on, ActivityNet off)
    merge_gap: int = 0  # close gaps of at most this many snippets between runs
    min_length: int = 2  # snippets
    single_label: bool = True  # every segment gets the video's pseudo-label (paper, code)
    top_k_labels: int = 1  # labels per segment when single_label is off, and in classify_segments
    soft_nms_sigma: float = 0.5
    max_detections: int = 100


@dataclass
class Adapted:
    """One test view after adaptation: what localisation and labelling read."""

    pseudo: np.ndarray  # [N] pseudo-label index
    curve: np.ndarray  # [N, T] smoothed adapted cosine similarity to the pseudo-label
    features: torch.Tensor  # [N, T, D] adapted snippet features (background removed if asked), not normalised
    text: torch.Tensor  # [N, K, E] adapted class embeddings, unit norm
    scale: float


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the last axis of [N, T]."""
    return moving_average(np.asarray(x).T, window).T


def byol_loss(pred: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """2 - 2 · <pred / |pred|, (1 - α) · target / |target| + α / L> along the last axis (length L): the code's
    ByolLoss on one vector (its label smoothing applied to the normalised target, not renormalised)."""
    target = F.normalize(target, dim=-1)
    target = (1 - smoothing) * target + smoothing / target.shape[-1]
    return 2 - 2 * (F.normalize(pred, dim=-1) * target.detach()).sum(-1)


def segments_from_curve(curve: np.ndarray, merge_gap: int, min_length: int) -> np.ndarray:
    """T3AL's localisation on one score curve [T]: snippets strictly above the curve's mean, consecutive
    ones (gaps of at most ``merge_gap`` closed) -> [M, 2] ``[lo, hi)`` at least ``min_length`` long."""
    curve = np.asarray(curve, dtype=np.float64)
    found = runs(curve > curve.mean())
    if len(found) and merge_gap > 0:
        merged = [found[0].copy()]
        for lo, hi in found[1:]:
            if lo - merged[-1][1] <= merge_gap:
                merged[-1][1] = hi
            else:
                merged.append(np.array([lo, hi]))
        found = np.stack(merged)
    return found[found[:, 1] - found[:, 0] >= min_length].reshape(-1, 2)


@register_method("t3al")
class T3AL(Method):
    """Per-video pseudo-label, test-time adaptation of linear visual/text maps, mean-threshold localisation."""

    Config = Config
    trains = False
    # the released code's per-dataset settings (configs/model/tt_*.yaml); the default recipe is its ActivityNet one
    PAPER = {"activitynet": {}, "thumos14": {"steps": 60, "remove_background": True}}

    def __init__(self, config: Config, context):
        if config.steps < 0 or config.lr_text < 0 or config.lr_visual < 0 or config.weight_decay < 0:
            raise ConfigError("t3al: steps, lr_text, lr_visual and weight_decay must be >= 0")
        if not 0.0 < config.pseudo_fraction <= 0.5:
            raise ConfigError(f"t3al: pseudo_fraction must be in (0, 0.5], got {config.pseudo_fraction}")
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ConfigError(f"t3al: label_smoothing must be in [0, 1), got {config.label_smoothing}")
        if config.feature_loss not in FEATURE_LOSSES:
            raise ConfigError(f"t3al: feature_loss must be one of {', '.join(FEATURE_LOSSES)}, got {config.feature_loss!r}")
        if config.smoothing < 1 or config.smoothing % 2 == 0:
            raise ConfigError(f"t3al: smoothing must be a positive odd number of snippets, got {config.smoothing}")
        if config.merge_gap < 0 or min(config.min_length, config.top_k_labels, config.max_detections) < 1 \
                or config.soft_nms_sigma <= 0:
            raise ConfigError("t3al: merge_gap must be >= 0, min_length, top_k_labels, max_detections >= 1 "
                              "and soft_nms_sigma > 0")
        super().__init__(config, context)
        self.logit_scale: float | None = None
        self._cache: tuple | None = None

    @classmethod
    def check_features(cls, config: Config, feature_dim: int, text_dim: int) -> None:
        if feature_dim != text_dim:
            raise ConfigError(f"t3al: features are {feature_dim}-d but the text embeddings {text_dim}-d; "
                              "it needs snippet features in CLIP's joint space")

    def fit(self, train_view) -> None:
        """Nothing to learn: T3AL sees no training video."""

    # ---- adaptation -------------------------------------------------------------------------------------

    def adapt(self, test_view) -> Adapted:
        """Pseudo-label and adapt every test video (cached for the view: the hooks reuse it)."""
        key = (id(test_view), id(test_view.features), tuple(test_view.classes))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        text_cfg = self.context.text_encoder
        text = torch.from_numpy(np.asarray(class_embeddings(text_cfg, test_view.classes, self.context.cache_dir),
                                           dtype=np.float32))
        features = np.asarray(test_view.features, dtype=np.float32)
        self.check_features(self.config, features.shape[-1], text.shape[1])
        if self.logit_scale is None:
            self.logit_scale = float(load_text_tower(text_cfg).logit_scale.exp())
        parts = [self._adapt_chunk(torch.from_numpy(features[lo:lo + _CHUNK]), text)
                 for lo in range(0, len(features), _CHUNK)]
        adapted = Adapted(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                          torch.cat([p[2] for p in parts]), torch.cat([p[3] for p in parts]), self.logit_scale)
        self._cache = (key, adapted)
        return adapted

    def pseudo_labels(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[B] top-1 class of the mean snippet feature of each video [B, T, D] (step 1)."""
        logits = self.logit_scale * F.normalize(x.mean(1), dim=-1) @ text.T
        return torch.softmax(logits, -1).argmax(-1)

    def _adapt_chunk(self, x: torch.Tensor, text: torch.Tensor):
        cfg = self.config
        B, T, D = x.shape
        E = text.shape[1]
        pseudo = self.pseudo_labels(x, text)
        background = x.mean(1, keepdim=True) if cfg.remove_background else torch.zeros(B, 1, D)
        W_v = torch.eye(D).repeat(B, 1, 1).requires_grad_(True)  # per video, reset for every video
        W_t = torch.eye(E).repeat(B, 1, 1).requires_grad_(True)
        optimizer = torch.optim.Adam([{"params": [W_t], "lr": cfg.lr_text}, {"params": [W_v], "lr": cfg.lr_visual}],
                                     weight_decay=cfg.weight_decay)
        m = min(max(1, round(cfg.pseudo_fraction * T)), T)
        rows = torch.arange(B)[:, None]
        target = torch.cat([torch.ones(m), torch.zeros(m)]).expand(B, 2 * m)
        for _ in range(cfg.steps):
            t_hat = F.normalize(torch.bmm(text[pseudo][:, None], W_t)[:, 0], dim=-1)  # [B, E]
            with torch.no_grad():  # which snippets are pseudo-positive / negative: index choice, no gradient
                curve = self._curve(torch.bmm(x, W_v) - background, t_hat)
                order = torch.from_numpy(np.argsort(-curve, axis=1, kind="stable").copy())
                chosen = torch.cat([order[:, :m], order[:, T - m:]], 1)  # [B, 2m]: most, then least similar
            v = F.normalize(torch.bmm(x[rows, chosen], W_v), dim=-1)  # [B, 2m, D]
            sim = self.logit_scale * (v * t_hat[:, None]).sum(-1)  # [B, 2m]
            loss = byol_loss(sim, target, cfg.label_smoothing)  # [B]
            if cfg.feature_loss != "none":
                positive = byol_loss(v[:, :m], t_hat[:, None].expand(B, m, E), cfg.label_smoothing)  # [B, m]
                # the code's reduction: (pred · target).sum(dim=0).mean() = Σ_i cos_i / E, i.e. 2 - 2·Σ_i c_i / E
                loss = loss + (positive.mean(1) if cfg.feature_loss == "byol"
                               else 2 - (2 - positive).sum(1) / E)
            optimizer.zero_grad()
            loss.sum().backward()  # videos are independent: the sum gives each its own gradient
            optimizer.step()
        with torch.no_grad():
            adapted_x = torch.bmm(x, W_v) - background
            adapted_text = F.normalize(torch.bmm(text.expand(B, -1, -1), W_t), dim=-1)  # [B, K, E]
            curve = self._curve(adapted_x, adapted_text[torch.arange(B), pseudo])
        return pseudo.numpy(), curve, adapted_x, adapted_text

    def _curve(self, x: torch.Tensor, t_hat: torch.Tensor) -> np.ndarray:
        """[B, T] smoothed cosine similarity of the snippets [B, T, D] to one text per video [B, E]."""
        sim = (F.normalize(x, dim=-1) * t_hat[:, None]).sum(-1).numpy()
        return _smooth(sim, self.config.smoothing)

    # ---- localisation and labelling ----------------------------------------------------------------------

    def segment_probs(self, adapted: Adapted, n: int, segments: np.ndarray) -> np.ndarray:
        """[M, K] class probabilities of each segment ``[lo, hi)`` of video n: softmax of s · cos(mean adapted
        feature of the segment, adapted class embeddings)."""
        means = torch.from_numpy(segment_means(adapted.features[n].numpy(), segments).astype(np.float32))
        logits = adapted.scale * F.normalize(means, dim=-1) @ adapted.text[n].T
        return torch.softmax(logits, -1).numpy()

    def _labelled(self, adapted: Adapted, n: int, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(segment rows, class indices, scores) of video n's segments, by the configured labelling."""
        probs = self.segment_probs(adapted, n, segments)
        if self.config.single_label:
            rows, labels = np.arange(len(segments)), np.full(len(segments), adapted.pseudo[n])
        else:
            rows, labels = top_k_labels(probs, self.config.top_k_labels)
        return rows, labels, probs[rows, labels]

    def _segments(self, adapted: Adapted) -> list[np.ndarray]:
        cfg = self.config
        return [segments_from_curve(c, cfg.merge_gap, cfg.min_length) for c in adapted.curve]

    def predict(self, test_view) -> dict[str, list[dict]]:
        cfg, classes = self.config, np.asarray(test_view.classes)
        adapted = self.adapt(test_view)
        detections = {}
        for n, (video, segments) in enumerate(zip(test_view.videos, self._segments(adapted))):
            rows, labels, scores = self._labelled(adapted, n, segments)
            detections[video.id] = segments_to_detections(segments[rows], classes[labels], scores, test_view.T,
                                                           video.duration, cfg.soft_nms_sigma, cfg.max_detections)
        return detections

    def proposals(self, test_view) -> dict[str, list[dict]]:
        """The class-agnostic segments before labelling, scored p(pseudo-label | segment) (what ranks them)."""
        cfg, adapted = self.config, self.adapt(test_view)
        out = {}
        for n, (video, segments) in enumerate(zip(test_view.videos, self._segments(adapted))):
            scores = self.segment_probs(adapted, n, segments)[:, adapted.pseudo[n]] if len(segments) else np.zeros(0)
            dets = segments_to_detections(segments, np.full(len(segments), ""), scores, test_view.T, video.duration,
                                          cfg.soft_nms_sigma, cfg.max_detections)
            out[video.id] = [{"segment": d["segment"], "score": d["score"]} for d in dets]
        return out

    def classify_segments(self, test_view, segments: dict[str, list[list[float]]]) -> dict[str, list[dict]]:
        """Given segments (seconds) labelled as ``predict`` labels its own: the pseudo-label (single_label)
        or each segment's top_k_labels classes, scored by the segment's adapted class probabilities."""
        classes, adapted, out = np.asarray(test_view.classes), self.adapt(test_view), {}
        for n, video in enumerate(test_view.videos):
            given = np.asarray(segments.get(video.id, []), dtype=np.float64).reshape(-1, 2)
            snippets = seconds_to_snippets(given, video.duration, test_view.T)
            rows, labels, scores = self._labelled(adapted, n, snippets)
            out[video.id] = [{"segment": [float(given[r, 0]), float(given[r, 1])], "label": str(classes[c]),
                              "score": float(s)} for r, c, s in zip(rows, labels, scores)]
        return out
