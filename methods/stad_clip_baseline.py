"""Training-free CLIP baselines of the spatio-temporal papers: every candidate person box is classified
zero-shot by cosine with the prompt embeddings of the test classes, nothing is learned.

    x_i = f^G(frame of box i)            feature = frame_global: the whole frame's CLIP feature (every person
                                                                 of a frame gets the same scores)
        | roi_pool(tokens, box_i)        feature = person_crop: the box's region feature
    z_k = CLIP_text(template.format(name_k)),  unit norm, frozen
    S_ik = softmax_k(s · cos(x_i, z_k))  normalisation = softmax (over the test classes)
         | sigmoid(s · cos(x_i, z_k))    normalisation = sigmoid
    s = the text tower's logit scale (100 for CLIP), or ``logit_scale`` when > 0

Which paper rows it stands for (the suites' variants, :data:`VARIANTS`):
- ST-CLIP Tables 2-3 "baseline": CLIP on the whole frame, raw label strings as prompts (``brush_hair``, no
  template, ``prompt.py``), softmax over the test classes (the runner multiplies by the detector score);
- ST-CLIP "baseline (person crop)": the same on the person crop. Here the crop's CLIP feature is the box's
  RoI-pooled region feature (:func:`benchmark.data.regions.roi_pool`): no image is encoded again;
- OV-STAD Table 3 row 1 / Table 5 "ViCLIP (zero-shot)": the global video feature for every box, prompt
  "a person [action class]"; the RoI row of its §4.2 text (5.08 base / 12.52 novel): the region feature.
  The paper does not say how the zero-shot scores are normalised; Eq. 3's sigmoid is the closest reading.

Defaults (our choice; the two papers differ): the OV-STAD prompt "a person {}." with natural names
(``brush hair``), softmax over the test classes, the tower's logit scale. With ``sigmoid`` and no bias
(training-free: there is none to learn) every score with a positive cosine is above 0.5: the score ranks
the boxes of a class by cosine, which is all frame-mAP uses.

:func:`box_features` (region and global feature of every row of a box table) and :func:`class_text` (frozen
prompt embeddings) are shared with the trained box-level methods (``methods/ovstad.py``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.data.regions import roi_weights
from benchmark.evaluation.boxes import BoxTable
from benchmark.harness.registry import ConfigError, Method, register_method
from benchmark.text.clip import class_embeddings, load_text_tower
from benchmark.text.prompts import natural_name

FEATURES = ("frame_global", "person_crop")
NORMALISATIONS = ("softmax", "sigmoid")
NAMES = ("natural", "as_in_code")

# The paper rows as overrides of Config (see the module docstring).
VARIANTS = {
    "stclip_baseline": {"feature": "frame_global", "template": "{}", "names": "as_in_code", "normalisation": "softmax"},
    "stclip_person_crop": {"feature": "person_crop", "template": "{}", "names": "as_in_code", "normalisation": "softmax"},
    "ovstad_zero_shot_global": {"feature": "frame_global", "template": "a person {}.", "names": "natural",
                                "normalisation": "sigmoid"},
    "ovstad_zero_shot_roi": {"feature": "person_crop", "template": "a person {}.", "names": "natural",
                             "normalisation": "sigmoid"},
}


@dataclass(frozen=True)
class Config:
    feature: str = "frame_global"  # frame_global | person_crop
    normalisation: str = "softmax"  # softmax over the test classes | sigmoid
    template: str = "a person {}."  # OV-STAD's prompt; ST-CLIP prompts with the bare label ("{}")
    names: str = "natural"  # natural (brush hair) | as_in_code (brush_hair)
    logit_scale: float = 0.0  # s; 0 = the text tower's (CLIP: 100)


def box_features(view, table: BoxTable) -> tuple[np.ndarray, np.ndarray]:
    """(region [N, D], global [N, D]) float32 features of every row of ``table``: the box's area-weighted pool
    of its frame's grid tokens and the frame's global feature (``view.features``, ``view.resolution``)."""
    store = view.features
    if store is None:
        raise ConfigError("box-level methods need per-frame features (the view has none)")
    region = global_ = None
    for video in np.unique(table.video):
        at = np.flatnonzero(table.video == video)
        feats = store.read(str(video))
        rows = feats.rows(table.frame[at])
        if region is None:
            d = feats.global_.shape[1]
            region, global_ = np.zeros((len(table), d), np.float32), np.zeros((len(table), d), np.float32)
        weights = roi_weights(table.box[at], view.resolution[str(video)], feats.grid).astype(np.float32)
        region[at] = np.einsum("nk,nkd->nd", weights, feats.tokens[rows])
        global_[at] = feats.global_[rows]
    if region is None:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return region, global_


def class_text(context, classes, names: str, template: str) -> np.ndarray:
    """[K, E] frozen unit-norm prompt embeddings of ``classes`` (one template, names natural or as in the files)."""
    if names not in NAMES:
        raise ConfigError(f"names must be one of {', '.join(NAMES)}, got {names!r}")
    if context.text_encoder is None:
        raise ConfigError("box-level methods need the run's text encoder (context.text_encoder)")
    words = [natural_name(c) if names == "natural" else c for c in classes]
    cfg = dataclasses.replace(context.text_encoder, templates=(template,))
    return class_embeddings(cfg, words, context.cache_dir)


def scored_rows(boxes: BoxTable, classes, scores: np.ndarray) -> BoxTable:
    """One row per (candidate box, class), candidate-major: ``label`` the class, ``score`` = scores[i, k]."""
    k = len(classes)
    return BoxTable(np.repeat(boxes.video, k), np.repeat(boxes.frame, k), np.repeat(boxes.box, k, axis=0),
                    np.tile(np.asarray(classes, dtype=str), len(boxes)), scores.astype(np.float64).reshape(-1),
                    None if boxes.person is None else np.repeat(boxes.person, k))


@register_method("stad_clip_baseline")
class StadClipBaseline(Method):
    """Zero-shot CLIP on the whole frame or the person region; nothing is trained."""

    Config = Config
    trains = False

    def __init__(self, config: Config, context):
        choices = {"feature": FEATURES, "normalisation": NORMALISATIONS, "names": NAMES}
        for key, allowed in choices.items():
            if getattr(config, key) not in allowed:
                raise ConfigError(f"stad_clip_baseline: {key} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(config, key)!r}")
        if config.template.count("{}") != 1:
            raise ConfigError(f"stad_clip_baseline: template {config.template!r} must hold one '{{}}'")
        if config.logit_scale < 0:
            raise ConfigError(f"stad_clip_baseline: logit_scale must be >= 0 (0: the tower's), got {config.logit_scale}")
        super().__init__(config, context)

    @classmethod
    def check_features(cls, config: Config, feature_dim: int, text_dim: int) -> None:
        if feature_dim != text_dim:
            raise ConfigError(f"stad_clip_baseline: features are {feature_dim}-d but the text embeddings "
                              f"{text_dim}-d; it needs features in CLIP's joint space")

    def fit(self, train_view) -> None:
        """Nothing to learn."""

    def _scale(self) -> float:
        if self.config.logit_scale > 0:
            return self.config.logit_scale
        return float(load_text_tower(self.context.text_encoder).logit_scale.exp())

    def predict(self, test_view) -> BoxTable:
        cfg = self.config
        text = torch.from_numpy(class_text(self.context, test_view.classes, cfg.names, cfg.template))
        if not len(test_view.boxes):
            return scored_rows(test_view.boxes, test_view.classes, np.zeros((0, len(text))))
        region, global_ = box_features(test_view, test_view.boxes)
        x = torch.from_numpy(region if cfg.feature == "person_crop" else global_)
        self.check_features(cfg, x.shape[1], text.shape[1])
        logits = self._scale() * torch.nn.functional.normalize(x, dim=-1) @ text.T
        scores = torch.softmax(logits, dim=-1) if cfg.normalisation == "softmax" else torch.sigmoid(logits)
        return scored_rows(test_view.boxes, test_view.classes, scores.numpy())
