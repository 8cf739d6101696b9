"""Sections 6-10 of the report, why the figures came out as they did: confusion matrices, generator quality against
uplift, real vs synthetic embeddings, which hyperparameters mattered (and the Pareto front), and the leakage audit.

Each section returns its blocks and writes its PNGs into OUT; when the sweep has no data for it, a sentence says why.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fercore.numbers import finite
from fercore.report import plots
from fercore.report.importance import param_importances, pareto_front
from fercore.report.outcomes import config_cells, plural
from fercore.report.render import Block, Heading, Image, Paragraph, Table
from fercore.report.tables import (
    DASH, Results, augmented, best_by, confusion_matrix, data_classes, fmt, fmt_count, fmt_value, group_labels,
    has_column, num, uplift_trials, used_synthetic)
from fercore.sections import DESCRIBED

MAX_EMBEDDING_PANELS = 4
MAX_LEAK_ROWS = 50


def _describe(row: pd.Series) -> str:
    backbone = row.get("classifier.backbone")
    if used_synthetic(row):
        return f"{backbone}, {row.get('generator.type')} {row.get('augment.policy')}"
    return f"{backbone}, real only"


def confusion_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("6. Confusion matrices: best real-only vs best augmented trial by validation")]
    if res.confusion.empty:
        return blocks + [Paragraph("This folder has no confusion counts (confusion.parquet is missing or empty: "
                                   "sweeps before it existed did not write it).")]
    done = res.completed
    done = done[done["trial_id"].isin(set(res.confusion["trial_id"]))]
    aug = augmented(done)
    classes = data_classes(done)
    panels, picked = [], []
    for label, part in (("Best real-only", done[~aug]), ("Best augmented", done[aug])):
        row = best_by(part, res.selection)
        if row is None:
            continue
        matrix = confusion_matrix(res.confusion, row["trial_id"], classes)
        name = (f"{label}: trial {row['trial_id']} ({_describe(row)})\n{res.selection[0]} "
                f"{fmt(row.get(res.selection[0]))}, test macro-F1 {fmt(row.get('test_macro_f1'))}")
        panels.append((name, matrix))
        picked.append((label, row, matrix))
    if not panels:
        return blocks + [Paragraph("No completed trial has confusion counts.")]
    recalls = [np.diag(m) / np.maximum(m.sum(1), 1) for _, _, m in picked]
    if len(picked) == 2:
        change = recalls[1] - recalls[0]
        i = int(np.argmax(np.abs(change)))
        title = (f"Best augmented vs best real-only trial: {classes[i]} recall {recalls[0][i]:.2f} -> "
                 f"{recalls[1][i]:.2f}, the largest change of any class" if change[i] else
                 "The best augmented and the best real-only trial have the same recall in every class")
    else:
        m = picked[0][2].astype(float)
        off = m / np.maximum(m.sum(1, keepdims=True), 1)
        np.fill_diagonal(off, -1)
        i, j = np.unravel_index(np.argmax(off), off.shape)
        title = f"{picked[0][0]} trial: {classes[i]} most often taken for {classes[j]} ({off[i, j]:.0%})"
    plots.confusion_pair(panels, out / "confusion.png", title, classes)
    missing = "" if len(picked) == 2 else (
        " The sweep has no completed augmented trial with confusion counts." if picked[0][0].endswith("real-only")
        else " The sweep has no completed real-only trial with confusion counts.")
    return blocks + [Paragraph(f"Test-split confusion counts of the best trial of each kind by {res.selection[0]} "
                               f"(validation: the test split picks no trial); colour is the share of the true "
                               f"class's images (rows sum to 1)." + missing),
                     Image("confusion.png", "confusion matrices", title + ".")]


# The generator's own figures (fercore.synthetic.generator_quality: one fixed unfiltered sample per generator),
# as (column, short name, axis label); the scatter shows those a sweep has.
QUALITY_MEASURES = (
    ("gen_fid", "FID", "FID of the generator's sample (lower is closer to real)"),
    ("gen_kid", "KID", "KID of the generator's sample (lower is closer to real)"),
    ("gen_precision", "precision", "precision (share of its images inside the real manifold)"),
    ("gen_recall", "recall", "recall (share of real images inside its manifold)"),
    ("gen_conditional_accuracy", "conditional accuracy", "conditional accuracy, macro over classes, before filters"))


def _gain_column(aug: pd.DataFrame) -> tuple[str, str]:
    """The paired gain to set quality against: over the oversampling control where the sweep measured it (the gain
    synthetic images bought beyond repeating real ones), else the uplift over the real-only baseline."""
    if has_column(aug, "gain_control_test_macro_f1"):
        return "gain_control_test_macro_f1", "gain over the oversampling control"
    return "uplift_test_macro_f1", "uplift over the real-only baseline"


def quality_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("7. Generator quality against the uplift it bought")]
    aug = uplift_trials(res.trials)
    measures = [(c, name, label) for c, name, label in QUALITY_MEASURES if num(aug, c).notna().any()]
    if aug.empty or not measures:
        why = "no completed trial used synthetic images with a paired uplift" if aug.empty else \
            "no augmented trial has generator quality figures (gen_fid, gen_conditional_accuracy)"
        return blocks + [Paragraph(f"Nothing to relate: {why}.")]
    gain, gain_name = _gain_column(aug)
    points = _generator_points(aug, gain, [c for c, _, _ in measures])
    parts = []
    for c, name, _ in measures:
        ok = points[[c, "uplift"]].dropna()
        if len(ok) >= 3 and ok[c].nunique() > 1 and ok["uplift"].nunique() > 1:
            rho = ok[c].rank().corr(ok["uplift"].rank())
            parts.append(f"{name} ρ = {rho:+.2f}")
    if parts:
        title = f"Spearman correlation with the {gain_name}: " + ", ".join(parts) + \
            f" ({plural(len(points.dropna(subset=['uplift'])), 'generator')}, each once)"
    elif len(points) < 3:
        title = f"Too few generators ({len(points)}) to correlate generator quality with the {gain_name}"
    else:
        title = (f"Generator quality or the {gain_name} is the same for all {len(points)} generators: nothing "
                 f"to correlate")
    plots.quality_scatter(points, [(c, label) for c, _, label in measures], out / "quality_vs_uplift.png", title,
                          ylabel=f"test macro-F1 {gain_name}: its trials' mean (their range)")
    return blocks + [
        Paragraph("Each generator is scored once, on a fixed unfiltered sample matched to the real validation split's "
                  "classes (per class up to gen_quality_n images from each side: faces neither the generator nor the "
                  "reference classifier trained on, so a generator that copies its training faces gains nothing by "
                  "it), in the reference classifier's features" + _reference_note(aug) + ": FID, KID (± its spread "
                  "over subsets), precision and recall (k-NN manifolds, "
                  "Kynkaanniemi et al. 2019: few good images give high precision and low recall, many poor ones the "
                  "reverse) and conditional accuracy before any filter. A filter's own effect is its acceptance and "
                  f"the accuracy of what it kept. The correlations count each generator once (its figures against "
                  f"its trials' mean gain), not once per trial that used it. Gains are the test macro-F1 {gain_name}, "
                  f"the mean over the "
                  f"generator's trials (which differ in policy, ratio and filter) and that of the trial its "
                  f"{res.selection[0]} chose (validation); generators in the order of that trial's "
                  f"{res.selection[0]}."),
        _generator_table(aug, gain, res.selection),
        Image("quality_vs_uplift.png", "generator quality against uplift", title + ".")]


def _generator_points(aug: pd.DataFrame, gain: str, measures: list[str]) -> pd.DataFrame:
    """One point per generator (generator_key; the trial where a folder lacks it): its type, its figures (the same
    in every trial that used it), its trials' mean GAIN and their range (low, high)."""
    key = aug["generator_key"].fillna(aug["trial_id"]) if "generator_key" in aug else aug["trial_id"]
    frame = pd.DataFrame({"key": key, "group": group_labels(aug, "generator.type"), "gain": num(aug, gain),
                          **{c: num(aug, c) for c in measures}})
    grouped = frame.groupby("key", sort=False)
    return pd.DataFrame({"group": grouped["group"].first(), "uplift": grouped["gain"].mean(),
                         "low": grouped["gain"].min(), "high": grouped["gain"].max(),
                         **{c: grouped[c].first() for c in measures}}).reset_index(drop=True)


