"""Sections 2.1 and 2.2 of the report, the answers across seeds: each config's mean over its seeds (test macro-F1,
uplift over real-only, gain over the oversampling control and over the real subset) with t intervals over seeds
(the test images' noise added), and the paired comparisons of configs that differ in one key. Holm's correction
covers every test in both; a difference is claimed (✓) only from MIN_SEEDS_CLAIM seeds. The figures come from
fercore.report.configs; this file words them.
"""
from __future__ import annotations

import math

from fercore.report.configs import LEVEL, MAX_PAIRS, MIN_SEEDS_CLAIM, Comparisons, Config, Estimate, describe, \
    fold_spread, varying_config_keys
from fercore.report.render import Block, Heading, Paragraph, Table
from fercore.report.resample import RESAMPLES
from fercore.report.tables import DASH, Results, fmt, fmt_ci, fmt_value

MAX_CONFIGS = 30  # configs listed (best mean validation first); every config's tests count in Holm's correction
LABELS = {"uplift": "uplift over real-only", "control": "gain over control", "subset": "gain over real subset"}
CORRECTION = f"Holm-Bonferroni (family-wise error {LEVEL:.0%})"


def _ci(e: Estimate | None, signed: bool = True) -> str:
    return DASH if e is None else fmt_ci(e.mean, e.low, e.high, signed)


def _p(e: Estimate | None) -> str:
    if e is None:
        return DASH
    if not math.isfinite(e.p):
        return f"no test ({e.seeds} seed{'s' if e.seeds != 1 else ''}, no test-image level)"
    if e.weak:
        return f"{e.holm:.3f} (weak: {e.seeds} seed{'s' if e.seeds != 1 else ''})"
    return f"{e.holm:.3f}" + (" ✓" if e.survives else "")


def _tests_line(comp: Comparisons) -> str:
    return (f"p: two-sided, of \"the mean difference is 0\": the mean over its standard error read as a t with "
            f"S - 1 degrees of freedom (S seeds; a normal for one seed, whose only level is the test images), "
            f"adjusted by {CORRECTION} over all {comp.tests} tests of sections 2.1 and 2.2 (each config's uplift "
            f"and gains, each paired comparison). ✓ marks a test that survives the correction with at least "
            f"{MIN_SEEDS_CLAIM} seeds: with fewer the seed-level evidence is weak (3 seeds give a t with 2 degrees "
            f"of freedom), so nothing is claimed from it whatever its p; such a test reads \"weak\".")


def _comparisons_how(configs: list[Config]) -> str:
    """Where the uplift and gain intervals of section 2.1 drew their test-image level from."""
    sources = {e.source for c in configs for e in c.comparisons.values()}
    paired = ("the test images from predictions.parquet: each trial's own predictions and those of the real-only "
              "baseline and controls it was compared against (its model column), each resampled image scored for "
              "both")
    if sources == {"predictions"}:
        return paired
    if "predictions" in sources:
        return (f"{paired}, where every seed of a config has them; elsewhere (trials recorded before the baselines' "
                f"and controls' predictions were stored) each seed's image level is drawn from its trial's paired "
                f"95 % interval")
    return ("the real-only baselines' and controls' predictions are not stored here (predictions.parquet has no "
            "rows of model baseline, control or subset for these trials), so each seed's image level is drawn "
            "from its trial's paired 95 % interval")


