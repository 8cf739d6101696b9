"""`fersweep` verbs other than run/trial: list, data info, data preview, and the one-line errors with status 2."""
import subprocess
import sys

import pytest
from PIL import Image

from fercore.cli import main
from fercore.data import load
from fercore.labels import CLASSES


def test_list_shows_every_registered_name(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("cgan", "cnn3", "resnet18", "linear", "none", "balance", "real_ratio", "generator.latent_dim"):
        assert name in out
    assert "search spaces: " in out and "quickstart" in out.split("search spaces: ")[1]


def test_data_info_prints_counts_per_class_and_split(capsys):
    assert main(["data", "info", "procedural", "--scale", "0.01"]) == 0
    out = capsys.readouterr().out.splitlines()
    counts = load("procedural", scale=0.01).counts()
    for i, name in enumerate(CLASSES):
        line = next(line for line in out if line.startswith(name))
        assert [int(v) for v in line.split()[1:]] == [counts[s][i] for s in ("train", "val", "test")]


def test_data_preview_writes_a_grid_per_class(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "procedural", "--scale", "0.01", "--out", str(out), "--per-class", "3"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (3 * 48, 7 * 48)


@pytest.mark.slow
def test_bad_data_file_is_one_line_and_status_2(tmp_path):
    bad = tmp_path / "fer2013.csv"
    bad.write_text("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",Training\n9," + " ".join(["1"] * 2304)
                   + ",Training\n")
    proc = subprocess.run([sys.executable, "-m", "fercore.cli", "data", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "line 3" in lines[0] and "Traceback" not in proc.stderr


def test_bad_sweep_file_is_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nspace: quickstart\nnum_samples: -1\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "num_samples" in err and str(bad) in err