def _reference_note(aug: pd.DataFrame) -> str:
    """The reference classifier's accuracy on the training faces it held out, as the rows record it ('' without)."""
    accuracy, n = num(aug, "reference_heldout_accuracy").dropna(), num(aug, "reference_heldout_n").dropna()
    if accuracy.empty:
        return ""
    return (f" (its accuracy on {int(n.iloc[0]) if not n.empty else '?'} training faces it held out: "
            f"{fmt(accuracy.iloc[0])})")


def _generator_table(aug: pd.DataFrame, gain: str, objective: tuple[str, str]) -> Table:
    """One row per generator: its own figures (the same in every trial that used it), its trials' mean gain and the
    gain of the trial OBJECTIVE (validation) chose; generators in the order of that trial's objective."""
    key = aug["generator_key"] if "generator_key" in aug else aug["trial_id"]
    metric, mode = objective
    rows = []
    for _, part in aug.assign(_g=num(aug, gain)).groupby(key.fillna("?"), sort=False):
        r = part.iloc[0]
        kid = fmt(r.get("gen_kid"), 4)
        if finite(r.get("gen_kid_std")):
            kid += f" ± {fmt(r.get('gen_kid_std'), 4)}"
        kept = num(part, "filter_kept_conditional_accuracy")
        chosen = best_by(part, objective)
        value = float(pd.to_numeric(chosen.get(metric), errors="coerce")) if chosen is not None else np.nan
        rank = (-value if mode == "max" else value) if finite(value) else np.inf
        rows.append((rank, [
            fmt_value(r.get("generator.type")), str(len(part)), fmt(r.get("gen_fid"), 1), kid,
            fmt(r.get("gen_precision")), fmt(r.get("gen_recall")), fmt(r.get("gen_conditional_accuracy")),
            fmt(num(part, "filter_acceptance").mean()), fmt(kept.mean()) if kept.notna().any() else DASH,
            fmt(part["_g"].mean(), signed=True),
            f"{fmt(chosen.get('_g'), signed=True)} ({chosen['trial_id']})" if chosen is not None else DASH]))
    rows.sort(key=lambda x: x[0])
    return Table(["generator", "trials", "FID", "KID", "precision", "recall", "conditional accuracy",
                  "filter acceptance (mean)", "kept accuracy (mean)", "mean gain",
                  f"gain of the trial {metric} chose"],
                 [cells for _, cells in rows[:30]],
                 caption="Each generator's quality (measured once) and the gains of the trials that used it"
                         + (f"; the 30 of {len(rows)} generators whose chosen trial has the best {metric}"
                            if len(rows) > 30 else ""))


