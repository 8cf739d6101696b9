"""Results of a sweep: Parquet tables and TensorBoard event files, both written by the driver.

Each table is a folder of immutable Parquet parts (fercore.results.parts) that the folder's manifest.json names
(fercore.results.manifest): a flush commits every table's new parts in one manifest, so a reader that goes through it
(read_table, table_files) sees each trial once, with its rows in every table or in none, at any moment of a sweep. A
finished trial adds its rows in the same time at the 10,000th trial as at the first; compact() merges each table into
one part when the sweep ends, and then any Parquet reader takes the folder
(pd.read_parquet("results/x/trials.parquet")):
  trials.parquet      one row per trial (keyed by trial id: a resumed driver replaying a trial replaces its row)
  epochs.parquet      one row per trial and epoch (keyed by trial id and epoch)
  per_class.parquet   one row per trial and class: trial_id, class, and each per-class figure of the trial's row
  generators.parquet  one row per distinct generator_key: its config, quality, build time and how often it was used
  confusion.parquet   one row per trial and (true, predicted) class pair: the test split's counts
  embeddings.parquet  per trial with synthetic images: up to 100 points per class and source (real / synthetic),
                      projected on the 2-D ruler gen_embedding_jsd was measured on (fercore.metrics.embedding)
  predictions.parquet one row per trial, model and test image: trial_id, model ("trial"; and "baseline", "control",
                      "subset": the models an augmented trial was compared against), index (in the test split), true
                      and predicted class, p_<class> (each class's probability): any two trials, or a trial and its
                      baseline or controls, compared paired after the sweep
per_class and generators are derived from the trial rows alone (also those loaded back on resume), so each trial
counts once; confusion, embeddings and predictions come from the trial's artifacts and are keyed by trial id too.

    rows.py         table names; per-class figures, generator rows, result figures and curves of a trial row
    manifest.py     the commit record: which parts hold each table now; readers through it
    parts.py        one table as immutable parts: append, replace a key's rows, grow the schema, merge
    store.py        ResultsStore (the driver's tables, one commit per flush) and compact(folder)
    tensorboard.py  TensorBoardWriter and the confusion-matrix picture
"""
from fercore.results.manifest import MANIFEST, count_rows, read_table, table_files
from fercore.results.parts import write_table_atomic
from fercore.results.rows import (CONFUSION, EMBEDDINGS, EPOCHS, GENERATORS, PER_CLASS, PREDICTIONS, SOURCES,
                                  SWEEP_RECORD, TRIALS, class_figure, generator_rows, is_curve, is_result_metric,
                                  per_class_rows)
from fercore.results.store import ResultsStore, compact
from fercore.results.tensorboard import TensorBoardWriter, confusion_image, confusion_png, draw_confusion

__all__ = ["CONFUSION", "EMBEDDINGS", "EPOCHS", "GENERATORS", "MANIFEST", "PER_CLASS", "PREDICTIONS", "SOURCES",
           "SWEEP_RECORD", "TRIALS", "ResultsStore", "TensorBoardWriter", "class_figure", "compact", "confusion_image",
           "confusion_png", "count_rows", "draw_confusion", "generator_rows", "is_curve", "is_result_metric",
           "per_class_rows", "read_table", "table_files", "write_table_atomic"]
