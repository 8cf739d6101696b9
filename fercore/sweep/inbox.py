"""How a finished trial's artifacts reach the driver as a file, not through Ray Tune's results.

Ray keeps every trial's last result for the whole sweep (with running statistics of each number in it) and writes them
all into its experiment state at each save: a trial's row, embedding points, sample PNG and predictions sent that way
made the driver's cost per trial grow with the sweep (benchmarks/driver_scale.py). Instead the worker encodes them
(fercore.results.artifact_file) and hands the bytes to the sweep's inbox, a Ray actor pinned to the driver's node,
which writes them to incoming/<trial id>.npz in the driver's results folder before the worker's last report is sent;
the driver reads the file when that report arrives and removes it once the trial's rows are committed. An actor on the
driver's node, rather than the worker writing the folder itself, because a cluster's workers may share no disk with
the driver. The files are transient: a driver killed before committing a trial runs it again, and a new driver
removes what an old one left.
"""
from __future__ import annotations

from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from fercore.atomic import atomic_write

INCOMING = "incoming"  # in the sweep's results folder; never uploaded (fercore.sweep.storage)
SUFFIX = ".npz"


def artifact_path(folder: Path, trial_id: str) -> Path:
    return Path(folder) / INCOMING / f"{trial_id}{SUFFIX}"


def clear(folder: Path) -> None:
    """Remove the artifact files an earlier driver of this folder left uncommitted (their trials run again)."""
    incoming = Path(folder) / INCOMING
    if incoming.is_dir():
        for path in incoming.iterdir():
            path.unlink(missing_ok=True)


@ray.remote(num_cpus=0, max_restarts=-1)
class Inbox:
    """Writes the artifact files a sweep's workers hand it, on the driver's node."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        (self.folder / INCOMING).mkdir(parents=True, exist_ok=True)

    def put(self, trial_id: str, data: bytes) -> None:
        atomic_write(artifact_path(self.folder, trial_id), lambda f: f.write(data))


def start_inbox(folder: Path):
    """The sweep's inbox actor, on this (the driver's) node, writing into FOLDER."""
    here = ray.get_runtime_context().get_node_id()
    return Inbox.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)) \
        .remote(str(folder))