def embeddings_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("8. Real vs synthetic embeddings")]
    emb = res.embeddings
    if emb.empty:
        return blocks + [Paragraph("This folder has no embedding points (embeddings.parquet is missing or empty): "
                                   "no trial used synthetic images, or the sweep predates the table.")]
    done = res.completed
    done = done[augmented(done) & done["trial_id"].isin(set(emb["trial_id"]))]
    if done.empty:
        return blocks + [Paragraph("No completed augmented trial has embedding points.")]
    types = group_labels(done, "generator.type")
    picks = []
    metric, mode = res.selection
    for g in sorted(types.unique()):
        row = best_by(done[types == g], res.selection)
        if row is None:  # no validation figure: any of the type's trials will do
            row = done[types == g].iloc[0]
        picks.append((g, row))
    sign = -1 if mode == "max" else 1  # the types whose chosen trial validated best first
    picks.sort(key=lambda p: sign * p[1].get(metric) if finite(p[1].get(metric)) else np.inf)
    left_out = [g for g, _ in picks[MAX_EMBEDDING_PANELS:]]
    picks = picks[:MAX_EMBEDDING_PANELS]
    panels = [(f"{g}: trial {row['trial_id']}, embedding JSD {fmt(row.get('gen_embedding_jsd'))}",
               emb[emb["trial_id"] == row["trial_id"]]) for g, row in picks]
    jsd = {g: row.get("gen_embedding_jsd") for g, row in picks if finite(row.get("gen_embedding_jsd"))}
    if len(jsd) > 1:
        g = min(jsd, key=jsd.get)
        title = f"Closest to the real images: {g} (JSD {jsd[g]:.3f}; 0 = same, 1 = no overlap)"
    elif jsd:
        g = next(iter(jsd))
        title = f"{g} synthetic vs real images: JSD {jsd[g]:.3f} (0 = same distribution, 1 = no overlap)"
    else:
        title = "Real vs synthetic images in the reference classifier's feature space"
    plots.embedding_panels(panels, out / "embeddings.png", title)
    return blocks + [
        Paragraph("The reference classifier's features of up to 100 real and 100 synthetic training images per class, "
                  "projected on the 2-D PCA fitted on the real images' features only: the fixed ruler on which "
                  "gen_embedding_jsd (Jensen-Shannon distance of the two 2-D histograms) was measured. One panel per "
                  f"generator type, its best augmented trial by {metric} (validation; report 004, figure 7, with "
                  f"PCA instead of t-SNE)." + (f" Generator types beyond the {MAX_EMBEDDING_PANELS} with the best "
                                              f"trials, "
                                          f"not shown: {', '.join(left_out)}." if left_out else "")),
        Image("embeddings.png", "real and synthetic embeddings", title + ".")]


