"""Snippet-level training targets as STALE §3.3 ("Label assignment") arranges them.

A video of ``duration`` seconds is cut into T snippets; snippet i covers ``[i, i + 1) · duration / T``
(the same grid :func:`benchmark.data.features.rescale` samples at its centres). For every snippet:

- ``cls``: the class index of the action instance it belongs to, or K (background) — the target of
  the classification stream;
- ``fg``: 1 for action snippets, 0 for background — the foreground mask of the completeness loss;
- ``masks[t]``: for an action snippet, the binary mask over all T snippets of *its* instance ("all
  snippets of a specific action instance share the same mask"); zero for background snippets.

Which snippets an instance covers: those whose centre ``(i + 0.5) · duration / T`` lies in
``[start, end)``, after clipping the segment to ``[0, duration]``. An instance that covers no centre
(zero-length or shorter than a snippet, or past the end) still marks one snippet: the one that holds
its midpoint, clamped to the last snippet. So every instance is visible to training (STALE's
released loader drops instances shorter than one snippet).

Overlaps (different or same class): a snippet belongs to the *shortest* instance covering it
(length in seconds after clipping; on a tie, the one listed first). The short action would otherwise
vanish inside the long one, while the long one keeps the rest of its snippets. Masks stay per
instance: every instance's mask covers all of its own snippets, including those it lost to a shorter
instance, and ``masks[t]`` is the mask of the instance that owns t. (STALE's released loader instead
writes one union mask over overlapping instances and lets the last instance win ``cls``.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmark.data.annotations import Video
from benchmark.errors import InputError


class TargetError(InputError):
    """Annotations that cannot be turned into snippet targets; one line naming the video."""


@dataclass(frozen=True)
class SnippetTargets:
    video_ids: tuple[str, ...]
    cls: np.ndarray  # [N, T] int64, class index, background = num_classes
    fg: np.ndarray  # [N, T] float32 in {0, 1}
    masks: np.ndarray  # [N, T, T] uint8; row t = mask of the instance owning snippet t, zero if background
    num_classes: int  # K

    def __len__(self) -> int:
        return len(self.video_ids)


def instance_snippets(start: float, end: float, duration: float, T: int) -> tuple[int, int]:
    """The snippets ``[lo, hi)`` an instance covers (see the module docstring); never empty."""
    s = min(max(start, 0.0), duration) * T / duration
    e = min(max(end, 0.0), duration) * T / duration
    lo, hi = math.ceil(s - 0.5), math.ceil(e - 0.5)  # centres i + 0.5 in [s, e)
    if hi <= lo:
        lo = min(int((s + e) / 2), T - 1)
        hi = lo + 1
    return lo, hi


def snippet_targets(videos: list[Video], class_index: dict[str, int], T: int) -> SnippetTargets:
    """Rasterise every video's instances onto T snippets. ``class_index`` maps label -> 0..K-1.

    Every label must be in ``class_index``: the zero-shot views drop unseen classes' instances before
    calling this, so an unknown label here is a bug upstream, not something to skip silently.
    """
    K = len(class_index)
    if sorted(class_index.values()) != list(range(K)):
        raise TargetError(f"class_index must map the {K} classes onto 0..{K - 1}")
    if T < 1:
        raise TargetError(f"T must be >= 1, got {T}")
    N = len(videos)
    cls = np.full((N, T), K, np.int64)
    masks = np.zeros((N, T, T), np.uint8)
    for n, video in enumerate(videos):
        if video.duration is None or video.duration <= 0:
            raise TargetError(f"video {video.id}: duration is {video.duration}, cannot map seconds to snippets")
        spans = []
        for inst in video.instances:
            if inst.label not in class_index:
                raise TargetError(f"video {video.id}: label {inst.label!r} is not in the class index ({K} classes)")
            clipped = min(inst.end, video.duration) - min(max(inst.start, 0.0), video.duration)
            spans.append((max(clipped, 0.0), instance_snippets(inst.start, inst.end, video.duration, T), class_index[inst.label]))
        # longest first, so shorter instances overwrite; on equal length the one listed first is written last
        for j in sorted(range(len(spans)), key=lambda j: (spans[j][0], j), reverse=True):
            _, (lo, hi), k = spans[j]
            cls[n, lo:hi] = k
            masks[n, lo:hi, :] = 0  # rows taken over from a longer instance hold only this instance's mask
            masks[n, lo:hi, lo:hi] = 1
    fg = (cls != K).astype(np.float32)
    return SnippetTargets(tuple(v.id for v in videos), cls, fg, masks, K)
