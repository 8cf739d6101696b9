"""`--storage URI`: tiny sweeps whose results go to a file:// URI and to an S3-protocol server on loopback (moto),
read back from there with pyarrow; a sweep whose driver was killed resumes from the bucket alone; a URI that cannot
be opened is one line and status 2."""
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from fercore.errors import UserError
from fercore.results.manifest import manifest_from
from fercore.sweep.spec import load_sweep

FERSWEEP = Path(sys.executable).parent / "fersweep"
TRIALS = 3
# Dummy credentials for moto, set before Ray starts so its worker processes inherit them too.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    kept = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()
    for k, v in kept.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def s3_server(local_ray):
    """An S3 endpoint (host:port) with a bucket named `results`."""
    from moto.server import ThreadedMotoServer  # the dev extra's moto[s3] + flask: missing, the test fails

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir("results")
    yield endpoint
    server.stop()


def write_sweep(tmp_path: Path, **overrides) -> Path:
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "lr.py").write_text(
        "def space(trial):\n    trial.suggest_float('classifier.lr', 1e-3, 1e-2, log=True)\n")
    sweep = {"name": "uri", "data": {"source": "procedural", "scale": 0.01}, "space": "lr",
             "fixed": {"augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": 1,
                       "classifier.batch_size": 64},
             "sampler": "random", "scheduler": {"type": "none"}, "num_samples": 2, "max_concurrent": 1,
             "resources": {"cpu": 1}, "optuna_storage": True, **overrides}
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    path = tmp_path / "sweeps" / "uri.yaml"  # a sweep file finds search_spaces/ beside its folder
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.mark.slow
def test_a_sweep_through_a_file_uri_leaves_its_tables_and_ray_state_there(tmp_path, local_ray, capsys):
    from fercore.sweep import run_sweep

    remote = tmp_path / "remote"
    out = run_sweep(load_sweep(write_sweep(tmp_path, max_concurrent=2)), f"file://{remote}")

    trials = pq.read_table(f"file://{remote}/uri/trials.parquet").to_pylist()
    assert len(trials) == 2 and all(r["status"] == "completed" for r in trials), [r["reason"] for r in trials]
    assert len(pq.read_table(f"file://{remote}/uri/epochs.parquet")) == 2  # one epoch each
    assert (remote / "uri" / "tune" / "tuner.pkl").exists()  # Ray Tune's experiment state, for --resume
    assert (remote / "uri" / "optuna.db").exists() and list((remote / "uri" / "tb").glob("*/events.out.tfevents.*"))
    # The driver wrote a local working copy; the cache (flock) stays on local disk and is not uploaded.
    assert not out.is_relative_to(remote) and (out / "cache").is_dir() and not (remote / "uri" / "cache").exists()
    assert not list(remote.rglob("*.tmp"))  # uploads went to a temporary name, then moved
    assert f"Results: file://{remote}/uri/trials.parquet" in capsys.readouterr().out


