"""A sweep's TensorBoard as a reviewer opens it (issue 25 item 6): a real `tensorboard` serving a results folder's tb/,
and headless Chromium loading its dashboards (custom scalars, HParams, time series) the way a browser does, with a
screenshot of each (to look at) and a check that each rendered (not a blank page). What the dashboards were fed is
checked through the same server's HTTP API, as the pages ask for it: runs named by what each trial was (backbone,
generator, policy, seed), the custom-scalars chart of uplift beside the gain over the oversampling control, and the
gains among the HParams metrics. (TensorBoard draws inside shadow DOM, which Chromium's --dump-dom leaves out, so the
page's text is not read back; tests/test_tensorboard_http.py asserts the same API answers.)

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
CHART = "uplift and gains, test macro-F1"  # the custom-scalars chart that puts a trial's uplift beside its gain
GAIN = "result/gain_control_test_macro_f1"


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


def screenshot(browser: str, url: str, shot: Path) -> float:
    """The page at URL rendered by headless Chromium into SHOT; the standard deviation of its pixels (a blank or
    error page is nearly uniform)."""
    import numpy as np
    from PIL import Image

    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1100",
             "--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=180)
    with Image.open(shot) as im:
        return float(np.asarray(im.convert("L"), dtype=float).std())


def fed(port: int) -> dict:
    """What the dashboards are served, asked as the pages ask: the runs, the custom-scalars layout, the HParams
    experiment's metrics."""
    def get(path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())

    layout = get("/data/plugin/custom_scalars/layout")
    charts = {c["title"]: c.get("multiline", {}).get("tag", []) for cat in layout.get("category", [])
              for c in cat["chart"]}
    metrics = {m["name"]["tag"] for m in get("/data/plugin/hparams/experiment", {"experimentName": ""})["metricInfos"]}
    return {"runs": sorted(get("/data/runs")), "chart_tags": charts.get(CHART, []), "gain_metric": GAIN in metrics}


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
        served = fed(port)
        for page, fragment in PAGES.items():
            shot = args.out / f"{page}.png"
            spread = screenshot(browser, f"http://127.0.0.1:{port}/{fragment}", shot)
            found[page] = {"screenshot": str(shot), "pixel_std": round(spread, 1), "rendered": spread > 10}
            print(f"{page}: screenshot {shot}, pixel std {spread:.1f} ({'rendered' if spread > 10 else 'BLANK?'})")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    named = [r for r in served["runs"] if r in runs and "_s" in r]
    print(f"served: {len(named)} of {len(runs)} runs named by what the trial was ({', '.join(runs[:3])}...); "
          f"chart {CHART!r}: {served['chart_tags']}; {GAIN} among the HParams metrics: {served['gain_metric']}")
    ok = (all(p["rendered"] for p in found.values()) and len(named) == len(runs)
          and any("gain_control" in t for t in served["chart_tags"]) and served["gain_metric"])
    print(json.dumps({"runs": runs, "pages": found, "served": served, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