def seeds_section(res: Results, comp: Comparisons) -> list[Block]:
    blocks: list[Block] = [Heading("2.1 Across seeds: each config's mean over its seeds")]
    configs = [c for c in comp.configs if c.f1 is not None or c.comparisons]
    if not configs:
        return blocks + [Paragraph("No completed trial has a test macro-F1, so there is no config to average.")]
    metric = res.selection[0]
    present = [n for n in LABELS if any(n in c.comparisons for c in configs)]
    keys = varying_config_keys(configs)
    spreads = {c.id: fold_spread(c) for c in configs}
    k_fold = any(folds for folds, _ in spreads.values())
    columns = ["config", "seeds" if not k_fold else "trials (seed x fold)",
               *(["folds", "sd over folds of test macro-F1"] if k_fold else []),
               f"mean {metric}", "mean test macro-F1 [95 % CI]",
               *[x for n in present for x in (f"mean {LABELS[n]} [95 % CI]", f"Holm p ({LABELS[n]})")]]
    rows = []
    for c in configs[:MAX_CONFIGS]:
        folds, sd = spreads[c.id]
        rows.append([describe(c.values, keys), str(len(c.trials)),
                     *([str(folds), fmt(sd)] if k_fold else []), fmt(c.objective), _ci(c.f1, signed=False),
                     *[x for n in present for x in (_ci(c.comparisons.get(n)), _p(c.comparisons.get(n)))]])
    seeds = sorted({len(c.trials) for c in configs})
    sources = {c.f1.source for c in configs if c.f1 is not None}
    if sources == {"predictions"}:
        f1_how = (f"a bootstrap over the test images of predictions.parquet ({RESAMPLES} resamples, the seeds held "
                  f"fixed, one draw of images serving every seed scored on the same test split; a draw per seed "
                  f"otherwise)")
    elif "predictions" in sources:
        f1_how = (f"a bootstrap over the test images of predictions.parquet ({RESAMPLES} resamples, the seeds held "
                  f"fixed) where every seed of a config has them; elsewhere each seed's own 95 % interval (their "
                  f"standard deviations averaged: the seeds share the test images)")
    else:
        f1_how = ("each seed's own 95 % interval over the test images, no predictions.parquet being here (or not for "
                  "these trials): their standard deviations averaged, as the seeds share the test images")
    text = (f"Configs: the completed trials grouped by every config key but the seed, best mean {metric} first; "
            f"each figure is a mean over the config's seeds. Intervals: the seeds are the unit, a t interval with "
            f"S - 1 degrees of freedom over the per-seed figures (for S seeds), widened by what a different test "
            f"set would change, which moves every seed alike and so is not in their spread: standard error^2 = "
            f"(variance over seeds) / S + (the test images' variance of the mean). The test images' level: for test "
            f"macro-F1, {f1_how}.")
    if k_fold:
        text += (" k-fold (data.folds): a config is aggregated over its folds before configs are compared: its "
                 "figures are the mean over folds of each fold's mean over seeds (data.fold is not a config key "
                 "here), the spread is the standard deviation of the folds' means, the t's units are the (seed, "
                 "fold) trials, and the test images' level draws each fold's own test faces (by their data-set-wide "
                 "face_id, shared by the fold's seeds, independently of the other folds, whose faces are others).")
    if present:
        text += f" For the uplift and the gains, {_comparisons_how(configs)}. The gain over control is the column " \
                f"that answers \"did the synthetic content help\". " + _tests_line(comp)
    if seeds == [1]:
        text += (" Every config ran with one seed: an interval here holds the test images' variation alone and says "
                 f"nothing of what another seed would give (a claim needs {MIN_SEEDS_CLAIM} seeds or more).")
    elif seeds[0] < MIN_SEEDS_CLAIM:
        text += (f" Some configs ran with {seeds[0]} seed{'s' if seeds[0] > 1 else ''}: the seed-level evidence "
                 f"for them is weak (fewer than {MIN_SEEDS_CLAIM}), and the report claims nothing from it.")
    if len(configs) > MAX_CONFIGS:
        text += (f" The table lists the {MAX_CONFIGS} configs with the best mean {metric} of {len(configs)}; every "
                 f"config's tests count in the correction.")
    return blocks + [Paragraph(text), Table(columns, rows, caption="Per config: means over seeds, 95 % intervals")]


def pairs_section(res: Results, comp: Comparisons) -> list[Block]:
    blocks: list[Block] = [Heading("2.2 Paired comparisons: configs that differ in one key")]
    pairs = [p for p in comp.pairs if p.estimate is not None]
    if not pairs:
        return blocks + [Paragraph("No two configs differ in exactly one key and share a seed, so no setting can be "
                                   "compared paired here (e.g. classifier.class_weights on vs off over the same "
                                   "seeds).")]
    keys = varying_config_keys(comp.configs)
    rows = []
    for p in pairs:
        others = [k for k in keys if k != p.key]
        shared = {k: v for k, v in p.a.values.items() if p.b.values.get(k) == v}
        e = p.estimate
        rows.append([p.key, f"{fmt_value(p.a.values[p.key])} → {fmt_value(p.b.values[p.key])}",
                     describe(shared, others) if others else DASH, str(e.seeds),
                     fmt_ci(e.mean, e.low, e.high, True), e.source, _p(e)])
    by_predictions = all(p.estimate.source == "predictions" for p in pairs)
    how = ("from the two trials' stored predictions: a bootstrap over the test images, the seeds held fixed, "
           "scores both trials of a seed on the same images" if by_predictions else
           "from the stored predictions ('predictions') where both trials of every seed have them: a bootstrap over "
           "the test images, the seeds held fixed, scores both trials of a seed on the same images. Without them "
           "('unpaired intervals') each seed's test-image level comes from the two trials' own intervals combined "
           "as if independent, wider than the paired truth; without those ('seeds') the seeds alone")
    text = (f"Two configs that differ in one key (every other key they both have is equal) and ran the same seeds, "
            f"compared seed by seed: the mean over those seeds of test macro-F1 (right value minus left), its 95 % "
            f"t interval over the per-seed differences (S - 1 degrees of freedom), the test images' level added "
            f"{how}. " + _tests_line(comp))
    if any(isinstance(s, tuple) for p in pairs for s in p.seeds):
        text += (" k-fold (data.folds): a pair's \"seeds\" are its (seed, fold) trials, compared fold by fold; the "
                 "mean is over folds of each fold's mean over seeds.")
    if len(comp.pairs) == MAX_PAIRS:
        text += f" At most {MAX_PAIRS} pairs (by key) are computed; there may be more."
    return blocks + [Paragraph(text), Table(["key", "values", "other keys (shared)", "seeds",
                                             "difference in test macro-F1 [95 % CI]", "interval from", "Holm p"],
                                            rows, caption="Paired differences in test macro-F1")]
