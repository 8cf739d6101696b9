"""What fercore does for a GPU, checked on a CPU machine: bf16 autocast (CPU autocast runs the same code),
channels_last carried by the network, train.compile, asking for CUDA where there is none (a ConfigError naming
train.device: exit 2 in `fersweep trial`, an error row without a retry in a sweep), and fractional GPUs in Ray:
four trials at 0.25 GPU run at once on a node with the resources of cluster.yaml's GPU node type, declared to a
local Ray instance as logical GPUs, each with the CUDA_VISIBLE_DEVICES Ray set for it."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from fercore.errors import UserError
import torch
import yaml

from fercore.classifiers import CHANNELS_LAST_CPU, build_classifier, model_layout
from fercore.classifiers.simple import CNN3
from fercore.config import resolve
from fercore.params import Section
from fercore.errors import ConfigError
from fercore.train import Trainer, autocast_dtype, pick_device

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TINY = {"classifier.backbone": "cnn3", "classifier.width": 8, "classifier.batch_size": 32, "classifier.epochs": 1}


def trainer(data, **overrides) -> Trainer:
    cfg = resolve({**TINY, **overrides})
    torch.manual_seed(0)
    model = build_classifier(cfg.classifier, 48, 7)
    return Trainer(model, data.split("train"), data.split("val"), cfg.classifier, cfg.train, seed=0, device=CPU)


def test_autocast_dtype_follows_train_precision_and_the_device():
    assert autocast_dtype("auto", CUDA) == torch.bfloat16 and autocast_dtype("auto", CPU) is None
    assert autocast_dtype("bf16", CPU) == torch.bfloat16 and autocast_dtype("bf16", CUDA) == torch.bfloat16
    assert autocast_dtype("fp32", CUDA) is None and autocast_dtype("fp32", CPU) is None
    with pytest.raises(ConfigError, match="train.precision: expected one of auto, fp32, bf16, got 'fp16'"):
        resolve({"train.precision": "fp16"})


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("auto", torch.float32),
                                              ("fp32", torch.float32)])
def test_the_forward_pass_runs_in_the_precision_asked_for_on_the_cpu(tiny_faces, precision, dtype):
    t = trainer(tiny_faces, **{"train.precision": precision})
    seen = set()
    t.model.head[-1].register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    result = next(t.epochs())
    assert seen == {dtype}  # training and validation forwards alike
    assert torch.isfinite(torch.tensor(result.metrics["train_loss"])) and 0 <= result.metrics["val_macro_f1"] <= 1
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # autocast casts activations, not weights


def test_precision_auto_on_the_cpu_trains_exactly_as_fp32(tiny_faces):
    auto = trainer(tiny_faces)
    auto_metrics = [r.metrics for r in auto.epochs()]  # before the next trainer reseeds dropout's global generator
    fp32 = trainer(tiny_faces, **{"train.precision": "fp32"})
    assert auto_metrics == [r.metrics for r in fp32.epochs()]
    for a, b in zip(auto.model.state_dict().values(), fp32.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_precision_auto_keeps_the_real_only_baseline_key_and_bf16_changes_it(tiny_faces):
    from fercore.cache.entries import baseline_key

    key, parts = baseline_key(resolve({}), tiny_faces)
    assert "precision" not in parts["train"]  # so the keys made before train.precision existed still hold
    assert baseline_key(resolve({"train.precision": "bf16"}), tiny_faces)[0] != key


def _channels_last(model) -> bool:
    # A conv with several input channels: with one, both layouts have the same strides.
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    return conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


@pytest.mark.parametrize("backbone, channels_last", [("resnet18", True), ("convnext_tiny", False), ("cnn3", True)])
def test_the_layout_travels_with_the_network(tiny_faces, backbone, channels_last):
    cfg = resolve({"classifier.backbone": backbone})
    model = build_classifier(cfg.classifier, 48, 7)
    assert getattr(model, CHANNELS_LAST_CPU) is channels_last
    assert model_layout(model, CUDA) == torch.channels_last  # always on CUDA: bf16 tensor cores want it
    # The trainer reads the layout off the network: the classifier section's backbone name is not looked up.
    other = Section("classifier", {**resolve(TINY).classifier.values, "backbone": "no-such-backbone"})
    t = Trainer(model, tiny_faces.split("train"), tiny_faces.split("val"), other, resolve(TINY).train, 0, CPU)
    assert t.layout == (torch.channels_last if channels_last else torch.contiguous_format)
    assert _channels_last(t.model) is channels_last


def test_a_network_built_elsewhere_gets_the_entries_default_layout():
    # The reference classifier is a CNN3 built directly; it trained channels_last before the layout travelled.
    assert model_layout(CNN3(48, 7), CPU) == torch.channels_last


@pytest.mark.slow
def test_compiled_forward_trains_like_the_eager_one(tiny_faces):
    """train.compile with torch's default backend (inductor, which on the CPU needs a C++ compiler): the same first
    epoch as eager up to kernel rounding (no dropout: compiled dropout draws other masks), state-dict keys of the
    plain module."""
    eager = trainer(tiny_faces, **{"classifier.dropout": 0.0})
    a = next(eager.epochs())
    compiled = trainer(tiny_faces, **{"classifier.dropout": 0.0, "train.compile": True})
    assert compiled.forward is not compiled.model and isinstance(compiled.forward, torch._dynamo.OptimizedModule)
    b = next(compiled.epochs())
    assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-3)
    assert b.metrics["val_loss"] == pytest.approx(a.metrics["val_loss"], rel=1e-3)
    assert list(compiled.state_dict()["model"]) == list(eager.state_dict()["model"])


def test_cuda_asked_for_without_cuda_is_a_config_error_naming_train_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^train\.device=cuda: CUDA is not available here .*use train\.device=auto"):
        pick_device("cuda")
    assert pick_device("auto") == CPU and pick_device("cpu") == CPU


def test_fersweep_trial_exits_2_with_one_line_when_cuda_is_absent(monkeypatch, capsys):
    from fercore import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = cli.main(["trial", "train.device=cuda", "data.scale=0.01", "augment.policy=none",
                   *(f"{k}={v}" for k, v in TINY.items())])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("fersweep: error: train.device=cuda: CUDA is not available here")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# Fractional GPUs in Ray, on a local instance with the resources of cluster.yaml's GPU node type.

def gpu_node_resources() -> dict:
    from tests.test_cluster import _cluster_config

    types = _cluster_config()["available_node_types"]
    return next(t["resources"] for t in types.values() if t.get("resources", {}).get("GPU"))


@pytest.fixture(scope="module")
def gpu_node_ray():
    import ray

    node = gpu_node_resources()
    ray.init(num_cpus=node["CPU"], num_gpus=node["GPU"], include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20)
    yield node
    ray.shutdown()


def write_sweep(tmp_path, name: str, grid: dict, gpu: float, **fixed):
    from fercore.sweep.spec import load_sweep

    sweep = {"name": name, "data": {"source": "procedural", "scale": 0.01}, "sampler": "grid", "grid": grid,
             "fixed": {"augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": 1,
                       "classifier.batch_size": 32, **fixed},
             "scheduler": {"type": "none"}, "max_concurrent": 8, "resources": {"cpu": 1, "gpu": gpu}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return load_sweep(path)


@pytest.mark.slow
def test_four_quarter_gpu_trials_run_at_once_on_the_gpu_node_each_with_its_cuda_devices(tmp_path, gpu_node_ray):
    """Each trial records when it started and ended and what CUDA_VISIBLE_DEVICES Ray gave it, and waits (up to a
    minute) until all four have started: they overlap only if Ray's scheduler packed them onto the one GPU."""
    import json

    from fercore.sweep import run_sweep

    node = gpu_node_ray
    assert node["GPU"] == 1 and node["CPU"] >= 4  # four trials of {cpu: 1, gpu: 0.25} fit on one node
    marks = tmp_path / "marks"
    marks.mkdir()

    def recording_trial(config, **kwargs):  # Defined here, so Ray pickles it by value for its workers.
        import json
        import os
        import time
        from pathlib import Path

        import ray
        from ray import tune

        folder, me = Path(str(marks)), f"{config['classifier.lr']:g}"
        start = time.time()
        (folder / f"{me}.started").touch()
        while len(list(folder.glob("*.started"))) < 4 and time.time() - start < 60:
            time.sleep(0.1)
        record = {"start": start, "end": time.time(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid()}
        (folder / f"{me}.json").write_text(json.dumps(record))
        tune.report({"epoch": 1, "val_macro_f1": 0.0})

    spec = write_sweep(tmp_path, "quarters", {"classifier.lr": [1e-3, 2e-3, 3e-3, 4e-3]}, gpu=0.25)
    run_sweep(spec, tmp_path / "results", trainable=recording_trial)
    records = [json.loads(p.read_text()) for p in marks.glob("*.json")]
    assert len(records) == 4
    assert max(r["start"] for r in records) < min(r["end"] for r in records), "the four trials did not overlap"
    assert len({r["pid"] for r in records}) == 4  # four worker processes at once
    for r in records:
        assert r["cuda_visible_devices"] == "0" and r["gpu_ids"] == ["0"], r  # its share of the node's one GPU


@pytest.mark.slow
def test_a_trial_asking_for_cuda_without_it_is_an_error_row_without_a_retry(tmp_path, gpu_node_ray):
    """The real trial function, on a logical GPU (Ray sets CUDA_VISIBLE_DEVICES; torch finds no CUDA): recorded
    once, as an error whose reason names train.device, not a crash retried max_failures times."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: Ray's workers cannot be monkeypatched")
    from fercore.sweep import run_sweep

    spec = write_sweep(tmp_path, "no_cuda", {"classifier.lr": [1e-3]}, gpu=0.25, **{"train.device": "cuda"})
    # Its only trial failed: the sweep ends non-zero (issue 25), with that trial's one line and the path of its log.
    with pytest.raises(UserError, match=r"every trial failed \(1\); the first, trial \w+: ConfigError: "
                                        r"train\.device=cuda.*full log: .*/logs/\w+\.log"):
        run_sweep(spec, tmp_path / "results")
    out = tmp_path / "results" / "no_cuda"
    (row,) = pq.read_table(out / "trials.parquet").to_pylist()
    assert row["status"] == "error" and row["attempts"] == 1, row
    assert row["reason"].startswith("ConfigError: train.device=cuda: CUDA is not available here")
    assert "CUDA_VISIBLE_DEVICES=0" in row["reason"] and "Traceback" not in row["reason"]
    log = (out / row["log"]).read_text()  # the full traceback went to the trial's log
    assert log.startswith(row["reason"]) and "Traceback (most recent call last)" in log
