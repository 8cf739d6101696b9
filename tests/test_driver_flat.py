"""What keeps the driver's cost per trial flat, checked on a real sweep (a local Ray instance) and on the benchmark
that measures it:

- a trial's artifacts (row, confusion, embedding, samples, predictions) reach the tables as a file, not through Ray
  Tune's results: the last result Ray keeps of each trial, and saves with its state, holds no artifacts, and as
  numbers only what its scheduler and searcher read (the objectives, the epoch);
- the rows are committed with a snapshot of Ray's state that knows every trial that has a row;
- nothing is left in incoming/ once the sweep ends;
- benchmarks/driver_scale.py runs end to end at a tiny size and prints the figures docs/clusters.md quotes."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from fercore.results import PREDICTIONS, TRIALS, read_table
from fercore.sweep import state as tune_state
from fercore.sweep.inbox import INCOMING
from fercore.sweep.spec import load_sweep
from fercore.sweep.trainable import EPOCH_METRICS

pytestmark = pytest.mark.slow  # a real sweep, and the benchmark in a subprocess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


def test_artifacts_travel_as_files_and_ray_keeps_only_what_it_reads(tmp_path, local_ray):
    from fercore.sweep import run_sweep

    sweep = {"name": "flat", "data": {"source": "procedural", "scale": 0.01}, "sampler": "grid",
             "grid": {"classifier.lr": [1e-3, 2e-3, 3e-3]},
             "fixed": {"augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": 2,
                       "classifier.batch_size": 64},
             "scheduler": {"type": "none"}, "max_concurrent": 2, "resources": {"cpu": 1}}
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = run_sweep(load_sweep(path), tmp_path / "results")

    rows = read_table(out, TRIALS).to_pylist()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"completed"}
    predictions = read_table(out, PREDICTIONS).to_pandas()
    assert set(predictions["trial_id"]) == {r["trial_id"] for r in rows}  # the artifacts arrived, through files
    assert not any((out / INCOMING).iterdir())

    # The state committed with the rows knows every trial that has one, as finished.
    with zipfile.ZipFile(tune_state.committed(out)) as z:
        (name,) = [n for n in z.namelist() if n.startswith("experiment_state-")]
        experiment = json.loads(z.read(name))
    kept = {}
    for trial_json, run_json in experiment["trial_data"]:
        trial, run = json.loads(trial_json), json.loads(run_json)
        kept[trial["trial_id"]] = (trial["status"], run["last_result"], run["metric_analysis"])
    assert set(kept) == {r["trial_id"] for r in rows}
    for status, last, analysed in kept.values():
        assert status == "TERMINATED"
        assert "artifacts" not in last and "row" not in last and "test_macro_f1" not in last
        assert "val_macro_f1" in last and "epoch" in last and EPOCH_METRICS not in last  # they came as a file
        # A finished trial is lightened: no running statistics, no copy of its config or tag in its last result.
        assert analysed == {} and "config" not in last and "experiment_tag" not in last


def test_the_driver_benchmark_runs_and_prints_its_figures(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "driver_scale.py"), "--trials", "4",
                          "--concurrent", "2", "--test", "20"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    # One event file per trial, and tb/.layout's (the custom-scalars layout).
    assert figures["trials"] == 4 and figures["tensorboard_files"] == 4 + 1
    assert {"driver_ms_per_trial_at_100", "driver_ms_per_trial_at_4", "driver_rss_mb_at_4",
            "rss_kb_per_trial"} <= set(figures)
    # Seven tables of one part each, the manifest, the snapshot, sweep.json and Ray's few state files: not a file
    # per trial and table.
    assert figures["files_in_results_but_tensorboard"] < 30, figures
