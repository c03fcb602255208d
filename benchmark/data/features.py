"""Snippet features: one store per released layout, rescaling to T, and a cached ``[N, T, D]`` loader.

Layouts (DESIGN.md §2), picked by :func:`open_feature_store`:
- :class:`NpyDirStore`: a directory of ``<name>.npy``, one ``[T_raw, D]`` array per video (CLIP, I3D)
- :class:`CsvDirStore`: a directory of ``<name>.csv`` in BSN/BMN's ``csv_mean_100`` format: a header
  row, then one row of D numbers per snippet (``[100, 400]`` TSN features)
- :class:`H5Store`: one HDF5 file with one top-level ``[T_raw, D]`` dataset per video

Every store is read with *annotation* ids. The ActivityNet releases name videos ``v_<id>``, but two
real ActivityNet ids begin with ``v_`` themselves, so whether ``v_`` is a prefix is a property of the
store, not of a name: in a store where every name starts with ``v_`` (a "prefixed" store), id ``X``
is the name ``v_X``; in any other store it is ``X``. There is no fallback to the other spelling: when
a file is missing it would silently hand a video the features of another one.

:func:`load_features` rescales every video to T snippets and returns the whole split as one float32
array (ActivityNet at T=100 with CLIP is ≈15k × 100 × 512 ≈ 3 GB), so training needs no per-step
file I/O; methods turn it into a tensor with ``torch.from_numpy``.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from benchmark.errors import InputError

CACHE_VERSION = 1  # bump when rescale() or the cache layout changes: old caches are then ignored
H5_SUFFIXES = (".h5", ".hdf5")


class FeatureError(InputError):
    """Missing or malformed features; the message is one line naming the store or file and the video."""


class FeatureStore(Protocol):
    source: str  # the path shown in messages

    def ids(self) -> list[str]:
        """The annotation ids this store has features for (what ``read`` accepts), sorted."""

    def __contains__(self, video_id: str) -> bool: ...

    def read(self, video_id: str) -> np.ndarray:
        """``[T_raw, D]`` float32, T_raw >= 1, D >= 1, all finite; else :class:`FeatureError`."""

    def fingerprint(self, video_ids: Sequence[str]) -> str:
        """A hash of what the given videos' features are read from (paths, sizes, mtimes)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _checked(x, where: str, video_id: str) -> np.ndarray:
    """Validate one video's raw features and return them as float32."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise FeatureError(f"{where}: video {video_id}: expected numeric features, got {kind}")
    if x.ndim != 2:
        raise FeatureError(f"{where}: video {video_id}: expected a [T_raw, D] array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise FeatureError(f"{where}: video {video_id}: no snippets (T_raw = 0, shape {x.shape})")
    if x.shape[1] == 0:
        raise FeatureError(f"{where}: video {video_id}: empty feature dimension (D = 0, shape {x.shape})")
    with np.errstate(over="ignore"):  # float64 beyond ±3.4e38 becomes inf, reported just below
        x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        raise FeatureError(f"{where}: video {video_id}: {x.size - finite.sum()} of {x.size} values are NaN or inf (as float32)")
    return x


def _stat_line(name: str, path: Path) -> str:
    try:
        st = path.stat()
    except OSError as e:  # e.g. removed since the store listed it
        raise FeatureError(f"{path}: cannot stat ({_first_line(e)})") from None
    return f"{name}\t{st.st_size}\t{st.st_mtime_ns}"


class _NamedStore:
    """What the three layouts share: names <-> annotation ids, validation, fingerprints."""

    def __init__(self, source: Path, names: set[str]):
        self.source = str(source)
        self._names = names
        self.prefixed = bool(names) and all(n.startswith("v_") for n in names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self._names)} videos{', v_-prefixed' if self.prefixed else ''})"

    def __len__(self) -> int:
        return len(self._names)

    def ids(self) -> list[str]:
        return sorted(n[2:] for n in self._names) if self.prefixed else sorted(self._names)

    def name_of(self, video_id: str) -> str | None:
        """The stored name of an annotation id, or None when the store has no such video."""
        name = "v_" + video_id if self.prefixed else video_id
        return name if name in self._names else None

    def __contains__(self, video_id: str) -> bool:
        return self.name_of(video_id) is not None

    def naming(self) -> str:
        """How ids are looked up here, for error messages."""
        return "names are v_<id>" if self.prefixed else "names are <id>, no v_ prefix added"

    def _require(self, video_id: str) -> str:
        name = self.name_of(video_id)
        if name is None:
            raise FeatureError(f"{self.source}: no features for video {video_id} ({self.naming()})")
        return name

    def read(self, video_id: str) -> np.ndarray:
        name = self._require(video_id)
        try:
            x = self._load(name)
        except (OSError, ValueError, EOFError, KeyError) as e:  # what numpy, pandas and h5py raise on bad files
            raise FeatureError(f"{self._where(name)}: video {video_id}: unreadable {self.kind} ({_first_line(e)})") from None
        return _checked(x, self._where(name), video_id)

    kind = ""  # "file format" in messages

    def _where(self, name: str) -> str:
        raise NotImplementedError

    def _load(self, name: str):
        """The raw array; raises what the reading library raises."""
        raise NotImplementedError


class _DirStore(_NamedStore):
    suffix = ""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if not directory.is_dir():
            raise FeatureError(f"{directory}: not a directory of {self.suffix} features")
        names = {e.name[: -len(self.suffix)] for e in os.scandir(directory) if e.name.endswith(self.suffix) and e.is_file()}
        if not names:
            raise FeatureError(f"{directory}: no {self.suffix} files")
        self.directory = directory
        super().__init__(directory, names)

    def _where(self, name: str) -> str:
        return str(self.directory / (name + self.suffix))

    def fingerprint(self, video_ids: Sequence[str]) -> str:
        h = hashlib.sha256(f"{type(self).__name__}\t{self.directory.resolve()}\n".encode())
        for vid in video_ids:
            name = self._require(vid)
            h.update((_stat_line(name, self.directory / (name + self.suffix)) + "\n").encode())
        return h.hexdigest()


class NpyDirStore(_DirStore):
    """A directory of ``<name>.npy`` files, each ``[T_raw, D]`` (float16/32/64)."""

    suffix = ".npy"
    kind = ".npy file"

    def _load(self, name: str):
        return np.load(self._where(name), allow_pickle=False)


class CsvDirStore(_DirStore):
    """A directory of BSN ``csv_mean_100`` files: a header row, then one row of D numbers per snippet."""

    suffix = ".csv"
    kind = "CSV"

    def _load(self, name: str):
        import pandas as pd  # imported here: only CSV stores need it

        path = self._where(name)
        with open(path) as f:
            header = f.readline()
        if _all_numbers(header.split(",")):
            # BSN files always start with a header; without one, read_csv would eat the first snippet
            raise ValueError("first row is numbers, expected a header row (BSN csv_mean_100 format)")
        return pd.read_csv(path).to_numpy(dtype=np.float64)  # pandas' parse errors are ValueErrors


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


class H5Store(_NamedStore):
    """One HDF5 file, one top-level ``[T_raw, D]`` dataset per video. Kept open; use as a context
    manager or call :meth:`close` to release the file."""

    def __init__(self, path: str | Path):
        import h5py

        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, ValueError) as e:
            raise FeatureError(f"{self.path}: not a readable HDF5 file ({_first_line(e)})") from None
        names = {k for k, v in self._file.items() if isinstance(v, h5py.Dataset)}
        if not names:
            self._file.close()
            raise FeatureError(f"{self.path}: no top-level datasets (expected one [T_raw, D] dataset per video)")
        super().__init__(self.path, names)

    def _where(self, name: str) -> str:
        return f"{self.path}:/{name}"

    kind = "HDF5 dataset"

    def _load(self, name: str):
        return np.asarray(self._file[name][()])

    def fingerprint(self, video_ids: Sequence[str]) -> str:
        for vid in video_ids:
            self._require(vid)
        return hashlib.sha256(f"H5Store\t{self.path.resolve()}\t{_stat_line('', self.path)}".encode()).hexdigest()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "H5Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_feature_store(path: str | Path) -> NpyDirStore | CsvDirStore | H5Store:
    """The store for ``path``: an ``.h5``/``.hdf5`` file, or a directory of ``.npy`` or of ``.csv`` files."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in H5_SUFFIXES:
            return H5Store(path)
        raise FeatureError(f"{path}: a feature file must be HDF5 ({', '.join(H5_SUFFIXES)}); per-video files go in a directory")
    if not path.is_dir():
        raise FeatureError(f"{path}: no such feature file or directory")
    n_npy = n_csv = 0
    for e in os.scandir(path):
        n_npy += e.name.endswith(".npy")
        n_csv += e.name.endswith(".csv")
    if n_npy and n_csv:
        raise FeatureError(f"{path}: holds both .npy ({n_npy}) and .csv ({n_csv}) files; open it with NpyDirStore or CsvDirStore")
    if n_npy:
        return NpyDirStore(path)
    if n_csv:
        return CsvDirStore(path)
    raise FeatureError(f"{path}: no .npy or .csv feature files")