@pytest.mark.slow
def test_an_s3_sweep_killed_midway_resumes_from_the_bucket_alone(tmp_path, s3_server):
    """The driver is killed (SIGKILL) once the bucket holds a trial's row; a driver on "another machine" (no working
    copy) resumes from the bucket alone and finishes the sweep: every trial in the bucket's trials.parquet once, the
    rows from before the kill unchanged, and Optuna's study, also from the bucket, told every recorded trial."""
    from fercore.sweep.storage import working_root
    from fercore.sweep import run_sweep

    uri = f"s3://results/sweeps?endpoint_override={s3_server}&scheme=http"
    s3 = pafs.S3FileSystem(endpoint_override=s3_server, scheme="http")
    sweep = write_sweep(tmp_path, num_samples=TRIALS)

    def rows() -> list[dict]:
        """The bucket's committed rows: the parts its manifest names (each object appears whole or not at all)."""
        try:
            with s3.open_input_stream("results/sweeps/uri/manifest.json") as f:
                parts = manifest_from(f.read()).tables.get("trials.parquet", [])
        except FileNotFoundError:
            return []
        paths = [f"results/sweeps/uri/trials.parquet/{p}" for p in parts]
        return pq.read_table(paths, filesystem=s3).to_pylist() if paths else []

    # Ray saves its state (and fercore commits) at every step, and each commit is uploaded at once; the driver kills
    # itself (SIGKILL) once its first manifest is up: between trials, whatever the machine's load (one trial at a
    # time, so that commit holds one trial, two if the upload thread was late), not after a sweep of three short
    # trials committed and uploaded all at its end.
    env = {**os.environ, "RAY_ADDRESS": "", "TUNE_GLOBAL_CHECKPOINT_S": "0", "FERCORE_UPLOAD_EVERY_S": "0",
           "FERCORE_KILL_AT": "upload-after-commit"}
    driver = subprocess.Popen([str(FERSWEEP), "run", str(sweep), "--storage", uri], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert driver.wait(timeout=300) == -signal.SIGKILL, "the driver was not killed at its first upload"
    finally:  # the Ray processes of the driver's session (and the driver, if it outlived the wait)
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        driver.wait()
    before = {r["trial_id"]: r for r in rows()}
    assert 1 <= len(before) < TRIALS

    shutil.rmtree(working_root())  # what the driver kept locally is gone with its machine
    with pytest.raises(UserError, match="add --trust-storage if only you and your cluster write to it"):
        run_sweep(load_sweep(sweep), uri, resume=True)  # Ray's pickles from the bucket: not without consent
    assert not working_root().exists()  # refused before anything was downloaded
    run_sweep(load_sweep(sweep), uri, resume=True, trust_storage=True)
    after = {r["trial_id"]: r for r in rows()}
    assert len(after) == TRIALS and all(r["status"] == "completed" for r in after.values())
    for tid, row in before.items():  # not run again: a rerun rewrites its timings
        assert after[tid]["train_seconds"] == row["train_seconds"]
    with s3.open_input_file("results/sweeps/uri/optuna.db") as f:
        (tmp_path / "optuna.db").write_bytes(f.readall())
    study = optuna.load_study(study_name="uri", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = Counter(t.params["classifier.lr"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    # Every row's trial was told; a trial told after the last commit and run again under a new id is told too.
    assert not Counter(r["classifier.lr"] for r in after.values()) - complete
    assert TRIALS <= sum(complete.values()) <= TRIALS + (TRIALS - len(before))


def test_a_storage_uri_that_cannot_be_opened_is_one_line_and_status_2(tmp_path, s3_server, capsys):
    from fercore.cli import main

    sweep = str(write_sweep(tmp_path))
    for uri, why in (("nope://bucket/prefix", "Unrecognized filesystem type"),
                     (f"s3://no-such-bucket/p?endpoint_override={s3_server}&scheme=http", "no-such-bucket")):
        assert main(["run", sweep, "--storage", uri]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fersweep: error: --storage:") and why in err and "\n" not in err, err


@pytest.mark.slow
def test_the_trials_table_is_uploaded_last_as_a_file_or_a_folder_of_parts(tmp_path, monkeypatch):
    """push() uploads everything else, then the tables, then trials.parquet last, whether the trials table is one
    file or a folder of part files; both layouts reach the URI whole."""
    from fercore.sweep.storage import SweepFolder, upload_order

    names = ["trials.parquet/part-00002.parquet", "tune/experiment_state-x.json", "epochs.parquet",
             "trials.parquet", "optuna.db", "epochs.parquet/part-00001.parquet", "trials.parquet/part-00001.parquet",
             "tb/t1/events.out", "sweep.json"]
    ordered = sorted(names, key=upload_order)
    assert ordered[:4] == ["optuna.db", "sweep.json", "tb/t1/events.out", "tune/experiment_state-x.json"]
    assert set(ordered[4:6]) == {"epochs.parquet", "epochs.parquet/part-00001.parquet"}
    assert ordered[6:] == ["trials.parquet", "trials.parquet/part-00001.parquet", "trials.parquet/part-00002.parquet"]

    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "remote"
    folder = SweepFolder(f"file://{remote}", "s")
    for name in ("trials.parquet/part-00001.parquet", "epochs.parquet", "tune/experiment_state-x.json"):
        (folder.local / name).parent.mkdir(parents=True, exist_ok=True)
        (folder.local / name).write_bytes(name.encode())
    uploaded = []
    put = folder._put
    monkeypatch.setattr(folder, "_put", lambda path, rel: (uploaded.append(rel), put(path, rel)))
    folder.push()
    assert uploaded == ["tune/experiment_state-x.json", "epochs.parquet", "trials.parquet/part-00001.parquet"]
    assert (remote / "s" / "trials.parquet" / "part-00001.parquet").read_bytes() == b"trials.parquet/part-00001.parquet"
