import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # tests may read it; the product never does


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep generated data out of the user's cache."""
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)


def run_env() -> dict[str, str]:
    """Environment for vaelab subprocesses: one thread each, no progress bars."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env
