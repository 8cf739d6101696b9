"""What TensorBoardWriter writes, read back from a real `tensorboard` server over HTTP, as the dashboards read it:
the HParams plugin's experiment and session groups (one table for trials whose config keys differ), the scalars
plugin's tags and curves, and the images plugin's sample grid and confusion matrix. Run with the Rust data server
(TensorBoard's default where its binary is installed) and with the Python reader (--load_fast=false)."""
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fercore.labels import CLASSES
from fercore.results import TensorBoardWriter
from fercore.results.tensorboard import LAYOUT_RUN, run_name
from fercore.trial import grid_png

READY_DEADLINE_S = 180  # a bound on waiting for the server, not a timing assertion
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]

# Three trials whose configs differ in their keys, as conditional parameters make them: a real-only cnn3 without
# generator keys, a cgan trial with classifier.small_stem, and a diffusion trial with its own generator.steps that
# failed.
CONFIGS = {
    "t1": {"classifier.backbone": "cnn3", "classifier.width": 8, "classifier.lr": 1e-3, "augment.policy": "none",
           "seed": 0},
    "t2": {"classifier.backbone": "resnet18", "classifier.small_stem": True, "classifier.lr": 3e-4,
           "augment.policy": "balance", "generator.type": "cgan", "generator.width": 4, "seed": 1},
    "t3": {"classifier.backbone": "resnet18", "classifier.small_stem": False, "classifier.lr": 1e-4,
           "augment.policy": "balance", "generator.type": "diffusion", "generator.steps": 50, "seed": 2},
}
VAL_F1 = {"t1": [0.30, 0.50, 0.40], "t2": [0.20, 0.60, 0.55], "t3": [0.10, 0.15]}  # best epoch is not the last
# Each trial's run, named by what it was (backbone, generator, policy, seed) and its id, as a reviewer finds it.
RUNS = {"t1": "cnn3_real_none_s0_t1", "t2": "resnet18_cgan_balance_s1_t2", "t3": "resnet18_diffusion_balance_s2_t3"}


def _final(trial_id: str) -> dict:
    """The trial's result row as the sweep's callback builds it (best epoch's val_, test_, uplift_, gen_ ...)."""
    i = int(trial_id[1:])
    curve = VAL_F1[trial_id]
    row = {"status": "completed", "reason": "", "epochs_run": len(curve), "best_epoch": int(np.argmax(curve)) + 1,
           "val_macro_f1": max(curve), "val_accuracy": 0.5 + i / 100, "train_seconds": 10.0 * i,
           "generator_key": "", "node_ip": "127.0.0.1"}
    row |= {f"val_recall_{c}": 0.1 * k for k, c in enumerate(CLASSES)}
    if trial_id == "t3":
        return row | {"status": "error", "reason": "RuntimeError: boom"}
    row |= {"test_macro_f1": 0.4 + i / 10, "test_accuracy": 0.45 + i / 10, "test_macro_f1_ci_low": 0.3,
            "test_auroc": float("nan")}  # a non-finite figure is left out, not written as NaN
    row |= {f"test_recall_{c}": 0.05 * k for k, c in enumerate(CLASSES)}
    if trial_id == "t2":
        row |= {"gen_fid": 12.5, "gen_conditional_accuracy": 0.7, "gen_embedding_jsd": 0.2,
                "uplift_test_macro_f1": 0.03, "uplift_test_macro_f1_low": -0.01, "generator_seconds": 4.0,
                "gain_control_test_macro_f1": -0.02, "gain_control_test_macro_f1_low": -0.05,
                "filter_acceptance": 0.8, "generator_key": "generator-v1-abc", "generator_cache_hit": False}
        row |= {f"gen_fid_{c}": 10.0 + k for k, c in enumerate(CLASSES)}
        row |= {f"uplift_test_recall_{c}": 0.01 for c in CLASSES}
    return row


