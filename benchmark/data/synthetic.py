"""The embedded synthetic benchmark: ActivityNet- or THUMOS-shaped, written in the real formats.

No real video features or CLIP weights exist on the machines this project is developed on, so the
default suites run on data generated here and written to disk exactly as real data is (an
ActivityNet v1.3 JSON and a directory of per-video ``v_<id>.npy`` features; for the THUMOS-shaped
profiles, ActionFormer's THUMOS14 JSON and ``<id>.npy`` features), then read back by the
same loaders, models and evaluator. Its only honest claim is that the pipeline works end to end and
behaves sensibly; every output made from it says "synthetic".

How a video is made (all draws from one generator seeded by ``SynthConfig.seed``):
- world: the classes are names of a hidden world (:mod:`benchmark.data.world`, the only module
  that knows it): verb-object phrases whose *concepts* ``c_c`` are compositional unit vectors in
  the joint space. The benchmark's text encoder is a tiny open_clip model whose text tower was
  pretrained to map many phrasings of every name onto its concept (a language prior, as CLIP's web
  pretraining gives); it is copied into ``text_encoder/`` and is all methods get of the world. The
  concepts themselves are never written anywhere, and no prompt template a method uses enters the
  generator;
- domain shift: a class's visual signature is ``s_c = norm(A c_c + gamma * u_c)``, where ``A`` is a
  fixed random linear map (``rotation``: the share that rotates away from the joint space) shared by
  every class and ``u_c`` a class-specific residual (``residual`` = gamma) that no text can predict.
  ``A`` is learnable from seen classes and transfers to unseen ones, so zero-shot transfer is
  possible *only through the text side*, as well as the pretrained tower knows the concepts; ``u_c``
  caps how well it can work (closed-set training sees it, zero-shot cannot);
- frames: a per-video scene vector (``scene``, nuisance), a shared "person moving" vector
  (``motion``: strong inside actions, at a random weaker strength in background stretches:
  actionness is learnable but not trivial), AR(1) noise (``noise``), a modality-gap offset
  (``gap``), and inside each instance the instance's signature (``s_c`` plus ``instance_jitter``)
  with a ramp over ``blur_frames`` frames at each boundary (blurred boundaries);
- layout: log-normal durations like ActivityNet's (``duration``); 1-6 instances a video
  (``instances``, 3.15 on average: between ActivityNet's 1.5 and THUMOS14's ~15, so that the test
  set is large and telling neighbouring instances apart matters), each instance ``length`` / n^``length_decay``
  of its video; background before, between and after, the gap between two instances often only a
  few seconds (``short_gap``, ``short_gap_seconds``); an instance has its video's main class with
  chance ``same_class``, else any class: a third of the videos hold several classes (ActivityNet's
  hardly any). More mixing mostly measures something else: a training video's unseen-class
  instances become background (protocol default), so with ``same_class`` 0.6 on the development
  seed every method's mAP roughly halved and STALE's GT-localisation top-1 fell from 49% to 34%.

THUMOS-shaped profiles (``thumos``, ``thumos_smoke``): the same world, classes and video model with a
THUMOS14 layout (see ``THUMOS`` below): many short instances a video, mostly one class a video, and
``nested`` double-labelled class pairs (every instance of the child is annotated with the parent's
label too, on the same segment, as THUMOS14 does for CliffDiving and Diving; the child looks like
itself, not like the parent).

Size of the default profile (100 classes, 700 training and 800 validation videos; development
seed 1, ten 75/25 class splits): 560-595 training videos and 230-280 scored test videos a split (was
about 610 and 120 with 800 / 400 videos of 1.5 instances), and 530-680 unseen test instances, 24.5
per unseen class on average (was about 7).

The folder is relocatable and reproducible: the manifest (``synthetic.json``, read with
:func:`load_manifest`) holds paths relative to the folder, and one config gives the same bytes in
every file wherever it is written. Bump ``GENERATOR_VERSION`` whenever the output changes.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from benchmark.data.world import VOCABULARY, WorldConfig, concepts, pretrained_text_encoder, tower_tag
from benchmark.errors import InputError

GENERATOR_VERSION = 3


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0  # draws the class list, the domain shift, the residuals and every video
    world_seed: int = 0  # the hidden world and its pretrained stand-in CLIP (benchmark.data.world), shared
    # by every benchmark of this world seed
    classes: int = 100  # drawn from the world's 576 verb-object names
    train_videos: int = 1000  # "training" subset: what methods train on (seen-class instances)
    val_videos: int = 500  # "validation" subset: the test videos (scored if they hold an unseen instance)
    embed_dim: int = 64  # features live in the stand-in CLIP's joint space, like CLIP image features
    # visual signatures s_c = norm(A concept_c + gamma u_c)
    rotation: float = 0.6  # share of A that rotates away from the joint space (0: A = I)
    residual: float = 0.6  # gamma: class-specific signature part no text predicts
    instance_jitter: float = 0.35  # per-instance deviation from the class signature
    # frames
    scene: float = 0.8  # per-video nuisance strength
    motion: float = 0.6  # "person moving": stronger inside actions, present in background too
    noise: float = 0.45  # AR(1) per-frame noise (norm about 4x this): larger than a signature, so
    # per-snippet decisions are harder than per-segment ones, as with real features (AUDIT.md G3)
    gap: float = 0.5  # modality-gap offset shared by every visual feature
    blur_frames: float = 3.0  # width of the ramp at each instance boundary, in raw feature rows
    frames_per_second: float = 1.0  # raw feature rows per second of video (T_raw varies with duration)
    # layout
    duration: tuple[float, float] = (110.0, 0.6)  # log-normal video length: median seconds, sigma (ActivityNet-like)
    instances: tuple[float, ...] = (0.2, 0.2, 0.2, 0.15, 0.15, 0.1)  # P(1 instance), P(2), ... in a video
    length: tuple[float, float] = (0.15, 0.7)  # an instance's share of its video: uniform here / n^length_decay
    length_decay: float = 0.75  # n instances share the video: each is shorter the more there are
    short_gap: float = 0.5  # chance that two consecutive instances are separated by a short gap
    short_gap_seconds: tuple[float, float] = (2.0, 8.0)  # a short gap's length (at most the drawn gap)
    same_class: float = 0.85  # chance that an instance has its video's main class (else any class)
    duration_range: tuple[float, float] = (20.0, 400.0)  # video lengths are clipped to this, seconds
    # double labels: this many (child, parent) class pairs in which every child instance is annotated with
    # the parent's label too, on the same segment (THUMOS14 does so for CliffDiving and Diving)
    nested: int = 0
    annotation_format: str = "activitynet"  # activitynet (v_<id>.npy features) | actionformer (<id>.npy)


# The subsets a format's training and test videos are written to (the real datasets' names).
SUBSETS = {"activitynet": ("training", "validation"), "actionformer": ("Validation", "Test")}


def _count_distribution(scale: float, most: int) -> tuple[float, ...]:
    """P(1 instance), ..., P(most) proportional to exp(-n / scale): many short instances, a long tail."""
    p = np.exp(-np.arange(1, most + 1) / scale)
    return tuple(float(x) for x in (p / p.sum()).round(6))


# THUMOS14-shaped (the real file: 20 classes, 200 / 212 videos, median 155 s, 15.4 instances a video (median 8),
# the median instance 1.1% of its video, 1.15 classes a video, CliffDiving ⊂ Diving): 13 instances a video on
# average (median 10), each 0.5-2.5% of its video (median 1.5%), one class a video but for 1% of the instances.
THUMOS = SynthConfig(classes=20, train_videos=200, val_videos=210, duration=(155.0, 0.7), duration_range=(30.0, 900.0),
                     frames_per_second=2.0, blur_frames=1.0, instances=_count_distribution(14.0, 60),
                     length=(0.005, 0.025), length_decay=0.0, same_class=0.99, nested=1,
                     annotation_format="actionformer")

PROFILES = {
    "smoke": SynthConfig(classes=20, train_videos=120, val_videos=60),
    "default": SynthConfig(train_videos=700, val_videos=800),
    "large": SynthConfig(classes=200, train_videos=10000, val_videos=5000),
    "thumos_smoke": replace(THUMOS, train_videos=40, val_videos=30),
    "thumos": THUMOS,
}


def class_names(n: int, rng: np.random.Generator) -> list[str]:
    if n > len(VOCABULARY):
        raise InputError(f"at most {len(VOCABULARY)} synthetic classes, asked for {n}")
    return sorted(VOCABULARY[i] for i in rng.choice(len(VOCABULARY), size=n, replace=False))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def visual_signatures(concept: np.ndarray, cfg: SynthConfig, rng: np.random.Generator,
                      rotation_rng: np.random.Generator | None = None) -> np.ndarray:
    """s_c = norm(A c_c + gamma u_c), with A = (1 - rho) I + rho Q (see the module docstring); Q is drawn
    from ``rotation_rng`` if given (several datasets seen by one visual encoder), else from ``rng``."""
    d = concept.shape[1]
    a = (1 - cfg.rotation) * np.eye(d) + cfg.rotation * _random_rotation(d, rotation_rng or rng)
    residual = _unit(rng.standard_normal(concept.shape))
    return _unit(concept @ a.T + cfg.residual * residual)


def _layout(duration: float, cfg: SynthConfig, rng: np.random.Generator) -> list[tuple[float, float]]:
    """n non-overlapping instances (n drawn from ``cfg.instances``) with background before, between and
    after: lengths uniform in ``cfg.length`` / n^``cfg.length_decay`` of the video (together at most 90% of it), the
    background shared out at random, and each gap between two instances cut to a short one (seconds)
    with chance ``cfg.short_gap``, the time it frees going to the video's first and last stretch."""
    n = 1 + rng.choice(len(cfg.instances), p=np.asarray(cfg.instances) / sum(cfg.instances))
    lengths = rng.uniform(*cfg.length, size=n) / n**cfg.length_decay
    lengths *= min(1.0, 0.9 / lengths.sum())
    gaps = rng.dirichlet(np.ones(n + 1)) * (1.0 - lengths.sum())  # before, between..., after
    short = np.minimum(gaps[1:-1], rng.uniform(*cfg.short_gap_seconds, size=n - 1) / duration)
    cut = rng.random(n - 1) < cfg.short_gap
    freed = np.sum(gaps[1:-1] - short, where=cut)
    gaps[1:-1] = np.where(cut, short, gaps[1:-1])
    gaps[[0, -1]] += freed / 2
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
        with np.errstate(over="ignore"):  # exp -> inf far from a short ramp: the logistic is then exactly 0
            ramp = 1 / (1 + np.exp(-(times - start) / (blur / 3))) * 1 / (1 + np.exp((times - end) / (blur / 3)))
        signature = _unit(signatures[label] + cfg.instance_jitter * _unit(rng.standard_normal(d)))
        x += ramp[:, None] * (amplitude * signature + cfg.motion * motion_vec[0])
    return x.astype(np.float32)


