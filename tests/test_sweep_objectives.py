"""A sweep's objective is a figure a trial reports before its test split is read: the names come from one place
(fercore.metrics.reported), which matches what a real training epoch reports, and load_sweep refuses (exit 2, the key
named, the valid names listed) a name with `test` in it or a name no trial reports. No Ray here."""
import pytest
import yaml

from fercore.cli import main
from fercore.metrics.reported import COSTS, epoch_metrics, objectives
from fercore.sweep.spec import SweepError, load_sweep

BASE = {"name": "t", "data": {"source": "procedural", "scale": 0.01}, "space": "quickstart",
        "fixed": {"classifier.epochs": 1}}


def write(tmp_path, **keys):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**BASE, **keys}))
    return path


def test_the_epoch_names_are_what_a_real_epoch_reports(tiny_faces):
    import torch

    from fercore.classifiers import build_classifier
    from fercore.config import resolve
    from fercore.train import Trainer

    cfg = resolve({"classifier.backbone": "linear", "classifier.epochs": 1, "classifier.batch_size": 64})
    torch.manual_seed(0)
    model = build_classifier(cfg.classifier, tiny_faces.image_size, len(tiny_faces.class_names))
    trainer = Trainer(model, tiny_faces.split("train"), tiny_faces.split("val"), cfg.classifier, cfg.train, 0,
                      torch.device("cpu"), len(tiny_faces.class_names))
    (result,) = list(trainer.epochs())
    assert set(result.metrics) == set(epoch_metrics(tiny_faces.class_names))
    assert set(objectives()) == set(epoch_metrics()) | set(COSTS)
    assert not any("test" in name for name in objectives())


@pytest.mark.parametrize("metric, scheduler", [
    ("uplift_test_macro_f1", "none"), ("uplift_test_macro_f1", "asha"), ("test_macro_f1", "none"),
    ("test_accuracy", "asha")])
def test_a_metric_of_the_test_split_is_refused_with_any_scheduler(tmp_path, capsys, metric, scheduler):
    path = write(tmp_path, metric=metric, scheduler={"type": scheduler})
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    assert f"metric: {metric}: the test split is read once" in str(e.value)
    assert main(["run", str(path)]) == 2  # before Ray is started
    err = capsys.readouterr().err
    assert f"metric: {metric}" in err and "val_macro_f1" in err and "classifier_seconds" in err


@pytest.mark.parametrize("metric", ["val_f1", "macro_f1", "gen_fid", "seconds"])
def test_a_name_no_trial_reports_is_refused_with_the_valid_names(tmp_path, capsys, metric):
    path = write(tmp_path, metric=metric, mode="max", scheduler={"type": "none"})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"metric: {metric}: no trial reports it before its test split is read; valid: " in err
    for name in ("val_macro_f1", "val_loss", "val_recall_<class>", "train_loss", "lr", *COSTS):
        assert name in err, name
    assert len(err.splitlines()) == 1


def test_every_name_a_trial_reports_is_accepted(tmp_path):
    for metric in objectives():
        scheduler = "asha" if metric in epoch_metrics() else "none"
        spec = load_sweep(write(tmp_path, metric=metric, mode="min", scheduler={"type": scheduler}))
        assert spec.metrics == [metric]


def test_the_cost_objective_is_the_classifiers_own_time(tmp_path):
    spec = load_sweep(write(tmp_path, sampler="nsga2", metric=["val_macro_f1", "classifier_seconds"],
                            mode=["max", "min"]))
    assert spec.metrics == ["val_macro_f1", "classifier_seconds"] and spec.scheduler["type"] == "none"
    with pytest.raises(SweepError, match="asha compares trials on classifier_seconds every epoch"):
        load_sweep(write(tmp_path, metric="classifier_seconds", mode="min"))  # measured once: ASHA cannot judge it


def test_several_bad_objectives_are_reported_together(tmp_path):
    with pytest.raises(SweepError) as e:
        load_sweep(write(tmp_path, metric=["val_f1", "uplift_test_macro_f1"], mode=["max", "max"],
                         scheduler={"type": "none"}))
    assert "2 problems" in str(e.value)
    assert "metric: val_f1: no trial reports it" in str(e.value)
    assert "metric: uplift_test_macro_f1: the test split is read once" in str(e.value)


def test_a_per_class_objective_needs_the_class_in_the_data_and_in_every_validation_split():
    from fercore.errors import ConfigError
    from fercore.metrics.reported import check_class_objectives

    names = ("angry", "disgust", "contempt")
    check_class_objectives(["val_recall_contempt", "val_macro_f1"], names, [[3, 1, 2], [2, 2, 1]])
    with pytest.raises(ConfigError, match="metric: val_recall_neutral: the data set has no class 'neutral'"):
        check_class_objectives(["val_recall_neutral"], names, [[3, 1, 2]])
    with pytest.raises(ConfigError, match=r"metric: val_f1_contempt: the validation split has no contempt image"):
        check_class_objectives(["val_f1_contempt"], names, [[3, 1, 0]])
    with pytest.raises(ConfigError, match=r"the validation split of folds 0, 2 has no contempt image"):
        check_class_objectives(["val_recall_contempt"], names, [[3, 1, 0], [3, 1, 1], [2, 2, 0]])
