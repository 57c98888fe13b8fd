"""Static checks of the Dockerfile and .dockerignore.

These parse the files; they do not build the image (CI has no Docker engine). They catch the
mistakes that matter: running as root, a missing healthcheck, an unpinned or CUDA torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return _instructions(ROOT / "Dockerfile")


def _args(steps, name: str) -> list[str]:
    return [args for word, args in steps if word == name]


def test_static_base_image_is_python311_slim(steps):
    assert steps[0] == ("FROM", "python:3.11-slim")


def test_static_runs_as_non_root_user(steps):
    users = _args(steps, "USER")
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (w, _) in enumerate(steps) if w == "USER")
    cmd = max(i for i, (w, _) in enumerate(steps) if w == "CMD")
    assert last_user < cmd


def test_static_torch_pinned_from_cpu_index_before_requirements(steps):
    runs = " && ".join(_args(steps, "RUN"))
    pinned = re.search(
        r"pip install --index-url https://download\.pytorch\.org/whl/cpu (torch==\S+) (torchvision==\S+)", runs
    )
    assert pinned, "torch must come from the CPU wheel index"
    reqs = (ROOT / "requirements.txt").read_text(encoding="utf-8").split()
    assert pinned.group(1) in reqs and pinned.group(2) in reqs, "Dockerfile and requirements.txt pins differ"
    assert runs.index("download.pytorch.org") < runs.index("pip install -r requirements.txt")
    assert "pip install --no-deps -e ." in runs


def test_static_exposes_8501_with_healthcheck_and_streamlit_cmd(steps):
    assert "8501" in _args(steps, "EXPOSE")
    (health,) = _args(steps, "HEALTHCHECK")
    assert "/_stcore/health" in health and "8501" in health
    probe = json.loads(health.split(" CMD ", 1)[1])  # exec form: no shell needed in the slim image
    assert probe[:2] == ["python", "-c"]
    compile(probe[2], "healthcheck", "exec")
    (cmd,) = _args(steps, "CMD")
    argv = json.loads(cmd)
    assert argv[:3] == ["streamlit", "run", "app.py"]
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    assert argv[argv.index("--browser.gatherUsageStats") + 1] == "false"


def test_static_offline_environment(steps):
    env = " ".join(_args(steps, "ENV"))
    for setting in ("YOLO_OFFLINE=1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS=false", "CELLKIT_HOME="):
        assert setting in env


def test_static_copied_files_exist(steps):
    for args in _args(steps, "COPY"):
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY source {src} missing"


def test_static_dockerignore_excludes_local_state_but_keeps_weights():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    assert {".git", "**/*.db", ".pytest_cache", "**/__pycache__"} <= lines
    assert not any(ln.startswith(("weights", "/weights", "cellkit", "app.py", "app_pages", "ui")) for ln in lines)
