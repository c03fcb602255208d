"""The embedded spatio-temporal (box-level) synthetic benchmark: JHMDB-, UCF101-24- or AVA-shaped.

The box-level sibling of :mod:`benchmark.data.synthetic`, drawn from the same hidden world
(:mod:`benchmark.data.world`; this module and that one are the only ones that import it) and written
in the real formats, so that methods read it through the real readers
(:func:`benchmark.data.box_annotations.load_box_annotations`) and pool region features with the same
helper they would use on real grid features (:func:`benchmark.data.regions.roi_pool`). Every output
says "synthetic"; its only claim is that a pipeline works end to end and behaves sensibly.

Layouts (``StadConfig.layout``):
- ``jhmdb``: 21 person-action names, videos of 15-40 frames at (240, 320), one actor tube covering every
  frame, 3 official train/test splits; ``JHMDB-GT.pkl`` (ACT layout), an ST-CLIP ``jhmdb_test_gt_min.json``
  (split-1 test) and a person-box JSON from the simulated detector;
- ``ucf``: 24 names, videos of 60-300 frames (features on every ``feature_stride``-th frame), 1-4
  same-class tubes a video over ~87% of its frames, bystanders (persons who do nothing, whom the
  detector finds); ``UCF101v2-GT.pkl`` (ACT layout, one split), the same split as UCF101-24's
  ``pyannot_with_class_names.pkl`` + ``testlist01.txt``, and GT JSON and person-box JSON as for jhmdb;
- ``ava``: 80 names of three types (pose / object / interaction, 14 / 49 / 17), long-tailed so that about
  20 classes have < 25 val instances; keyframes at 1 Hz from 0902, 2-6 persons a keyframe with persistent
  ids within a shot, exactly one pose label and 0-3 object / interaction labels a person;
  ``ava_{train,val}_v2.2.csv``, the val exclusions, the 80- and 60-class label maps and an LFB-style
  ``ava_val_predicted_boxes.csv``.

Features (``features/<video>.npz``, float16; ``frames`` [T] gives the frame number, or for AVA the
keyframe second, of each row): ``global`` [T, D] and ``tokens`` [T, G*G, D], a G x G "feature map".
What a token holds (all draws from ``StadConfig.seed``):
- the video's scene vector (nuisance; for UCF-shaped videos correlated with the class through a class
  context direction: the "global context" a box alone lacks), occluded where persons stand;
- for every person covering the cell, in proportion to the share of the cell it covers: an
  actor-appearance vector, a motion-phase vector shared by all classes (cycling through ``poses``
  vectors with a period of ``period`` frames) and the action signature ``s_c = norm(A c_c + gamma u_c)``
  of each of its labels (:func:`benchmark.data.synthetic.visual_signatures`: zero-shot transfer is
  possible only through the text side), its amplitude modulated by the same phase, so that a single
  frame is often ambiguous and a +-4-frame window is not; an AVA interaction label also spills half its
  signature onto the partner's cells;
- AR(1) noise in time, per cell.

Tokens are a rotated view (``R``, share ``region_rotation``) of that content, while ``global`` (the scene
plus each person's content, weighted by the square root of its area) stays in the signature space,
close to the text space: region features are poorly aligned with text, as OV-STAD observes of VLM RoI
features. A box pools only the cells it covers, so a jittered or distractor box pools scene and other
persons instead of the actor, and localisation error reaches classification.

Simulated person detector (the person-box files): every visible person (actor or bystander) gets a box
whose IoU with its GT box is Beta-distributed (``detector_iou``, mean 0.8) and a high score (actors)
or a reasonable one (bystanders); an actor is missed on ``miss`` of its frames; 1-4 distractor boxes a
frame (random boxes, some loosely around a person) get lower scores. Scores >= 0.05, written as strings
sorted by descending score within each image, as ST-CLIP's ``jhmdb_faster_RCNN_person.json``. Detections
cover what the real files cover: split-1 test videos, every frame (jhmdb, ucf; image ids resolve through
the GT JSON, which lists every frame of those videos, boxes or not), or the val keyframes (ava).

Region-caption corpus (``captions.npz``, manifest key ``captions``; OV-STAD's VR-T alignment data, §3.3):
person regions of *additional* clips of the same world (the same visual model: A, R, motion phases,
detector-free GT boxes), each paired with a caption naming what the person does. The caption actions
are names of the world's vocabulary that are *not* class names of the benchmark (seen or unseen) but
share their verbs and objects, as VidSTG / HC-STVG sentences share words with JHMDB's classes; each
caption is one of :data:`CAPTION_TEMPLATES` around the name. ``region`` [N, D] and ``global`` [N, D]
(float16: the box's pooled region feature and its frame's global feature, as a method would compute
them), ``caption`` [N] str, ``source`` [N] "A" or "B": A (HC-STVG-like) has fewer, narrower actions
(``caption_actions[0]`` names) and a third of the clips, B (VidSTG-like) more diverse ones
(``caption_actions[1]`` names) and the rest. Every ``caption_stride``-th frame of an acting person is a
pair. ``caption_clips = 0`` writes no corpus. Methods get the file, never the generator's concepts.

Cross-dataset pairs (OV-STAD's UCF101-24 -> JHMDB-21, ``StadConfig.pair = (first, span)``): two
benchmarks of the same seed whose configs both set ``pair`` are two datasets filmed through one visual
encoder. Their dataset-independent draws (A, R, the motion phases) come from one stream of the seed, not
from each benchmark's own; their class names are the names ``first .. first + classes - 1`` of one seeded
permutation of the world's vocabulary, so that the pair's datasets have disjoint classes; and the
region-caption corpus avoids the first ``span`` names of that permutation, i.e. every class of the pair
(profiles ``ucf_pair`` / ``jhmdb_pair`` and their ``_smoke`` versions; ``ucf_pair`` has 160 videos of 40-160
frames, against ``ucf``'s 240 of 60-300, to keep the ov_stad suite's two dozen trainings within its time).

Files are written by :mod:`benchmark.data.box_writers` (ACT pickle, pyannot, ST-CLIP JSONs, AVA CSVs,
exclusions, label maps) from :class:`~benchmark.data.box_annotations.BoxAnnotations` tables, so they read
back through :func:`~benchmark.data.box_annotations.load_box_annotations`; only the LFB-style predicted-box
CSV (``video,%04d,x1,y1,x2,y2,,score``, as SlowFast reads it) is written here. ST-CLIP's JSONs name videos
by the bare movie (``class/video`` -> ``video``), the pickles and features by ``class/video``.

The folder is relocatable and reproducible: ``synthetic.json`` (written last; :func:`load_manifest`)
holds paths relative to the folder, and one config gives the same bytes in every file. The text
tower (~13 MB, a copy of the cached pretrained tower) is the bulk of a smoke folder; the rest is a few MB.
Bump ``GENERATOR_VERSION`` whenever the output changes.
"""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from benchmark.data.box_annotations import PERSON, BoxAnnotations
from benchmark.data.box_writers import (stclip_image_ids, write_act_pkl, write_ava_csv, write_ava_exclusions,
                                        write_ava_label_map, write_person_boxes, write_stclip_json, write_ucf_pyannot)