def importance_section(res: Results, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("9. Which hyperparameters mattered, and what they cost"),
                           Heading("Hyperparameter importance", 3)]
    imp = param_importances(res)
    if not imp.values:
        blocks.append(Paragraph(imp.reason))
    else:
        top = next(iter(imp.values))
        title = f"{top} explains the most of {imp.objective} ({imp.values[top]:.0%} of the variance)"
        plots.importance_bars(imp.values, out / "importance.png", title, imp.objective)
        left = (f" Left out, as only some trials have them: {', '.join(imp.left_out)}." if imp.left_out else "")
        blocks += [Paragraph(f"Optuna's fANOVA importance (seeded) of each varying config key for {imp.objective} "
                             f"({imp.mode}), over {plural(imp.trials, 'completed trial')}. With few trials the "
                             f"ranking is rough." + left),
                   Table(["config key", "importance"], [[k, fmt(v)] for k, v in imp.values.items()]),
                   Image("importance.png", "hyperparameter importance", title + ".")]
    blocks.append(Heading("Pareto front", 3))
    front = pareto_front(res)
    if front.points.empty:
        return blocks + [Paragraph(front.reason)]
    (xm, xd), (ym, yd) = front.x, front.y
    on = front.points[front.points["on_front"]].sort_values("x")
    best_y = on.loc[on["y"].idxmax() if yd == "max" else on["y"].idxmin()]
    best_x = on.loc[on["x"].idxmin() if xd == "min" else on["x"].idxmax()]
    title = f"Best {ym} {_value(ym, best_y['y'])} at {xm} {_value(xm, best_y['x'])}"
    if best_x["trial_id"] != best_y["trial_id"]:
        title += (f"; {'lowest' if xd == 'min' else 'highest'} {xm} {_value(xm, best_x['x'])} gives {ym} "
                  f"{_value(ym, best_x['y'])}")
    title += f" ({len(on)} of {plural(len(front.points), 'trial')} on the front)"
    plots.pareto_scatter(front.points, front.x, front.y, out / "pareto.png", title)
    what = ("the sweep's objectives" if front.sweep_objectives else
            "validation macro-F1 and the trial's wall time (the cost trade-off; the sweep had one objective)")
    cols = [c for c in DESCRIBED if c in on]
    rows = [[str(r["trial_id"]), fmt(r["x"]), fmt(r["y"]), *config_cells(r, cols)] for _, r in on.iterrows()]
    return blocks + [Paragraph(f"Completed trials that no other beats on both {xm} ({xd}) and {ym} ({yd}): {what}."),
                     Table(["trial", xm, ym, *cols], rows, caption="Trials on the Pareto front"),
                     Image("pareto.png", "Pareto front", title + ".")]


