"""The worker side of a sweep: one Ray Tune trial running fercore.trial.run, its per-epoch reports adapted to
tune.report.

The config Ray samples is resolved once, here, and the resolved flat config travels to the driver with the trial's
first report (artifacts[CONFIG]), so the driver records it with the trial's row without resolving it again. A trial
that diverged or whose config cannot run reports that as its last result (status, reason) and ends normally: a
retry would end the same way. Anything else it raises is a crash, which Ray retries (max_failures).
"""
from __future__ import annotations

import traceback
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune.search.repeater import TRIAL_INDEX

from fercore.cache import CacheStore
from fercore.config import resolve
from fercore.data import FaceSet
from fercore.errors import UserError
from fercore.results import artifact_file, confusion_png
from fercore.sweep.searchers import RESUMED, STOPPED, TESTED
from fercore.sweep.spaces import flat_config

CONFIG = "config"  # the artifacts key of the resolved flat config, sent with the trial's first report
TRACEBACK = "traceback"  # the result key of a trial's traceback, in the report of its own end
# Ray keeps running statistics of every number in a result (Trial.update_last_result: max, min, means of the last 5
# and 10), for every trial, for the whole sweep, and saves them with its state. So only what Ray's scheduler and
# searcher read goes as numbers (the objectives, the epoch); the epoch's figures all travel under EPOCH_METRICS as
# (key, value) pairs, which Ray keeps as they are.
EPOCH_METRICS = "epoch_metrics"
# The trial's last report (after its artifacts, row included, went to the driver as a file: fercore.sweep.inbox)
# carries, under each objective's name, the row's value: the best epoch's, whose weights were tested, not the last
# epoch's. So ASHA's last view of the trial and the value Optuna is told (Ray gives the searcher the trial's last
# result) are the value trials.parquet holds. TESTED marks such a result; the epoch's own values stay in its
# EPOCH_METRICS, for the epochs table.


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's flat config as Ray hands it over, without Ray's own keys and with suggestion names as config keys
    (`augment.filter@no_discriminator` sets augment.filter); a repeat of a sampled config (sweep key `seeds`) gets
    its own seed: the config's seed plus the repeat's index."""
    flat = flat_config({k: v for k, v in config.items() if k != TRIAL_INDEX})
    if config.get(TRIAL_INDEX):
        flat["seed"] = int(flat.get("seed", 0)) + int(config[TRIAL_INDEX])
    return flat


class _Reporter:
    """fercore.trial's report(epoch, metrics, artifacts) as tune.report, and the trial's own account of its end.
    Ray wants the searcher's metrics in every result: an objective measured only at the end (classifier_seconds) is
    None until then. The first report carries the resolved config, once it is known; the last one the row's values
    of the objectives (TESTED), its artifacts having gone to INBOX first."""

    def __init__(self, objectives: tuple[str, ...], inbox=None):
        self.objectives = objectives
        self.inbox = inbox
        self.unmeasured = dict.fromkeys(objectives)
        # Several nodes of one machine share an IP address (a local test cluster); the node id tells them apart.
        self.node_id = ray.get_runtime_context().get_node_id()
        self.config: dict[str, Any] | None = None  # resolved and not yet sent

    def __call__(self, epoch: int, metrics: dict[str, float], artifacts: dict | None) -> None:
        read_by_ray = {k: v for k, v in metrics.items() if k in self.objectives or k == "epoch"}
        result = {**self.unmeasured, **read_by_ray, EPOCH_METRICS: tuple(metrics.items()), "node_id": self.node_id}
        row = (artifacts or {}).get("row")
        if row is not None:  # the last report: the objectives as the row holds them (TESTED says why)
            tested = {m: row[m] for m in self.objectives if m in row}
            if "confusion" in artifacts:  # rendered here, not on the driver, which serves every trial
                png = confusion_png(np.asarray(artifacts["confusion"]), tuple(artifacts["classes"]))
                artifacts = {**artifacts, "confusion_png": png}
            # Its figures (the test split's too, ~200) go with the artifacts: Ray keeps a trial's last result.
            self._send({**artifacts, EPOCH_METRICS: result.pop(EPOCH_METRICS)})
            result.update(tested)
            result[TESTED] = True
            artifacts = None
        self._report(result, artifacts)

    def _send(self, artifacts: dict) -> None:
        """The artifacts as a file on the driver's node, written before the report that tells the driver to read it."""
        if self.inbox is None:
            raise RuntimeError("a sweep trial's artifacts need the sweep's inbox (fercore.sweep.inbox)")
        ray.get(self.inbox.put.remote(tune.get_context().get_trial_id(), artifact_file.encode(artifacts)))

    def ended(self, status: str, reason: str, trace: str = "") -> None:
        """The trial's last result, without an epoch: it diverged, or its config cannot run; TRACE, the traceback,
        goes to the trial's log on the driver (fercore.sweep.callback)."""
        self._report({**self.unmeasured, "status": status, "reason": reason, "node_id": self.node_id,
                      TRACEBACK: trace}, None)

    def _report(self, result: dict[str, Any], artifacts: dict | None) -> None:
        if self.config is not None:
            # As (key, value) pairs, not a dict: Ray keeps running statistics of every number in a result's nested
            # dicts (Trial.update_last_result) and saves them with its state at every step. As a dict, the config
            # made that state a fifth larger (the quickstart's smoke run, two trials: 313 KB, against 263 KB
            # without it and as pairs).
            artifacts, self.config = {CONFIG: tuple(self.config.items()), **(artifacts or {})}, None
        tune.report({**result, "artifacts": artifacts} if artifacts else result)


def trainable(config: dict[str, Any], data: FaceSet | None = None, cache: CacheStore | None = None,
              objectives: tuple[str, ...] = (), finished: dict[str, dict] | None = None, inbox=None) -> None:
    """One trial: the config Ray sampled, resolved and run on DATA with CACHE, reporting OBJECTIVES every epoch and
    handing its artifacts to INBOX. FINISHED holds the recorded objectives of a resumed sweep's trials by trial id."""
    import torch

    from fercore import trial
    from fercore.generators import Diverged

    recorded = (finished or {}).get(tune.get_context().get_trial_id())
    if recorded is not None:
        # Resumed: this trial finished (its row is in trials.parquet) after Ray's last experiment checkpoint, so Ray
        # restarts it. It is not run again: its recorded objectives go back to the searcher.
        tune.report({**dict.fromkeys(objectives), **{m: recorded.get(m) for m in objectives}, RESUMED: True,
                     TESTED: recorded.get("status") == "completed", STOPPED: recorded.get("status") == "stopped"})
        return
    report = _Reporter(objectives, inbox)
    try:
        resolved = resolve(trial_config(config), drop_inapplicable=True)
        report.config = resolved.flat(applicable_only=True)  # the row's config: keys that do not apply are empty
        if not resolved.train.threads:
            # Each trial gets its share of the node's cores, not torch's default of all of them.
            cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
            torch.set_num_threads(max(1, int(cpus)))
        trial.run(resolved, data, report, cache)
    except (Diverged, UserError) as e:
        # An outcome of this config and seed, not a crash: a retry would end the same way. Reported as the trial's
        # last result (without an epoch), so the trial ends normally and FailureConfig does not retry it.
        reason = str(e) if isinstance(e, Diverged) else f"{type(e).__name__}: {e}"
        report.ended("diverged" if isinstance(e, Diverged) else "error", reason, traceback.format_exc())
    finally:
        if cache is not None:
            cache.release()  # the entries this trial used may be evicted once no trial holds them