def generate(out_dir: str | Path, cfg: SynthConfig = SynthConfig()) -> Path:
    """Write the benchmark into ``out_dir`` (annotations.json, features/, text_encoder/, synthetic.json).

    The same config gives the same bytes in every file wherever ``out_dir`` is; the manifest's paths
    are relative to ``out_dir``, so the folder can move (read it with :func:`load_manifest`).
    """
    if cfg.annotation_format not in SUBSETS:
        raise InputError(f"synthetic annotation_format {cfg.annotation_format!r}: use one of {', '.join(SUBSETS)}")
    out = Path(out_dir)
    (out / "features").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    names = class_names(cfg.classes, rng)
    world = _world(cfg)
    text_cfg, pretraining = pretrained_text_encoder(out / "text_encoder", world)
    signatures = visual_signatures(concepts(names, world), cfg, rng)
    motion_vec = _unit(rng.standard_normal((2, cfg.embed_dim)))
    # child -> parent: the child's instances carry the parent's label too (drawn only when asked for)
    parent = dict(rng.choice(cfg.classes, size=(cfg.nested, 2), replace=False).tolist()) if cfg.nested else {}

    database = {}
    for subset, count in zip(SUBSETS[cfg.annotation_format], (cfg.train_videos, cfg.val_videos)):
        for i in range(count):
            vid = f"syn{cfg.seed:02d}{subset[0]}{i:06d}"
            median, sigma = cfg.duration
            duration = float(np.clip(rng.lognormal(np.log(median), sigma), *cfg.duration_range).round(2))
            primary = rng.integers(cfg.classes)
            instances = [
                (s, e, primary if rng.random() < cfg.same_class else rng.integers(cfg.classes))
                for s, e in _layout(duration, cfg, rng)
            ]
            features = _video(duration, instances, signatures, motion_vec, cfg, rng)
            instances += [(s, e, parent[c]) for s, e, c in instances if c in parent]
            prefix = "v_" if cfg.annotation_format == "activitynet" else ""
            np.save(out / "features" / f"{prefix}{vid}.npy", features)
            database[vid] = _entry(subset, duration, instances, names, cfg)
    if cfg.annotation_format == "activitynet":
        annotations = {"version": f"synthetic ActivityNet-shaped benchmark v{GENERATOR_VERSION}", "taxonomy": [],
                       "database": database}
    else:
        annotations = {"version": f"synthetic benchmark v{GENERATOR_VERSION} (ActionFormer format)", "database": database}
    _write_json(out / "annotations.json", annotations)
    manifest = {
        "synthetic": True,
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "classes": names,
        "annotations": "annotations.json",
        "features": "features",
        "text_encoder": {key: Path(getattr(text_cfg, key)).relative_to(out).as_posix()
                         for key in ("model", "pretrained")},
        "pretraining": pretraining,
    }
    _write_json(out / "synthetic.json", manifest)  # written last: its presence marks a complete benchmark
    return out


