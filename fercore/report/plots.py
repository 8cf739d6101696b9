"""The report's figures: one function per plot, each given prepared data, a PNG path and a title that states the
conclusion (worded by fercore.report.outcomes and .diagnostics). matplotlib with the Agg backend, 100 dpi, tight layout."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercore.atomic import atomic_write
from fercore.labels import CLASSES
from fercore.results import draw_confusion

DPI = 100
HIGHLIGHT = "disgust"  # the class synthetic top-ups are usually for: FER2013's rarest
CLASS_COLOURS = dict(zip(CLASSES, ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#1f77b4", "#e377c2", "#7f7f7f")))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 11, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.axisbelow": True})
    return plt


def _colours(names: list[str]) -> dict[str, Any]:
    plt = _plt()
    cycle = plt.get_cmap("tab10")
    return {n: cycle(i % 10) for i, n in enumerate(names)}


def _title(fig, title: str) -> None:
    """A bold figure title, wrapped to the figure's width (about 11 characters per inch at 11 pt bold)."""
    fig.suptitle(textwrap.fill(title, max(30, int(fig.get_figwidth() * 11))), fontweight="bold")


def _save(fig, path: Path, title: str | None = None, tight_box: bool = False) -> None:
    plt = _plt()
    if title:
        _title(fig, title)
    fig.tight_layout()
    # A legend placed outside the axes needs the bounding box fitted to it.
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight" if tight_box else None))
    plt.close(fig)


