"""`fersweep report`: one sweep's results folder (its Parquet tables and sweep.json) -> report.md and report.html
(the same blocks rendered twice) with PNG plots beside them.

    tables.py       load the folder, compute the figures (pandas)
    outcomes.py     sections 0-5: header and leak warning, search and confirmation, best trials (by validation),
                    uplift and gain over the oversampling control, real share, early stopping, recall
    configs.py      trials grouped into configs over seeds, pairs of configs differing in one key, Holm's correction
    resample.py     the two-level bootstrap (seeds, then test images) and p-values, numpy only
    across.py       sections 2.1 and 2.2: per-config means over seeds, paired comparisons
    diagnostics.py  sections 6-10: confusion, generator quality, embeddings, importance and Pareto front, leakage
    importance.py   Optuna's fANOVA importance on a study rebuilt from the rows; the Pareto front
    plots.py        matplotlib (Agg), one function per figure
    render.py       blocks -> Markdown and HTML
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fercore.atomic import atomic_write
from fercore.report import across, diagnostics, outcomes
from fercore.report.configs import compare
from fercore.report.render import Block, Image, to_html, to_markdown
from fercore.report.tables import load
from fercore.results.rows import CONFIRM, SEARCH

MARKDOWN = "report.md"
HTML = "report.html"


@dataclass
class Written:
    markdown: Path
    html: Path
    images: list[Path]


def build(results_dir: str | Path, out: str | Path) -> tuple[str, list[Block]]:
    """The report's title and blocks; writes its PNGs into OUT (created)."""
    res = load(results_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A sweep that confirmed claims from its confirmation trials only: the search chose its configs on its own
    # trials, whose figures lean upward (the winner's curse; under ASHA, stopped seeds drop out). The search's trials
    # are exploration: how its configs were chosen, and which keys mattered to it.
    claims = res.of_phase(CONFIRM) if res.confirmed else res
    search = res.of_phase(SEARCH)
    comparisons = compare(claims, across.MAX_CONFIGS)
    blocks = [*outcomes.header(res), *outcomes.phases_section(res, search, claims), *outcomes.best(claims),
              *outcomes.uplift(claims, out), *across.seeds_section(claims, comparisons),
              *across.pairs_section(claims, comparisons), *outcomes.real_share_section(claims, out),
              *outcomes.epochs_section(claims, out), *outcomes.recall_section(claims, out),
              *diagnostics.confusion_section(claims, out), *diagnostics.quality_section(claims, out),
              *diagnostics.embeddings_section(claims, out), *diagnostics.importance_section(search, out),
              *diagnostics.leakage_section(res)]
    return f"Sweep report: {res.name}", blocks


def write_report(results_dir: str | Path, out: str | Path | None = None) -> Written:
    """Write report.md, report.html and their PNGs into OUT (default RESULTS_DIR/report)."""
    out = Path(out) if out is not None else Path(results_dir) / "report"
    before = _referenced(out / MARKDOWN)
    title, blocks = build(results_dir, out)
    # Whole or not at all: a reader (or a browser reloading the page) never sees half a report.
    atomic_write(out / MARKDOWN, lambda f: f.write(to_markdown(blocks).encode()))
    atomic_write(out / HTML, lambda f: f.write(to_html(title, blocks).encode()))
    images = [out / b.file for b in blocks if isinstance(b, Image)]
    for name in before - {p.name for p in images}:  # Plots of an earlier report that this one no longer draws.
        (out / name).unlink(missing_ok=True)
    return Written(out / MARKDOWN, out / HTML, images)


def _referenced(markdown: Path) -> set[str]:
    """The PNG names an earlier report.md in the same folder showed."""
    if not markdown.exists():
        return set()
    return {name for name in re.findall(r"!\[[^\]]*\]\(([^)/\\]+\.png)\)", markdown.read_text())}
