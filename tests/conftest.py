"""Shared test set-up: a private data cache per test session, few CPU threads, tiny data sets, and the real faces
(tests/real_faces.py)."""
import os

import pytest

from tests.real_faces import real_faces  # noqa: F401 - the session fixture of the real-data tests

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["FERCORE_CACHE"] = str(tmp_path_factory.mktemp("fercore-cache"))
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny networks and batches: on a shared 2-core machine two torch threads ran them up to 10x
    slower than one. A module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    kept = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(kept)


@pytest.fixture(scope="session")
def tiny_faces():
    """A procedural set of ~360 faces: enough for every class in every split, seconds to train on."""
    from fercore.data import load

    return load("procedural", scale=0.01, seed=0)


# Small but complete: every stage of a trial runs, each for one short pass.
TINY_TRIAL = {
    "data.scale": 0.01,
    "generator.epochs": 1, "generator.width": 4, "generator.batch_size": 32, "generator.latent_dim": 16,
    "classifier.epochs": 2, "classifier.batch_size": 32, "classifier.width": 8,
}
