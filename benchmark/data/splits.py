"""Zero-shot class splits: seeded generation, import of the published lists, JSON files in ``splits/``.

A split is a partition of a dataset's class list into seen (training) and unseen (test) classes.
The canonical protocol uses 10 random samplings per seen ratio (0.75 -> 75/25, 0.5 -> 50/50). The
published lists (EffPrompt/STALE) came without a seed, so both routes exist: ``generate_splits``
(deterministic per seed) and ``import_split_lists`` (validated against the annotations).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmark.errors import InputError, read_text

import numpy as np

SETTINGS = {0.75: "train_75_test_25", 0.5: "train_50_test_50"}
REPO_SPLITS = Path(__file__).resolve().parents[2] / "splits"


class SplitError(InputError):
    """A bad split list or split file; the message is one line naming the file (and line)."""


@dataclass(frozen=True)
class ClassSplit:
    dataset: str
    ratio: float  # fraction of classes seen in training
    index: int
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    class_list_sha256: str  # of the sorted class list the split partitions
    source: str  # "generated" or "imported:<dir>"
    seed: int | None = None

    @property
    def setting(self) -> str:
        return SETTINGS[self.ratio]


def class_list_hash(classes) -> str:
    return hashlib.sha256("\n".join(sorted(classes)).encode()).hexdigest()


def setting_ratio(setting: str) -> float:
    """'75/25', 'train_75_test_25' or '0.75' -> 0.75."""
    for ratio, name in SETTINGS.items():
        if setting in (name, f"{round(ratio * 100)}/{round((1 - ratio) * 100)}", str(ratio)):
            return ratio
    raise SplitError(f"unknown split setting {setting!r}; use 75/25 or 50/50")


def generate_splits(dataset: str, classes, ratio: float, n: int = 10, seed: int = 0) -> list[ClassSplit]:
    """``n`` random seen/unseen partitions of ``classes``; split i depends only on (seed, ratio, i)."""
    classes = sorted(classes)
    n_seen = round(ratio * len(classes))
    if not 0 < n_seen < len(classes):
        raise SplitError(f"{dataset}: ratio {ratio} of {len(classes)} classes leaves no seen or no unseen class")
    digest = class_list_hash(classes)
    splits = []
    for index in range(n):
        rng = np.random.default_rng([seed, round(ratio * 100), index])
        order = rng.permutation(len(classes))
        seen = tuple(sorted(classes[i] for i in order[:n_seen]))
        unseen = tuple(sorted(classes[i] for i in order[n_seen:]))
        splits.append(ClassSplit(dataset, ratio, index, seen, unseen, digest, "generated", seed))
    return splits


def _read_list(path: Path, known: set[str]) -> list[str]:
    names = []
    lines = read_text(path, SplitError, "split list").splitlines()
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name not in known:
            raise SplitError(f"{path}:{lineno}: class {name!r} is not in the annotations")
        if name in names:
            raise SplitError(f"{path}:{lineno}: class {name!r} listed twice")
        names.append(name)
    return names


def import_split_lists(root: str | Path, dataset: str, classes, ratio: float, n: int | None = None) -> list[ClassSplit]:
    """Read ``root/<setting>/<dataset>/{train,test}/split_<i>.list`` and validate each pair.

    Checks: every name exists in ``classes``, train and test are disjoint, and together they cover
    every class. A violation raises a one-line SplitError naming the file (and line).
    """
    root = Path(root)
    known = set(classes)
    folder = root / SETTINGS[ratio] / dataset
    indices = sorted(int(p.stem.split("_")[1]) for p in (folder / "train").glob("split_*.list"))
    if not indices:
        raise SplitError(f"{folder / 'train'}: no split_<i>.list files")
    splits = []
    for index in indices[:n]:
        train_path, test_path = folder / "train" / f"split_{index}.list", folder / "test" / f"split_{index}.list"
        seen, unseen = _read_list(train_path, known), _read_list(test_path, known)
        both = set(seen) & set(unseen)
        if both:
            raise SplitError(f"{test_path}: {len(both)} classes also in {train_path.name}, e.g. {sorted(both)[0]!r}")
        missing = known - set(seen) - set(unseen)
        if missing:
            raise SplitError(f"{test_path}: {len(missing)} classes in neither list, e.g. {sorted(missing)[0]!r}")
        splits.append(
            ClassSplit(dataset, ratio, index, tuple(sorted(seen)), tuple(sorted(unseen)),
                       class_list_hash(known), f"imported:{folder}")
        )
    return splits


def split_path(root: str | Path, split: ClassSplit) -> Path:
    return Path(root) / split.dataset / split.source.split(":")[0] / split.setting / f"split_{split.index}.json"


def write_splits(splits, root: str | Path = REPO_SPLITS) -> list[Path]:
    paths = []
    for split in splits:
        path = split_path(root, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = asdict(split) | {"setting": split.setting}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def read_split(path: str | Path, classes=None) -> ClassSplit:
    """Load a split JSON; with ``classes`` given, check it partitions exactly that class list."""
    path = Path(path)
    try:
        record = json.loads(read_text(path, SplitError, "split file"))
        record.pop("setting", None)
        split = ClassSplit(**{**record, "seen": tuple(record["seen"]), "unseen": tuple(record["unseen"])})
    except (OSError, json.JSONDecodeError, TypeError, KeyError) as e:
        raise SplitError(f"{path}: not a readable split file ({type(e).__name__}: {e})") from None
    if classes is not None and split.class_list_sha256 != class_list_hash(classes):
        raise SplitError(f"{path}: made for another class list than the annotations' ({len(set(classes))} classes)")
    return split


def load_splits(root: str | Path, dataset: str, source: str, ratio: float, classes=None) -> list[ClassSplit]:
    folder = Path(root) / dataset / source / SETTINGS[ratio]
    paths = sorted(folder.glob("split_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    if not paths:
        raise SplitError(f"{folder}: no split files (run `python -m benchmark make-splits` or `import-splits`)")
    return [read_split(p, classes) for p in paths]
