"""Running on a cluster: cluster.yaml passes the checks `ray up` runs before it touches a cloud, and a sweep driven
from outside a real two-node Ray cluster (two `ray start`s on this machine, one GCS) runs trials on both nodes.

The cluster test starts and stops only its own Ray processes: a private --temp-dir, a fresh port for each listener
that has a fixed default (GCS, Ray Client, dashboard agent, worker ports), an auth token of its own, and at the end it
terminates what runs in the two `ray start` sessions, never `ray stop`, which would stop every Ray instance on the
machine (other tests' and other people's).
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from tests.conftest import TINY_TRIAL

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtual environment's console scripts: ray, fersweep


def _cluster_config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _launcher_checks(config: dict) -> dict:
    """What `ray up` does to a config before any cloud call: Ray's defaults merged in, setup commands merged per
    node kind, then the JSON schema (ray/autoscaler/ray-schema.json) and Ray's cross-field checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_cluster_launcher_validation():
    config = _cluster_config()
    prepared = _launcher_checks(config)
    assert prepared["provider"]["type"] == "aws"

    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "trials must not land on the head node"
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types and prepared["head_node_type"] not in gpu_types
    for name, t in gpu_types.items():
        assert t["min_workers"] == 0 and 1 <= t["max_workers"] <= prepared["max_workers"], name
        assert t["resources"].get("CPU", 0) >= 1, f"{name}: trials need a CPU beside their GPU share"

    # Every synced path exists, and with them pip can build fercore on the node: pyproject.toml, the package, the
    # readme pyproject names; the sweep files and search spaces a job may name come along.
    mounts = config["file_mounts"]
    for remote, local in mounts.items():
        assert remote.startswith("~/fercore/") and (REPO / local).exists(), (remote, local)
        assert (REPO / local).resolve() != REPO, "syncing '.' would hash .venv and results on every `ray up`"
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    synced = {Path(local).as_posix().removeprefix("./") for local in mounts.values()}
    assert {"pyproject.toml", readme, "fercore", "search_spaces", "sweeps"} <= synced

    for kind in ("head_setup_commands", "worker_setup_commands"):  # the common setup_commands merged in
        commands = "\n".join(prepared[kind])
        assert "-e ~/fercore" in commands and "torch" in commands, kind
        # The cluster launcher and `ray job submit` need the cluster's Ray to be the one installed here.
        assert f"ray[default,tune]=={ray.__version__}" in commands, f"{kind}: pin Ray to {ray.__version__}"
    assert "boto3" in "\n".join(prepared["head_setup_commands"])  # the head's autoscaler calls the AWS API


