"""Ways in for whoever can write a sweep file or a bucket, closed: sweep names that are folder names only, search
spaces that are modules of search_spaces/ or a file named on the command line, no unpickling of a store's contents
without --trust-storage, passwords out of every line fersweep prints, and a cluster.yaml whose dashboard listens on
loopback only and that pipes nothing from the internet into a shell."""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import optuna
import pytest
import yaml

from fercore.cli import main
from fercore.errors import UserError
from fercore.redact import RedactingStream, redact
from fercore.sweep.spaces import FixedSpace
from fercore.sweep.spec import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[1]
BASE = {"data": {"source": "procedural", "scale": 0.01}, "space": "quickstart", "fixed": {"classifier.epochs": 1}}


def sweep_file(folder: Path, filename: str = "s.yaml", **keys) -> Path:
    path = folder / filename
    path.write_text(yaml.safe_dump({**BASE, **keys}))
    return path


@pytest.mark.parametrize("name", ["..", ".", "../elsewhere", "a/b", "x y", "", "results\\x"])
def test_a_sweep_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    with pytest.raises(SweepError, match=r"name: .* cannot name the results folder; expected letters, digits"):
        load_sweep(sweep_file(tmp_path, name=name))


def test_plain_sweep_names_and_the_default_from_the_file_name_are_accepted(tmp_path):
    assert load_sweep(sweep_file(tmp_path, name="fer2013_cpu-v2.1")).name == "fer2013_cpu-v2.1"
    assert load_sweep(sweep_file(tmp_path, "my_sweep.yaml")).name == "my_sweep"
    with pytest.raises(SweepError, match="name: 'my sweep' cannot name the results folder"):
        load_sweep(sweep_file(tmp_path, "my sweep.yaml"))


def test_a_space_named_by_path_in_a_sweep_file_is_refused_and_its_file_never_runs(tmp_path):
    """`space: ../x` once executed any Python file the name reached; now a sweep file names modules only."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef space(trial):\n    return {{}}\n")
    (tmp_path / "sweeps").mkdir()
    for space in ("../evil", str(evil), str(evil.with_suffix("")), "search_spaces/../../evil"):
        with pytest.raises(SweepError, match="is not the name of a module in search_spaces/.*--space-file PATH"):
            load_sweep(sweep_file(tmp_path / "sweeps", space=space))
    assert not marker.exists()


def test_a_space_file_given_on_the_command_line_is_used_and_survives_pickling(tmp_path):
    space = tmp_path / "elsewhere" / "lr_only.py"
    space.parent.mkdir()
    space.write_text("def space(trial):\n    trial.suggest_float('classifier.lr', 1e-3, 1e-2, log=True)\n")
    spec = load_sweep(sweep_file(tmp_path, space="quickstart"), space_file=space)
    assert spec.space == "lr_only" and spec.space_file == space.resolve()
    searcher_space = pickle.loads(pickle.dumps(FixedSpace(spec.space, spec.path, {}, space_file=spec.space_file)))
    trial = optuna.create_study().ask()
    searcher_space(trial)
    assert list(trial.params) == ["classifier.lr"]  # the file's space, not the sweep file's quickstart
    with pytest.raises(SweepError, match="--space-file: .*missing.py: expected a Python file that defines"):
        load_sweep(sweep_file(tmp_path), space_file=tmp_path / "missing.py")


def test_resuming_from_a_uri_is_refused_without_trust_storage_before_anything_is_read(tmp_path, monkeypatch):
    """Ray's pickled state from a bucket is code from whoever writes the bucket: refused before the URI is opened."""
    from fercore.sweep import run_sweep

    monkeypatch.setenv("FERCORE_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "remote"
    with pytest.raises(UserError, match=r"--resume from file://.*unpickles Ray Tune's state .* add --trust-storage"):
        run_sweep(load_sweep(sweep_file(tmp_path, name="s")), f"file://{remote}", resume=True)
    assert not remote.exists() and not (tmp_path / "cache").exists()
    assert main(["run", str(sweep_file(tmp_path, name="s")), "--storage", f"file://{remote}", "--resume"]) == 2


@pytest.mark.parametrize("text, shown", [
    ("optuna_storage: postgresql://fer:s3cret@db.example:5432/sweeps",
     "optuna_storage: postgresql://fer:***@db.example:5432/sweeps"),
    ("s3://AKIA123:s3cret/with+slash@bucket/prefix", "s3://AKIA123:***@bucket/prefix"),
    ("s3://bucket/p?endpoint_override=h:9000&secret_key=s3cret&access_key=AKIA",
     "s3://bucket/p?endpoint_override=h:9000&secret_key=***&access_key=***"),
    ("mysql+pymysql://root:s3cret@127.0.0.1/db and redis://:s3cret@h:6379/0",
     "mysql+pymysql://root:***@127.0.0.1/db and redis://:***@h:6379/0"),
])
def test_passwords_are_redacted_and_the_rest_of_the_line_kept(text, shown):
    assert redact(text) == shown and "s3cret" not in redact(text)


def test_lines_without_secrets_pass_unchanged():
    for text in ("sqlite:////tmp/x/optuna.db", "s3://bucket/prefix?endpoint_override=h:9000&scheme=http",
                 "trial 3: classifier.lr=0.001, val_macro_f1=0.41", "time 12:30 at host:8265"):
        assert redact(text) == text


def test_a_url_split_over_two_writes_is_still_redacted():
    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write("storage postgresql://u:s3c")
    stream.write("ret@host/db\nnext line")
    stream.flush()
    assert out.getvalue() == "storage postgresql://u:***@host/db\nnext line"


def test_fersweep_prints_no_password_whatever_message_carries_it(tmp_path, capsys):
    """A user error that echoes a value with a URL in it (here a data source) prints the URL without its password."""
    sweep = sweep_file(tmp_path, name="s", data={"source": "postgresql://fer:s3cret@db.example/x"})
    assert main(["run", str(sweep)]) == 2
    assert main(["trial", "--data", "s3://AKIA:s3cret@bucket/fer2013", "classifier.epochs=1"]) == 2
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "s3cret" not in printed, printed
    assert "postgresql://fer:***@db.example/x" in printed and "s3://AKIA:***@bucket" in printed, printed


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_binds_the_dashboard_to_loopback_only():
    head = "\n".join(_cluster()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in (REPO / "cluster.yaml").read_text()


def test_cluster_yaml_pipes_nothing_from_the_internet_into_a_shell_and_pins_what_it_installs():
    config = _cluster()
    commands = [c for key, value in config.items() if key.endswith("_commands") and isinstance(value, list)
                for c in value]
    assert commands
    for command in commands:
        assert not re.search(r"(curl|wget)[^|]*\|\s*(sudo\s+)?(ba|z)?sh\b", command), command
        for spec in re.findall(r"pip install [^\n]*", command):
            for requirement in re.findall(r'"([A-Za-z0-9_.\[\],-]+[^"]*)"', spec):
                assert re.search(r"(==|<)", requirement), f"unpinned install in cluster.yaml: {requirement}"
