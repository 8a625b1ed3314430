"""Shared fixtures. Tests use only what the repository ships (the packaged sample videos), never ../shared."""

import os
from importlib import resources as package_files
from pathlib import Path

import pytest

from cosmos_assets.settings import CosmosPaths

SAMPLES = Path(str(package_files.files("cosmos_assets") / "samples"))

# The critic loop's self-supervised labels (every curated dataset version lends clips to critic training) are off
# for the tests of the other loops, whose runs and timings they would change; tests/test_critic_loop.py turns them on.
os.environ.setdefault("COSMOS_SELF_SUPERVISED_LABELS", "0")


@pytest.fixture(scope="session")
def samples() -> Path:
    """The real sample videos shipped inside the package (see samples/ATTRIBUTION.md)."""
    return SAMPLES


@pytest.fixture
def cosmos_env(tmp_path, monkeypatch) -> CosmosPaths:
    """A fresh COSMOS_HOME (and Dagster home inside it) with no settle delay."""
    home = tmp_path / "cosmos_home"
    monkeypatch.setenv("COSMOS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("COSMOS_SETTLE_SECONDS", "0")
    monkeypatch.setenv("COSMOS_PROFILE", "local")
    paths = CosmosPaths(home)
    paths.landing.mkdir(parents=True)
    return paths


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared machine the threads' spin-waiting
    made their tests several times slower. Modules opt in with ``pytestmark``; restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def age_file(path: Path, seconds: float = 3600) -> None:
    """Pretend a file was last touched ``seconds`` ago (mtime; ctime cannot be set)."""
    past = os.stat(path).st_mtime - seconds
    os.utime(path, (past, past))