def test_cluster_yaml_gpu_node_type_packs_four_quarter_gpu_trials():
    """Each GPU node type declares its GPUs (whole: Ray's schema refuses a fraction) beside enough CPUs that trials
    of {cpu: 1, gpu: 0.25} (`--gpus-per-trial 0.25`) pack four to a node. tests/test_gpu_cpu.py runs four such
    trials at once on a local Ray instance declaring the GPU node type's resources."""
    prepared = _launcher_checks(_cluster_config())
    gpu_types = {n: t for n, t in prepared["available_node_types"].items() if t["resources"].get("GPU")}
    assert gpu_types
    for name, t in gpu_types.items():
        res = t["resources"]
        assert isinstance(res["GPU"], int) and res["GPU"] >= 1, name
        fits = min(int(res.get("CPU", 0) // 1), int(res["GPU"] / 0.25))
        assert fits >= 4, f"{name}: {res} holds {fits} trials of {{cpu: 1, gpu: 0.25}}, not 4"


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c.update(max_worker=4), "Additional properties are not allowed ('max_worker' was unexpected)"),
    (lambda c: c.update(max_workers="four"), "'four' is not of type 'integer'"),
    (lambda c: c["available_node_types"]["gpu"]["resources"].update(GPU=0.5), "0.5 is not of type 'integer'"),
    (lambda c: c.update(head_node_type="cpu"), "`head_node_type` must be one of `available_node_types`"),
], ids=["unknown-key", "wrong-type", "fractional-gpu-node", "unknown-head-type"])
def test_ray_rejects_a_broken_copy_of_cluster_yaml(break_it, message):
    config = _cluster_config()
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as e:
        _launcher_checks(config)
    assert message in str(e.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head node and one worker node on 127.0.0.1, one CPU each; Ray processes of this instance only."""

    def __init__(self):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's Unix sockets live under <temp-dir>/session_<date>_<pid>/sockets/ and paths stop at 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="fercore-ray-", dir="/tmp")
        self.sessions: set[int] = set()  # each `ray start` runs in a new session; its daemons stay in it
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"  # no network calls, no prompt
        # Ray 2.60's token authentication, with a token of this cluster's own: `ray start --head` turns it on by itself
        # when ~/.ray/auth_token exists (a local ray.init() writes one), and then a second node or a driver joining by
        # address is refused unless it has the token too. Passed to every process here; ~/.ray is left alone.
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))

    def common(self) -> list[str]:
        # Ports whose defaults are fixed (worker range 10002-19999, dashboard agent 52365) would collide between the
        # two nodes and with other Ray instances on the machine; 0 lets each process bind a free one.
        return ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", self.temp_dir,
                "--min-worker-port", "0", "--max-worker-port", "0", "--dashboard-agent-listen-port", "0",
                "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]

    def start(self) -> None:
        self._ray_start("head", "--head", "--port", str(self.port), "--include-dashboard", "false",
                        "--ray-client-server-port", str(_free_port()))
        self._ray_start("worker", "--address", self.address)

    def _ray_start(self, name: str, *args: str) -> None:
        # Output to a file, not a pipe: daemons that inherited a pipe would keep communicate() waiting forever.
        log = Path(self.temp_dir) / f"ray-start-{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([str(BIN / "ray"), "start", *args, *self.common()], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            self.sessions.add(proc.pid)
            rc = proc.wait(timeout=120)
        assert rc == 0, f"ray start ({name}) failed:\n{log.read_text()[-3000:]}"

    def alive_node_ids(self, want: int, timeout_s: float = 90) -> set[str]:
        """Node ids in `ray status`'s Active list, polled until WANT are there (the autoscaler monitor refreshes the
        status every few seconds)."""
        deadline, text = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            p = subprocess.run([str(BIN / "ray"), "status", "--address", self.address], capture_output=True,
                               text=True, env=self.env, timeout=60)
            text = p.stdout + p.stderr
            active = text.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in text else ""
            ids = set(re.findall(r"node_([0-9a-f]{56})\b", active))
            if len(ids) >= want:
                return ids
            time.sleep(2)
        raise AssertionError(f"ray status did not list {want} active nodes within {timeout_s} s:\n{text[-3000:]}")

    def stop(self, grace_s: float = 10) -> None:
        """`ray stop`'s order (raylets first so their agents do not complain, the GCS last), limited to processes in
        this cluster's sessions or naming its temp dir; SIGKILL for what outlives the grace period."""
        import psutil  # vendored by Ray (ray/thirdparty_files), on sys.path once ray is imported

        ours = []
        for p in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                cmdline = " ".join(p.info["cmdline"] or ())
                if p.pid != os.getpid() and (os.getsid(p.pid) in self.sessions or self.temp_dir in cmdline):
                    ours.append(p)
            except (OSError, psutil.Error):
                continue
        raylets = [p for p in ours if p.info["name"] == "raylet"]
        gcs = [p for p in ours if p.info["name"] == "gcs_server"]
        rest = [p for p in ours if p not in raylets and p not in gcs]
        for group in (raylets, rest, gcs):
            for p in group:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(group, timeout=grace_s)
            for p in alive:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def two_node_cluster():
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_a_sweep_runs_trials_on_both_nodes_of_a_two_node_cluster(tmp_path, two_node_cluster):
    cluster = two_node_cluster
    node_ids = cluster.alive_node_ids(want=2)
    assert len(node_ids) == 2

    # Four real-only trials at one CPU each, two at a time: with one CPU per node, two running trials are on two nodes.
    # Each lasts several seconds (cnn3, 8 epochs): a short trial could end before the second node's worker has
    # started, and Ray would then hand the next trial to the first node's worker (actor reuse), leaving the second
    # node idle; on a loaded machine that happened with a 1-epoch linear model, and once with 4 cnn3 epochs.
    fixed = {k: v for k, v in TINY_TRIAL.items() if k.startswith("classifier.")}
    fixed.update({"augment.policy": "none", "classifier.backbone": "cnn3", "classifier.epochs": 8})
    sweep = {"name": "two_nodes", "data": {"source": "procedural", "scale": 0.01}, "space": "quickstart",
             "fixed": fixed, "sampler": "random", "metric": "val_macro_f1", "mode": "max",
             "scheduler": {"type": "none"}, "num_samples": 4, "max_concurrent": 2, "resources": {"cpu": 1}}
    path = tmp_path / "two_nodes.yaml"
    path.write_text(yaml.safe_dump(sweep))

    run = subprocess.run([str(BIN / "fersweep"), "run", str(path), "--address", cluster.address,
                          "--storage", str(tmp_path / "results")], cwd=tmp_path, capture_output=True, text=True,
                         env=cluster.env, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    rows = pq.read_table(tmp_path / "results" / "two_nodes" / "trials.parquet").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), [r["reason"] for r in rows]
    assert all(r["classifier.backbone"] == "cnn3" and 0 <= r["test_macro_f1"] <= 1 for r in rows)
    # All four trials share node_ip 127.0.0.1; Ray's node id tells the two nodes apart.
    ran_on = {r["node_id"] for r in rows}
    assert ran_on == node_ids, json.dumps({"trials": sorted(ran_on), "cluster": sorted(node_ids)})