from benchmark.data.regions import roi_weights
from benchmark.data.synthetic import (SynthConfig, _random_rotation, _unit, class_names, ensure_generated,
                                      visual_signatures)
from benchmark.data.world import VOCABULARY, WorldConfig, concepts, pretrained_text_encoder
from benchmark.errors import InputError
from benchmark.evaluation.boxes import BoxTable

GENERATOR_VERSION = 2  # 2: the region-caption corpus (captions.npz)
# Phrasings of the corpus's captions (all among the stand-in CLIP's pretraining captions).
CAPTION_TEMPLATES = ("a person {}.", "someone {}.", "a man {} outdoors.", "a woman {} in the park.", "a child {}.")
AVA_TYPES = ("PERSON_MOVEMENT", "OBJECT_MANIPULATION", "PERSON_INTERACTION")


@dataclass(frozen=True)
class StadConfig:
    layout: str = "jhmdb"  # jhmdb | ucf | ava
    seed: int = 0  # draws the classes, the domain shift and every video
    world_seed: int = 0  # the hidden world and its stand-in CLIP, shared with the temporal benchmark
    classes: int = 21
    # jhmdb / ucf: videos, official splits (per class, test_share of the videos are test)
    videos: int = 600
    splits: int = 3
    test_share: float = 0.3
    frames: tuple[int, int] = (15, 40)  # a video's frame count, uniform in this range
    resolution: tuple[int, int] = (240, 320)  # (height, width) in pixels
    feature_stride: int = 1  # feature rows on frames 1, 1 + stride, ...
    tubes: tuple[float, ...] = (1.0,)  # P(1 actor tube), P(2), ... (same class)
    full_coverage: float = 1.0  # chance the action spans the whole video, else a window of...
    window: tuple[float, float] = (0.5, 0.95)  # ... this share of it (uniform)
    bystanders: float = 0.0  # mean number (Poisson) of persons in a video who do nothing
    person_width: tuple[float, float] = (0.35, 0.7)  # box size as a share of the image, uniform
    person_height: tuple[float, float] = (0.6, 0.98)
    drift: float = 0.01  # per-frame random-walk step of a box centre, share of the image
    pair: tuple[int, ...] = ()  # (first, span): one dataset of a cross-dataset pair (see the module docstring)
    # ava: movies, keyframes at 1 Hz from first_timestamp
    train_movies: int = 0
    val_movies: int = 0
    keyframes: int = 120
    first_timestamp: int = 902
    persons: tuple[int, int] = (2, 6)  # persons a shot, uniform
    shot_keyframes: tuple[int, int] = (8, 30)  # persons keep their ids within a shot
    empty_shot: float = 0.04  # chance a shot shows nobody (annotated empty keyframes)
    excluded: float = 0.01  # share of val keyframes listed as excluded (and not annotated)
    type_sizes: tuple[int, int, int] = (14, 49, 17)  # pose / object / interaction classes
    long_tail: float = 1.2  # Zipf exponent of the class frequencies within a type
    interaction_share: float = 0.35  # share of object / interaction labels that are interactions
    other_labels: tuple[float, ...] = (0.3, 0.35, 0.25, 0.1)  # P(0), ..., P(3) object / interaction labels
    relabel: float = 0.15  # per-keyframe chance that a person's labels are drawn anew
    # features
    embed_dim: int = 64  # the stand-in CLIP's joint space
    grid: int = 4  # G: tokens on a G x G grid
    rotation: float = 0.6  # rho of A in s_c = norm(A c_c + gamma u_c) (as synthetic.SynthConfig)
    residual: float = 0.6  # gamma
    instance_jitter: float = 0.3  # a person's deviation from its class signatures
    region_rotation: float = 0.7  # share of R (tokens = R content) that rotates away from the signature space
    scene: float = 0.8  # per-video scene (nuisance) strength
    context: float = 0.0  # correlation of the scene with the class (ucf: the global context)
    occlusion: float = 0.7  # how much of the scene a person hides in the cells it covers
    action: float = 1.2  # amplitude of an action signature
    phase_depth: float = 0.85  # the motion phase scales the signature by 1 - depth ... 1
    period: tuple[float, float] = (6.0, 12.0)  # motion period in frames (ava: seconds), uniform
    pose: float = 0.6  # strength of the class-shared motion-phase vectors
    poses: int = 6
    appearance: float = 0.5  # per-person appearance vector
    noise: float = 0.45  # AR(1) per-token noise (norm about 4x this)
    global_noise: float = 0.3  # AR(1) noise of the global feature (norm about 4x this)
    noise_ar: float = 0.7
    # simulated person detector
    detector_iou: tuple[float, float] = (8.0, 2.0)  # Beta(a, b) of a detection's IoU with its GT box
    distractors: tuple[int, int] = (1, 4)  # distractor boxes a frame, uniform
    miss: float = 0.003  # chance an actor is missed on a frame
    # region-caption corpus (captions.npz): extra clips of non-class actions of the same world
    caption_clips: int = 300  # 0: no corpus
    caption_actions: tuple[int, int] = (24, 160)  # distinct actions of source A (narrow) and B (diverse)
    caption_stride: int = 3  # every n-th frame of an acting person is a pair