VIDEO_FPS = 30.0  # the frame rate the ActionFormer format states (segment(frames) = seconds x fps)


def _entry(subset: str, duration: float, instances, names: list[str], cfg: SynthConfig) -> dict:
    """One video of the annotation file, in ``cfg.annotation_format``."""
    annotations = []
    for s, e, c in instances:
        segment = [round(s, 2), min(round(e, 2), duration)]
        annotations.append({"segment": segment, "label": names[c]})
        if cfg.annotation_format == "actionformer":
            annotations[-1] |= {"segment(frames)": [round(x * VIDEO_FPS, 1) for x in segment], "label_id": int(c)}
    entry = {"subset": subset, "duration": duration, "annotations": annotations}
    return entry | {"fps": VIDEO_FPS} if cfg.annotation_format == "actionformer" else entry


def _world(cfg: SynthConfig) -> WorldConfig:
    return WorldConfig(seed=cfg.world_seed, embed_dim=cfg.embed_dim)


def load_manifest(root: str | Path) -> dict:
    """``root``'s synthetic.json with its paths made absolute: ``annotations``, ``features`` and the
    ``text_encoder`` model config and checkpoint (``TextEncoderConfig(**manifest["text_encoder"])``)."""
    root = Path(root).resolve()
    manifest = json.loads((root / "synthetic.json").read_text())
    for key in ("annotations", "features"):
        manifest[key] = str(root / manifest[key])
    manifest["text_encoder"] = {key: str(root / path) for key, path in manifest["text_encoder"].items()}
    return manifest


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def ensure_synthetic(root: str | Path, profile: str = "default", seed: int = 0, **overrides) -> Path:
    """The benchmark for (profile, seed, overrides) under ``root``, generated once and reused (regenerated
    from scratch when the config or the world's pretrained tower differs)."""
    cfg = replace(PROFILES[profile], seed=seed, **overrides)
    key = f"{profile}-s{seed}" + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    return ensure_generated(Path(root) / f"v{GENERATOR_VERSION}-{key}", cfg, _world(cfg), generate)


def ensure_generated(out: Path, cfg, world: WorldConfig, make) -> Path:
    """``out`` if it holds a complete benchmark of ``cfg`` made with ``world``'s current tower, else
    ``make(out, cfg)`` into a fresh folder. Shared by the temporal and box-level generators."""
    manifest = out / "synthetic.json"
    if manifest.exists():
        written = json.loads(manifest.read_text())
        tower = Path(written["text_encoder"]["pretrained"]).stem
        if written["config"] == json.loads(json.dumps(asdict(cfg))) and tower.endswith(tower_tag(world)):
            return out  # same config, and the world's tower has not changed (pretraining recipe, versions)
        shutil.rmtree(out)  # stale: no file of the old benchmark (e.g. its tower) may linger in the new one
    return make(out, cfg)
