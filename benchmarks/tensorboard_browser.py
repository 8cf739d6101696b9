"""A sweep's TensorBoard as a reviewer opens it (issue 25 item 6): a real `tensorboard` serving a results folder's tb/,
and headless Chromium loading its dashboards (custom scalars, HParams, time series) the way a browser does, with a
screenshot of each and a check of what the rendered page shows: runs named by what each trial was (backbone,
generator, policy, seed), the custom-scalars chart of uplift beside the gain over the oversampling control, and the
gains among the HParams metrics.

    python benchmarks/tensorboard_browser.py [--results DIR] [--out DIR]

Without --results it first runs `fersweep run sweeps/cgan_minority.yaml --smoke` (augmented trials, with their
baselines and controls) into a temporary folder, about a minute on 2 cores. Needs Chromium (Debian: apt-get install
chromium); nothing is downloaded. Prints what each page showed, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = {"custom_scalars": "#custom_scalars", "hparams": "#hparams", "timeseries": "#timeseries"}
# What the rendered page of each dashboard must show (besides the runs' names).
EXPECTED = {"custom_scalars": ["uplift and gains, test macro-F1"],
            "hparams": ["result/gain_control_test_macro_f1"],
            "timeseries": []}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: install it (Debian: apt-get install chromium) and run again")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_results(scratch: Path) -> Path:
    subprocess.run([str(Path(sys.executable).parent / "fersweep"), "run", str(REPO / "sweeps" / "cgan_minority.yaml"),
                    "--smoke", "--storage", str(scratch)], check=True, cwd=scratch,
                   env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "RAY_ADDRESS": "",
                        "HOME": str(Path.home())})
    return scratch / "cgan_minority"


def serve(tb: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(tb), "--host",
                             "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                if json.loads(r.read()):
                    return proc
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    sys.exit("tensorboard did not serve the runs within 120 s")


def load(browser: str, url: str, shot: Path) -> str:
    """The page at URL rendered by headless Chromium (its DOM after scripts ran), and a screenshot into SHOT."""
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1100",
             "--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=180)
    done = subprocess.run([browser, *flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                          timeout=180)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None, help="a sweep's results folder (default: a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("tensorboard_browser"), help="where the screenshots go")
    args = parser.parse_args()
    browser = chromium()
    scratch = Path(tempfile.mkdtemp(prefix="fercore-tb-"))
    results = args.results or smoke_results(scratch)
    tb = results / "tb"
    runs = sorted(p.name for p in tb.iterdir() if p.is_dir() and not p.name.startswith("."))
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = serve(tb, port)
    found = {}
    try:
        for page, fragment in PAGES.items():
            shot = args.out / f"{page}.png"
            dom = load(browser, f"http://127.0.0.1:{port}/{fragment}", shot)
            shown = {"screenshot": str(shot), "screenshot_bytes": shot.stat().st_size,
                     "runs_named": sum(run in dom for run in runs),
                     "expected": {text: text in dom for text in EXPECTED[page]}}
            found[page] = shown
            print(f"{page}: {shown['runs_named']} of {len(runs)} runs named on the page; "
                  + ", ".join(f"{t!r} {'shown' if ok else 'MISSING'}" for t, ok in shown["expected"].items())
                  + f"; screenshot {shot} ({shown['screenshot_bytes']} bytes)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ok = all(all(v["expected"].values()) for v in found.values()) and found["timeseries"]["runs_named"] == len(runs)
    print(json.dumps({"runs": runs, "pages": found, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
