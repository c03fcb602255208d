"""Frozen per-frame features of box-level datasets: one ``.npz`` file per video.

Layout (the embedded STAD benchmark writes it; real features extracted for the box track must follow
it): ``ROOT/<video>.npz`` where ``<video>`` is the video id of the annotations (``class/video`` for the
ACT layout, so a sub-folder per class), holding

- ``frames`` [T] int: the frame number (1-based, as the annotations) or, for AVA, the keyframe second
  of each row; strictly increasing. Features may be strided: a frame takes the row of the last
  feature frame at or before it (the first row before the first one);
- ``global`` [T, D]: the whole frame's image feature (CLIP's pooled output);
- ``tokens`` [T, G*G, D]: the frame's feature map on a G x G grid, cells in row-major order (a ViT's
  patch tokens, pooled to G x G), from which :func:`benchmark.data.regions.roi_pool` pools box features.

float16 or float32 on disk; read as float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmark.errors import InputError


@dataclass(frozen=True)
class VideoFeatures:
    frames: np.ndarray  # [T] int64
    global_: np.ndarray  # [T, D] float32
    tokens: np.ndarray  # [T, G*G, D] float32

    def rows(self, frames) -> np.ndarray:
        """The feature row of each frame number: the last row at or before it (the first row before the first)."""
        return np.clip(np.searchsorted(self.frames, np.asarray(frames), side="right") - 1, 0, len(self.frames) - 1)

    @property
    def grid(self) -> int:
        return int(round(np.sqrt(self.tokens.shape[1])))


class BoxFeatureStore:
    """``ROOT/<video>.npz`` files, read on demand and kept (a job reads each video once)."""

    def __init__(self, root: str | Path, cache_size: int = 512):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: no such feature folder")
        self._read = lru_cache(maxsize=cache_size)(self._load)

    def path(self, video: str) -> Path:
        return self.root / f"{video}.npz"

    def __contains__(self, video: str) -> bool:
        return self.path(video).is_file()

    def missing(self, videos) -> list[str]:
        return sorted(v for v in set(videos) if v not in self)

    def read(self, video: str) -> VideoFeatures:
        return self._read(video)

    def _load(self, video: str) -> VideoFeatures:
        path = self.path(video)
        try:
            with np.load(path) as f:
                frames, glob, tokens = f["frames"].astype(np.int64), f["global"].astype(np.float32), f["tokens"].astype(np.float32)
        except FileNotFoundError:
            raise InputError(f"{path}: no features for video {video!r}") from None
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"{path}: unreadable features ({type(e).__name__}: {e}); need frames, global, tokens") from None
        t = len(frames)
        grid = int(round(np.sqrt(tokens.shape[1]))) if tokens.ndim == 3 else 0
        if (not t or glob.shape[0] != t or tokens.ndim != 3 or tokens.shape[0] != t or grid * grid != tokens.shape[1]
                or tokens.shape[2] != glob.shape[1] or np.any(np.diff(frames) <= 0)):
            raise InputError(f"{path}: expected frames [T] increasing, global [T, D], tokens [T, G*G, D]; got "
                             f"{frames.shape}, {glob.shape}, {tokens.shape}")
        if not (np.isfinite(glob).all() and np.isfinite(tokens).all()):
            raise InputError(f"{path}: features hold NaN or inf")
        return VideoFeatures(frames, glob, tokens)