SAMPLES = np.random.default_rng(0).integers(0, 255, (7, 8, 48, 48), dtype=np.uint8)  # classes x columns x H x W


def _write_events(tb_dir: Path) -> None:
    tb = TensorBoardWriter(tb_dir)
    grid = grid_png(SAMPLES)
    confusion = (np.eye(7, dtype=int) * 5 + 1).tolist()
    for trial_id, config in CONFIGS.items():
        final = _final(trial_id)
        curve = VAL_F1[trial_id]
        for epoch, f1 in enumerate(curve, 1):
            metrics = {"epoch": epoch, "train_loss": 2.0 / epoch, "lr": 1e-3, "val_macro_f1": f1,
                       "val_loss": 1.0 / epoch, "node_ip": "127.0.0.1", "time_total_s": 3.0 * epoch,
                       **{f"val_recall_{c}": f1 for c in CLASSES}}
            if epoch == len(curve):  # the last report carries the row too, as fercore.trial sends it
                metrics |= {k: v for k, v in final.items() if not k.startswith("val_")}
            tb.epoch(trial_id, epoch, metrics, config)  # the config arrives with the first report
        artifacts = {}
        if trial_id != "t3":
            artifacts["confusion"] = confusion
        if trial_id == "t2":
            artifacts["samples_png"] = grid
        tb.finish(trial_id, config, final, artifacts)
    tb.close()


LOADED = "loaded"  # a sentinel scalar, in an event file that sorts after the writer's own in every run


