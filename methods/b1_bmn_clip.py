"""B-I: the two-stage baseline of STALE (§4.1 "Competitors" (1), Tables 1-3): BMN proposals, each
classified zero-shot by frozen CLIP. Also the shared two-stage plumbing EffPrompt builds on.

    (s, e, p) = BMN(X)                                   class-agnostic proposals, trained on seen classes
    v = mean_{t ∈ [s, e)} X_t                             the proposal's mean snippet feature (CLIP image space)
    z_k = CLIP_text("a video of a person {name_k}.")     frozen hand-crafted prompts of the test classes
                                                          (default: benchmark.text.prompts.HAND_CRAFTED_TEMPLATES)
    P(k | s, e) = softmax_k(τ · cos(v, z_k))              τ = CLIP's logit scale
    score = p · P(k | s, e)                               top-k classes a proposal, Soft-NMS, ≤ 100 a video

The BMN is trained once per (dataset, split, BMN config, seed) and cached; its proposals are cached
per test set (:mod:`methods.bmn`), so B-I, EffPrompt and the oracle analyses share them.

Oracle ("GT proposals", Table 3): ``proposals="gt"`` replaces BMN by the test videos' ground-truth
segments (score 1). It reads ``test_view.gt`` and is an oracle, never a result; suite variants
using it must say so in their name. The ``classify_segments`` hook gives the harness the same
analysis for any segments (GT, jittered GT), and ``proposals`` the localisation-only side.

Not in the paper: features that are not CLIP image features (I3D) cannot be compared with CLIP
text as they are; ``projection="linear"`` then learns a linear map into the text space on the
seen-class GT segments (cross-entropy against the frozen seen-class prompts). With CLIP features
keep the default ``"identity"``, which is B-I as published.

The BMN trains by the benchmark's convergence rule (:mod:`methods.modules.convergence`; ``bmn.epochs``
is its cap); the linear projection is a full-batch fit of ``projection_steps`` steps.
``PAPER`` is the paper-sized BMN with the paper's fixed 9 epochs, applied by the harness for the
profile's ``recipe: paper`` (``benchmark.harness.registry.apply_hparams``, which also sets e.g.
``epochs`` on BMN's config).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.evaluation.postprocess import soft_nms
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import ConfigError, Method, register_method
from benchmark.text.clip import load_text_tower
from benchmark.text.prompts import hand_crafted_embeddings
from methods.bmn import PAPER_BMN, BMNConfig, bmn_proposals, check_bmn_config, fit_bmn
from methods.modules.grouping import seconds_to_snippets, segment_means, top_k_labels
from methods.modules.training import as_tensor, device_of, seed_everything

PROPOSAL_SOURCES = ("bmn", "gt")
CHUNK = 8192  # segments classified at a time


@dataclass(frozen=True)
class TwoStageConfig:
    proposals: str = "bmn"  # "bmn", or "gt": ORACLE, the test ground-truth segments (Table 3)
    bmn: BMNConfig = BMNConfig()
    top_k_labels: int = 2  # classes kept per proposal
    soft_nms_sigma: float = 0.5
    max_detections: int = 100


@dataclass(frozen=True)
class Config(TwoStageConfig):
    projection: str = "identity"  # "identity" (CLIP features) or "linear" (other features, learned on seen classes)
    projection_steps: int = 100  # full-batch Adam steps of the linear map
    projection_lr: float = 1e-2


def unique_gt_segments(test_view) -> SegmentTable:
    """ORACLE proposals: each distinct GT segment of the test videos once, score 1."""
    gt = test_view.gt
    first = {}
    for row, key in enumerate(zip(gt.video, gt.t0, gt.t1)):
        first.setdefault(key, row)  # a segment with several labels (THUMOS14's double labels) once
    keep = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    return SegmentTable(gt.video[keep], gt.t0[keep], gt.t1[keep], np.full(len(keep), "", dtype=str),
                        np.ones(len(keep)))


def training_segments(train_view) -> tuple[SegmentTable, np.ndarray]:
    """Every (seen-class) GT instance of the training videos, and its class index."""
    index = {c: k for k, c in enumerate(train_view.classes)}
    rows = [(v.id, i.start, i.end, i.label) for v in train_view.videos for i in v.instances]
    table = SegmentTable.from_rows(rows, with_score=False)
    return table, np.array([index[label] for label in table.label], dtype=np.int64)


def segments_from_dict(segments: dict) -> SegmentTable:
    """The hook's ``{video_id: [[s, e], ...]}`` as a score-1 table."""
    rows = [(vid, float(s), float(e), "", 1.0) for vid, segs in segments.items() for s, e in segs]
    return SegmentTable.from_rows(rows, with_score=True)


