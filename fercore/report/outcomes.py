"""Sections 0-5 of the report, what the sweep measured: the header (with the copy warnings first: synthetic images
that copy test or validation images, and the data set's own splits sharing near-copies), the best trials by
validation, the synthetic uplift beside the gain over the oversampling control, macro-F1 against the real share, the early-stopping epoch and per-class recall by setting.

Each section returns its blocks and writes its PNGs into OUT; when the sweep has no data for it, a sentence says why.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fercore.numbers import finite
from fercore.report import plots
from fercore.report.configs import describe, group_configs, varying_config_keys
from fercore.report.render import Block, Heading, Image, Paragraph, Table
from fercore.report.tables import (
    COMPARISONS, DASH, PAIRED_BASELINE, REAL_ONLY, Results, applies, augmented, best_trials, class_uplift, fmt,
    fmt_ci, fmt_value, group_labels, has_column, leak_trials, num, real_share, recall_by_setting, share_curves,
    uplift_groups, uplift_trials, varying_keys)
from fercore.results.rows import FAILED
from fercore.sections import DESCRIBED

MAX_INLINE_KEYS = 4  # more varying keys than this share one "other varying keys" column
MAX_FAILED = 5  # failed trials whose reason the header quotes


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _held_out_warnings(trials: pd.DataFrame) -> list[Block]:
    """The header's other copy warnings: synthetic images that copy a validation image (they bias the epoch and
    config choice), and the data set's own splits sharing near-copies (a trial's real training images that copy a
    test or validation image; the largest count of any trial, as trials keep different real images)."""
    blocks: list[Block] = []
    val = num(trials, "leak_synthetic_val")
    leaky = trials[val > 0]
    if not leaky.empty:
        listing = ", ".join(f"{t} ({int(n)})" for t, n in zip(leaky["trial_id"], val[val > 0]))
        blocks.append(Paragraph(
            f"WARNING: {int(val[val > 0].sum())} synthetic training images nearly copy a validation image, in "
            f"{plural(len(leaky), 'trial')}: {listing} (images per trial). Validation picked those trials' epochs "
            f"and ranks their configs on images they trained on."))
    shared = {split: num(trials, f"leak_real_{split}").max() for split in ("test", "val")}
    shared = {split: int(n) for split, n in shared.items() if finite(n) and n > 0}
    if shared:
        named = {"test": "test", "val": "validation"}
        blocks.append(Paragraph(
            "WARNING: the data set's own splits share near-copies (frames of one video, one subject in both splits): "
            + " and ".join(f"up to {plural(n, 'real training image')} nearly copy a {named[s]} image"
                           for s, n in shared.items())
            + " in a trial (leak_real_test, leak_real_val). Every trial's " + " and ".join(named[s] for s in shared)
            + " figures are inflated by them, the baseline's too."))
    return blocks


def header(res: Results) -> list[Block]:
    blocks: list[Block] = []
    leaks = leak_trials(res.trials)
    if not leaks.empty:  # Before anything else: the test figures of these trials are not to be trusted.
        counts = num(leaks, "leak_synthetic_test")
        listing = ", ".join(f"{t} ({int(n)})" for t, n in zip(leaks["trial_id"], counts))
        blocks.append(Paragraph(
            f"WARNING: {int(counts.sum())} synthetic training images nearly copy a test image, in "
            f"{plural(len(leaks), 'trial')}: {listing} (images per trial). Those trials' test figures overstate "
            f"what the classifier learnt; see section 10, the leakage audit."))
    blocks += _held_out_warnings(res.trials)
    blocks.append(Heading(f"Sweep report: {res.name}", 1))
    rec = res.record
    if rec.get("description"):
        blocks.append(Paragraph(str(rec["description"])))
    status = res.trials["status"].fillna("unknown").value_counts()
    order = ["completed", "stopped", "diverged", "error", "oom"]
    parts = [f"{status[s]} {s}" for s in order if s in status] + \
            [f"{n} {s}" for s, n in status.items() if s not in order]
    objectives = ", ".join(f"{m} ({d})" for m, d in res.objectives)
    kind = "objectives" if len(res.objectives) > 1 else "objective"
    counted = f"{plural(len(res.trials), 'trial')}: {', '.join(parts)}." if parts else "No trial is recorded yet."
    lines = [f"{counted} Search {kind}: {objectives}"
             + ("" if rec else " (assumed: this folder has no sweep.json)") + "."]
    if rec:
        scheduler = (rec.get("scheduler") or {}).get("type", "none")
        grid = rec.get("grid") or {}
        space = f"space {rec['space']}" if rec.get("space") else \
            " x ".join(f"{k} ({len(v)} values)" for k, v in grid.items()) if grid else "a fixed config"
        fixed = rec.get("fixed") or {}
        confirm = rec.get("confirm") or {}
        data = fixed.get("data.source", "?") + (f" (scale {fixed['data.scale']})" if "data.scale" in fixed else "")
        lines.append(f"Sampler {rec.get('sampler', '?')} over {space}; scheduler {scheduler}; "
                     f"{plural(int(rec.get('seeds') or 1), 'seed')} per config; data {data}"
                     + (f"; then a confirmation phase: the top {confirm['top']} configs on "
                        f"{plural(int(confirm.get('seeds', 5)), 'fresh seed')}" if confirm.get("top") else "")
                     + ("; a smoke run (tiny trials: figures say nothing about the method)" if rec.get("smoke") else "")
                     + ".")
    blocks.append(Paragraph(" ".join(lines)))
    failed = res.trials[res.trials["status"].isin(FAILED)]
    if not failed.empty:
        why = failed["reason"] if "reason" in failed else pd.Series("", failed.index)
        listed = list(zip(failed["trial_id"], failed["status"], why))
        reasons = "; ".join(f"{t} ({s}): {_short(r)}" for t, s, r in listed[:MAX_FAILED])
        more = (f"; and {len(listed) - MAX_FAILED} more (column reason of trials.parquet)"
                if len(listed) > MAX_FAILED else "")
        blocks.append(Paragraph(f"Failed trials: {reasons}{more}."))
    real_leak = num(res.trials, "leak_real_test")
    if (real_leak > 0).any():
        blocks.append(Paragraph(
            f"Note: the data set's own real training images nearly copy up to {int(real_leak.max())} test images "
            f"(leak_real_test); this touches every trial trained on that data alike (section 10)."))
    return blocks


def phases_section(res: Results, search: Results, claims: Results) -> list[Block]:
    """Where the claims come from: the confirmation trials (the search's best configs by validation, again on fresh
    seeds, run to completion), beside what the search saw of the same configs; or, without a confirmation phase,
    why the figures that follow lean upward."""
    blocks: list[Block] = [Heading("Search and confirmation")]
    metric, mode = res.selection
    if not res.confirmed:
        return blocks + [Paragraph(
            "No confirmation phase: every figure below comes from the trials the search chose among, so the best "
            "of them lean upward (the winner's curse) and, under ASHA, lack the seeds it stopped. A sweep file's "
            "confirm: {top: K, seeds: S} runs the search's K best configs again on S fresh seeds, to completion, "
            "and the report then claims from those trials only.")]
    confirmed = group_configs(claims.completed, (metric, mode))
    searched = {tuple(sorted(c.values.items())): c for c in group_configs(search.completed, (metric, mode))}
    keys = varying_config_keys(confirmed) or [k for k in DESCRIBED if any(k in c.values for c in confirmed)]
    ranked = []
    for c in confirmed:
        seen = searched.get(tuple(sorted(c.values.items())))
        before = seen.objective if seen is not None else float("nan")
        ranked.append((before, [describe(c.values, keys), f"{fmt(before)} ({len(seen.trials) if seen else 0})",
                                f"{fmt(c.objective)} ({len(c.trials)})", fmt(c.objective - before, signed=True)]))
    sign = -1 if mode == "max" else 1  # in the search's order: how it ranked them
    rows = [row for before, row in sorted(ranked, key=lambda r: sign * r[0] if finite(r[0]) else math.inf)]
    # Only completed trials carry claims: one cut off when the sweep ended (or failed) is counted apart.
    seeds = sorted({int(v) for v in num(claims.completed, "seed").dropna()})
    unfinished = len(claims.trials) - len(claims.completed)
    stopped = int((search.trials["status"] == "stopped").sum())
    text = (f"This sweep confirmed: after its search ({plural(len(search.trials), 'trial')}, {stopped} stopped by "
            f"the scheduler), the {plural(len(confirmed), 'config')} it ranked best by {metric} (the mean over each "
            f"config's seeds) ran again on fresh seeds ({', '.join(map(str, seeds))}), to completion: "
            f"{plural(len(claims.completed), 'confirmation trial')}"
            + (f" ({unfinished} more did not complete: failed, or cut off when the sweep ended; --resume runs what "
               f"was cut off)" if unfinished else "")
            + ". Sections 1-8 read these trials only. The search "
            "chose them on its own trials, so its figures of them lean upward (the winner's curse) and, under ASHA, "
            "lack the seeds it stopped: the table shows by how much. The search's trials are exploration; section 9 "
            "(which keys mattered) reads them.")
    return blocks + [Paragraph(text), Table(["config", f"search {metric} (seeds)", f"confirmation {metric} (seeds)",
                                             "confirmation - search"], rows)]


def _short(text, limit: int = 160) -> str:
    """The first line of a failure reason, cut to LIMIT characters."""
    if not isinstance(text, str) or not text.strip():
        return "no reason recorded"
    line = text.strip().splitlines()[0]
    return line if len(line) <= limit else line[:limit - 1] + "…"


def config_cells(row: pd.Series, keys: list[str]) -> list[str]:
    return [fmt_value(row.get(k)) if applies(k, row) else DASH for k in keys]


def best(res: Results) -> list[Block]:
    metric, mode = res.selection
    blocks: list[Block] = [Heading(f"1. Best trials by {metric}, the validation figure the sweep chose on")]
    top = best_trials(res.trials, res.selection)
    if top.empty:
        return blocks + [Paragraph(f"No completed trial has both {metric} and a test macro-F1, so there is nothing "
                                   f"to rank.")]
    shown = [k for k in DESCRIBED if k in res.trials]
    others = [k for k in varying_keys(res.trials) if k not in shown]
    inline = others if len(others) <= MAX_INLINE_KEYS else []
    chosen = [] if metric == "val_macro_f1" else [metric]
    columns = ["trial", *chosen, "val macro-F1", "test macro-F1 [95 % CI]", "test accuracy [95 % CI]", *shown,
               *inline]
    if others and not inline:
        columns.append("other varying keys")
    rows = []
    for _, r in top.iterrows():
        cells = [str(r["trial_id"]), *[fmt(r.get(m)) for m in chosen], fmt(r.get("val_macro_f1")),
                 fmt_ci(r.get("test_macro_f1"), r.get("test_macro_f1_ci_low"), r.get("test_macro_f1_ci_high")),
                 fmt_ci(r.get("test_accuracy"), r.get("test_accuracy_ci_low"), r.get("test_accuracy_ci_high")),
                 *config_cells(r, shown), *config_cells(r, inline)]
        if others and not inline:
            cells.append("; ".join(f"{k}={fmt_value(r.get(k))}" for k in others
                                   if applies(k, r) and fmt_value(r.get(k)) != DASH))
        rows.append(cells)
    done = len(res.completed)
    direction = "highest" if mode == "max" else "lowest"
    text = (f"The top {len(top)} of {plural(done, 'completed trial')} by {metric} ({direction} first; the best "
            f"epoch's value, the one the sweep's searcher was told), with each chosen trial's test figures beside it "
            f"and their 95 % bootstrap intervals over the test images. The test split is read once per trial and "
            f"chooses nothing here: a trial picked by its test score would overstate what it scores on new images."
            f"{res.selection_note} Config columns: the keys that vary across the sweep ({DASH}: does not apply, e.g. "
            f"a generator key of a real-only trial).")
    return blocks + [Paragraph(text), Table(columns, rows)]


CONTROL_ANSWERS = (
    "The gain over the oversampling control answers \"did the synthetic content help\": the control trains on the "
    "same per-class counts with the same schedule, its synthetic images replaced by real training images of the "
    "class drawn again, so the gain is what the synthetic images carry; the uplift over real-only also counts the "
    "extra gradient steps and the rebalancing.")


def _comparison_note(aug: pd.DataFrame) -> list[str]:
    """Sentences on the comparisons besides the uplift: which answers the question, and why one is missing."""
    notes = [CONTROL_ANSWERS]
    if not has_column(aug, "gain_control_test_macro_f1"):
        notes.append("These trials have no gain over the oversampling control (gain_control_test_macro_f1): they "
                     "predate the control, or augment.paired_baseline was false; so this section cannot tell the "
                     "synthetic content from more steps and rebalancing.")
    ratio = aug[group_labels(aug, "augment.policy") == "real_ratio"]
    if not ratio.empty:
        notes.append("At real_ratio r the generator was trained on every real training image, so its images carry "
                     "information from the 1 - r share the classifier never saw; the gain over the real subset "
                     "(gain_subset_*, the r share of real images alone, trained for as many optimiser steps as the "
                     "trial) is real_ratio's own comparison."
                     + ("" if has_column(ratio, "subset_train_steps")
                        or not has_column(ratio, "gain_subset_test_macro_f1") else
                        " These trials' real subsets predate that: each trained the trial's epochs on r of its "
                        "images, so about r of its steps, and their gain over it counts training longer too; the "
                        "gain over the oversampling control (the same steps) is the fair one here.")
                     + ("" if has_column(ratio, "gain_subset_test_macro_f1") else
                        " These real_ratio trials have no gain_subset_* columns (they predate the real-subset "
                        "control), so only the comparisons above are shown."))
    return notes


def uplift(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("2. Synthetic uplift over the real-only baseline and gain over the oversampling "
                                   "control")]
    done = res.completed
    n_aug = int(augmented(done).sum())
    if n_aug == 0:
        return blocks + [Paragraph("No completed trial used synthetic images, so there is no uplift to show.")]
    aug = uplift_trials(res.trials)
    if aug.empty:
        return blocks + [Paragraph(f"{plural(n_aug, 'completed trial')} used synthetic images but none has a paired "
                                   f"uplift (uplift_test_macro_f1): their real-only baselines were not trained "
                                   f"(augment.paired_baseline false).")]
    metric = res.selection[0]
    blocks.append(Paragraph(
        "Uplift = the augmented trial's test macro-F1 minus that of the real-only baseline with the same backbone, "
        "training config and seed, scored on the same test images; gain over control = the same difference against "
        "the oversampling control. Each 95 % interval is a paired bootstrap over those images: one trial, one seed, "
        "so it holds the test images' noise and not what another seed would give, and the counts of intervals above "
        "or below 0 are uncorrected for the many trials shown. They describe the search; the claims are section "
        "2.1's, over seeds. " + " ".join(_comparison_note(aug))
        + f" Per group, the trial shown is the one {metric} (validation) chose, not the one with the largest test "
          f"figure; section 2.1 gives each config's mean over seeds."))
    present = [(n, c) for n, c in COMPARISONS if has_column(aug, c)]
    label = {"uplift": "uplift over real-only", "control": "gain over control", "subset": "gain over real subset"}
    columns = ["trials", *[f"mean {label[n]}" for n, _ in present], "trial chosen on validation",
               *[f"its {label[n]} [95 % CI]" for n, _ in present],
               *[f"{label[n]}: one-seed intervals above / below 0 (uncorrected)" for n, _ in present]]
    for key, name in (("generator.type", "generator type"), ("augment.policy", "policy")):
        groups = uplift_groups(aug, key, res.selection)
        rows = [[g["group"], str(g["trials"]), *[fmt(g[f"{n}_mean"], signed=True) for n, _ in present],
                 f"{g['chosen_trial']} ({metric} {fmt(g['chosen_value'])})" if g["chosen_trial"] is not None
                 else DASH,
                 *[fmt_ci(g[f"{n}_chosen"], g[f"{n}_low"], g[f"{n}_high"], True) for n, _ in present],
                 *[f"{g[f'{n}_above']} / {g[f'{n}_below']}" if g[f"{n}_n"] else DASH for n, _ in present]]
                for _, g in groups.iterrows()]
        blocks.append(Table([name, *columns], rows, caption=f"Test macro-F1 uplift and gain over control per {name}"))
    points = pd.DataFrame({"group": group_labels(aug, "generator.type"),
                           "trial_id": aug["trial_id"], "uplift": num(aug, "uplift_test_macro_f1"),
                           "low": num(aug, "uplift_test_macro_f1_low"), "high": num(aug, "uplift_test_macro_f1_high")})
    above, below = int((points["low"] > 0).sum()), int((points["high"] < 0).sum())
    title = (f"Uplift interval above 0 in {above} of {plural(len(points), 'augmented trial')}, "
             f"below 0 in {below}")
    plots.uplift_by_trial(points, out / "uplift_by_trial.png", title)
    blocks.append(Image("uplift_by_trial.png", "test macro-F1 uplift per augmented trial, grouped by generator type",
                        "Each augmented trial's test macro-F1 uplift with its paired 95 % interval."))
    if has_column(aug, "gain_control_test_macro_f1"):
        gains = points.assign(uplift=num(aug, "gain_control_test_macro_f1"),
                              low=num(aug, "gain_control_test_macro_f1_low"),
                              high=num(aug, "gain_control_test_macro_f1_high"))
        gains = gains[gains["uplift"].notna()]
        above, below = int((gains["low"] > 0).sum()), int((gains["high"] < 0).sum())
        title = (f"Gain over the oversampling control: interval above 0 in {above} of "
                 f"{plural(len(gains), 'augmented trial')}, below 0 in {below}")
        plots.uplift_by_trial(gains, out / "gain_over_control_by_trial.png", title, "gain over control")
        blocks.append(Image("gain_over_control_by_trial.png", "test macro-F1 gain over the oversampling control per "
                            "augmented trial", "Each augmented trial's test macro-F1 gain over its oversampling "
                            "control (same counts and schedule, real images drawn again) with its paired 95 % "
                            "interval: what the synthetic content added."))
    blocks += class_uplift_blocks(aug, out)
    return blocks


def class_uplift_blocks(aug: pd.DataFrame, out: Path) -> list[Block]:
    table = class_uplift(aug)
    if table["trials"].sum() == 0:
        return [Paragraph("No augmented trial has per-class recall uplifts (uplift_test_recall_<class>).")]
    focus = table[table["class"] == plots.HIGHLIGHT]["mean"].iloc[0]
    rest = table[table["class"] != plots.HIGHLIGHT]["mean"].mean()
    title = (f"Synthetic images changed {plots.HIGHLIGHT} recall by {fmt(focus, signed=True)} on average; "
             f"other classes by {fmt(rest, signed=True)}")
    plots.class_uplift_bars(table, out / "uplift_per_class.png", title)
    control = table["control"].notna().any()
    rows = [[r["class"], str(r["trials"]), fmt(r["mean"], signed=True),
             *([fmt(r["control"], signed=True)] if control else []),
             str(r["gained"]), str(r["lost"]), fmt(r["real"], 0), fmt(r["synthetic"], 0)] for _, r in table.iterrows()]
    return [Paragraph("Per class: the change in test recall (per-class accuracy) over the real-only baseline"
                      + (" and over the oversampling control (the column that isolates the synthetic content)"
                         if control else " (no gain over the oversampling control was measured: "
                                         "gain_control_test_recall_<class> is absent)")
                      + f", averaged over the {plural(len(aug), 'augmented trial')}, and how many synthetic images "
                        f"each class got."),
            Table(["class", "trials", "mean uplift of test recall",
                   *(["mean gain of test recall over control"] if control else []), "trials gained", "trials lost",
                   "mean real train images", "mean synthetic train images"], rows,
                  caption="Per-class test recall uplift"),
            Image("uplift_per_class.png", "mean test recall uplift per class", title + ".")]


def real_share_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("3. Test macro-F1 against the real share of the training set")]
    done = res.completed
    done = done[num(done, "test_macro_f1").notna() & real_share(done).notna()]
    curves, step = share_curves(done, res.selection)
    if curves.empty:
        return blocks + [Paragraph("No completed trial has a test macro-F1, so there is nothing to plot.")]
    shares = sorted(curves["share"].unique())
    if len(shares) < 2:
        why = "real images only" if shares[0] == 1 else f"the same real share ({shares[0]:.2f})"
        return blocks + [Paragraph(f"Every completed trial trained on {why}, so macro-F1 cannot be shown against "
                                   f"the real share.")]
    points = pd.DataFrame({"backbone": group_labels(done, "classifier.backbone"), "share": real_share(done), "f1": num(done, "test_macro_f1"),
                           "low": num(done, "test_macro_f1_ci_low"), "high": num(done, "test_macro_f1_ci_high")})
    title = _share_title(curves, res.selection)
    plots.share_lines(points, curves, out / "f1_vs_real_share.png", title)
    wide = curves.pivot(index="backbone", columns="share", values="f1")
    n = curves.pivot(index="backbone", columns="share", values="trials")
    rows = [[b, *[f"{fmt(wide.loc[b, s])} (n={int(n.loc[b, s])})" if finite(wide.loc[b, s]) else DASH
                  for s in wide.columns]] for b in wide.index]
    return blocks + [
        Paragraph("Real share = n_train_real / (n_train_real + n_train_synthetic): 1 is real images only, 0 is "
                  "synthetic only; it covers real_ratio grids and every top-up policy alike. Points are trials "
                  "(95 % intervals), lines the mean per backbone and share (report 004, figure 4)."
                  + (" The sweep has too many distinct shares to list: the table and lines use shares rounded to "
                     "0.1." if step > 0.01 else "")),
        Table(["backbone", *[f"share {s:.2f}" for s in wide.columns]], rows,
              caption="Mean test macro-F1 per backbone and real share"),
        Image("f1_vs_real_share.png", "test macro-F1 against real share per backbone", title + ".")]


def _share_title(curves: pd.DataFrame, objective: tuple[str, str]) -> str:
    """The plot's title: one backbone's line end to end, or which backbone is best at each share, by its mean
    validation OBJECTIVE (the test figures are plotted, never chosen by)."""
    backbones = curves["backbone"].unique()
    if len(backbones) == 1:
        line = curves.sort_values("share")
        lo, hi = line.iloc[0], line.iloc[-1]
        return (f"{backbones[0]}: test macro-F1 {lo.f1:.3f} at real share {lo.share:.2f}, "
                f"{hi.f1:.3f} at {hi.share:.2f}")
    metric, mode = objective

    def chosen(part: pd.DataFrame) -> str | None:
        scored = part[part["objective"].notna()]
        if scored.empty:
            return None
        return scored.loc[scored["objective"].idxmax() if mode == "max" else scored["objective"].idxmin(), "backbone"]

    winners = {s: b for s, part in curves.groupby("share") if part["backbone"].nunique() > 1
               and (b := chosen(part)) is not None}
    by = f"by mean {metric}"
    if not winners:
        return f"Each backbone was tried at other real shares: no share has two backbones to compare by {metric}"
    if len(set(winners.values())) == 1:
        best = next(iter(winners.values()))
        if len(winners) == curves["share"].nunique():
            return f"Best backbone {by} at every real share: {best}"
        if len(winners) == 1:
            return (f"Best backbone {by} at real share {next(iter(winners)):.2f}, the only share several backbones "
                    f"were tried at: {best}")
        return f"Best backbone {by} at each of the {len(winners)} real shares several backbones were tried at: {best}"
    if len(winners) <= 5:
        listing = ", ".join(f"{s:.2f} {b}" for s, b in sorted(winners.items()))
        return f"Best backbone {by} depends on the real share: {listing}"
    wins = pd.Series(list(winners.values())).value_counts()
    listing = ", ".join(f"{b} at {n}" for b, n in wins.items())
    return f"Best backbone {by} depends on the real share: of {len(winners)} shares, {listing}"


def epochs_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("4. Early-stopping epoch with and without synthetic images")]
    done = res.completed
    done = done[num(done, "best_epoch").notna()]
    if done.empty:
        return blocks + [Paragraph("No completed trial recorded its best epoch.")]
    aug = augmented(done)
    if aug.all() or not aug.any():
        which = "used synthetic images" if aug.all() else "trained on real images only"
        return blocks + [Paragraph(f"Every completed trial {which}, so there is no real-vs-synthetic comparison of "
                                   f"the early-stopping epoch.")]
    points = pd.DataFrame({"backbone": group_labels(done, "classifier.backbone"),
                           "source": np.where(aug, "with synthetic", "real only"),
                           "best_epoch": num(done, "best_epoch")})
    limit = num(done, "classifier.epochs").max()
    means = points.groupby(["backbone", "source"])["best_epoch"].agg(["mean", "size"]).unstack("source")
    rows, diffs = [], []
    for b in means.index:
        cells = [b]
        for s in ("real only", "with synthetic"):
            m, k = means.loc[b, ("mean", s)], means.loc[b, ("size", s)]
            cells.append(f"{m:.1f} (n={int(k)})" if finite(m) else DASH)
        d = means.loc[b, ("mean", "with synthetic")] - means.loc[b, ("mean", "real only")]
        cells.append(f"{d:+.1f}" if finite(d) else DASH)
        if finite(d):
            diffs.append(d)
        rows.append(cells)
    if diffs:
        d = float(np.mean(diffs))
        verb = "earlier" if d < 0 else "later" if d > 0 else "at the same epoch"
        title = (f"With synthetic images early stopping kept an epoch {abs(d):.1f} {verb} on average"
                 if d else "Synthetic images did not move the kept epoch on average")
    else:
        title = "No backbone was trained both with and without synthetic images"
    plots.epochs_by_source(points, out / "best_epoch.png", title, limit if finite(limit) else None)
    capped = int((points["best_epoch"] >= limit).sum()) if finite(limit) else 0
    text = ("best_epoch: the epoch whose weights were kept (highest validation macro-F1), completed trials only "
            "(report 004, figure 6)." + (f" {capped} of {len(points)} trials kept their last allowed epoch "
                                         f"({limit:g}): the epoch limit, not early stopping, ended them." if capped
                                         else ""))
    return blocks + [Paragraph(text),
                     Table(["backbone", "real only: mean best epoch", "with synthetic: mean best epoch",
                            "difference"], rows, caption="Mean early-stopping epoch per backbone"),
                     Image("best_epoch.png", "early-stopping epoch with and without synthetic images", title + ".")]


def _absent_note(done: pd.DataFrame) -> str:
    """A sentence naming the classes with no test image (test_absent_classes), which macro figures leave out."""
    if "test_absent_classes" not in done:
        return ""
    absent = sorted({c for text in done["test_absent_classes"].dropna() for c in str(text).split(",") if c})
    return (f" The test split has no image of {', '.join(absent)}: no recall is shown for it and macro-F1, its "
            "intervals and the uplifts are over the other classes." if absent else "")


def recall_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("5. Per-class test recall by augmentation setting")]
    table, counts, merged = recall_by_setting(res.completed)
    if table.empty:
        return blocks + [Paragraph("No completed trial has per-class test recall (test_recall_<class>).")]
    title = _recall_title(table)
    plots.recall_heatmap(table, counts, out / "recall_by_setting.png", title)
    columns = ["class", *[f"{s} (n={counts[s]})" for s in table.columns]]
    rows = [[c, *[fmt(table.loc[c, s]) for s in table.columns]] for c in table.index]
    return blocks + [
        Paragraph("Mean test recall (per-class accuracy) of the completed trials of each augmentation setting: the "
                  "policy with its own values (e.g. per_class 1000: every class topped up to 1,000 images), and the "
                  "quality filter when one was on (report 002, table III)."
                  + (f" With no real-only trial in the sweep, '{PAIRED_BASELINE}' is the real-only baselines the "
                     "augmented trials were paired with (test recall minus its uplift, each baseline once)."
                     if PAIRED_BASELINE in table.columns else "")
                  + (" The sweep has too many such settings to show: columns are policies here." if merged else "")
                  + _absent_note(res.completed)),
        Table(columns, rows, caption="Mean test recall per class and augmentation setting"),
        Image("recall_by_setting.png", "heatmap of mean test recall per class and setting", title + ".")]


def _recall_title(table: pd.DataFrame) -> str:
    focus = plots.HIGHLIGHT
    row = table.loc[focus]
    if table.shape[1] == 1:
        col = table.iloc[:, 0]
        return (f"Test recall, {table.columns[0]}: lowest {col.idxmin()} ({col.min():.2f}), "
                f"highest {col.idxmax()} ({col.max():.2f})")
    name = focus.capitalize()
    base = next((b for b in (REAL_ONLY, PAIRED_BASELINE) if b in row), None)
    others = row.drop(base, errors="ignore").dropna() if base else row.dropna()
    if others.empty:
        return f"{name} recall per setting"
    if row.dropna().nunique() == 1:
        return f"{name} recall is {others.iloc[0]:.2f} in every setting"
    # The range over the settings, none of them named: a setting picked by its test recall would be a test-chosen
    # headline (the heatmap shows every setting's figure).
    spread = f"{others.min():.2f} to {others.max():.2f} over {len(others)} settings"
    if base and finite(row[base]):
        return f"{name} test recall: {row[base]:.2f} {base}, {spread}"
    return f"{name} test recall: {spread}"