def rescale(x: np.ndarray, T: int, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """Linear interpolation of ``x`` [T_raw, D] to [T, D] float32.

    Sample positions follow ``torch.nn.functional.interpolate(mode="linear", align_corners=False)``,
    which STALE's released loader uses: output snippet i is read at raw position
    ``(i + 0.5) * T_raw / T - 0.5`` (snippet centres aligned), clamped to ``[0, T_raw - 1]``. So
    T_raw == T is the identity, downsampling a linear ramp keeps it linear, upsampling holds the
    first and last values flat over the outer half-snippets, and T_raw == 1 repeats the row.

    ``out`` receives the result; ``scratch`` is a [T, D] float32 work buffer. The loader passes both
    to reuse memory: fresh [T, D] temporaries for every video cost page faults that, measured at
    ActivityNet shapes, made rescaling 2-3 times slower.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"rescale: expected a [T_raw, D] array with T_raw >= 1, got shape {x.shape}")
    if T < 1:
        raise ValueError(f"rescale: T must be >= 1, got {T}")
    T_raw = x.shape[0]
    pos = np.clip((np.arange(T) + 0.5) * (T_raw / T) - 0.5, 0, T_raw - 1)
    lo = pos.astype(np.intp)  # floor, as pos >= 0
    hi = np.minimum(lo + 1, T_raw - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    out = np.empty((T, x.shape[1]), np.float32) if out is None else out
    scratch = np.empty_like(out) if scratch is None else scratch
    np.take(x, lo, axis=0, out=out)
    np.take(x, hi, axis=0, out=scratch)
    scratch -= out
    scratch *= w
    out += scratch  # x[lo] + w * (x[hi] - x[lo])
    return out


def load_features(store: FeatureStore, video_ids: Sequence[str], T: int, cache_dir: str | Path | None = None,
                  n_jobs: int = 1) -> np.ndarray:
    """All videos' features rescaled to T snippets: ``[N, T, D]`` float32, rows in ``video_ids`` order.

    With ``cache_dir`` the result is saved there as ``.npy``, keyed on the store's fingerprint (paths,
    sizes, mtimes of the files read), the ids and T; a later call with the same key loads that one
    file and never opens the raw features. Editing or replacing a feature file changes the key; the
    superseded cache entry for the same store, ids and T is then deleted.

    Bad input raises a one-line :class:`FeatureError` naming the store or file and the video: videos
    without features (all counted, the first few listed, checked before anything is read), an
    unreadable or corrupt file, a non-2-D array, T_raw = 0, NaN/inf, a D that differs from the first
    video's; every video is read, so one error counts all the bad files and names the first few.
    T_raw = 1 is *not* an error: interpolating one row gives that row T times, which is what
    STALE's loader does too; such videos are counted and named in one warning (repeated on a cache hit).

    ``n_jobs`` > 1 reads with that many threads (``np.load`` releases the GIL while it reads). With
    the files in the page cache, loading is CPU-bound and threads gained nothing measurable on 2
    cores (benchmark/perf/bench_features.py); they are for disks where reads wait on I/O.
    """
    video_ids = list(video_ids)
    cache = _Cache(Path(cache_dir), store, video_ids, T) if cache_dir is not None else None
    return _load(store, video_ids, T, cache, n_jobs)


def _load(store: FeatureStore, video_ids: list[str], T: int, cache: "_Cache | None", n_jobs: int,
          mmap: bool = False) -> np.ndarray:
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not video_ids:
        raise FeatureError(f"{store.source}: no videos to load")
    missing = [v for v in video_ids if v not in store]
    if missing:
        naming = f"; {store.naming()}" if hasattr(store, "naming") else ""
        raise FeatureError(f"{store.source}: {len(missing)} of {len(video_ids)} videos have no features, "
                           f"e.g. {', '.join(missing[:5])}{naming}")
    if cache is not None:
        hit = cache.load(mmap)
        if hit is not None:
            features, single_row = hit
            _warn_single_row(store, single_row, T)
            return features
    features, single_row = _read_all(store, video_ids, T, n_jobs)
    _warn_single_row(store, single_row, T)
    if cache is not None:
        cache.save(features, single_row)
    return features


def scan_features(store: FeatureStore, video_ids: Sequence[str], T: int, cache_dir: str | Path) -> Path:
    """Check and rescale, once and before any job, every video a run will read; returns the run's cache.

    The same pass as :func:`load_features` (finite values, a [T_raw >= 1, D] array, one D for all;
    every bad video named in one error), over the union of the jobs' videos. The cached array keeps
    its ids, so jobs take their rows from it (:class:`ScannedFeatures`) instead of reading the files
    again; on a rerun the cache is found by the files' fingerprint (one stat per file) and nothing
    is read.
    """
    ids = sorted(set(video_ids))
    cache = _Cache(Path(cache_dir), store, ids, T)
    _load(store, ids, T, cache, n_jobs=1, mmap=True)  # a cache hit is checked, not read into memory
    if not cache.array_path.is_file():
        raise FeatureError(f"{cache_dir}: the feature cache could not be written (see the warning above)")
    return cache.array_path


class ScannedFeatures:
    """Rows of a run's feature scan (:func:`scan_features`), read from its ``.npy`` by offset.

    Rows are read with plain file reads into the result, not through a memory map: a job then holds
    its own rows only, not the pages of the whole scan it touched on the way.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            ids = json.loads(self.path.with_suffix(".json").read_text())["ids"]
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError) as e:
            raise FeatureError(f"{self.path}: unreadable feature scan ({_first_line(e)})") from None
        if array.dtype != np.float32 or not array.flags.c_contiguous or array.ndim != 3 or len(array) != len(ids):
            raise FeatureError(f"{self.path}: not a feature scan ({array.dtype} {array.shape} for {len(ids)} ids)")
        self.shape, self.offset = array.shape, array.offset
        self.row = {vid: i for i, vid in enumerate(ids)}

    def take(self, video_ids: Sequence[str]) -> np.ndarray:
        """``[N, T, D]`` float32 in ``video_ids`` order, as :func:`load_features` would return it."""
        missing = [v for v in video_ids if v not in self.row]
        if missing:
            raise FeatureError(f"{self.path}: {len(missing)} videos are not in the run's feature scan, "
                               f"e.g. {', '.join(missing[:5])}")
        out = np.empty((len(video_ids), *self.shape[1:]), np.float32)
        row_bytes = out[0].nbytes if len(out) else 0
        with open(self.path, "rb") as f:
            for i, vid in enumerate(video_ids):
                f.seek(self.offset + self.row[vid] * row_bytes)
                if f.readinto(memoryview(out[i]).cast("B")) != row_bytes:
                    raise FeatureError(f"{self.path}: truncated feature scan (row of video {vid})")
        return out