def _mark_loaded(tb_dir: Path) -> None:
    """Readers load a run's event files in name order, each to its end: when a run's LOADED tag is served, all that
    TensorBoardWriter wrote for the run has been read. (So waiting does not depend on what the writer writes.)"""
    from torch.utils.tensorboard import SummaryWriter

    for run in RUNS.values():
        w = SummaryWriter(str(tb_dir / run), filename_suffix=".sentinel")
        w.add_scalar(LOADED, 1.0, 0)
        w.close()
        [path] = (tb_dir / run).glob("*.sentinel")
        path.rename(path.with_name("events.out.tfevents.9999999999.zz"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy

    def raw(self, path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        with self.opener.open(urllib.request.Request(self.base + path, data=data, headers=headers), timeout=30) as r:
            return r.read()

    def get(self, path: str, body: dict | None = None):
        return json.loads(self.raw(path, body))

    def experiment(self) -> dict:
        return self.get("/data/plugin/hparams/experiment", {"experimentName": ""})

    def session_groups(self, statuses=ALL_STATUSES) -> dict:
        return self.get("/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": statuses, "colParams": [],
            "aggregationType": "AGGREGATION_AVG", "startIndex": 0, "sliceSize": 100})


def _load_fast_modes():
    try:
        import tensorboard_data_server

        rust = tensorboard_data_server.server_binary() is not None
    except ImportError:
        rust = False
    return [pytest.param("true", marks=pytest.mark.skipif(not rust, reason="no TensorBoard data server binary")),
            "false"]


@pytest.fixture(scope="module", params=_load_fast_modes(), ids=lambda m: f"load_fast={m}")
def server(request, tmp_path_factory):
    """Events of three trials, then `tensorboard` serving them; yields a client once all three are loaded."""
    root = tmp_path_factory.mktemp("tb-http")
    tb_dir = root / "tb"
    _write_events(tb_dir)
    _mark_loaded(tb_dir)
    port = _free_port()
    log = open(root / "tensorboard.log", "w+b")
    exe = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen([str(exe), "--logdir", str(tb_dir), "--host", "127.0.0.1", "--port", str(port),
                             "--load_fast", request.param, "--reload_interval", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    client = Client(port)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:  # Up, and every run read to its sentinel (readers load in the background).
            assert proc.poll() is None, f"tensorboard exited: {_tail(log)}"
            try:
                tags = client.get("/data/plugin/scalars/tags")
                if all(LOADED in tags.get(run, {}) for run in RUNS.values()):
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            assert time.monotonic() < deadline, f"tensorboard never served all three trials: {_tail(log)}"
            time.sleep(0.5)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def _metrics(entry: dict) -> dict[str, float]:
    """{tag: value} of a session group's or session's metric values (all in the session's own run: group "")."""
    assert all(m["name"].get("group", "") == "" for m in entry.get("metricValues", []))
    return {m["name"]["tag"]: m["value"] for m in entry.get("metricValues", [])}


@pytest.mark.slow
def test_hparams_experiment_is_the_union_of_all_trials_configs(server):
    exp = server.experiment()
    infos = {h["name"]: h for h in exp["hparamInfos"]}
    assert set(infos) == set().union(*CONFIGS.values())  # keys only some trials have are columns too
    assert infos["classifier.small_stem"]["type"] == "DATA_TYPE_BOOL"  # not the number 1.0
    assert sorted(infos["classifier.small_stem"]["domainDiscrete"]) == [False, True]
    assert infos["classifier.lr"]["type"] == "DATA_TYPE_FLOAT64"
    assert infos["classifier.lr"]["domainInterval"] == {"minValue": 1e-4, "maxValue": 1e-3}
    assert infos["generator.type"]["type"] == "DATA_TYPE_STRING"
    assert sorted(infos["generator.type"]["domainDiscrete"]) == ["cgan", "diffusion"]
    assert infos["generator.steps"]["type"] == "DATA_TYPE_FLOAT64"  # one trial has it; still a column

    tags = {m["name"]["tag"] for m in exp["metricInfos"]}
    for tag in ("result/val_macro_f1", "result/test_macro_f1", "result/uplift_test_macro_f1",
                "result/gain_control_test_macro_f1", "result/gen_fid",
                "result/gen_conditional_accuracy", "result/train_seconds", "result/generator_seconds",
                "result/test_macro_f1_ci_low", "result/uplift_test_macro_f1_low", "result/filter_acceptance",
                "val/macro_f1", "train/loss", "lr"):
        assert tag in tags, tag
    # Overall figures only: no per-class column, no NaN-only column, no bookkeeping or wall-clock curve.
    assert not [t for t in tags if any(c in t.replace("/", "_").split("_") for c in CLASSES)]
    assert not tags & {"result/test_auroc", "time_total_s", "train/seconds", "result/epochs_run", "node_ip"}


def test_hparams_session_groups_one_per_trial_with_its_own_config_and_figures(server):
    response = server.session_groups()
    groups = {g["name"]: g for g in response["sessionGroups"]}
    assert response["totalSize"] == 3 and set(groups) == set(RUNS.values())
    for trial_id, config in CONFIGS.items():
        group = groups[RUNS[trial_id]]
        assert [s["name"] for s in group["sessions"]] == [RUNS[trial_id]]
        assert group["hparams"] == config  # exactly its own keys, with their types
        final = _final(trial_id)
        metrics = _metrics(group["sessions"][0])
        # result/: the trial's row; val/macro_f1: the curve's last epoch, which here is not the best.
        assert metrics["result/val_macro_f1"] == pytest.approx(max(VAL_F1[trial_id]))
        assert metrics["val/macro_f1"] == pytest.approx(VAL_F1[trial_id][-1])
        assert metrics["result/train_seconds"] == pytest.approx(final["train_seconds"])
        if trial_id == "t3":
            assert "result/test_macro_f1" not in metrics
        else:
            assert metrics["result/test_macro_f1"] == pytest.approx(final["test_macro_f1"])
    t1, t2, t3 = RUNS.values()
    assert _metrics(groups[t2])["result/gen_fid"] == pytest.approx(12.5)
    assert _metrics(groups[t2])["result/uplift_test_macro_f1"] == pytest.approx(0.03)
    assert _metrics(groups[t2])["result/gain_control_test_macro_f1"] == pytest.approx(-0.02)  # beside the uplift
    assert "result/gen_fid" not in _metrics(groups[t1])  # a real-only trial has no generator figures

    statuses = {s["name"]: s["status"] for g in response["sessionGroups"] for s in g["sessions"]}
    assert statuses == {t1: "STATUS_SUCCESS", t2: "STATUS_SUCCESS", t3: "STATUS_FAILURE"}
    succeeded = server.session_groups(["STATUS_SUCCESS"])
    assert sorted(g["name"] for g in succeeded["sessionGroups"]) == sorted([t1, t2])


def test_scalars_plugin_lists_curves_and_results_and_keeps_the_curves_whole(server):
    tags = server.get("/data/plugin/scalars/tags")
    assert set(RUNS.values()) <= set(tags) and not set(tags) - set(RUNS.values()) - {LAYOUT_RUN}
    for run in RUNS.values():
        assert {"train/loss", "val/macro_f1", "val/loss", "lr", "result/val_macro_f1"} <= set(tags[run])
        assert not [t for t in tags[run] if "recall" in t]
    for trial_id, curve in VAL_F1.items():
        query = urllib.parse.urlencode({"run": RUNS[trial_id], "tag": "val/macro_f1"})
        points = server.get(f"/data/plugin/scalars/scalars?{query}")
        assert [p[1] for p in points] == list(range(1, len(curve) + 1))
        assert [p[2] for p in points] == pytest.approx(curve)


def test_images_plugin_has_the_sample_grid_and_the_confusion_matrix(server):
    tags = server.get("/data/plugin/images/tags")
    assert set(tags.get(RUNS["t2"], {})) == {"samples/per_class_rows", "confusion/test"}
    assert set(tags.get(RUNS["t1"], {})) == {"confusion/test"}
    assert not tags.get(RUNS["t3"])
    images = {}
    for tag in ("samples/per_class_rows", "confusion/test"):
        query = urllib.parse.urlencode({"run": RUNS["t2"], "tag": tag, "sample": 0})
        [entry] = server.get(f"/data/plugin/images/images?{query}")
        png = server.raw(f"/data/plugin/images/individualImage?{entry['query']}")
        images[tag] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    # The grid, pixel for pixel: a row of 8 samples per class (grey, stored as RGB).
    grid = SAMPLES.transpose(0, 2, 1, 3).reshape(7 * 48, 8 * 48)
    assert images["samples/per_class_rows"].shape == (7 * 48, 8 * 48, 3)
    assert (images["samples/per_class_rows"] == grid[..., None]).all()
    confusion = images["confusion/test"]
    assert min(confusion.shape[:2]) > 100 and confusion.std() > 10  # a rendered picture, not a blank


def test_runs_are_named_by_what_the_trial_was():
    assert {t: run_name(t, c) for t, c in CONFIGS.items()} == RUNS


def test_custom_scalars_put_each_trials_uplift_beside_its_gain_over_the_control(server):
    layout = server.get("/data/plugin/custom_scalars/layout")
    charts = {c["title"]: c for cat in layout["category"] for c in cat["chart"]}
    tags = charts["uplift and gains, test macro-F1"]["multiline"]["tag"]
    assert r"result/uplift_test_macro_f1$" in tags and r"result/gain_control_test_macro_f1$" in tags, layout
    # The chart's two series for a trial, as the dashboard asks for them: its uplift and its gain.
    points = {}
    for regex in tags[:2]:  # the chart's own tag regexes, as the dashboard sends them
        query = urllib.parse.urlencode({"run": RUNS["t2"], "tag": regex})
        answer = server.get(f"/data/plugin/custom_scalars/scalars?{query}")
        assert answer["regex_valid"], answer
        points |= {tag: [p[2] for p in events] for tag, events in answer["tag_to_events"].items()}
    assert points == {"result/uplift_test_macro_f1": pytest.approx([0.03]),
                      "result/gain_control_test_macro_f1": pytest.approx([-0.02])}
