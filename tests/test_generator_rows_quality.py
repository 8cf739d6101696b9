"""generators.parquet rows carry a generator's own quality figures (the gen_* keys its trials copy), not per class."""
import math

from fercore.results.rows import generator_rows

FIGURES = {"gen_quality_n": 500, "gen_fid": 12.0, "gen_kid": 0.03, "gen_kid_std": 0.004, "gen_precision": 0.7,
           "gen_recall": 0.4, "gen_conditional_accuracy": 0.55, "gen_embedding_jsd": 0.2}
PER_CLASS = {"gen_kid_happy": 0.02, "gen_precision_fear": 0.6, "gen_kid_disgust": math.nan,
             "gen_quality_note_disgust": "12 real and 12 synthetic images: per-class figures need 50 of each"}


def test_generator_rows_take_the_generator_figures():
    trials = [{"trial_id": f"t{i}", "generator_key": "g1", "generator_cache_hit": i > 0, "seed": 0,
               "generator.type": "cgan", "filter_kept_conditional_accuracy": 1.0, **FIGURES, **PER_CLASS}
              for i in range(3)]
    (row,) = generator_rows(trials)
    assert {k: row[k] for k in FIGURES} == FIGURES
    assert (row["trials"], row["cache_hits"], row["source_trial_id"]) == (3, 2, "t0")
    # Per-class figures and notes belong to per_class.parquet; the filter's figure to its trial.
    assert not set(PER_CLASS) & set(row) and "filter_kept_conditional_accuracy" not in row