def _read_all(store: FeatureStore, video_ids: list[str], T: int, n_jobs: int) -> tuple[np.ndarray, list[str]]:
    """Read, check and rescale into one preallocated array; raw arrays are dropped as they are used.

    Every video is read even after a bad one, so that one error names all the bad files at once.
    """
    problems: dict[int, str] = {}
    first = None
    for i0, vid in enumerate(video_ids):  # the first readable video fixes D
        try:
            first = store.read(vid)
            break
        except FeatureError as e:
            problems[i0] = str(e)
    if first is None:
        raise _bad_videos(store, problems, len(video_ids))
    D = first.shape[1]
    out = np.empty((len(video_ids), T, D), np.float32)
    single_row = np.zeros(len(video_ids), bool)
    per_thread = threading.local()

    def fill(i: int, x: np.ndarray | None = None) -> None:
        try:
            x = store.read(video_ids[i]) if x is None else x
            if x.shape[1] != D:
                raise FeatureError(f"{store.source}: video {video_ids[i]}: feature dimension D = {x.shape[1]}, "
                                   f"but video {video_ids[i0]} has D = {D}")
        except FeatureError as e:
            problems[i] = str(e)
            return
        single_row[i] = x.shape[0] == 1
        if not hasattr(per_thread, "scratch"):
            per_thread.scratch = np.empty((T, D), np.float32)
        rescale(x, T, out=out[i], scratch=per_thread.scratch)

    with tqdm(total=len(video_ids), initial=i0, desc=f"features T={T}", unit="video", disable=None) as bar:
        fill(i0, first)
        bar.update()
        del first
        rest = range(i0 + 1, len(video_ids))
        if n_jobs <= 1:
            for i in rest:
                fill(i)
                bar.update()
        else:
            with ThreadPoolExecutor(n_jobs) as pool:
                for _ in pool.map(fill, rest):
                    bar.update()
    if problems:
        raise _bad_videos(store, problems, len(video_ids))
    return out, [video_ids[i] for i in np.flatnonzero(single_row)]


