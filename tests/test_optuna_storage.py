"""The sweep's Optuna study where many workers and dashboards meet: kept in a real PostgreSQL server the test starts
(Debian's postgresql: initdb and postgres from PATH or /usr/lib/postgresql/*/bin), and in Optuna's journal file for a
shared file system; each read back by Optuna and by optuna-dashboard's own HTTP API, and the password printed
nowhere."""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from fercore.results import TRIALS, read_table

pytestmark = pytest.mark.slow  # a database server, optuna-dashboard and a real sweep

FERSWEEP = Path(sys.executable).parent / "fersweep"
PASSWORD = "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        pytest.fail("this test needs a PostgreSQL server's binaries (initdb, postgres): apt-get install postgresql "
                    "(.ci/run does)")
    return Path(versions[-1]).parent


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on loopback for this module, with a database for Optuna; its URL with a password (the
    server trusts loopback, so the password only has to stay unprinted)."""
    bin_dir = _postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="fercore-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its own system user runs it
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "fercore", "--no-sync"],
                   check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen([*as_user, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h",
                               "127.0.0.1", "-k", str(folder), "-F"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            conn = psycopg.connect(host="127.0.0.1", port=port, user="fercore", dbname="postgres")
            break
        except psycopg.OperationalError:
            assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.3)
    conn.autocommit = True
    conn.execute("CREATE DATABASE optuna")
    conn.close()
    yield f"postgresql://fercore:{PASSWORD}@127.0.0.1:{port}/optuna"
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def write_sweep(tmp_path: Path, name: str, storage: str) -> Path:
    sweep = {"name": name, "data": {"source": "procedural", "scale": 0.01}, "sampler": "grid",
             "grid": {"classifier.lr": [1e-3, 3e-3, 1e-2]},
             "fixed": {"augment.policy": "none", "classifier.backbone": "linear", "classifier.epochs": 1,
                       "classifier.batch_size": 64},
             "scheduler": {"type": "none"}, "max_concurrent": 1, "resources": {"cpu": 1}, "optuna_storage": storage}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def run_sweep(tmp_path: Path, sweep: Path) -> str:
    env = {**os.environ, "RAY_ADDRESS": "", "FERCORE_CACHE": str(tmp_path / "fercore-cache")}
    done = subprocess.run([str(FERSWEEP), "run", str(sweep), "--storage", "results"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout + done.stderr


def dashboard_studies(storage: str, tmp_path: Path) -> list[dict]:
    """The studies optuna-dashboard serves from STORAGE, through its HTTP API, as a reviewer's browser asks."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--port", str(port),
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    return json.loads(r.read())["study_summaries"]
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not serve"
                time.sleep(0.3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def check_study(storage, tmp_path: Path, name: str) -> None:
    study = optuna.load_study(study_name=name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = read_table(tmp_path / "results" / name, TRIALS).to_pylist()
    assert len(complete) == len(rows) == 3
    assert sorted(t.params["classifier.lr"] for t in complete) == sorted(r["classifier.lr"] for r in rows)


def test_a_sweeps_study_in_postgresql_is_read_back_by_optuna_and_optuna_dashboard(tmp_path, postgres_url):
    printed = run_sweep(tmp_path, write_sweep(tmp_path, "pg_sweep", postgres_url))
    assert PASSWORD not in printed
    assert f"optuna-dashboard {postgres_url.replace(PASSWORD, '***')}" in printed
    check_study(postgres_url, tmp_path, "pg_sweep")
    studies = dashboard_studies(postgres_url, tmp_path)
    [summary] = [s for s in studies if s["study_name"] == "pg_sweep"]
    assert summary["directions"] == ["maximize"]


def test_a_sweeps_study_in_a_journal_file_is_read_back_by_optuna_and_optuna_dashboard(tmp_path):
    printed = run_sweep(tmp_path, write_sweep(tmp_path, "journal_sweep", "journal:study.log"))
    journal = tmp_path / "results" / "journal_sweep" / "study.log"
    assert journal.exists() and f"optuna-dashboard {journal}" in printed
    from optuna.storages.journal import JournalFileBackend

    check_study(optuna.storages.JournalStorage(JournalFileBackend(str(journal))), tmp_path, "journal_sweep")
    [summary] = dashboard_studies(str(journal), tmp_path)
    assert summary["study_name"] == "journal_sweep"


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path):
    port = _free_port()  # nothing listens there
    sweep = write_sweep(tmp_path, "nowhere", f"postgresql://fercore:{PASSWORD}@127.0.0.1:{port}/optuna")
    env = {**os.environ, "RAY_ADDRESS": "", "FERCORE_CACHE": str(tmp_path / "fercore-cache")}
    done = subprocess.run([str(FERSWEEP), "run", str(sweep), "--storage", "results"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fersweep: error: optuna_storage: cannot open postgresql://fercore:***@127.0.0.1:{port}")
    assert PASSWORD not in done.stdout + done.stderr
