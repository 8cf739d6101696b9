"""Every sweep in sweeps/ runs end to end with --smoke on a real local Ray instance: two tiny trials each, recorded as
completed in trials.parquet, with the report's own settings kept and only the sizes shrunk. One Ray instance serves
the whole module (its start-up would otherwise be paid per sweep)."""
import json
import re

import pyarrow.parquet as pq
import pytest
from PIL import Image

from fercore.cli import main

from fercore.sweep.smoke import SMOKE_AT_MOST, SMOKE_SET, smoke_spec
from fercore.sweep.spaces import REPO_ROOT
from fercore.sweep.spec import load_sweep

SWEEPS = sorted(p.stem for p in (REPO_ROOT / "sweeps").glob("*.yaml"))
AUGMENTED = {"confidence_filter", "cgan_minority", "balance_targets", "real_ratio_grid", "fer2013_cpu"}
# Sweeps whose smoke run here goes on into its confirmation phase: a space searched by TPE under ASHA, a grid whose
# generator keys do not apply at every point, a cGAN top-up, a real-only grid. The others' confirmation trial would
# repeat one of these paths (fer2013_cpu is cgan_minority's design; confidence_filter's and balance_targets' grids are
# confirmed as theirs are) at ~15 s each of CI's 20 minutes: they run their search only, and their smoke specs are
# checked to confirm (below; tests/test_confirm.py plans a smoke confirmation, tests/test_confirm_sweep.py runs one).
CONFIRMED_HERE = {"optuna_full", "real_ratio_grid", "cgan_minority", "weighted_loss"}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


def test_every_sweep_file_is_covered():
    assert {"quickstart", "optuna_full"} | AUGMENTED | {"weighted_loss"} == set(SWEEPS)
    assert CONFIRMED_HERE < set(SWEEPS)


def test_smoke_shrinks_sizes_but_keeps_the_sweeps_design():
    spec = load_sweep(REPO_ROOT / "sweeps" / "balance_targets.yaml")
    smoke = smoke_spec(spec)
    assert smoke.num_samples == 2 and smoke.seeds == 1
    assert smoke.data["scale"] == SMOKE_AT_MOST["data.scale"]
    # Per-class targets scale with the procedural set: 722 (the largest class at 0.1) -> 72 (at 0.01).
    factor = SMOKE_AT_MOST["data.scale"] / spec.data["scale"]
    assert smoke.grid["augment.per_class_target"] == \
        [round(v * factor) for v in spec.grid["augment.per_class_target"]][:2]  # the grid's first two points
    assert smoke.fixed["classifier.width"] == 8 and spec.fixed["classifier.width"] == 64
    assert smoke.fixed["classifier.backbone"] == "resemotenet" and smoke.fixed["classifier.optimizer"] == "sgd"
    # A key the grid varies stays in the grid, with its values within the cap, and the grid is cut to its first
    # points in the file's order (the last key varies fastest): two trials, then five (--smoke --num-samples 5).
    full = load_sweep(REPO_ROOT / "sweeps" / "real_ratio_grid.yaml")
    grid = smoke_spec(full)
    assert "generator.resolution" not in grid.fixed and grid.grid["generator.resolution"] == [32]
    assert grid.grid == {"classifier.backbone": ["shufflenet_v2"], "augment.real_ratio": [0.0],
                         "generator.resolution": [32], "generator.augment": ["none", "ada"]}
    five = smoke_spec(full, 5)
    assert five.num_samples == 5 and five.grid["augment.real_ratio"] == [0.0, 0.1, 0.3] and five.grid_size == 6
    assert list(five.grid) == list(full.grid)
    assert spec.fixed["classifier.width"] == 64, "the sweep itself is not changed"


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_runs_with_smoke(tmp_path, local_ray, name):
    from fercore.sweep import run_sweep

    spec = load_sweep(REPO_ROOT / "sweeps" / f"{name}.yaml")
    smoke = smoke_spec(spec)
    # Every report sweep confirms (issue 24): its smoke run confirms its best trial's config once, on a fresh seed.
    assert (spec.confirm_trials > 0) == (name != "quickstart") and smoke.confirm_trials == int(name != "quickstart")
    confirms = name in CONFIRMED_HERE
    out = run_sweep(spec, tmp_path / "results", smoke=True, confirm=None if confirms else (0, 0))

    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert len(rows) == 2 + confirms, [r["trial_id"] for r in rows]
    assert [r["status"] for r in rows] == ["completed"] * len(rows), [r["reason"] for r in rows]
    search = [r for r in rows if r["phase"] == "search"]
    if confirms:
        confirmed = next(r for r in rows if r["phase"] == "confirm")
        best = (max if spec.mode == "max" else min)(r[spec.metric] for r in search)
        chosen = [r for r in search if r[spec.metric] == best]  # the search's best by validation (ties: any)
        assert confirmed["seed"] > max(r["seed"] for r in search)
        assert any(all(confirmed[k] == r[k] for k in smoke.grid) for r in chosen), (confirmed, chosen)
    for row in rows:
        assert row["classifier.epochs"] == SMOKE_SET["classifier.epochs"]
        assert row["data.scale"] <= SMOKE_AT_MOST["data.scale"]
        assert row["epochs_run"] <= SMOKE_SET["classifier.epochs"]
        for key, values in smoke.grid.items():
            assert key not in row or row[key] in values, key
        for key, value in smoke.fixed.items():  # the sweep's own settings, where they apply to the trial
            if row.get(key) is not None and key not in SMOKE_AT_MOST and key not in SMOKE_SET:
                assert row[key] == value, key
        assert 0 <= row["test_macro_f1"] <= 1
    synthetic = [r["n_train_synthetic"] for r in rows]
    if name in AUGMENTED:
        assert all(n > 0 for n in synthetic)
        for row in rows:  # each augmented trial is measured against its real-only twin, and its generator judged
            assert row["uplift_test_macro_f1_low"] <= row["uplift_test_macro_f1"] <= row["uplift_test_macro_f1_high"]
            assert row["gen_fid"] > 0 and row["leak_synthetic_test"] >= 0
        assert pq.read_table(out / "embeddings.parquet").num_rows > 0
    elif name == "weighted_loss":
        assert synthetic == [0] * len(rows)
    confusion = pq.read_table(out / "confusion.parquet").to_pylist()
    # Every trial's confusion counts cover the same test split: 49 cells adding up to its size.
    sizes = {r["trial_id"]: sum(c["count"] for c in confusion if c["trial_id"] == r["trial_id"]) for r in rows}
    assert len(set(sizes.values())) == 1 and min(sizes.values()) > 0, sizes
    assert len(confusion) == 49 * len(rows)
    record = json.loads((out / "sweep.json").read_text())
    assert record["smoke"] is True and record["name"] == name and record["metrics"] == spec.metrics

    # The finished smoke sweep's report: every section heading, and every plot it shows is a PNG that opens.
    assert main(["report", str(out)]) == 0
    markdown = (out / "report" / "report.md").read_text()
    assert len(re.findall(r"^## \d+\. ", markdown, flags=re.M)) == 10
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    # Its panels show the trials it claims from: the confirmation's (what the search drew may differ from them).
    claimed = [r for r in rows if r["phase"] == "confirm"] or rows
    assert "confusion.png" in plots and ("embeddings.png" in plots) == any(r["n_train_synthetic"] > 0 for r in claimed)
    for plot in plots:
        with Image.open(out / "report" / plot) as im:
            im.verify()
