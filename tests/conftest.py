"""Shared fixtures: synthetic images only (never copies of ../shared data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _postgres import postgres  # noqa: F401 - a fixture: a throwaway PostgreSQL server

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
# Spinning OpenMP threads make torch 10-20x slower on a busy 2-core machine (bench/bench_explain.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder; tests using it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep caches and databases of tests out of the user's home."""
    home = tmp_path_factory.getbasetemp() / "cellkit-home"
    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
