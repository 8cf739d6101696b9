"""The sweeps that run the five source reports' experiments (sweeps/*.yaml, one per report, and optuna_full): each file
validates whole (load_sweep resolves every grid point, or draws from the space), and the settings each report states
are the ones the file runs. Validation only: no Ray, no training."""
import itertools

import numpy as np
import pytest

from fercore import config
from fercore.augment.policies import plan_mix
from fercore.data.procedural import FER2013_TRAIN, split_counts
from fercore.sweep.smoke import smoke_spec
from fercore.sweep.spaces import REPO_ROOT
from fercore.sweep.spec import load_sweep

REPORTS = {  # sweep -> the report it runs (None: all of them)
    "confidence_filter": "000_d4268ee43cae98ab.txt",
    "cgan_minority": "001_037758f3b7c4ab80.txt",
    "balance_targets": "002_8bd063b910fbcebc.txt",
    "weighted_loss": "003_8dfd1b9f80394cc6.txt",
    "real_ratio_grid": "004_771f13d8c1b83b8c.txt",
    "optuna_full": None,
}


@pytest.fixture(scope="module")
def specs():
    return {name: load_sweep(REPO_ROOT / "sweeps" / f"{name}.yaml") for name in REPORTS}


def points(spec) -> list[dict]:
    """Every grid point resolved with the sweep's data and fixed values, as a trial would see it."""
    keys = list(spec.grid)
    return [config.resolve({**spec.base_config(), **dict(zip(keys, values))}, drop_inapplicable=True).flat()
            for values in itertools.product(*spec.grid.values())]


def only(rows: list[dict], **where) -> list[dict]:
    return [r for r in rows if all(r[k.replace("__", ".")] == v for k, v in where.items())]


@pytest.mark.parametrize("name", REPORTS)
def test_each_sweep_validates_runs_anywhere_and_says_how_to_run_it(specs, name):
    spec, text = specs[name], (REPO_ROOT / "sweeps" / f"{name}.yaml").read_text()
    assert spec.name == name
    assert spec.data == {"source": "procedural", "scale": 0.1}  # a real path would fail validation where it is absent
    header = text.split("\nname:")[0]
    assert all(line.startswith("#") for line in header.splitlines() if line.strip()), "a header comment comes first"
    assert f"fersweep run sweeps/{name}.yaml --smoke" in header
    assert "data.source" in header and "--gpus-per-trial" in header
    assert spec.seeds >= 3  # every config over at least 3 seeds: a report's figures come with their spread
    assert smoke_spec(spec).seeds == 1  # --smoke checks the sweep end to end, once
    if REPORTS[name]:
        assert REPORTS[name] in header
        assert spec.sampler == "grid"
        assert spec.scheduler["type"] == "none"  # a controlled comparison: no grid point is cut short
        assert spec.num_samples == spec.grid_size


def test_confidence_filter_is_report_000(specs):
    spec = specs["confidence_filter"]
    assert spec.grid == {"generator.type": ["gan", "dcgan"], "classifier.backbone": ["linear", "resnet18"],
                         "augment.filter": ["none", "classifier_confidence"]}
    rows = points(spec)
    assert len(rows) == 8
    for row in rows:
        assert row["generator.latent_dim"] == 100 and row["generator.epochs"] == 100
        assert row["augment.policy"] == "balance"
        assert row["classifier.lr"] == 1e-4 and row["classifier.dropout"] == 0.5 and row["classifier.epochs"] == 60
    assert {r["classifier.freeze_stages"] for r in only(rows, classifier__backbone="resnet18")} == {2}
    assert all("classifier.freeze_stages" not in r for r in only(rows, classifier__backbone="linear"))
    # fercore has one classifier learning rate: the report's separate head rate (1e-3) cannot be set.
    assert not any("head" in key for key in config.all_keys()), "a head learning rate exists now: use it in the sweep"


def test_cgan_minority_is_report_001(specs):
    spec = specs["cgan_minority"]
    assert spec.grid == {"augment.filter": ["none", "discriminator"]}
    for row in points(spec):
        assert row["generator.type"] == "cgan"
        assert (row["generator.latent_dim"], row["generator.resolution"], row["generator.width"]) == (150, 64, 64)
        assert (row["generator.lr_g"], row["generator.lr_d"], row["generator.beta1"]) == (2e-4, 2e-4, 0.5)
        assert row["generator.conditioning"] == "mask"
        assert row["augment.policy"] == "minority"
        assert row["augment.minority_classes"] == "disgust,fear,surprise"
        assert row["augment.minority_target"] == 0  # up to the largest class