def _bad_videos(store: FeatureStore, problems: dict[int, str], n: int, shown: int = 3) -> FeatureError:
    """One line for every unusable video: how many, and the first few messages (each names its file)."""
    first = [problems[i] for i in sorted(problems)[:shown]]
    if len(problems) == 1:
        return FeatureError(first[0])
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return FeatureError(f"{store.source}: {len(problems)} of {n} videos have unusable features: "
                        + " | ".join(first) + more)


def _warn_single_row(store: FeatureStore, single_row: list[str], T: int) -> None:
    if single_row:
        warnings.warn(f"{store.source}: {len(single_row)} videos have one feature row (T_raw = 1), repeated to "
                      f"T = {T}: {', '.join(single_row[:5])}{', ...' if len(single_row) > 5 else ''}", stacklevel=3)


class _Cache:
    """One ``.npy`` of the rescaled split plus a ``.json`` describing it, in ``cache_dir``."""

    def __init__(self, cache_dir: Path, store: FeatureStore, video_ids: list[str], T: int):
        self.dir = cache_dir
        self.ids = video_ids
        self.ids_sha = hashlib.sha256("\n".join(video_ids).encode()).hexdigest()
        self.meta = {"version": CACHE_VERSION, "source": os.path.abspath(store.source), "T": T, "n": len(video_ids),
                     "ids_sha256": self.ids_sha, "fingerprint": store.fingerprint(video_ids)}
        key = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:24]
        self.array_path = cache_dir / f"features_T{T}_{key}.npy"
        self.meta_path = self.array_path.with_suffix(".json")

    def load(self, mmap: bool = False) -> tuple[np.ndarray, list[str]] | None:
        if not (self.array_path.is_file() and self.meta_path.is_file()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            features = np.load(self.array_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            warnings.warn(f"{self.array_path}: unreadable feature cache, rebuilding ({_first_line(e)})", stacklevel=3)
            return None
        if features.dtype != np.float32 or features.shape[:2] != (self.meta["n"], self.meta["T"]):
            warnings.warn(f"{self.array_path}: feature cache has shape {features.shape} {features.dtype}, "
                          f"expected ({self.meta['n']}, {self.meta['T']}, D) float32; rebuilding", stacklevel=3)
            return None
        return features, meta.get("single_row", [])

    def save(self, features: np.ndarray, single_row: list[str]) -> None:
        tmp = self.array_path.with_name(f"{self.array_path.stem}.tmp{os.getpid()}.npy")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            np.save(tmp, features)
            os.replace(tmp, self.array_path)
            meta = {**self.meta, "D": features.shape[2], "single_row": single_row, "ids": self.ids}
            self.meta_path.write_text(json.dumps(meta, indent=1))
        except OSError as e:  # a cache that cannot be written costs time, not results
            tmp.unlink(missing_ok=True)
            warnings.warn(f"{self.dir}: could not write the feature cache ({_first_line(e)})", stacklevel=3)
            return
        self._drop_superseded()

    def _drop_superseded(self) -> None:
        """Delete entries for the same store, ids and T made from older versions of the files."""
        for meta_path in self.dir.glob(f"features_T{self.meta['T']}_*.json"):
            if meta_path == self.meta_path:
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if (meta.get("source"), meta.get("ids_sha256")) == (self.meta["source"], self.ids_sha):
                meta_path.with_suffix(".npy").unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
