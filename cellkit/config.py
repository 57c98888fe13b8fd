"""Where things live: weights, data, database, cache. Each can be overridden by an env variable."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def weights_dir() -> Path:
    """Bundled model weights and cards (``CELLKIT_WEIGHTS_DIR`` overrides)."""
    return Path(os.environ.get("CELLKIT_WEIGHTS_DIR", PROJECT_ROOT / "weights"))


def data_dir() -> Path | None:
    """Default dataset root: ``CELLKIT_DATA_DIR``, else ``../shared/data`` when present, else None."""
    env = os.environ.get("CELLKIT_DATA_DIR")
    if env:
        return Path(env)
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def cache_dir() -> Path:
    """Disk cache for dataset indexes etc. (``CELLKIT_CACHE_DIR``, default ``~/.cache/cellkit``)."""
    path = Path(os.environ.get("CELLKIT_CACHE_DIR", Path.home() / ".cache" / "cellkit"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def home() -> Path:
    """The user's cellkit folder (``CELLKIT_HOME``, default ``~/.cellkit``): database, adapted models."""
    return Path(os.environ.get("CELLKIT_HOME", Path.home() / ".cellkit")).expanduser()


def user_models_dir() -> Path:
    """Models made on this machine (``cellkit adapt``): ``CELLKIT_HOME/models``; never the bundled folder."""
    return home() / "models"


def db_url() -> str:
    """SQLAlchemy URL of the analyses database (``CELLKIT_DB_URL``, default a SQLite file)."""
    url = os.environ.get("CELLKIT_DB_URL")
    if url:
        return url
    path = home() / "cellkit.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def max_upload_mb() -> int:
    """Largest upload accepted by the app (keep in step with .streamlit/config.toml)."""
    return int(os.environ.get("CELLKIT_MAX_UPLOAD_MB", "200"))