JHMDB = StadConfig()
UCF = StadConfig(layout="ucf", classes=24, videos=240, splits=1, test_share=0.28, frames=(60, 300), feature_stride=3,
                 tubes=(0.55, 0.25, 0.12, 0.08), full_coverage=0.5, bystanders=0.8, person_width=(0.1, 0.3),
                 person_height=(0.3, 0.7), drift=0.006, context=0.5, period=(8.0, 16.0))
AVA = StadConfig(layout="ava", classes=80, train_movies=40, val_movies=12, keyframes=120, resolution=(1, 1),
                 person_width=(0.1, 0.35), person_height=(0.35, 0.9), drift=0.02, period=(3.0, 6.0))

PROFILES = {
    "jhmdb": JHMDB,
    "ucf": UCF,
    "ava": AVA,
    "jhmdb_smoke": replace(JHMDB, videos=42, caption_clips=60, caption_actions=(8, 24)),
    "ucf_smoke": replace(UCF, videos=48, frames=(60, 120), feature_stride=4, caption_clips=30, caption_actions=(8, 24)),
    "ava_smoke": replace(AVA, train_movies=6, val_movies=3, keyframes=40, caption_clips=30, caption_actions=(8, 24)),
}
PAIR_SPAN = 45  # UCF101-24's 24 classes, then JHMDB-21's 21
PROFILES |= {
    "ucf_pair": replace(UCF, videos=160, frames=(40, 160), pair=(0, PAIR_SPAN)),  # smaller: the suite trains 23 jobs on it
    "jhmdb_pair": replace(JHMDB, pair=(24, PAIR_SPAN), caption_clips=0),
    "ucf_pair_smoke": replace(PROFILES["ucf_smoke"], pair=(0, PAIR_SPAN)),
    "jhmdb_pair_smoke": replace(PROFILES["jhmdb_smoke"], pair=(24, PAIR_SPAN), caption_clips=0),
}

# file names of each layout, as the real datasets name them
FILES = {
    "jhmdb": {"act_pkl": "JHMDB-GT.pkl", "gt_json": "jhmdb_test_gt_min.json",
              "person_boxes": "jhmdb_faster_RCNN_person.json"},
    "ucf": {"act_pkl": "UCF101v2-GT.pkl", "pyannot": "pyannot_with_class_names.pkl", "gt_json": "ucf24_test_gt_min.json",
            "person_boxes": "ucf24_faster_RCNN_person.json"},
    "ava": {"train_csv": "ava_train_v2.2.csv", "val_csv": "ava_val_v2.2.csv",
            "excluded": "ava_val_excluded_timestamps_v2.2.csv", "label_map": "ava_action_list_v2.2.pbtxt",
            "label_map_60": "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
            "person_boxes": "ava_val_predicted_boxes.csv"},
}


@dataclass
class _Track:
    """One person in one video: boxes on its frames and a multi-hot label row a frame (none: a bystander)."""

    person: int  # id within the video, from 1
    frames: np.ndarray  # [n] frame numbers (ava: keyframe seconds)
    boxes: np.ndarray  # [n, 4] x1, y1, x2, y2 (pixels; ava: normalised)
    labels: np.ndarray  # [n, C] bool
    partner: int = 0  # ava: the person an interaction label is directed at (0: none)


@dataclass
class _Video:
    name: str
    frames: np.ndarray  # annotated frames: 1..nframes, or the keyframe seconds
    label: int = -1  # jhmdb / ucf: the class of every tube
    subset: str = ""  # ava: train | val
    tracks: list[_Track] = field(default_factory=list)
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # ava val: excluded seconds


@dataclass(frozen=True)
class _Look:
    """The generator's hidden visual model (never written): signatures, contexts, R, motion phases."""

    signatures: np.ndarray  # [C, D]
    contexts: np.ndarray  # [C, D] class context directions of the scene
    region_map: np.ndarray  # [D, D] R
    poses: np.ndarray  # [P, D]
    interaction: np.ndarray  # [C] bool: labels that spill onto the partner


# ---------------------------------------------------------------------------------------------- layout


def _label_names(layout: str, phrases: list[str]) -> list[str]:
    """The names as the real files spell them: JHMDB ``brush_hair``, UCF ``SoccerJuggling``, AVA phrases."""
    if layout == "jhmdb":
        return [p.replace(" ", "_") for p in phrases]
    if layout == "ucf":
        return ["".join(w[:1].upper() + w[1:] for w in p.split()) for p in phrases]
    return list(phrases)


def _class_phrases(cfg: StadConfig, rng: np.random.Generator) -> tuple[list[str], set[str], np.random.Generator]:
    """(the class phrases, the names the caption corpus must avoid, the stream of the visual model's
    dataset-independent draws): drawn from ``rng`` alone, or for one dataset of a pair (``cfg.pair``) from
    the seed's pair streams, shared by the pair's datasets."""
    if not cfg.pair:
        phrases = class_names(cfg.classes, rng)
        return phrases, set(phrases), rng
    first, span = cfg.pair
    if first + cfg.classes > span or span > len(VOCABULARY):
        raise InputError(f"pair {cfg.pair}: classes {first}..{first + cfg.classes - 1} do not fit in the pair's {span} "
                         f"names (the world has {len(VOCABULARY)})")
    order = np.random.default_rng([cfg.seed, 14]).permutation(len(VOCABULARY))
    phrases = sorted(VOCABULARY[i] for i in order[first:first + cfg.classes])
    return phrases, {VOCABULARY[i] for i in order[:span]}, np.random.default_rng([cfg.seed, 13])