def _errors(y: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric error bar lengths from an interval; 0 where the interval is missing."""
    return np.vstack([(y - low).clip(lower=0).fillna(0).values, (high - y).clip(lower=0).fillna(0).values])


def _wrap(label: str, width: int) -> str:
    """Break a label into lines of about WIDTH characters after spaces, commas and slashes."""
    lines, line = [], ""
    for token in re.split(r"(?<=[ ,/])", label):
        if line and len(line) + len(token.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += token
    return "\n".join([*lines, line.rstrip()])


def uplift_by_trial(points: pd.DataFrame, path: Path, title: str, what: str = "uplift") -> None:
    """POINTS: group, trial_id, uplift, low, high. One error bar per trial, trials grouped (sorted) by group. WHAT:
    "uplift" (over the real-only baseline) or "gain over control" (over the oversampling control)."""
    plt = _plt()
    groups = sorted(points["group"].unique())
    colours = _colours(groups)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.35 * len(points) + 2.5)), 4.2))
    x, ticks = 0, []
    for g in groups:
        part = points[points["group"] == g].sort_values("uplift")
        xs = np.arange(x, x + len(part))
        ax.errorbar(xs, part["uplift"], yerr=_errors(part["uplift"], part["low"], part["high"]), fmt="o",
                    color=colours[g], capsize=3, label=f"{g} ({len(part)} trial{'s' if len(part) != 1 else ''})")
        ticks.append((xs.mean(), g))
        x += len(part) + 1
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xticks([t for t, _ in ticks], [g for _, g in ticks])
    ax.set_xlim(-1, x - 1)
    ax.set_xlabel(f"generator type (one point per augmented trial, sorted by {what})")
    over = "real-only baseline" if what == "uplift" else "oversampling control"
    ax.set_ylabel(f"test macro-F1 {what.split(' over')[0]} over {over}\n(paired bootstrap 95 % interval)")
    ax.legend(loc="best", fontsize=8)
    _save(fig, path, title)


def class_uplift_bars(table: pd.DataFrame, path: Path, title: str) -> None:
    """TABLE: class, mean (uplift of test recall). Bars per class, the highlighted class in red."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    colours = ["#c0392b" if c == HIGHLIGHT else "#7f8c8d" for c in table["class"]]
    values = table["mean"].fillna(0).values
    bars = ax.bar(table["class"], values, color=colours)
    for bar, v, raw in zip(bars, values, table["mean"]):
        if np.isfinite(raw):
            v = v if abs(v) >= 5e-4 else 0.0  # no "-0.000"
            ax.annotate(f"{v:+.3f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                        va="bottom" if v >= 0 else "top", fontsize=8, xytext=(0, 2 if v >= 0 else -2),
                        textcoords="offset points")
    ax.axhline(0, color="black", linewidth=1)
    lo, hi = min(values.min(), 0), max(values.max(), 0)
    pad = 0.15 * (hi - lo or 0.01)
    ax.set_ylim(lo - pad, hi + pad)
    for label in ax.get_xticklabels():  # in red also when its bar has no height
        if label.get_text() == HIGHLIGHT:
            label.set_color("#c0392b")
            label.set_fontweight("bold")
    ax.set_xlabel(f"class ({HIGHLIGHT} in red)")
    ax.set_ylabel("mean change in test recall\n(augmented − real-only baseline)")
    _save(fig, path, title)


def share_lines(points: pd.DataFrame, curves: pd.DataFrame, path: Path, title: str) -> None:
    """POINTS: backbone, share, f1, low, high (one per trial); CURVES: backbone, share, f1 (mean per share)."""
    plt = _plt()
    backbones = sorted(curves["backbone"].unique())
    colours = _colours(backbones)
    fig, ax = plt.subplots(figsize=(7, 4.3))
    spread = 0.012 * (len(backbones) - 1)
    for i, b in enumerate(backbones):
        # A small sideways offset per backbone keeps error bars at one share apart.
        dx = (i - (len(backbones) - 1) / 2) * (2 * spread / max(len(backbones) - 1, 1)) if spread else 0.0
        part = points[points["backbone"] == b]
        ax.errorbar(part["share"] + dx, part["f1"], yerr=_errors(part["f1"], part["low"], part["high"]), fmt="o",
                    color=colours[b], alpha=0.55, capsize=2, markersize=4)
        line = curves[curves["backbone"] == b].sort_values("share")
        ax.plot(line["share"] + dx, line["f1"], "-", color=colours[b], linewidth=2, marker="s", markersize=5,
                label=f"{b} (mean)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("real share of the training set  n_real / (n_real + n_synthetic)")
    ax.set_ylabel("test macro-F1 (95 % interval)")
    ax.legend(title="classifier backbone", fontsize=8, loc="best")
    _save(fig, path, title)


def epochs_by_source(points: pd.DataFrame, path: Path, title: str, max_epochs: float | None) -> None:
    """POINTS: backbone, source ('real only' / 'with synthetic'), best_epoch. Per backbone a bar of the mean epoch
    for each source with the trials as dots."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    backbones = sorted(points["backbone"].unique())
    sources = ["real only", "with synthetic"]
    colours = {"real only": "#1f77b4", "with synthetic": "#ff7f0e"}
    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(backbones) + 2), 4))
    width = 0.38
    rng = np.random.default_rng(0)
    for j, s in enumerate(sources):
        for i, b in enumerate(backbones):
            part = points[(points["backbone"] == b) & (points["source"] == s)]["best_epoch"]
            if part.empty:
                continue
            x = i + (j - 0.5) * width
            ax.bar(x, part.mean(), width * 0.9, color=colours[s], alpha=0.45,
                   label=s if i == next(k for k, bb in enumerate(backbones)
                                        if ((points["backbone"] == bb) & (points["source"] == s)).any()) else None)
            ax.scatter(x + rng.uniform(-0.08, 0.08, len(part)), part, color=colours[s], s=16, zorder=3)
    if max_epochs:
        ax.axhline(max_epochs, color="black", linestyle="--", linewidth=1, label=f"epoch limit ({max_epochs:g})")
    ax.set_xticks(range(len(backbones)), backbones)
    ax.set_xlabel("classifier backbone")
    ax.set_ylabel("epoch kept by early stopping (best_epoch)")
    ax.set_ylim(0, max(points["best_epoch"].max(), max_epochs or 0) * 1.15 + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path, title, tight_box=True)


def recall_heatmap(table: pd.DataFrame, counts: dict[str, int], path: Path, title: str) -> None:
    """TABLE: classes x settings of mean test recall."""
    plt = _plt()
    n = len(table.columns)
    upright = n <= 10  # wrapped labels side by side; beyond that, one rotated line each
    fig, ax = plt.subplots(figsize=(max(5.0, (1.3 if upright else 0.5) * n + 3), 4.6))
    im = ax.imshow(table.values.astype(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(table.shape[0]):
        for j in range(n):
            v = table.values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v > 0.6 else "white")
    if upright:
        ax.set_xticks(range(n), [f"{_wrap(s, 16)}\n(n={counts.get(s, 0)})" for s in table.columns], fontsize=8)
    else:
        ax.set_xticks(range(n), [f"{s} (n={counts.get(s, 0)})" for s in table.columns], rotation=90, fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index)
    for tick in ax.get_yticklabels():
        if tick.get_text() == HIGHLIGHT:
            tick.set_color("#c0392b")
            tick.set_fontweight("bold")
    ax.grid(False)
    ax.set_xlabel("augmentation setting (trials)")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="mean test recall (per-class accuracy)")
    _save(fig, path, title)


def confusion_pair(panels: list[tuple[str, np.ndarray]], path: Path, title: str,
                   classes: tuple[str, ...] = CLASSES) -> None:
    """One row-normalised confusion matrix per panel, counts written in the cells; CLASSES: the data set's."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 0.8, 5.4), squeeze=False,
                             layout="constrained")
    for ax, (name, matrix) in zip(axes[0], panels):
        im = draw_confusion(ax, matrix, classes)
        ax.grid(False)
        ax.set_title(name, fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), label="share of the true class's test images", shrink=0.8)
    _title(fig, title)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    plt.close(fig)