def test_balance_targets_is_report_002(specs):
    spec = specs["balance_targets"]
    rows = points(spec)
    for row in rows:
        assert row["classifier.backbone"] == "resemotenet" and row["classifier.width"] == 64
        assert row["classifier.optimizer"] == "sgd" and row["classifier.lr"] == 1e-3
        assert row["classifier.schedule"] == "plateau"
        assert (row["classifier.batch_size"], row["classifier.epochs"]) == (16, 80)
        assert (row["classifier.patience"], row["classifier.early_stop"]) == (5, "val_loss")
        assert row["generator.type"] == "diffusion" and row["augment.policy"] == "per_class"
    balance_target, *targets = spec.grid["augment.per_class_target"]
    # The report's 10,000 / 12,500 / 15,000 per class on FER2013, scaled like the procedural set (scale 0.1).
    assert targets == [round(n * spec.data["scale"]) for n in (10_000, 12_500, 15_000)]
    # Aug. 1 (balance) is per_class at the largest class's count: the same plan, image for image.
    counts = np.array(split_counts(spec.data["scale"])["train"])
    assert balance_target == counts.max()
    same = plan_mix("per_class", counts, {"per_class_target": balance_target})
    assert (same.synthetic == plan_mix("balance", counts, {}).synthetic).all()
    assert max(FER2013_TRAIN) == 7215  # the first target the header gives for the real FER2013 CSV


def test_weighted_loss_is_report_003(specs):
    spec = specs["weighted_loss"]
    assert spec.grid == {"classifier.backbone": ["cnn3", "resnet18"], "classifier.lr": [1e-3, 5e-4],
                         "classifier.batch_size": [32, 64], "classifier.class_weights": [False, True]}
    for row in points(spec):
        assert row["augment.policy"] == "none"
        assert row["classifier.weight_decay"] == 1e-3 and row["classifier.dropout"] == 0.5
        assert (row["train.flip"], row["train.rotate"]) == (0.5, 15.0)
        assert row["classifier.early_stop"] == "val_loss" and row["classifier.epochs"] == 20


def test_real_ratio_grid_is_report_004(specs):
    spec = specs["real_ratio_grid"]
    assert spec.grid["augment.real_ratio"] == [0.0, 0.1, 0.3, 0.5, 1.0]
    assert set(spec.grid["classifier.backbone"]) == {"shufflenet_v2", "efficientnet_b0", "mobilenet_v3_large",
                                                     "densenet121", "resnet18", "resnet50", "convnext_tiny"}
    assert spec.grid["generator.resolution"] == [32, 64] and spec.grid["generator.augment"] == ["none", "ada"]
    assert spec.grid_size == 7 * 5 * 4 == spec.num_samples
    rows = points(spec)
    settings = {(r["generator.resolution"], r["generator.augment"]) for r in rows}
    assert {(32, "none"), (64, "none"), (64, "ada")} <= settings  # the report's three, plus 32 px + ADA
    for row in rows:
        assert row["generator.type"] == "stylegan" and row["generator.conditioning"] == "per_class"
        assert row["augment.policy"] == "real_ratio"
        assert (row["classifier.epochs"], row["classifier.patience"]) == (100, 10)


def test_optuna_full_searches_everything_with_tpe_and_asha(specs):
    spec = specs["optuna_full"]
    assert (spec.space, spec.sampler, spec.scheduler["type"]) == ("full", "tpe", "asha")
    assert spec.scheduler["max_t"] == spec.fixed["classifier.epochs"]
    assert spec.metric == "val_macro_f1" and spec.mode == "max"


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "benchmarks" / "cpu_sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_cpu_sized_variants_validate_and_keep_their_sweeps_grid(path):
    """benchmarks/cpu_sweeps/<sweep>_cpu.yaml: docs/results-builtin.md's CPU runs of a report's sweep, smaller but the
    same design."""
    spec = load_sweep(path)
    original = load_sweep(REPO_ROOT / "sweeps" / f"{path.stem.removesuffix('_cpu')}.yaml")
    for key, values in spec.grid.items():
        assert set(values) <= set(original.grid[key]), key
    assert f"fersweep run benchmarks/cpu_sweeps/{path.name}" in path.read_text()
    # Like the report sweeps, they confirm every point of their grid on 5 fresh seeds: the figures quoted come from those.
    grid_points = int(np.prod([len(values) for values in spec.grid.values()]))
    assert spec.setting("confirm.top") == grid_points and spec.setting("confirm.seeds") == 5