def _copy(rng: np.random.Generator) -> np.random.Generator:
    copy = np.random.Generator(np.random.PCG64())
    copy.bit_generator.state = rng.bit_generator.state
    return copy


def _trajectory(n: int, cfg: StadConfig, rng: np.random.Generator) -> np.ndarray:
    """[n, 4] boxes of one person over n consecutive frames: a random size, a smoothly drifting centre."""
    height, width = cfg.resolution
    size = np.array([rng.uniform(*cfg.person_width), rng.uniform(*cfg.person_height)])
    steps = lfilter([1.0], [1.0, -0.8], rng.standard_normal((n, 2)) * cfg.drift, axis=0)
    centre = rng.uniform(size / 2, 1 - size / 2) + np.cumsum(steps, axis=0)
    centre = np.clip(centre, size / 2, 1 - size / 2)
    scale = 1 + 0.05 * np.sin(np.arange(n)[:, None] / rng.uniform(5, 15) + rng.uniform(0, 6.3, 2))
    half = size * scale / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1).clip(0, 1) * [width, height, width, height]
    return _round_boxes(boxes, cfg)


def _round_boxes(boxes: np.ndarray, cfg: StadConfig) -> np.ndarray:
    """Integer pixels (jhmdb, ucf: x2 <= width - 1), or 3 decimals of a normalised box (ava), as the files hold them."""
    if cfg.layout == "ava":
        return np.clip(boxes, 0, 1).round(3)
    height, width = cfg.resolution
    return np.clip(boxes.round(), 0, [width - 1, height - 1, width - 1, height - 1])


def _act_video(name: str, label: int, cfg: StadConfig, rng: np.random.Generator) -> _Video:
    """A JHMDB- or UCF-shaped video: same-class actor tubes over the action window, and bystanders."""
    n = int(rng.integers(cfg.frames[0], cfg.frames[1] + 1))
    frames = np.arange(1, n + 1)
    if rng.random() < cfg.full_coverage:
        start, end = 0, n
    else:
        length = max(2, int(round(rng.uniform(*cfg.window) * n)))
        start = int(rng.integers(0, n - length + 1))
        end = start + length
    tracks = []
    for i in range(1 + rng.choice(len(cfg.tubes), p=np.asarray(cfg.tubes) / sum(cfg.tubes))):
        s, e = start, end
        if i:  # later actors join or leave within the window
            length = max(2, int(round(rng.uniform(0.5, 1.0) * (end - start))))
            s = start + int(rng.integers(0, end - start - length + 1))
            e = s + length
        labels = np.zeros((e - s, cfg.classes), dtype=bool)
        labels[:, label] = True
        tracks.append(_Track(i + 1, frames[s:e], _trajectory(e - s, cfg, rng), labels))
    for _ in range(rng.poisson(cfg.bystanders)):
        length = max(2, int(round(rng.uniform(0.3, 1.0) * n)))
        s = int(rng.integers(0, n - length + 1))
        tracks.append(_Track(len(tracks) + 1, frames[s:s + length], _trajectory(length, cfg, rng),
                             np.zeros((length, cfg.classes), dtype=bool)))
    return _Video(name, frames, label, tracks=tracks)