def by_video(video: np.ndarray) -> list[np.ndarray]:
    """Row indices of each distinct value of ``video`` (in order of first appearance), rows ascending."""
    _, first, inverse = np.unique(video, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    return [groups[g] for g in np.argsort(first)]


def snippet_ranges(view, table: SegmentTable) -> tuple[np.ndarray, np.ndarray]:
    """Per table row: the index of its video in the view and the snippets ``[lo, hi)`` it touches."""
    index = {v.id: n for n, v in enumerate(view.videos)}
    unknown = [vid for vid in np.unique(table.video) if vid not in index]
    if unknown:
        raise ValueError(f"segments given for {len(unknown)} videos not in the view, e.g. {unknown[0]!r}")
    video = np.array([index[vid] for vid in table.video], dtype=np.int64)
    duration = np.array([view.videos[n].duration for n in video], dtype=np.float64)[:, None]
    return video, seconds_to_snippets(table.segments, duration, view.T)


class TwoStage(Method):
    """Proposals -> class probabilities per proposal -> detections. Subclasses provide the classifier:
    ``fit_classifier(train_view)`` and ``segment_probabilities(test_view, table) -> [M, K]``."""

    PAPER = {"bmn": PAPER_BMN}  # the paper-sized BMN (B-I has nothing else to size)

    def __init__(self, config: TwoStageConfig, context):
        if config.proposals not in PROPOSAL_SOURCES:
            raise ConfigError(f"{self.name}: proposals must be one of {', '.join(PROPOSAL_SOURCES)}, "
                              f"got {config.proposals!r}")
        if min(config.top_k_labels, config.max_detections) < 1 or config.soft_nms_sigma <= 0:
            raise ConfigError(f"{self.name}: top_k_labels and max_detections must be >= 1, soft_nms_sigma > 0")
        check_bmn_config(config.bmn, f"{self.name}.bmn")
        super().__init__(config, context)
        self.bmn = None
        self.tower = None

    def fit(self, train_view) -> None:
        self.tower = load_text_tower(self.context.text_encoder, device_of(self.context))
        self.fit_classifier(train_view)  # first: a classifier that cannot work fails before BMN trains
        if self.config.proposals == "bmn":
            self.bmn = fit_bmn(train_view, self.config.bmn, self.context)

    def fit_classifier(self, train_view) -> None:
        raise NotImplementedError

    def class_text(self, classes) -> torch.Tensor:
        """[K, E] text features of the classes to predict."""
        raise NotImplementedError

    def segment_probabilities(self, view, table: SegmentTable, text: torch.Tensor) -> np.ndarray:
        """[M, K] class probabilities of the table's segments (at most CHUNK rows at a time)."""
        raise NotImplementedError

    @torch.no_grad()
    def probabilities(self, test_view, table: SegmentTable) -> np.ndarray:
        """Class probabilities of every table row: the text once, the segments in chunks that bound
        the memory (ActivityNet's validation set has ~500k proposals)."""
        text = self.class_text(test_view.classes)
        chunks = [self.segment_probabilities(test_view, table.select(np.arange(i, min(i + CHUNK, len(table)))), text)
                  for i in range(0, len(table), CHUNK)]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(test_view.classes)), np.float32)

    def proposal_table(self, test_view) -> SegmentTable:
        if self.tower is None:
            raise RuntimeError(f"{self.name}: predict before fit")
        if self.config.proposals == "gt":
            self.context.log(f"{self.name}: ORACLE run, ground-truth segments as proposals")
            return unique_gt_segments(test_view)
        return bmn_proposals(self.bmn, test_view, self.context.ledger)

    def predict(self, test_view) -> dict[str, list[dict]]:
        table = self.proposal_table(test_view)
        probs = self.probabilities(test_view, table)
        rows, labels = top_k_labels(probs, self.config.top_k_labels)
        scores = table.score[rows] * probs[rows, labels]  # proposal confidence × class probability
        classes = np.asarray(test_view.classes)
        detections = {v.id: [] for v in test_view.videos}
        for mine in by_video(table.video[rows]):
            segments = table.segments[rows[mine]]
            keep, kept = soft_nms(segments, scores[mine], self.config.soft_nms_sigma,
                                  max_keep=self.config.max_detections)
            detections[table.video[rows[mine[0]]]] = [
                {"segment": [float(segments[i, 0]), float(segments[i, 1])], "label": str(classes[labels[mine[i]]]),
                 "score": float(s)} for i, s in zip(keep, kept)]
        return detections

    def proposals(self, test_view) -> dict[str, list[dict]]:
        """The class-agnostic proposals predict() classifies (BMN's, or GT ones in the oracle)."""
        table = self.proposal_table(test_view)
        out = {v.id: [] for v in test_view.videos}
        for vid, t0, t1, score in zip(table.video, table.t0, table.t1, table.score):
            out[vid].append({"segment": [float(t0), float(t1)], "score": float(score)})
        return out

    def classify_segments(self, test_view, segments: dict[str, list[list[float]]]) -> dict[str, list[dict]]:
        """Given segments (seconds): the top-k classes of each, score = class probability (no NMS)."""
        if self.tower is None:
            raise RuntimeError(f"{self.name}: classify_segments before fit")
        table = segments_from_dict(segments)
        probs = self.probabilities(test_view, table)
        rows, labels = top_k_labels(probs, self.config.top_k_labels)
        classes = np.asarray(test_view.classes)
        out = {vid: [] for vid in segments}
        for r, c in zip(rows, labels):
            out[table.video[r]].append({"segment": [float(table.t0[r]), float(table.t1[r])],
                                        "label": str(classes[c]), "score": float(probs[r, c])})
        return out


