"""Zero-shot class splits: seeded generation, import of the published lists, JSON files in ``splits/``.

A split is a partition of a dataset's class list into seen (training) and unseen (test) classes.
The canonical protocol uses 10 random samplings per seen ratio (0.75 -> 75/25, 0.5 -> 50/50). The
published lists (EffPrompt/STALE) came without a seed, so both routes exist: ``generate_splits``
(deterministic per seed) and ``import_split_lists`` (validated against the annotations).

Named families beside the ratios (``ClassSplit.family``), for the spatio-temporal track:
- ``stclip``: ST-CLIP's label splits. J-HMDB: the 4 published lists of 15 seen / 6 unseen labels and
  their video lists (:func:`import_stclip_lists`); UCF101-24 (4 × 18/6) and AVA (3 lists of unseen
  classes) exist only in the paper, and are read from its reference YAML (:func:`paper_splits`).
  Index = the paper's split number (1-4), as its table columns name them.
- ``ovstad``: OV-STAD's cross-dataset split, every class of one dataset seen (UCF101-24) and every
  class of another unseen (J-HMDB-21) (:func:`cross_dataset_split`).
:func:`nearest_seen` audits any split: the closest seen name of every unseen name by text-embedding
similarity (J-HMDB ``golf`` against UCF ``GolfSwing``), as the temporal track flags THUMOS double labels.
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
    family: str | None = None  # a named split family (stclip, ovstad); None: the ratio's setting

    @property
    def setting(self) -> str:
        if self.family:
            return self.family
        return SETTINGS.get(self.ratio) or f"train_{len(self.seen)}_test_{len(self.unseen)}"


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


def _check_partition(seen, unseen, known: set[str], where: str) -> None:
    both = set(seen) & set(unseen)
    if both:
        raise SplitError(f"{where}: {len(both)} classes both seen and unseen, e.g. {sorted(both)[0]!r}")
    missing = known - set(seen) - set(unseen)
    if missing:
        raise SplitError(f"{where}: {len(missing)} classes neither seen nor unseen, e.g. {sorted(missing)[0]!r}")


def import_stclip_lists(root: str | Path, dataset: str, classes, video_classes: dict[str, str]) -> list[ClassSplit]:
    """ST-CLIP's published label splits: ``root/label_split_<i>/{train,test}_{label,video}.txt``.

    Labels are validated as in :func:`import_split_lists`. ``video_classes`` maps every video of the
    annotations (the bare name, as the lists write it) to its class: each listed video must exist and
    be of a class of its own list (train_video: seen, test_video: unseen); a violation is one line naming
    the file and line. The video lists select nothing the labels do not (the views take the official
    split's videos of those classes), so they are checked, not kept."""
    root = Path(root)
    folders = sorted(root.glob("label_split_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not folders:
        raise SplitError(f"{root}: no label_split_<i>/ folders")
    known = set(classes)
    splits = []
    for folder in folders:
        seen, unseen = _read_list(folder / "train_label.txt", known), _read_list(folder / "test_label.txt", known)
        _check_partition(seen, unseen, known, str(folder))
        for name, labels in (("train_video.txt", seen), ("test_video.txt", unseen)):
            path = folder / name
            if not path.exists():
                continue
            for lineno, line in enumerate(read_text(path, SplitError, "video list").splitlines(), 1):
                video = line.strip()
                if not video:
                    continue
                if video not in video_classes:
                    raise SplitError(f"{path}:{lineno}: video {video!r} is not in the annotations")
                if video_classes[video] not in labels:
                    raise SplitError(f"{path}:{lineno}: video {video!r} is of class {video_classes[video]!r}, "
                                     f"not one of this list's")
        splits.append(ClassSplit(dataset, len(seen) / len(known), int(folder.name.rsplit("_", 1)[1]),
                                 tuple(sorted(seen)), tuple(sorted(unseen)), class_list_hash(known),
                                 f"imported:{root}", family="stclip"))
    return splits


def paper_splits(reference: dict, dataset: str, classes, family: str = "stclip", source: str = "paper") -> list[ClassSplit]:
    """Splits printed in a paper, from its reference YAML's ``splits`` block (``{name: {split<i>: {unseen:
    [...], seen: [...] | null}}}``, ``reference`` being that block for one dataset). ``seen: null`` (the
    paper gives only the unseen classes): every other class of ``classes`` is seen."""
    known = set(classes)
    splits = []
    for key, entry in sorted(reference.items(), key=lambda kv: int(kv[0].removeprefix("split"))):
        unknown = [c for c in list(entry["unseen"]) + list(entry.get("seen") or []) if c not in known]
        if unknown:
            raise SplitError(f"{source}: {dataset} {key}: class {unknown[0]!r} is not in the annotations")
        unseen = tuple(sorted(entry["unseen"]))
        seen = tuple(sorted(entry.get("seen") or known - set(unseen)))
        _check_partition(seen, unseen, known, f"{source}: {dataset} {key}")
        splits.append(ClassSplit(dataset, len(seen) / len(known), int(key.removeprefix("split")), seen, unseen,
                                 class_list_hash(known), f"paper:{source}", family=family))
    return splits


def cross_dataset_split(base: str, base_classes, novel: str, novel_classes) -> ClassSplit:
    """OV-STAD's split: train on every class of ``base``, test the novel classes of ``novel``. A name in
    both lists would be seen and unseen at once: refused."""
    both = set(base_classes) & set(novel_classes)
    if both:
        raise SplitError(f"{base} and {novel} share {len(both)} class names, e.g. {sorted(both)[0]!r}: "
                         f"rename one dataset's classes first")
    seen, unseen = tuple(sorted(base_classes)), tuple(sorted(novel_classes))
    return ClassSplit(f"{base}+{novel}", len(seen) / (len(seen) + len(unseen)), 0, seen, unseen,
                      class_list_hash(seen + unseen), f"cross-dataset:{base}->{novel}", family="ovstad")


def nearest_seen(split: ClassSplit, embed) -> list[tuple[str, str, float]]:
    """(unseen, its most similar seen name, cosine) for every unseen class, most similar first.

    ``embed(names) -> [n, D]`` array: the text side of the split's methods (e.g. the CLIP text tower
    with the prompts in use), so the audit shows what a method sees, not what the names spell."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    similarity = unit(embed(list(split.unseen))) @ unit(embed(list(split.seen))).T
    best = similarity.argmax(axis=1)
    rows = [(u, split.seen[j], float(similarity[i, j])) for i, (u, j) in enumerate(zip(split.unseen, best))]
    return sorted(rows, key=lambda row: -row[2])
