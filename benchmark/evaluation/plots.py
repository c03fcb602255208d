"""Figures of the diagnostics and of per-split results (seaborn on matplotlib's Agg canvas).

Every function takes the data, a path stem and a title, writes ``<stem>.png`` and ``<stem>.pdf``
and returns both paths. Titles are required: figures made on the embedded synthetic benchmark
must say "synthetic data" (DESIGN.md §4), and only the caller knows. Figures are built on their
own ``Figure`` with an Agg canvas, inside seaborn/matplotlib style contexts, so nothing leaks:
no pyplot figure stays open and rcParams are unchanged afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.evaluation.diagnostics import ERROR_TYPES, OUTCOMES, FalsePositiveProfile, SensitivityResult

# DETAD's palette for the outcomes (true positive first), so figures compare with the paper's.
OUTCOME_COLOURS = dict(zip(OUTCOMES, ("#33a02c", "#b2df8a", "#1f78b4", "#fb9a99", "#e31a1c", "#a6cee3")))
CHARACTERISTIC_NAMES = {"coverage": "Coverage", "length": "Length", "num_instances": "# Instances"}


@contextmanager
def _figure(width: float, height: float, title: str, ncols: int = 1, nrows: int = 1, **gridspec):
    """A standalone Figure with its axes, styled inside a context (no global state touched)."""
    with matplotlib.rc_context({"pdf.fonttype": 42}), sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=gridspec or None)
        fig.suptitle(title)
        yield fig, axes.ravel()


@contextmanager
def _seeded_numpy(seed: int):
    """numpy's global generator seeded inside the block, its state restored after it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _save(fig: Figure, stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    for path in paths:  # no creation date in the PDF: a rebuild from the same records gives the same files
        fig.savefig(path, dpi=150, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    return paths


def _label_bars(ax, bars, fmt: str = "{:.1f}") -> None:
    for bar in bars:
        if np.isfinite(bar.get_height()):
            ax.annotate(fmt.format(bar.get_height()), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)


def plot_fp_profile(profile: FalsePositiveProfile, stem: str | Path, title: str) -> tuple[Path, Path]:
    """DETAD Fig. 3: outcome shares of the top-1G..10G predictions, and the mAP_N gain per error type."""
    shares = profile.fractions.fillna(0.0) * 100
    with _figure(10, 4, title, ncols=2, width_ratios=(3, 2)) as (fig, (left, right)):
        bottom = np.zeros(len(shares))
        for outcome in OUTCOMES:
            left.bar(shares.index, shares[outcome], bottom=bottom, color=OUTCOME_COLOURS[outcome], label=outcome, width=0.85)
            bottom += shares[outcome].to_numpy()
        left.set(xlabel="top predictions", ylabel="share of predictions (%)", ylim=(0, 100),
                 title=f"False-positive profile (average over {len(profile.tiou)} tIoU)")
        left.legend(ncol=3, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
        gains = [profile.gain[e] * 100 for e in ERROR_TYPES]
        bars = right.bar(range(len(ERROR_TYPES)), gains, color=[OUTCOME_COLOURS[e] for e in ERROR_TYPES])
        _label_bars(right, bars)
        right.set_xticks(range(len(ERROR_TYPES)), ERROR_TYPES, rotation=30, ha="right")
        right.set(ylabel="average-mAP$_N$ gain (points)",
                  title=f"Removing each error (mAP$_N$ = {profile.average_map_n * 100:.1f})")
        return _save(fig, stem)


def _grouped_bars(ax, table: pd.DataFrame, column: str, baseline: float | None) -> None:
    """Bars per bin, characteristics side by side with a gap, one colour per characteristic.

    Tick labels carry each bin's GT count, so an empty bin (no bar, NaN) reads as such.
    """
    x, ticks, palette = 0, [], sns.color_palette("deep")
    for i, (name, rows) in enumerate(table.groupby("characteristic", sort=False)):
        positions = np.arange(x, x + len(rows))
        bars = ax.bar(positions, rows[column] * 100, color=palette[i % len(palette)])
        _label_bars(ax, bars)
        ax.annotate(CHARACTERISTIC_NAMES.get(name, name), (positions.mean(), 1.0), xycoords=("data", "axes fraction"),
                    ha="center", va="bottom", fontsize=8)
        ticks += [(p, f"{b}\n{n}") for p, b, n in zip(positions, rows["bin"], rows["n_gt"])]
        x += len(rows) + 1
    if baseline is not None:
        ax.axhline(baseline * 100, color="k", linestyle="--", linewidth=1)
    ax.set_xticks([p for p, _ in ticks], [b for _, b in ticks])
    ax.set_xlim(-0.75, x - 1.25)


def plot_sensitivity(result: SensitivityResult, stem: str | Path, title: str) -> tuple[Path, Path]:
    """DETAD Figs. 4-5: mAP_N (dashed: over all GT) and false-negative rate per characteristic bin."""
    with _figure(9, 5.5, title, nrows=2) as (fig, (top, bottom)):
        _grouped_bars(top, result.table, "map_n", result.average_map_n)
        top.set(ylabel="average-mAP$_N$ (%)", ylim=(0, 110))
        _grouped_bars(bottom, result.table, "fn_rate", None)
        bottom.set(ylabel="false negatives (%)", ylim=(0, 110), xlabel="bin / GT instances")
        return _save(fig, stem)


def plot_error_propagation(table: pd.DataFrame, stem: str | Path, title: str) -> tuple[Path, Path]:
    """Average mAP per method in each error-propagation setting (columns method, setting, average)."""
    data = table.assign(average=table["average"] * 100)
    with _figure(max(5, 1.6 * data["method"].nunique()), 4, title) as (fig, (ax,)):
        sns.barplot(data=data, x="method", y="average", hue="setting", ax=ax, seed=0)  # seeded bootstrap CI
        for bars in ax.containers:
            _label_bars(ax, bars)
        ax.set(xlabel="", ylabel="average mAP (%)")
        return _save(fig, stem)


def plot_noise_curve(table: pd.DataFrame, stem: str | Path, title: str) -> tuple[Path, Path]:
    """Average mAP against the tIoU of jittered GT segments, one line per method (columns method, level, average)."""
    data = table.assign(average=table["average"] * 100)
    with _figure(6, 4, title) as (fig, (ax,)):
        sns.lineplot(data=data, x="level", y="average", hue="method", marker="o", ax=ax, seed=0)
        ax.invert_xaxis()  # from clean GT segments to worse localisation
        ax.set(xlabel="tIoU of the given segments with the GT", ylabel="average mAP (%)")
        return _save(fig, stem)


def plot_split_metric(table: pd.DataFrame, stem: str | Path, title: str, metric: str = "average") -> tuple[Path, Path]:
    """One dot per split and method, with the mean and its 95% CI (columns method, split, ``metric``)."""
    data = table.assign(**{metric: table[metric] * 100})
    with _figure(max(5, 1.4 * data["method"].nunique()), 4, title) as (fig, (ax,)):
        with _seeded_numpy(0):  # seaborn draws the strip jitter from numpy's global generator
            sns.stripplot(data=data, x="method", y=metric, ax=ax, alpha=0.6, jitter=0.15)
        sns.pointplot(data=data, x="method", y=metric, ax=ax, errorbar=("ci", 95), seed=0, color="k",
                      linestyle="none", marker="_", markersize=20, capsize=0.2)
        ax.set(xlabel="", ylabel=f"{metric} mAP (%) per split")
        return _save(fig, stem)
