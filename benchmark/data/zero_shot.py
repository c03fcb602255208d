"""Zero-shot (and closed-set) views of a dataset for one class split.

The clean protocol (DESIGN.md §1) is the default; every published shortcut is a switch:
- training videos keep only seen-class instances; snippets of unseen instances become background
  (``unseen_in_training="remove"``), or such videos are dropped (``"drop"``);
- test videos = those with >= 1 unseen instance, ground truth = unseen instances only
  (``score_all_test_videos=True`` scores every test video instead: more false-positive chances);
- ``last_annotation_only=True`` mimics STALE's released loader, which keeps one annotation a video;
- ``test_subsets="all"`` mimics T3AL's released loader: the test videos are every annotated video with an unseen
  instance, those of the training subset included (the clean ``"test"``: the test subset only);
- double labels (DESIGN.md §1, pitfall 5): THUMOS14 annotates every CliffDiving instance as Diving
  too, so a split with one seen and the other unseen trains on instances of an unseen class. Such
  pairs are found in the annotations (:func:`double_label_pairs`), every view of a split that separates
  one is flagged (:func:`double_label_leaks`), and ``double_labels="remove_twins"`` is the clean
  variant: a training instance that is also annotated with an unseen class counts as unseen (it is
  removed like the unseen instance). The default ``"keep"`` is the protocol as published.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmark.data.annotations import Annotations, Video
from benchmark.data.features import ScannedFeatures, load_features
from benchmark.data.splits import ClassSplit
from benchmark.data.targets import SnippetTargets, snippet_targets
from benchmark.errors import InputError
from benchmark.evaluation.segments import SegmentTable

DOUBLE_LABEL_CHOICES = ("keep", "remove_twins")
TEST_SUBSETS = ("test", "all")


@dataclass(frozen=True)
class Dataset:
    """Annotations + features + the protocol facts of one dataset."""

    name: str
    annotations: Annotations
    features: object  # a feature store from benchmark.data.features (None: scoring prediction files only)
    T: int  # snippets per video after rescaling (100 ActivityNet, 256 THUMOS14)
    train_subset: str
    test_subset: str
    cache_dir: Path | None = None
    synthetic: bool = False
    scan: ScannedFeatures | None = None  # a run's checked features (scan_features); else read per view

    @cached_property
    def double_labels(self) -> list[tuple[str, str]]:
        """:func:`double_label_pairs` of the annotations, found once per dataset."""
        return double_label_pairs(self.annotations)

    def load(self, video_ids: list[str]) -> np.ndarray:
        """``[N, T, D]`` features of these videos, from the run's scan when there is one."""
        if self.scan is not None:
            return self.scan.take(video_ids)
        return load_features(self.features, video_ids, self.T, self.cache_dir)


@dataclass(frozen=True)
class TrainView:
    videos: list[Video]  # with only the instances the model may see
    features: np.ndarray  # [N, T, D] float32
    targets: SnippetTargets
    classes: tuple[str, ...]  # training classes; targets index into this tuple, background = len(classes)
    T: int


@dataclass(frozen=True)
class TestView:
    videos: list[Video]  # scored videos, with only the evaluated instances
    features: np.ndarray | None  # [N, T, D] float32; None when only predictions are scored
    classes: tuple[str, ...]  # classes a prediction may name (the unseen ones in zero-shot)
    gt: SegmentTable
    T: int
    notes: tuple[str, ...] = field(default=())  # protocol warnings to carry into the records

    @property
    def durations(self) -> np.ndarray:
        return np.array([v.duration for v in self.videos], dtype=np.float64)


def _keep(video: Video, classes: set[str]) -> Video:
    return replace(video, instances=tuple(i for i in video.instances if i.label in classes))


def _with_duration(videos: list[Video], what: str) -> list[Video]:
    """Snippet indices become seconds through the duration: videos without one are skipped (counted)."""
    kept = [v for v in videos if v.duration is not None]
    if len(kept) < len(videos):
        warnings.warn(f"{what}: {len(videos) - len(kept)} videos have no duration and are skipped", stacklevel=3)
    return kept


def double_label_pairs(annotations: Annotations) -> list[tuple[str, str]]:
    """(child, parent) class pairs where every child instance is also a parent instance: the same
    video and segment annotated with both labels (THUMOS14: CliffDiving, Diving)."""
    segments: dict[str, set] = {}
    for video in annotations.videos.values():
        for i in video.instances:
            segments.setdefault(i.label, set()).add((video.id, i.start, i.end))
    return [(a, b) for a in sorted(segments) for b in sorted(segments)
            if segments[a] < segments[b] or a < b and segments[a] == segments[b]]  # two labels of the same set: once


def double_label_leaks(split: ClassSplit, pairs) -> list[str]:
    """The double-labelled class pairs (:func:`double_label_pairs`) that the split separates (one seen, one unseen)."""
    seen, unseen = set(split.seen), set(split.unseen)
    return [f"{a}/{b} double labels cross the split" for a, b in pairs
            if (a in seen and b in unseen) or (b in seen and a in unseen)]


def last_annotation_only(video: Video) -> Video:
    return replace(video, instances=video.instances[-1:])


def _without_twins(video: Video, classes: set[str]) -> Video:
    """Drop the instances that share their segment with an instance of a class not in ``classes``."""
    other = {(i.start, i.end) for i in video.instances if i.label not in classes}
    return replace(video, instances=tuple(i for i in video.instances if (i.start, i.end) not in other))


def training_videos(dataset: Dataset, classes, unseen_in_training: str = "remove", last_only: bool = False,
                    double_labels: str = "keep") -> list[Video]:
    """The training videos a view of ``classes`` holds, each with only the instances of ``classes``
    (and, with ``double_labels="remove_twins"``, none that is also annotated with another class)."""
    keep = set(classes)
    videos = _with_duration(dataset.annotations.subset(dataset.train_subset), f"{dataset.name} training")
    if last_only:
        videos = [last_annotation_only(v) for v in videos]
    if unseen_in_training == "drop":
        videos = [v for v in videos if all(i.label in keep for i in v.instances)]
    elif unseen_in_training != "remove":
        raise InputError(f"unseen_in_training must be 'remove' or 'drop', got {unseen_in_training!r}")
    if double_labels == "remove_twins":
        videos = [_without_twins(v, keep) for v in videos]
    elif double_labels != "keep":
        raise InputError(f"double_labels must be one of {', '.join(DOUBLE_LABEL_CHOICES)}, got {double_labels!r}")
    videos = [_keep(v, keep) for v in videos]
    return [v for v in videos if v.instances]


def scored_videos(dataset: Dataset, classes, score_all_test_videos: bool = False, last_only: bool = False,
                  subsets: str = "test") -> list[Video]:
    """The scored test videos of ``classes``, each with only the instances of ``classes``; ``subsets="all"``
    takes them from every subset of the annotations, the training subset included (see the module docstring)."""
    keep = set(classes)
    if subsets == "all":
        videos = [v for v in dataset.annotations.videos.values() if v.instances]
    elif subsets == "test":
        videos = dataset.annotations.subset(dataset.test_subset)
    else:
        raise InputError(f"test_subsets must be one of {', '.join(TEST_SUBSETS)}, got {subsets!r}")
    videos = _with_duration(videos, f"{dataset.name} test")
    if last_only:
        videos = [last_annotation_only(v) for v in videos]
    if not score_all_test_videos:  # the videos with an instance of the classes (before copying any)
        videos = [v for v in videos if any(i.label in keep for i in v.instances)]
    return [_keep(v, keep) for v in videos]


def train_view(dataset: Dataset, classes, unseen_in_training: str = "remove", last_only: bool = False,
               double_labels: str = "keep") -> TrainView:
    classes = tuple(sorted(classes))
    videos = training_videos(dataset, classes, unseen_in_training, last_only, double_labels)
    targets = snippet_targets(videos, {c: k for k, c in enumerate(classes)}, dataset.T)
    return TrainView(videos, dataset.load([v.id for v in videos]), targets, classes, dataset.T)


def test_view(dataset: Dataset, classes, score_all_test_videos: bool = False, last_only: bool = False,
              notes=(), subsets: str = "test") -> TestView:
    classes = tuple(sorted(classes))
    videos = scored_videos(dataset, classes, score_all_test_videos, last_only, subsets)
    gt = SegmentTable.from_rows(((v.id, i.start, i.end, i.label) for v in videos for i in v.instances), with_score=False)
    features = None if dataset.features is None else dataset.load([v.id for v in videos])
    return TestView(videos, features, classes, gt, dataset.T, tuple(notes))


def zero_shot_views(dataset: Dataset, split: ClassSplit, unseen_in_training: str = "remove",
                    last_only: bool = False, score_all_test_videos: bool = False,
                    double_labels: str = "keep", test_subsets: str = "test") -> tuple[TrainView, TestView]:
    """Training on the split's seen classes, testing on its unseen classes (:func:`zero_shot_test_view`)."""
    test = zero_shot_test_view(dataset, split, score_all_test_videos, last_only, test_subsets)
    return train_view(dataset, split.seen, unseen_in_training, last_only, double_labels), test


def zero_shot_test_view(dataset: Dataset, split: ClassSplit, score_all_test_videos: bool = False,
                        last_only: bool = False, subsets: str = "test") -> TestView:
    """The split's test view: its unseen classes; the notes name the double-label pairs the split
    separates (see the module docstring). A dataset without features gives a view without them."""
    notes = double_label_leaks(split, dataset.double_labels)
    for note in notes:
        warnings.warn(f"{dataset.name} split {split.setting}/{split.index}: {note}", stacklevel=3)
    return test_view(dataset, split.unseen, score_all_test_videos, last_only, notes, subsets)


def closed_set_views(dataset: Dataset, last_only: bool = False) -> tuple[TrainView, TestView]:
    """The standard fully-supervised protocol: every class in training and in test."""
    classes = dataset.annotations.classes
    return train_view(dataset, classes, last_only=last_only), test_view(dataset, classes, last_only=last_only)
