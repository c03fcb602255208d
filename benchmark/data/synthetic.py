"""The embedded synthetic benchmark: ActivityNet-shaped, written in the real formats.

No real video features or CLIP weights exist on the machines this project is developed on, so the
default suite runs on data generated here and written to disk exactly as real data is (an
ActivityNet v1.3 JSON and a directory of per-video ``v_<id>.npy`` features), then read back by the
same loaders, models and evaluator. Its only honest claim is that the pipeline works end to end and
behaves sensibly; every output made from it says "synthetic".

How a video is made (all draws from one seeded generator):
- text side: the embedded text encoder (a tiny seeded open_clip model, :mod:`benchmark.text.tiny`,
  saved beside the data) embeds each class name, ``z_c``;
- domain shift: a class's visual signature is ``s_c = norm(A z_c + gamma * u_c)``, where ``A`` is a
  fixed random linear map (partly a rotation away from the text space) shared by every class and
  ``u_c`` a class-specific residual that no text can predict. ``A`` is learnable from seen classes
  and transfers to unseen ones, so zero-shot transfer is possible *only through the text side*;
  ``u_c`` caps how well it can work (closed-set training sees it, zero-shot cannot);
- frames: a per-video scene vector (nuisance), a shared "person moving" vector (strong inside
  actions, at a random weaker strength in background stretches: actionness is learnable but not
  trivial), AR(1) noise, a modality-gap offset, and inside each instance the instance's signature (``s_c`` plus instance jitter) with a ramp over a few frames at
  each boundary (blurred boundaries);
- structure: log-normal durations like ActivityNet's, 1-3 instances a video (median instance about
  a third of its video), background between them, mostly one class per video.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 2

# Class names are phrases so that similar names share tokens (and so, through the text encoder,
# similar signatures) as real action names do.
VERBS = (
    "washing", "painting", "cutting", "throwing", "carrying", "cleaning", "riding", "pushing",
    "climbing", "folding", "polishing", "repairing", "shaking", "spinning", "kicking", "juggling",
    "brushing", "wrapping", "lifting", "decorating", "building", "sanding", "rolling", "balancing",
)
OBJECTS = (
    "a bicycle", "the dog", "a fence", "the car", "a ball", "the windows", "a carpet", "a cake",
    "a kayak", "the hair", "a rope", "a ladder", "the shoes", "a table", "a guitar", "the lawn",
    "a box", "a horse", "the dishes", "a surfboard", "a tire", "the curtains", "a hat", "a hoop",
)


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    classes: int = 100
    train_videos: int = 1000
    val_videos: int = 500
    embed_dim: int = 64  # features live in the text encoder's joint space, like CLIP image features
    rotation: float = 0.6  # share of A that rotates away from the text space (0: features = text)
    residual: float = 0.6  # gamma: class-specific signature part no text predicts
    instance_jitter: float = 0.35
    scene: float = 0.8  # per-video nuisance strength
    motion: float = 0.6  # "person moving": stronger inside actions, present in background too
    noise: float = 0.45
    gap: float = 0.5  # modality-gap offset shared by every visual feature
    blur_frames: float = 3.0
    frames_per_second: float = 1.0  # raw feature rows per second of video (T_raw varies with duration)


PROFILES = {
    "smoke": SynthConfig(classes=20, train_videos=120, val_videos=60),
    "default": SynthConfig(train_videos=800, val_videos=400),
    "large": SynthConfig(classes=200, train_videos=10000, val_videos=5000),
}


def class_names(n: int, rng: np.random.Generator) -> list[str]:
    if n > len(VERBS) * len(OBJECTS):
        raise ValueError(f"at most {len(VERBS) * len(OBJECTS)} synthetic classes, asked for {n}")
    pairs = rng.choice(len(VERBS) * len(OBJECTS), size=n, replace=False)
    return sorted(f"{VERBS[p // len(OBJECTS)]} {OBJECTS[p % len(OBJECTS)]}" for p in pairs)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def visual_signatures(text: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """s_c = norm(A z_c + gamma u_c), with A = (1 - rho) I + rho Q (see the module docstring).

    z_c is the class's text embedding minus the mean over the class set: the prompt template's
    shared component says nothing about which action it is.
    """
    d = text.shape[1]
    a = (1 - cfg.rotation) * np.eye(d) + cfg.rotation * _random_rotation(d, rng)
    residual = _unit(rng.standard_normal(text.shape))
    z = _unit(text - text.mean(axis=0))
    return _unit(z @ a.T + cfg.residual * residual)


def _layout(duration: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """1-3 non-overlapping instances with background before, between and after."""
    n = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])
    lengths = rng.uniform(0.15, 0.7, size=n) / np.sqrt(n)
    gaps = rng.dirichlet(np.ones(n + 1)) * max(0.0, 1.0 - lengths.sum())
    segments, t = [], 0.0
    for length, gap in zip(lengths, gaps):
        t += gap
        segments.append((t * duration, (t + length) * duration))
        t += length
    return segments


def _video(duration: float, instances, signatures, motion_vec, cfg, rng) -> np.ndarray:
    t_raw = max(8, int(round(duration * cfg.frames_per_second)))
    d = signatures.shape[1]
    times = (np.arange(t_raw) + 0.5) / t_raw * duration
    noise = np.empty((t_raw, d))
    noise[0] = rng.standard_normal(d)
    for t in range(1, t_raw):  # AR(1): feature noise is smooth in time, as real features are
        noise[t] = 0.7 * noise[t - 1] + np.sqrt(1 - 0.7**2) * rng.standard_normal(d)
    scene = cfg.scene * _unit(rng.standard_normal(d))
    x = scene + cfg.noise * noise / np.sqrt(d) * 4 + cfg.gap * motion_vec[1]
    x += cfg.motion * rng.uniform(0.0, 0.6) * motion_vec[0]  # some movement in background stretches too
    blur = cfg.blur_frames * duration / t_raw
    amplitude = rng.uniform(0.9, 1.5)
    for start, end, label in instances:
        ramp = 1 / (1 + np.exp(-(times - start) / (blur / 3))) * 1 / (1 + np.exp((times - end) / (blur / 3)))
        signature = _unit(signatures[label] + cfg.instance_jitter * _unit(rng.standard_normal(d)))
        x += ramp[:, None] * (amplitude * signature + cfg.motion * motion_vec[0])
    return x.astype(np.float32)


def generate(out_dir: str | Path, cfg: SynthConfig = SynthConfig()) -> Path:
    """Write the benchmark into ``out_dir`` (annotations.json, features/, text_encoder/, synthetic.json)."""
    from benchmark.text.clip import class_embeddings
    from benchmark.text.tiny import make_tiny_clip

    out = Path(out_dir)
    (out / "features").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    names = class_names(cfg.classes, rng)
    text_cfg = make_tiny_clip(out / "text_encoder", seed=cfg.seed, embed_dim=cfg.embed_dim)
    signatures = visual_signatures(class_embeddings(text_cfg, names), cfg, rng)
    motion_vec = _unit(rng.standard_normal((2, cfg.embed_dim)))

    database = {}
    for subset, count in (("training", cfg.train_videos), ("validation", cfg.val_videos)):
        for i in range(count):
            vid = f"syn{cfg.seed:02d}{subset[0]}{i:06d}"
            duration = float(np.clip(rng.lognormal(np.log(110), 0.6), 20, 400).round(2))
            primary = rng.integers(cfg.classes)
            instances = [
                (s, e, primary if rng.random() < 0.85 else rng.integers(cfg.classes))
                for s, e in _layout(duration, rng)
            ]
            np.save(out / "features" / f"v_{vid}.npy", _video(duration, instances, signatures, motion_vec, cfg, rng))
            database[vid] = {
                "subset": subset,
                "duration": duration,
                "annotations": [{"segment": [round(s, 2), min(round(e, 2), duration)], "label": names[c]}
                                for s, e, c in instances],
            }
    annotations = {"version": f"synthetic ActivityNet-shaped benchmark v{GENERATOR_VERSION}", "taxonomy": [],
                   "database": database}
    _write_json(out / "annotations.json", annotations)
    manifest = {
        "synthetic": True,
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "classes": names,
        "annotations": "annotations.json",
        "features": "features",
        "text_encoder": {"model": text_cfg.model, "pretrained": text_cfg.pretrained},
    }
    _write_json(out / "synthetic.json", manifest)  # written last: its presence marks a complete benchmark
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def ensure_synthetic(root: str | Path, profile: str = "default", seed: int = 0, **overrides) -> Path:
    """The benchmark for (profile, seed, overrides) under ``root``, generated once and reused."""
    cfg = replace(PROFILES[profile], seed=seed, **overrides)
    key = f"{profile}-s{seed}" + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    out = Path(root) / f"v{GENERATOR_VERSION}-{key}"
    manifest = out / "synthetic.json"
    if manifest.exists() and json.loads(manifest.read_text())["config"] == asdict(cfg):
        return out
    return generate(out, cfg)
