"""Losses of the trained methods (mask-based detectors, STALE §3.3; the focal loss of the one-stage and box
heads), on logits so they stay stable under bf16 autocast."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def weighted_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with beta_fg / beta_bg = the inverse proportion of foreground / background entries.

    With beta = N / N_fg (resp. N / N_bg) the sum over all N entries divided by N is the mean loss
    over foreground entries plus the mean loss over background entries: each side weighs the same
    whatever the imbalance. An empty side contributes nothing.
    """
    fg = target > 0.5
    n = target.numel()
    beta = torch.where(fg, n / fg.sum().clamp(min=1), n / (~fg).sum().clamp(min=1))
    return F.binary_cross_entropy_with_logits(logits, target, weight=beta, reduction="sum") / n


def row_balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE over masks ``[..., T]`` balanced within each mask (row).

    A row with foreground (the mask of a snippet inside an action) counts the mean loss over its
    positives plus the mean over its negatives, so that its few negatives on the video's *other*
    instances weigh as much as the row's own instance; an empty row (a background snippet's mask)
    counts its mean loss. Rows are then averaged, foreground rows and empty rows separately, and the
    two averages added, like :func:`weighted_bce`'s two sides. Balancing over all entries at once
    (:func:`weighted_bce`) lets the empty rows of background snippets make up most of the negatives.
    """
    target = target.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pos = target > 0.5
    n_pos, n_neg = pos.sum(-1), (~pos).sum(-1)
    has_fg = n_pos > 0
    mean_pos = (loss * pos).sum(-1) / n_pos.clamp(min=1)
    mean_neg = (loss * ~pos).sum(-1) / n_neg.clamp(min=1)
    total = logits.new_zeros(())
    if has_fg.any():
        total = total + (mean_pos + mean_neg)[has_fg].mean()
    if (~has_fg).any():
        total = total + mean_neg[~has_fg].mean()
    return total


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Binary Dice (Milletari et al. 2016), ``1 - 2 m.g / sum(m^2 + g^2)`` per row, averaged.

    STALE's Eq. 10 prints the ratio without the 2, which would cap the overlap term at 1/2 (the
    loss could not go below 0.5 for a perfect mask); we use V-Net's definition, which it cites.
    """
    inter = (prob * target).sum(-1)
    return (1 - 2 * inter / ((prob ** 2).sum(-1) + (target ** 2).sum(-1) + eps)).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.4, balance: str = "row") -> torch.Tensor:
    """STALE Eq. 10 over a batch of 1-D masks ``[..., T]``: weighted BCE + lambda_2 * Dice.

    The BCE covers every mask, balanced per row (``balance="row"``, :func:`row_balanced_bce`) or over
    all entries at once (``"global"``, :func:`weighted_bce`); Dice only masks with foreground (for an
    empty target its overlap term is 0 whatever the prediction, so it would only add a constant).
    """
    target = target.to(logits.dtype)
    loss = row_balanced_bce(logits, target) if balance == "row" else weighted_bce(logits, target)
    has_fg = target.amax(-1) > 0.5
    if has_fg.any():
        loss = loss + dice_weight * dice_loss(torch.sigmoid(logits[has_fg]), target[has_fg])
    return loss


def completeness_loss(logits: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """STALE Eq. 11: BCE between the foreground mask L-hat and the ground-truth foreground.

    The printed ``-(g log L + log(g) L)`` is not a valid loss (log 0 on background); the text calls
    it binary cross-entropy, which is what this is.
    """
    return F.binary_cross_entropy_with_logits(logits, fg.to(logits.dtype))


def consistency_loss(features: torch.Tensor, cls_score: torch.Tensor, mask_score: torch.Tensor, k: int) -> torch.Tensor:
    """STALE Eq. 12: ``1 - cos(F_clf, F_mask)`` between the top-k features of two streams.

    ``features`` [B, T, C]; ``cls_score`` / ``mask_score`` [B, T] per-snippet foreground scores of
    the classification and mask streams, already thresholded (zero below the threshold). Each side
    is the score-weighted sum of the features of its top-k snippets, so the loss reaches the scores
    (which snippets each stream ranks high) as well as the features.
    """
    k = min(k, features.shape[1])

    def pooled(score: torch.Tensor) -> torch.Tensor:
        top, index = score.topk(k, dim=1)
        picked = features.gather(1, index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        return (top.unsqueeze(-1) * picked).sum(1)

    return (1 - F.cosine_similarity(pooled(cls_score), pooled(mask_score), dim=-1, eps=1e-6)).mean()


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """Element-wise focal loss (Lin et al. 2017) of sigmoid(logits) against (soft) targets in [0, 1]:
    -α_t (1 - p_t)^γ log p_t, with α_t = α for the target's share and 1 - α for the rest; α < 0: no α_t.
    Unreduced: each method sums or averages it as its paper does."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # -log p_t
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss
