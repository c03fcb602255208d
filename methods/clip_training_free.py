"""Training-free CLIP reference: zero-shot per snippet, consecutive same-class snippets -> segments.

No parameter is learned and no training video is looked at: it shows how much any training buys.
Each snippet feature (which must live in CLIP's joint space, D == E) is classified zero-shot
against the hand-crafted prompts of the test classes (``TextEncoderConfig.templates``, e.g. "a
video of a person {}."), as CLIP classifies an image:

    p_t = softmax(s · cos(x_t, z_k))_k          s = the text tower's logit scale (100 for CLIP)

The probabilities are smoothed over time (centred moving average), each snippet takes its top
class ĉ_t, and a segment is a maximal run of consecutive snippets with the same ĉ whose
probability is at least θ, for each θ of a small set; its score is the mean probability of its
class over the run. Class-agnostic Soft-NMS and at most ``max_detections`` per video follow.

The hyper-parameters are fixed a priori, never tuned (least of all on test classes):
- θ is given relative to chance, θ = r / K for r in ``chance_multiples``, so that one setting fits
  25 and 100 test classes alike: r = 1 is "better than chance", r = 4 a confident snippet;
- ``smoothing`` = 5 snippets (5% of an ActivityNet video at T = 100), ``min_length`` = 2 snippets:
  single-snippet flickers are noise, not actions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.harness.registry import ConfigError, Method, register_method
from benchmark.text.clip import class_embeddings, load_text_tower
from methods.modules.grouping import label_given_segments, moving_average, runs, segment_means, segments_to_detections


@dataclass(frozen=True)
class Config:
    chance_multiples: tuple[float, ...] = (1.0, 2.0, 4.0)  # θ = r / K
    smoothing: int = 5  # snippets, odd
    min_length: int = 2  # snippets
    top_k_labels: int = 2  # for classify_segments (given segments)
    soft_nms_sigma: float = 0.5
    max_detections: int = 100


@register_method("clip_training_free")
class ClipTrainingFree(Method):
    """CLIP zero-shot per snippet + grouping of consecutive same-class snippets; nothing is trained."""

    Config = Config
    trains = False

    def __init__(self, config: Config, context):
        if not config.chance_multiples or min(config.chance_multiples) <= 0:
            raise ConfigError(f"clip_training_free: chance_multiples must be positive, got {config.chance_multiples}")
        if config.smoothing < 1 or config.smoothing % 2 == 0:
            raise ConfigError(f"clip_training_free: smoothing must be a positive odd number of snippets, got {config.smoothing}")
        if min(config.min_length, config.top_k_labels, config.max_detections) < 1 or config.soft_nms_sigma <= 0:
            raise ConfigError("clip_training_free: min_length, top_k_labels, max_detections must be >= 1 and soft_nms_sigma > 0")
        super().__init__(config, context)
        self.logit_scale: float | None = None  # read from the text tower on first use

    @classmethod
    def check_features(cls, config: Config, feature_dim: int, text_dim: int) -> None:
        if feature_dim != text_dim:
            raise ConfigError(f"clip_training_free: features are {feature_dim}-d but the text embeddings "
                              f"{text_dim}-d; it needs snippet features in CLIP's joint space")

    def fit(self, train_view) -> None:
        """Nothing to learn."""

    def snippet_probs(self, test_view) -> np.ndarray:
        """[N, T, K] CLIP zero-shot class probabilities of every snippet."""
        text_cfg = self.context.text_encoder
        text = class_embeddings(text_cfg, test_view.classes, self.context.cache_dir)  # [K, E], unit norm
        features = np.asarray(test_view.features, dtype=np.float32)
        self.check_features(self.config, features.shape[-1], text.shape[1])
        if self.logit_scale is None:
            self.logit_scale = float(load_text_tower(text_cfg).logit_scale.exp())
        x = torch.nn.functional.normalize(torch.from_numpy(features), dim=-1)
        return torch.softmax(self.logit_scale * x @ torch.from_numpy(text).T, dim=-1).numpy()

    def predict(self, test_view) -> dict[str, list[dict]]:
        cfg, classes = self.config, np.asarray(test_view.classes)
        probs = self.snippet_probs(test_view)
        thresholds = [r / len(classes) for r in cfg.chance_multiples]
        detections = {}
        for n, video in enumerate(test_view.videos):
            smooth = moving_average(probs[n], cfg.smoothing)
            top, best = smooth.max(axis=1), smooth.argmax(axis=1)
            segments, labels = [], []
            for theta in thresholds:
                for c in np.unique(best[top >= theta]):
                    found = runs((best == c) & (top >= theta))
                    found = found[found[:, 1] - found[:, 0] >= cfg.min_length]
                    segments.append(found)
                    labels += [c] * len(found)
            segments = np.concatenate(segments) if segments else np.zeros((0, 2), np.int64)
            segments, first = np.unique(segments, axis=0, return_index=True)  # a run found at several θ
            labels = np.asarray(labels, dtype=np.int64)[first]
            scores = segment_means(smooth, segments)[np.arange(len(segments)), labels]
            detections[video.id] = segments_to_detections(segments, classes[labels], scores, test_view.T,
                                                           video.duration, cfg.soft_nms_sigma, cfg.max_detections)
        return detections

    def classify_segments(self, test_view, segments: dict[str, list[list[float]]]) -> dict[str, list[dict]]:
        """Given segments (seconds) labelled by their mean zero-shot probabilities: top-k labels."""
        return label_given_segments(test_view, self.snippet_probs(test_view), segments, self.config.top_k_labels)