@register_method("b1_bmn_clip")
class BmnClip(TwoStage):
    """B-I: BMN proposals + zero-shot CLIP classification of their mean feature."""

    Config = Config

    def __init__(self, config: Config, context):
        super().__init__(config, context)
        if config.projection not in ("identity", "linear"):
            raise ConfigError(f"b1_bmn_clip: projection must be 'identity' or 'linear', got {config.projection!r}")
        if config.projection_steps < 1 or config.projection_lr <= 0:
            raise ConfigError("b1_bmn_clip: projection_steps must be >= 1 and projection_lr > 0")
        self.projection: torch.Tensor | None = None  # [D, E] when learned

    @classmethod
    def check_features(cls, config: Config, feature_dim: int, text_dim: int) -> None:
        if config.projection == "identity" and feature_dim != text_dim:
            raise ConfigError(f"b1_bmn_clip: features are {feature_dim}-d but the text encoder's space is "
                              f"{text_dim}-d; use CLIP image features or projection='linear'")

    def fit_classifier(self, train_view) -> None:
        self.check_features(self.config, train_view.features.shape[-1], self.tower.embed_dim)
        if self.config.projection == "linear":
            self.projection = self.fit_projection(train_view)

    def fit_projection(self, train_view) -> torch.Tensor:
        """W [D, E] minimising CE(τ · cos(v W, z_k)) over the seen-class GT segments' mean features v."""
        cfg, device = self.config, device_of(self.context)
        generator = seed_everything(self.context.seed)
        table, labels = training_segments(train_view)
        x = as_tensor(mean_features(train_view, table), device)
        y = torch.as_tensor(labels, device=device)
        text = hand_crafted_embeddings(self.tower, train_view.classes, self.templates())
        scale = self.tower.logit_scale.exp()
        weight = torch.randn(x.shape[1], text.shape[1], generator=generator).to(device) * x.shape[1] ** -0.5
        weight.requires_grad_(True)
        optimiser = torch.optim.Adam([weight], lr=cfg.projection_lr)
        for _ in range(cfg.projection_steps):
            loss = F.cross_entropy(scale * F.normalize(x @ weight, dim=-1) @ text.T, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        self.context.log(f"b1_bmn_clip: linear projection, seen-class CE {float(loss.detach()):.4f}")
        return weight.detach()

    def templates(self) -> tuple[str, ...]:
        return self.context.text_encoder.templates

    def class_text(self, classes) -> torch.Tensor:
        return hand_crafted_embeddings(self.tower, classes, self.templates())  # z_k, normalised

    def segment_probabilities(self, view, table: SegmentTable, text: torch.Tensor) -> np.ndarray:
        v = as_tensor(mean_features(view, table), device_of(self.context))
        if self.projection is not None:
            v = v @ self.projection
        logits = self.tower.logit_scale.exp() * F.normalize(v, dim=-1) @ text.T  # τ · cos(v, z_k)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def mean_features(view, table: SegmentTable) -> np.ndarray:
    """[M, D] mean snippet feature of each table row over the snippets it touches."""
    video, ranges = snippet_ranges(view, table)
    out = np.empty((len(table), view.features.shape[-1]), np.float32)
    for rows in by_video(video):
        out[rows] = segment_means(view.features[video[rows[0]]], ranges[rows])
    return out