def _value(metric: str, v: float) -> str:
    return f"{v:.3g} s" if metric.endswith("_seconds") else f"{v:.3f}"


# What the trial's copy audit (fercore.metrics.copies, which the report may not import) counts as a copy;
# tests/test_report_leakage_text.py holds it to that module's SHIFT and COPY_THRESHOLD.
COPY_RULE = ("A copy is a training image that, flipped, shifted by up to 2 px, re-toned by up to 15 %, or rotated or "
             "cropped and resized a little and aligned back, has a 256-bit DCT hash within 16 bits of a test image's "
             "(fercore.metrics.copies): near-identical pictures, not two faces with one expression; larger "
             "rotations and crops, warps, erasing and heavy noise escape it.")


def leakage_section(res: Results) -> list[Block]:
    blocks: list[Block] = [Heading("10. Leakage audit")]
    t = res.trials
    if "leak_synthetic_test" not in t and "leak_real_test" not in t:
        return blocks + [Paragraph("No trial recorded the leakage audit (leak_synthetic_test, leak_real_test).")]
    syn, real = num(t, "leak_synthetic_test"), num(t, "leak_real_test")
    aug = augmented(t)
    n_syn = int(num(t, "n_train_synthetic").where(aug).sum())
    leaks = int(syn.where(aug).fillna(0).sum())
    if not aug.any():
        first = "No trial used synthetic images, so none could copy a test image."
    elif leaks:
        first = (f"{leaks} of {n_syn} synthetic training images nearly copy a test image, in "
                 f"{plural(int((syn > 0).sum()), 'trial')}: those trials' test figures are not trustworthy.")
    else:
        first = (f"No synthetic training image nearly copies a test image ({n_syn} images in "
                 f"{plural(int(aug.sum()), 'trial')} checked).")
    second = (f"The real training images nearly copy up to {int(real.max())} test images (leak_real_test): a property "
              f"of the data set's splits, shared by every trial on it." if (real > 0).any() else
              "No real training image nearly copies a test image." if real.notna().any() else "")
    order = t.assign(_s=syn.fillna(0), _r=real.fillna(0)).sort_values(["_s", "_r", "trial_id"],
                                                                      ascending=[False, False, True])
    rows = []
    for _, r in order.head(MAX_LEAK_ROWS).iterrows():
        a = used_synthetic(r)
        rows.append([str(r["trial_id"]), str(r.get("status")), fmt_value(r.get("generator.type")) if a else DASH,
                     fmt_value(r.get("augment.policy")), fmt_count(r.get("n_train_synthetic")),
                     fmt_count(r.get("leak_synthetic_test")) if a else DASH, fmt_count(r.get("leak_real_test"))])
    more = f" The table shows {MAX_LEAK_ROWS} of {len(t)} trials, leaks first." if len(t) > MAX_LEAK_ROWS else ""
    return blocks + [
        Paragraph(f"{first} {second} {COPY_RULE}" + more),
        Table(["trial", "status", "generator", "policy", "synthetic train images", "leak_synthetic_test",
               "leak_real_test"], rows, caption="Training images that nearly copy a test image, per trial")]
