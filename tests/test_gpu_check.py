"""benchmarks/gpu_check.py, ready for its GPU session: the dry run takes every code path on the CPU and writes a JSON
with every section measured; the watchdog ends a hung run at the cap with its partial results and stops its child
processes; the peak table and the report sweeps' generator sizes read as intended."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def gpu_check():
    """The script as a module (benchmarks/ is no package); registered first, as its dataclasses need."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_peak_table_is_keyed_by_device_name_with_an_override():
    check = gpu_check()
    assert check.peak_tflops(None, "NVIDIA H200") == (989.0, "table entry 'H200'")
    assert check.peak_tflops(None, "NVIDIA H100 80GB HBM3")[0] == 989.0
    assert check.peak_tflops(None, "NVIDIA H100 PCIe")[0] == 756.0  # the more specific entry wins
    assert check.peak_tflops(None, "NVIDIA L40S")[0] == 362.0 and check.peak_tflops(None, "NVIDIA L4")[0] == 121.0
    assert check.peak_tflops(None, "Tesla T4")[0] is None  # not guessed: --peak-tflops says it
    assert check.peak_tflops(500.0, "Tesla T4") == (500.0, "--peak-tflops")
    assert check.peak_tflops(None, None)[0] is None


def test_generators_are_measured_at_the_sizes_the_report_sweeps_give_them():
    sizes = gpu_check().report_sweep_sizes()
    assert sizes["stylegan"]["from"] == "real_ratio_grid.yaml"
    assert sizes["stylegan"]["generator.width"] == 64 and sizes["stylegan"]["generator.resolution"] == 32
    assert sizes["cgan"]["generator.resolution"] == 64 and sizes["cgan"]["generator.batch_size"] == 64
    assert {"gan", "dcgan", "diffusion"} <= set(sizes)
    assert all("generator.epochs" not in s and "generator.type" not in s for s in sizes.values())


@pytest.mark.slow
def test_dry_run_measures_every_section(tmp_path):
    """The whole check at tiny sizes on the CPU, as CI runs it: every section ok and numbers where the GPU session
    will put its figures (utilisation excepted: no GPU to sample)."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--peak-tflops", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"wrote {out}" in proc.stdout and "DRY RUN" in proc.stdout
    data = json.loads(out.read_text())
    check = gpu_check()
    assert data["dry_run"] is True and "aborted" not in data
    assert {name: s["status"] for name, s in data["sections"].items()} == {name: "ok" for name in check.SLICES}
    sections = data["sections"]

    speed = sections["classifier_speed"]
    assert speed["precision"] == "torch.bfloat16" and speed["layout"] == "channels_last"
    assert number(speed["train_flops_per_image"]) and speed["train_flops_per_image"] > 0
    for run in ("fercore", "fercore_compiled"):
        r = speed[run]
        assert r["epochs_run"] == check.DRY.epochs and not r["extrapolated"], r
        for key in ("wall_30_epochs_s", "images_per_s", "share_of_peak", "peak_mem_mb", "first_epoch_loss"):
            assert number(r[key]) and r[key] > 0, (run, key, r[key])
    assert number(speed["fercore_compiled"]["compile_s_estimate"])
    for variant in ("as_users_run_it", "same_step"):
        conv = speed["conventional"][variant]
        assert number(conv["epoch_s"]) and number(conv["ratio_vs_fercore"]) and number(conv["ratio_vs_fercore_best"])
    assert speed["conventional"]["same_step"]["precision"] == "torch.bfloat16"

    packing = sections["trial_packing"]
    assert set(packing["runs"]) == {str(float(f)) for f in check.DRY.packing_fractions}
    for r in packing["runs"].values():
        assert r["exit"] == 0 and r["statuses"] == {"completed": packing["trials_per_fraction"]}, r
        assert number(r["trials_per_hour"]) and r["trials_per_hour"] > 0 and number(r["mean_trial_s"])
        assert r["gpu_util_mean"] is None  # no GPU to sample here: said, not made up
    assert "utilisation not sampled" in packing["note"]

    from fercore.generators import GENERATORS

    gens = sections["generators"]["types"]
    assert set(gens) == set(GENERATORS.names())
    for gtype, r in gens.items():
        assert r["status"] == "ok" and number(r["sample_images_per_s"]), (gtype, r)
        assert gtype == "folder" or number(r["train_images_per_s"]), (gtype, r)

    agree = sections["cpu_gpu_agreement"]
    assert agree["agree"] is True and all(number(agree[k]) for k in check.TOLERANCE)


@pytest.mark.slow
def test_the_watchdog_ends_a_hung_run_at_the_cap_with_partial_results(tmp_path):
    """A section that never returns (a sleep) with a child process of its own: at the 3 s cap the run prints the
    table, writes the JSON with what was measured, ends the child's session and exits with status 3."""
    out, pid_file = tmp_path / "partial.json", tmp_path / "child.pid"
    program = textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(SCRIPT.parent)!r})
        import gpu_check
        run = gpu_check.Run(gpu_check.Path({str(out)!r}), cap_s=3, dry_run=True)
        run.current = "classifier_speed"
        run.section("classifier_speed").update(train_flops_per_image=123.0)
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        run.children.append(child)
        time.sleep(300)
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    data = json.loads(out.read_text())
    assert data["aborted"] == "the cap of 3 s was reached during classifier_speed"
    assert data["sections"]["classifier_speed"] == {"status": "partial", "train_flops_per_image": 123.0,
                                                    "note": "cut off by the cap"}
    assert "ABORTED" in proc.stdout and "partial results in" in proc.stderr
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child), "the hung run's child process outlived it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by init) counts as ended.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()