def _ava_classes(cfg: StadConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(type of each class [C], frequency of each class within its type [C]): Zipf within each type."""
    types = np.repeat(np.arange(3), cfg.type_sizes)
    frequency = np.zeros(cfg.classes)
    for t in range(3):
        members = np.flatnonzero(types == t)
        frequency[rng.permutation(members)] = np.arange(1, len(members) + 1, dtype=float) ** -cfg.long_tail
        frequency[members] /= frequency[members].sum()
    return types, frequency


def _ava_movie(name: str, subset: str, types: np.ndarray, frequency: np.ndarray, cfg: StadConfig,
               rng: np.random.Generator) -> _Video:
    """An AVA-shaped movie: shots of 2-6 persons with persistent ids and sticky, multi-label actions."""
    seconds = cfg.first_timestamp + np.arange(cfg.keyframes)
    video = _Video(name, seconds, subset=subset)
    pose = np.flatnonzero(types == 0)
    other = np.flatnonzero(types != 0)
    other_p = frequency[other] * np.where(types[other] == 2, cfg.interaction_share, 1 - cfg.interaction_share)
    other_p /= other_p.sum()
    start = 0
    while start < cfg.keyframes:
        length = min(int(rng.integers(cfg.shot_keyframes[0], cfg.shot_keyframes[1] + 1)), cfg.keyframes - start)
        shot = seconds[start:start + length]
        start += length
        if rng.random() < cfg.empty_shot:
            continue
        first = len(video.tracks) + 1
        count = int(rng.integers(cfg.persons[0], cfg.persons[1] + 1))
        for i in range(count):
            labels = np.zeros((length, cfg.classes), dtype=bool)
            for t in range(length):
                if t == 0 or rng.random() < cfg.relabel:
                    current = [rng.choice(pose, p=frequency[pose])]
                    k = rng.choice(len(cfg.other_labels), p=np.asarray(cfg.other_labels) / sum(cfg.other_labels))
                    current += list(rng.choice(other, size=k, replace=False, p=other_p))
                labels[t, current] = True
            partner = first + (i + 1 + int(rng.integers(0, count - 1))) % count
            video.tracks.append(_Track(first + i, shot, _trajectory(length, cfg, rng), labels, partner))
    if subset == "val":
        video.excluded = seconds[rng.random(len(seconds)) < cfg.excluded]
    return video


# -------------------------------------------------------------------------------------------- features


def _ar1(shape: tuple[int, ...], a: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary unit-variance AR(1) noise along the first axis."""
    eps = rng.standard_normal(shape)
    eps[0] /= np.sqrt(1 - a**2)
    return lfilter([np.sqrt(1 - a**2)], [1.0, -a], eps, axis=0)


def _coverage(boxes: np.ndarray, cfg: StadConfig) -> np.ndarray:
    """[n, G*G] share of each cell a box covers."""
    height, width = cfg.resolution
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    return roi_weights(boxes, cfg.resolution, cfg.grid) * (area / (height * width / cfg.grid**2))[:, None]


def _features(video: _Video, rows: np.ndarray, look: _Look, cfg: StadConfig,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(global [T, D], tokens [T, G*G, D]) of ``video`` on the frames ``rows`` (see the module docstring)."""
    d, cells = cfg.embed_dim, cfg.grid**2
    height, width = cfg.resolution
    label = video.label if video.label >= 0 else None
    scene = _unit(rng.standard_normal(d))
    if label is not None and cfg.context:
        scene = _unit(cfg.context * look.contexts[label] + np.sqrt(1 - cfg.context**2) * scene)
    scene = cfg.scene * scene
    content = np.zeros((len(rows), cells, d))  # persons' part of every cell, in the signature space
    covered = np.zeros((len(rows), cells))
    glob = np.zeros((len(rows), d))
    by_person = {}
    for track in video.tracks:
        at = np.searchsorted(rows, track.frames)
        on = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == track.frames)
        idx, boxes, labels = at[on], track.boxes[on], track.labels[on]
        period = rng.uniform(*cfg.period)
        phase = rows[idx] / period + rng.random()  # in cycles
        amplitude = 1 - cfg.phase_depth * (0.5 + 0.5 * np.cos(2 * np.pi * phase))
        own = _unit(look.signatures + cfg.instance_jitter * _unit(rng.standard_normal(look.signatures.shape)))
        acting = labels.any(1)
        person = cfg.appearance * _unit(rng.standard_normal(d)) + np.zeros((len(idx), d))
        person += cfg.pose * look.poses[np.floor(phase * cfg.poses).astype(int) % cfg.poses] * acting[:, None]
        signal = cfg.action * amplitude[:, None] * (labels @ own)
        cover = _coverage(boxes, cfg)
        content[idx] += cover[:, :, None] * (person + signal)[:, None, :]
        covered[idx] += cover
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (height * width)
        glob[idx] += np.minimum(1.0, 1.5 * np.sqrt(area))[:, None] * (person + signal)
        by_person[track.person] = (track, idx, cover, amplitude[:, None] * ((labels & look.interaction) @ own))
    for track, idx, _, spill in by_person.values():  # ava: an interaction shows on its partner too
        if track.partner in by_person and spill.any():
            _, partner_idx, partner_cover, _ = by_person[track.partner]
            both, mine, theirs = np.intersect1d(idx, partner_idx, return_indices=True)
            content[both] += 0.5 * cfg.action * partner_cover[theirs][:, :, None] * spill[mine][:, None, :]
    content += scene * (1 - cfg.occlusion * np.minimum(1.0, covered))[:, :, None]
    tokens = content @ look.region_map.T + cfg.noise * 4 / np.sqrt(d) * _ar1(content.shape, cfg.noise_ar, rng)
    glob += scene + cfg.global_noise * 4 / np.sqrt(d) * _ar1(glob.shape, cfg.noise_ar, rng)
    return glob.astype(np.float16), tokens.astype(np.float16)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez with fixed zip timestamps (np.savez stamps the current time: bytes would differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    path.write_bytes(buffer.getvalue())


def _write_captions(path: Path, phrases: list[str], reserved: set[str], world: WorldConfig, look: _Look,
                    fork: tuple[np.random.Generator, np.random.Generator], cfg: StadConfig) -> None:
    """The region-caption corpus (see the module docstring). ``fork`` holds the states ``generate`` drew the
    class signatures and their A from, so the caption actions' signatures share that A; everything else is
    drawn from the corpus's own stream, leaving the benchmark's files as they were. No caption names a
    ``reserved`` name (the benchmark's classes, or every class of its pair)."""
    rng = np.random.default_rng([cfg.seed, 12])
    pool = [name for name in VOCABULARY if name not in reserved]
    narrow, broad = cfg.caption_actions
    if narrow + broad > len(pool):
        raise InputError(f"caption_actions {cfg.caption_actions}: only {len(pool)} non-class actions in the world")
    actions = [pool[i] for i in rng.choice(len(pool), size=narrow + broad, replace=False)]
    signatures = visual_signatures(concepts(phrases + actions, world), SynthConfig(rotation=cfg.rotation, residual=cfg.residual),
                                   fork[0], rotation_rng=fork[1])[len(phrases):]
    corpus_look = replace(look, signatures=signatures,
                          contexts=_unit(signatures + _unit(rng.standard_normal(signatures.shape))),
                          interaction=np.zeros(len(actions), dtype=bool))
    clip_cfg = replace(cfg, classes=len(actions)) if cfg.layout != "ava" else replace(
        cfg, classes=len(actions), frames=JHMDB.frames, tubes=(1.0,), bystanders=0.0)
    region, glob, caption, source = [], [], [], []
    for i in range(cfg.caption_clips):
        in_a = i < cfg.caption_clips // 3
        action = int(rng.integers(0, narrow)) if in_a else narrow + int(rng.integers(0, broad))
        video = _act_video(f"caption/{i:05d}", action, clip_cfg, rng)
        rows = video.frames[::cfg.feature_stride]
        g, tokens = _features(video, rows, corpus_look, clip_cfg, rng)
        template = CAPTION_TEMPLATES[int(rng.integers(0, len(CAPTION_TEMPLATES)))]
        for track in video.tracks:
            at = np.searchsorted(rows, track.frames)
            on = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == track.frames) & track.labels.any(1)
            pick = np.flatnonzero(on)[::cfg.caption_stride]
            weights = roi_weights(track.boxes[pick], cfg.resolution, cfg.grid).astype(np.float32)
            region.append(np.einsum("nk,nkd->nd", weights, tokens[at[pick]].astype(np.float32)))
            glob.append(g[at[pick]].astype(np.float32))
            caption += [template.format(actions[action])] * len(pick)
            source += ["A" if in_a else "B"] * len(pick)
    _save_npz(path, {"region": np.concatenate(region).astype(np.float16), "global": np.concatenate(glob).astype(np.float16),
                     "caption": np.asarray(caption, dtype=str), "source": np.asarray(source, dtype=str)})


# -------------------------------------------------------------------------------------------- detector


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = (np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])).clip(0)
    h = (np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])).clip(0)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]).clip(0) * (x[:, 3] - x[:, 1]).clip(0)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def _jitter(boxes: np.ndarray, target: np.ndarray, cfg: StadConfig, rng: np.random.Generator) -> np.ndarray:
    """Boxes moved off ``boxes`` [n, 4] along a random direction until their IoU with them is ``target``
    (bisection on the step, inside the image)."""
    height, width = cfg.resolution
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    direction = _unit(rng.standard_normal(boxes.shape)) * size
    bound = np.array([width, height, width, height], dtype=float)

    def moved(step):
        out = np.clip(boxes + step[:, None] * direction, 0, bound)
        return np.concatenate([np.minimum(out[:, :2], out[:, 2:]), np.maximum(out[:, :2], out[:, 2:])], axis=1)

    lo, hi = np.zeros(len(boxes)), np.full(len(boxes), 3.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        too_close = _pair_iou(boxes, moved(mid)) > target
        lo, hi = np.where(too_close, mid, lo), np.where(too_close, hi, mid)
    return moved((lo + hi) / 2)


def _detections(video: _Video, cfg: StadConfig, rng: np.random.Generator) -> list[tuple[int, np.ndarray, float]]:
    """The simulated person detector on every annotated frame of ``video``: (frame, box, score) rows,
    sorted by frame, then by descending score."""
    found = []  # (frame, gt box, score) of the persons the detector finds
    for track in video.tracks:
        actor = track.labels.any(1)
        score = np.where(actor, 1 - rng.beta(1.0, 60.0, len(actor)), 0.35 + 0.64 * rng.beta(4.0, 2.0, len(actor)))
        keep = rng.random(len(actor)) >= np.where(actor, cfg.miss, 0.05)
        found += list(zip(track.frames[keep], track.boxes[keep], score[keep]))
    rows = []
    if found:
        frames, gt, score = (np.array(c) for c in zip(*found))
        boxes = _jitter(gt.astype(float), rng.beta(*cfg.detector_iou, len(gt)), cfg, rng)
        rows += list(zip(frames.tolist(), _round_boxes(boxes, cfg), score.tolist()))
    height, width = cfg.resolution
    count = rng.integers(cfg.distractors[0], cfg.distractors[1] + 1, len(video.frames))
    frames = np.repeat(video.frames, count)
    size = rng.uniform(0.1, 0.6, (len(frames), 2))
    corner = rng.uniform(0, 1 - size)
    boxes = np.concatenate([corner, corner + size], axis=1) * [width, height, width, height]
    if found:  # some distractors are loose boxes around a person (a second, worse detection)
        gt_of_frame = {f: b for f, b, _ in found}
        loose = np.array([f in gt_of_frame for f in frames]) & (rng.random(len(frames)) < 0.4)
        if loose.any():
            near = np.array([gt_of_frame[f] for f in frames[loose]], dtype=float)
            boxes[loose] = _jitter(near, rng.uniform(0.15, 0.45, len(near)), cfg, rng)
    score = 0.05 + 0.45 * rng.beta(1.0, 3.0, len(frames))
    rows += list(zip(frames.tolist(), _round_boxes(boxes, cfg), score.tolist()))
    rows.sort(key=lambda r: (r[0], -r[2]))
    return [(int(f), b, float(f"{s:.7g}")) for f, b, s in rows]  # a detector's float32 score, as text


# --------------------------------------------------------------------------------------------- writers


def _gt_table(videos: list[_Video], labels: list[str], name=lambda video: video.name) -> BoxTable:
    """One row per (GT box, label) of the acting persons of ``videos`` (bystanders are not ground truth)."""
    parts = []
    for video in videos:
        for track in video.tracks:
            at, label = np.nonzero(track.labels)
            parts.append((np.full(len(at), name(video)), track.frames[at], track.boxes[at], label,
                          np.full(len(at), track.person)))
    if not parts:
        return BoxTable.empty()
    video, frame, box, label, person = (np.concatenate(c) for c in zip(*parts))
    return BoxTable(video.astype(str), frame.astype(np.int64), box.astype(np.float64).reshape(-1, 4),
                    np.asarray(labels, dtype=str)[label.astype(int)], None, person.astype(np.int64))


def _keys_table(keys: list[tuple[str, int]]) -> BoxTable:
    """Annotated (video, frame) keys as a BoxTable (zero boxes, empty labels), as the readers give them."""
    return BoxTable(np.asarray([v for v, _ in keys], dtype=str).reshape(-1), np.asarray([f for _, f in keys], dtype=np.int64),
                    np.zeros((len(keys), 4)), np.full(len(keys), ""))


def _detection_table(detections: dict, name=lambda video: video) -> BoxTable:
    rows = [(name(video), frame, *box, PERSON, score) for video, found in detections.items() for frame, box, score in found]
    return BoxTable.from_rows(rows, with_score=True)


def _write_act(folder: Path, labels: list[str], videos: list[_Video], splits, cfg: StadConfig) -> Path:
    """The ACT ``-GT.pkl`` of every video and split (for ucf also the UCF101-24 pyannot layout + testlist01.txt)."""
    ann = BoxAnnotations("synthetic", "act_pkl", tuple(labels), _gt_table(videos, labels),
                         {v.name: len(v.frames) for v in videos}, {v.name: tuple(cfg.resolution) for v in videos},
                         tuple((tuple(train), tuple(test)) for train, test in splits))
    if cfg.layout == "ucf":
        write_ucf_pyannot(ann, folder / FILES["ucf"]["pyannot"])
    return write_act_pkl(ann, folder / FILES[cfg.layout]["act_pkl"])


def _write_stclip(folder: Path, labels: list[str], videos: list[_Video], detections: dict, cfg: StadConfig) -> None:
    """ST-CLIP's GT JSON (+ all_label.txt) of ``videos`` (every frame an image, boxes or not) and the person-box
    JSON of the detector on them, with bare movie names as ST-CLIP writes them."""
    movie = {v.name: v.name.split("/")[-1] for v in videos}
    keys = [(movie[v.name], int(f)) for v in videos for f in v.frames]
    ann = BoxAnnotations("synthetic", "stclip_json", tuple(labels), _gt_table(videos, labels, lambda v: movie[v.name]),
                         resolution={m: tuple(cfg.resolution) for m in movie.values()}, keyframes=_keys_table(keys))
    files = FILES[cfg.layout]
    write_stclip_json(ann, folder / files["gt_json"])
    write_person_boxes(_detection_table(detections, movie.get), folder / files["person_boxes"], stclip_image_ids(keys))


def _write_ava(folder: Path, names: list[str], types: np.ndarray, evaluated: np.ndarray, videos: list[_Video],
               detections: dict) -> None:
    """AVA v2.2: train / val CSVs (excluded keyframes are not annotated), val exclusions, the 80-class label map
    with label types, the 60-class map, and the LFB-style predicted person boxes."""
    files = FILES["ava"]
    label_map = {i + 1: name for i, name in enumerate(names)}
    for subset in ("train", "val"):
        mine = [v for v in videos if v.subset == subset]
        keys = [(v.name, int(s)) for v in mine for s in np.setdiff1d(v.frames, v.excluded)]
        gt = _gt_table(mine, names)
        excluded = {(v.name, int(s)) for v in mine for s in v.excluded}
        kept = np.array([key not in excluded for key in zip(gt.video.tolist(), gt.frame.tolist())], dtype=bool)
        ann = BoxAnnotations("synthetic", "ava_csv", tuple(names), gt.select(kept), keyframes=_keys_table(keys))
        write_ava_csv(ann, folder / files[f"{subset}_csv"], label_map)
    write_ava_exclusions([(v.name, int(s)) for v in videos if v.subset == "val" for s in v.excluded],
                         folder / files["excluded"])
    write_ava_label_map(label_map, folder / files["label_map"], {n: AVA_TYPES[t] for n, t in zip(names, types)})
    write_ava_label_map({i + 1: names[i] for i in np.flatnonzero(evaluated)}, folder / files["label_map_60"])
    _write_predicted_boxes(folder / files["person_boxes"], detections)


def _write_predicted_boxes(path: Path, detections: dict) -> None:
    """LFB / SlowFast ``ava_val_predicted_boxes.csv``: ``video,%04d,x1,y1,x2,y2,,score`` (no action id).
    No writer of :mod:`benchmark.data.box_writers` has this format yet."""
    _write_csv(path, [[video, f"{second:04d}", *(f"{x:.3f}" for x in box), "", f"{score:.6f}"]
                      for video, found in detections.items() for second, box, score in found])


def _write_csv(path: Path, rows: list[list]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    _write_bytes(path, buffer.getvalue().encode())


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- generate


def _splits(videos: list[_Video], cfg: StadConfig, rng: np.random.Generator) -> list[tuple[list, list]]:
    """Official-style splits: per class, ``test_share`` of its videos are test, drawn anew for every split."""
    out = []
    for _ in range(cfg.splits):
        test = set()
        for c in range(cfg.classes):
            mine = [v.name for v in videos if v.label == c]
            test.update(rng.permutation(mine)[:int(round(cfg.test_share * len(mine)))].tolist())
        names = sorted(v.name for v in videos)
        out.append(([n for n in names if n not in test], [n for n in names if n in test]))
    return out


def generate(out_dir: str | Path, cfg: StadConfig = JHMDB) -> Path:
    """Write the benchmark of ``cfg`` into ``out_dir``: annotations/ (the real formats of ``cfg.layout``,
    see :data:`FILES`), features/<video>.npz, text_encoder/ and synthetic.json (written last).

    One config gives the same bytes in every file wherever ``out_dir`` is; paths in the manifest are
    relative to ``out_dir`` (read it with :func:`load_manifest`).
    """
    if cfg.layout not in FILES:
        raise InputError(f"synthetic STAD layout {cfg.layout!r}: use one of {', '.join(FILES)}")
    if cfg.layout == "ava" and cfg.classes != sum(cfg.type_sizes):
        raise InputError(f"ava layout: {cfg.classes} classes but type sizes {cfg.type_sizes}")
    out = Path(out_dir)
    rng = np.random.default_rng([cfg.seed, 11])  # its own stream: not the temporal benchmark's draws
    world = WorldConfig(seed=cfg.world_seed, embed_dim=cfg.embed_dim)
    text_cfg, pretraining = pretrained_text_encoder(out / "text_encoder", world)
    phrases, reserved, shared = _class_phrases(cfg, rng)
    types, frequency = _ava_classes(cfg, rng) if cfg.layout == "ava" else (np.zeros(cfg.classes, int), None)
    if cfg.layout == "ava":  # AVA orders its label map by type: pose, object, interaction
        phrases = [phrases[i] for i in np.argsort(types, kind="stable")]
    labels = _label_names(cfg.layout, phrases)
    fork = _copy(rng)  # the corpus's signatures see the same A
    fork_shared = _copy(shared) if shared is not rng else fork
    signatures = visual_signatures(concepts(phrases, world), SynthConfig(rotation=cfg.rotation, residual=cfg.residual),
                                   rng, rotation_rng=shared)
    d = cfg.embed_dim
    look = _Look(signatures, _unit(signatures + _unit(rng.standard_normal(signatures.shape))),
                 (1 - cfg.region_rotation) * np.eye(d) + cfg.region_rotation * _random_rotation(d, shared),
                 _unit(shared.standard_normal((cfg.poses, d))), types == 2)

    if cfg.layout == "ava":
        videos = [_ava_movie(f"syn{cfg.seed:03d}{s[0]}{i:04d}", s, types, frequency, cfg, rng)
                  for s, count in (("train", cfg.train_movies), ("val", cfg.val_movies)) for i in range(count)]
    else:
        draws = np.concatenate([np.arange(cfg.classes), rng.integers(0, cfg.classes, max(0, cfg.videos - cfg.classes))])
        videos = []
        for i, c in enumerate(draws[:cfg.videos]):
            clip = sum(int(v.label == c) for v in videos)
            stem = (f"{labels[c]}_s{cfg.seed}_{clip:03d}" if cfg.layout == "jhmdb"
                    else f"v_{labels[c]}_g{clip // 4 + 1:02d}_c{clip % 4 + 1:02d}")
            videos.append(_act_video(f"{labels[c]}/{stem}", int(c), cfg, rng))
        videos.sort(key=lambda v: v.name)

    for video in videos:
        rows = video.frames[::cfg.feature_stride]
        glob, tokens = _features(video, rows, look, cfg, rng)
        _save_npz(out / "features" / f"{video.name}.npz", {"frames": rows.astype(np.int32), "global": glob, "tokens": tokens})

    files = FILES[cfg.layout]
    folder = out / "annotations"
    if cfg.layout == "ava":
        counts = np.array([sum(int(t.labels[:, c].sum()) for v in videos if v.subset == "train" for t in v.tracks)
                           for c in range(cfg.classes)])
        evaluated = np.zeros(cfg.classes, dtype=bool)  # the 60 most frequent in training, as AVA's 60 are
        evaluated[np.argsort(-counts, kind="stable")[:min(60, cfg.classes)]] = True
        detections = {v.name: _detections(v, cfg, rng) for v in videos if v.subset == "val"}
        _write_ava(folder, labels, types, evaluated, videos, detections)
    else:
        splits = _splits(videos, cfg, rng)
        tested = [v for v in videos if v.name in set(splits[0][1])]  # the real files: split-1 test
        detections = {v.name: _detections(v, cfg, rng) for v in tested}
        _write_act(folder, labels, videos, splits, cfg)
        _write_stclip(folder, labels, tested, detections, cfg)
    if cfg.caption_clips:
        _write_captions(out / "captions.npz", phrases, reserved, world, look, (fork, fork_shared), cfg)

    manifest = {
        "synthetic": True,
        "generator_version": GENERATOR_VERSION,
        "layout": cfg.layout,
        "config": asdict(cfg),
        "classes": labels,  # as the annotation files spell them
        "phrases": phrases,  # the same names as phrases (what a "natural" name normalisation recovers)
        "annotations": {key: f"annotations/{name}" for key, name in files.items() if key != "person_boxes"}
        | ({"label_file": "annotations/all_label.txt"} if "gt_json" in files else {}),
        "person_boxes": f"annotations/{files['person_boxes']}",
        "features": "features",
        "feature_grid": cfg.grid,
        "captions": "captions.npz" if cfg.caption_clips else None,
        "text_encoder": {key: Path(getattr(text_cfg, key)).relative_to(out).as_posix() for key in ("model", "pretrained")},
        "pretraining": pretraining,
    }
    _write_bytes(out / "synthetic.json", json.dumps(manifest, indent=1).encode())  # last: marks a complete folder
    return out


def load_manifest(root: str | Path) -> dict:
    """``root``'s synthetic.json with every path made absolute (annotations, person_boxes, features, text_encoder)."""
    root = Path(root).resolve()
    manifest = json.loads((root / "synthetic.json").read_text())
    manifest["annotations"] = {key: str(root / path) for key, path in manifest["annotations"].items()}
    manifest["person_boxes"] = str(root / manifest["person_boxes"])
    manifest["features"] = str(root / manifest["features"])
    if manifest.get("captions"):
        manifest["captions"] = str(root / manifest["captions"])
    manifest["text_encoder"] = {key: str(root / path) for key, path in manifest["text_encoder"].items()}
    return manifest


def ensure_synthetic_stad(root: str | Path, profile: str = "jhmdb", seed: int = 0, **overrides) -> Path:
    """The benchmark of (profile, seed, overrides) under ``root``, generated once and reused (regenerated from
    scratch when the config or the world's pretrained tower differs), as :func:`.synthetic.ensure_synthetic`."""
    if profile not in PROFILES:
        raise InputError(f"synthetic STAD profile {profile!r}: use one of {', '.join(PROFILES)}")
    cfg = replace(PROFILES[profile], seed=seed, **overrides)
    key = f"{profile}-s{seed}" + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    world = WorldConfig(seed=cfg.world_seed, embed_dim=cfg.embed_dim)
    return ensure_generated(Path(root) / f"stad-v{GENERATOR_VERSION}-{key}", cfg, world, generate)