def quality_scatter(points: pd.DataFrame, panels: list[tuple[str, str]], path: Path, title: str,
                    ylabel: str = "test macro-F1 uplift (95 % interval)") -> None:
    """POINTS: group, uplift, low, high and one column per panel's x; PANELS: (column, axis label); the y column
    ("uplift") may hold another paired gain, named by YLABEL."""
    plt = _plt()
    groups = sorted(points["group"].unique())
    colours = _colours(groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (col, label) in zip(axes[0], panels):
        for g in groups:
            part = points[(points["group"] == g) & points[col].notna()]
            if part.empty:
                continue
            ax.errorbar(part[col], part["uplift"], yerr=_errors(part["uplift"], part["low"], part["high"]), fmt="o",
                        color=colours[g], capsize=3, label=g)
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xlabel(label)
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles, labels, title="generator type", fontsize=8, loc="best")
    _save(fig, path, title)


def embedding_panels(panels: list[tuple[str, pd.DataFrame]], path: Path, title: str) -> None:
    """Per panel: points (source, class, x, y) of one trial; real as dots, synthetic as crosses, colour by class."""
    plt = _plt()
    from matplotlib.lines import Line2D

    cols = min(len(panels), 2)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 4.4 * rows), squeeze=False)
    # FER2013's classes keep their colours; a data set's other classes (contempt, ...) take the next free ones.
    seen = set().union(*(set(pts["class"].astype(str)) for _, pts in panels)) if panels else set()
    classes = [c for c in CLASSES if c in seen] + sorted(seen - set(CLASSES))
    spare = ["#bcbd22", "#17becf", "#8c564b", "#000080", "#808000"]
    colours = {**{c: spare[i % len(spare)] for i, c in enumerate(sorted(seen - set(CLASSES)))}, **CLASS_COLOURS}
    for ax, (name, pts) in zip(axes.ravel(), panels):
        # Every real point first, so no class's real dots hide another's synthetic crosses.
        for source, marker, size, alpha in (("real", "o", 10, 0.4), ("synthetic", "x", 20, 0.9)):
            for c in classes:
                part = pts[(pts["class"] == c) & (pts["source"] == source)]
                if not part.empty:
                    ax.scatter(part["x"], part["y"], marker=marker, s=size, alpha=alpha, color=colours[c],
                               linewidths=1)
        ax.set_title(name)
        ax.set_xlabel("PC 1 of real features")
        ax.set_ylabel("PC 2 of real features")
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[c], label=c) for c in classes]
    handles += [Line2D([], [], marker="o", linestyle="", color="black", label="real (dot)"),
                Line2D([], [], marker="x", linestyle="", color="black", label="synthetic (cross)")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="class / source")
    _save(fig, path, title, tight_box=True)


def importance_bars(values: dict[str, float], path: Path, title: str, objective: str) -> None:
    plt = _plt()
    names = list(values)[::-1]  # largest on top
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.6))
    bars = ax.barh(names, [values[n] for n in names], color="#1f77b4")
    for bar, n in zip(bars, names):
        ax.annotate(f"{values[n]:.2f}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center",
                    xytext=(3, 0), textcoords="offset points", fontsize=8)
    ax.set_xlim(0, max(values.values()) * 1.15 + 1e-9)
    ax.set_xlabel(f"fANOVA importance for {objective} (share of variance, sums to 1)")
    ax.set_ylabel("config key")
    _save(fig, path, title)


def pareto_scatter(points: pd.DataFrame, x: tuple[str, str], y: tuple[str, str], path: Path, title: str) -> None:
    """POINTS: x, y, on_front, trial_id. Every trial grey, the front in red joined in order of x."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.3))
    rest = points[~points["on_front"]]
    front = points[points["on_front"]].sort_values("x")
    ax.scatter(rest["x"], rest["y"], color="#95a5a6", s=22, label=f"other completed trials ({len(rest)})")
    ax.plot(front["x"], front["y"], "-o", color="#c0392b", markersize=6, label=f"Pareto front ({len(front)})")
    for _, r in front.iterrows():
        ax.annotate(str(r["trial_id"]), (r["x"], r["y"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel(f"{_axis_label(x[0])} ({'lower' if x[1] == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{_axis_label(y[0])} ({'lower' if y[1] == 'min' else 'higher'} is better)")
    ax.legend(fontsize=8, loc="best")
    _save(fig, path, title)


def _axis_label(metric: str) -> str:
    return {"train_seconds": "trial wall time (s)", "val_macro_f1": "validation macro-F1",
            "test_macro_f1": "test macro-F1"}.get(metric, metric + (" (s)" if metric.endswith("_seconds") else ""))
