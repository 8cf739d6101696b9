"""The report's quality-vs-gain section counts each generator once (issue 24 item 4): a generator used by many
trials is one point (its figures against its trials' mean gain), not one point per trial."""
import re

import numpy as np
from scipy import stats

from tests.test_report_selection import build_trials, report, section, write_folder


def test_each_generator_is_one_point_of_the_quality_correlation(tmp_path):
    table, true, preds = build_trials(np.random.default_rng(3))
    aug = table.index[table["augment.policy"] == "balance"]
    # Five generators: the first used by half the augmented trials, the others by the rest, a few each.
    keys = np.where(np.arange(len(aug)) < len(aug) // 2, "g0", [f"g{1 + i % 4}" for i in range(len(aug))])
    fid = {"g0": 10.0, "g1": 40.0, "g2": 30.0, "g3": 20.0, "g4": 50.0}
    table.loc[aug, "generator_key"] = keys
    table.loc[aug, "gen_fid"] = [fid[k] for k in keys]
    table.loc[aug, "reference_heldout_accuracy"] = 0.61
    table.loc[aug, "reference_heldout_n"] = 120
    md = report(write_folder(tmp_path / "r", table, true, preds), tmp_path / "out")
    text = section(md, "7. Generator quality")
    per_generator = table.loc[aug].groupby("generator_key").agg(fid=("gen_fid", "first"),
                                                                 gain=("gain_control_test_macro_f1", "mean"))
    rho = stats.spearmanr(per_generator["fid"], per_generator["gain"]).statistic
    assert f"FID ρ = {rho:+.2f} (5 generators, each once)" in text, re.findall(r"Spearman[^\n]*", text)
    per_trial = stats.spearmanr(table.loc[aug, "gen_fid"], table.loc[aug, "gain_control_test_macro_f1"]).statistic
    assert f"{per_trial:+.2f}" != f"{rho:+.2f}", "the fixture tells the two countings apart"
    assert "training faces it held out: 0.610" in text and "120" in text
