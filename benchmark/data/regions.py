"""Region features from a grid of frame tokens: the RoI pooling every box-level method shares.

A frame's feature map is ``tokens`` [G_h * G_w, D], the cells in row-major order (cell ``k = i * G_w + j``
covers rows ``i`` and columns ``j`` of an even ``G_h x G_w`` tiling of the image), as a ViT's patch tokens
or the synthetic STAD benchmark's ``tokens`` are. A box's region feature is the mean of the cells it
covers, each weighted by the area of the box inside it: RoIAlign with one bin over the box, exact on a
piecewise-constant map. A box that moves off the actor pools other cells, so localisation error reaches
classification, as it does with OV-STAD's RoIAlign on CLIP feature maps.
"""
from __future__ import annotations

import numpy as np


def _grid_shape(grid: int | tuple[int, int]) -> tuple[int, int]:
    return (grid, grid) if isinstance(grid, (int, np.integer)) else (int(grid[0]), int(grid[1]))


def roi_weights(boxes: np.ndarray, resolution: tuple[float, float], grid: int | tuple[int, int]) -> np.ndarray:
    """[N, G_h * G_w] pooling weights (rows sum to 1) of ``boxes`` [N, 4] (or [4]) x1, y1, x2, y2.

    ``resolution`` = (height, width) of the coordinate frame of the boxes: pixels for JHMDB / UCF101-24,
    (1, 1) for AVA's normalised boxes. Weight of a cell = area of the box inside it; a box covering no
    cell (empty, or outside the image) takes the single cell under its clamped centre.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gh, gw = _grid_shape(grid)
    height, width = resolution
    ys = np.linspace(0.0, height, gh + 1)
    xs = np.linspace(0.0, width, gw + 1)
    # overlap of [x1, x2] with every column, of [y1, y2] with every row: [N, gw], [N, gh]
    ox = np.clip(np.minimum(boxes[:, 2:3], xs[None, 1:]) - np.maximum(boxes[:, 0:1], xs[None, :-1]), 0, None)
    oy = np.clip(np.minimum(boxes[:, 3:4], ys[None, 1:]) - np.maximum(boxes[:, 1:2], ys[None, :-1]), 0, None)
    weights = (oy[:, :, None] * ox[:, None, :]).reshape(len(boxes), gh * gw)
    total = weights.sum(1)
    empty = total <= 0
    if empty.any():
        cx = np.clip((boxes[empty, 0] + boxes[empty, 2]) / 2 / width * gw, 0, gw - 1e-9).astype(int)
        cy = np.clip((boxes[empty, 1] + boxes[empty, 3]) / 2 / height * gh, 0, gh - 1e-9).astype(int)
        weights[empty] = 0.0
        weights[np.flatnonzero(empty), cy * gw + cx] = 1.0
        total = weights.sum(1)
    return weights / total[:, None]


def roi_pool(tokens: np.ndarray, box: np.ndarray, resolution: tuple[float, float],
             grid: int | tuple[int, int]) -> np.ndarray:
    """Region feature(s) of ``box`` pooled from the grid ``tokens`` (see the module docstring).

    - ``tokens`` [G*G, D] (one frame) and ``box`` [4] -> [D]; ``box`` [N, 4] -> [N, D] (N boxes, one frame);
    - ``tokens`` [N, G*G, D] and ``box`` [N, 4] -> [N, D] (box n on frame n).

    ``resolution`` = (height, width) the box coordinates refer to; ``grid`` = G or (G_h, G_w). Computed in
    float32 whatever the tokens' dtype (float16 features are stored, not summed).
    """
    tokens = np.asarray(tokens)
    gh, gw = _grid_shape(grid)
    if tokens.shape[-2] != gh * gw:
        raise ValueError(f"tokens have {tokens.shape[-2]} cells, a {gh}x{gw} grid has {gh * gw}")
    single = np.ndim(box) == 1
    weights = roi_weights(box, resolution, (gh, gw)).astype(np.float32)
    if tokens.ndim == 2:
        pooled = weights @ tokens.astype(np.float32)
    elif tokens.ndim == 3 and len(tokens) == len(weights):
        pooled = np.einsum("nk,nkd->nd", weights, tokens.astype(np.float32))
    else:
        raise ValueError(f"tokens of shape {tokens.shape} do not match {len(weights)} boxes")
    return pooled[0] if single else pooled
