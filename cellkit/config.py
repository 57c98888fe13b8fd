"""Where things live: weights, data, database, cache. Each can be overridden by an env variable."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def weights_dir() -> Path:
    """Bundled model weights and cards (``CELLKIT_WEIGHTS_DIR`` overrides)."""
    return Path(os.environ.get("CELLKIT_WEIGHTS_DIR") or PROJECT_ROOT / "weights")  # set but empty: the default


def data_dir() -> Path | None:
    """Default dataset root: the first of ``data_roots()`` (``CELLKIT_DATA_DIR``, else ``../shared/data``)."""
    roots = data_roots()
    return roots[0] if roots else None


def data_roots() -> list[Path]:
    """Folders whose contents may be read from the browser (the app's Dataset and Explain pages).

    ``CELLKIT_DATA_DIR`` holds one or more folders separated by ``os.pathsep`` (``:`` on Linux/macOS,
    ``;`` on Windows); unset, ``../shared/data`` when present; else none, and no folder can be opened.
    """
    env = os.environ.get("CELLKIT_DATA_DIR")
    if env:
        return [Path(part).expanduser() for part in env.split(os.pathsep) if part.strip()]
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return [shared] if shared.is_dir() else []


def resolve_data_path(path: str | os.PathLike) -> Path:
    """A user-typed folder or file, resolved (symlinks and ``..``), if it lies inside a data root.

    Raises CellkitError for anything outside ``data_roots()``: ``/etc``, ``root/../..``, or a link
    inside a root that points out of it. Relative paths are taken from the working directory.
    """
    from cellkit.errors import CellkitError

    text = str(path).strip()
    if not text or "\x00" in text:
        raise CellkitError("give a folder path inside the data folder (CELLKIT_DATA_DIR)")
    roots = data_roots()
    if not roots:
        raise CellkitError(
            "no data folder is configured, so no folder can be opened here; set CELLKIT_DATA_DIR to the "
            f"folder(s) holding your datasets (several separated by {os.pathsep!r})"
        )
    try:
        resolved = Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13), an unreadable parent
        if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
            raise CellkitError(f"{text} is a symbolic link loop; choose another folder") from None
        why = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise CellkitError(f"cannot open {text} ({why}); choose another folder") from None
    for root in roots:
        try:
            base = root.resolve()
        except (OSError, RuntimeError):
            continue
        if resolved == base or resolved.is_relative_to(base):
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise CellkitError(
        f"this path is outside the data folder(s) {allowed}; only folders inside CELLKIT_DATA_DIR can be opened"
    )


_CONFINED: ContextVar[tuple[Path, ...] | None] = ContextVar("cellkit_confined_roots", default=None)


@contextmanager
def confined_to_data_roots() -> Iterator[None]:
    """Within this block (this thread), dataset readers follow no link that leads out of :func:`data_roots`.

    The app's Dataset page reads inside it, so a class folder or image inside a data root that links to
    ``/etc`` is skipped; the command line, which may read anything its user can, is not confined.
    """
    roots = []
    for root in data_roots():
        try:
            roots.append(root.resolve())
        except (OSError, RuntimeError):
            continue
    token = _CONFINED.set(tuple(roots))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def confinement() -> tuple[Path, ...] | None:
    """The roots readers are confined to now, or None when they are not (see :func:`confined_to_data_roots`)."""
    return _CONFINED.get()


def may_follow(path: str | os.PathLike) -> bool:
    """True unless readers are confined and ``path`` (a link, a folder) really lies outside the roots."""
    roots = _CONFINED.get()
    if roots is None:
        return True
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return any(real == r or real.is_relative_to(r) for r in roots)


def cache_dir() -> Path:
    """Disk cache for dataset indexes etc. (``CELLKIT_CACHE_DIR``, default ``~/.cache/cellkit``)."""
    path = Path(os.environ.get("CELLKIT_CACHE_DIR") or Path.home() / ".cache" / "cellkit")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from cellkit.errors import CellkitError

        what = "is a file, not a folder" if path.is_file() else f"cannot be made ({exc.strerror})"
        raise CellkitError(f"cache folder {path} {what}; set CELLKIT_CACHE_DIR to a writable folder") from None
    return path


def home() -> Path:
    """The user's cellkit folder (``CELLKIT_HOME``, default ``~/.cellkit``): database, adapted models."""
    return Path(os.environ.get("CELLKIT_HOME") or Path.home() / ".cellkit").expanduser()  # empty: the default


def user_models_dir() -> Path:
    """Models made on this machine (``cellkit adapt``): ``CELLKIT_HOME/models``; never the bundled folder."""
    return home() / "models"


def db_url() -> str:
    """SQLAlchemy URL of the analyses database (``CELLKIT_DB_URL``, default a SQLite file). An in-memory SQLite
    URL is refused: every analysis "saved" there would be gone when the process ends."""
    url = os.environ.get("CELLKIT_DB_URL")
    if url:
        bare = url.strip().lower()
        if bare.startswith("sqlite") and (bare.rstrip("/") in ("sqlite:", "sqlite+pysqlite:")
                                          or ":memory:" in bare or "mode=memory" in bare):  # fmt: skip
            from cellkit.errors import CellkitError

            raise CellkitError(
                f"CELLKIT_DB_URL={url} is an in-memory database: nothing saved there outlives this process; give a "
                "file (sqlite:////path/to/cellkit.db) or a database server"
            )
        return url
    path = home() / "cellkit.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


DEFAULT_MAX_UPLOAD_MB = 200


def max_upload_mb() -> int:
    """Largest file the app accepts, in MB (``CELLKIT_MAX_UPLOAD_MB``, default 200).

    The app applies it to Streamlit's ``server.maxUploadSize`` at start and to every uploader, so
    this one variable is the setting (.streamlit/config.toml only holds the value before the app runs).
    """
    from cellkit.errors import CellkitError

    raw = os.environ.get("CELLKIT_MAX_UPLOAD_MB", "").strip()
    if not raw:
        return DEFAULT_MAX_UPLOAD_MB
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise CellkitError(f"CELLKIT_MAX_UPLOAD_MB must be a whole number of megabytes, at least 1 (got {raw!r})")
    return value


def _positive_int(name: str, default: int) -> int:
    """A positive integer from env ``name`` (``400000000``, ``400_000_000`` or ``4e8``), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw)) if any(c in raw for c in ".eE") else int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        from cellkit.errors import CellkitError

        raise CellkitError(f"{name}: expected a positive whole number, got {raw!r}")
    return value


def max_pixels() -> int:
    """Largest image accepted, in pixels, checked from the header before decoding (``CELLKIT_MAX_PIXELS``)."""
    return _positive_int("CELLKIT_MAX_PIXELS", 400_000_000)


def max_request_pixels() -> int:
    """Pixels of all images of one request (a zip, a multi-file upload) together (``CELLKIT_MAX_REQUEST_PIXELS``)."""
    return _positive_int("CELLKIT_MAX_REQUEST_PIXELS", 400_000_000)


def max_heavy_jobs() -> int:
    """Analyses / classifications run at once by one server process; more wait (``CELLKIT_MAX_HEAVY_JOBS``)."""
    return _positive_int("CELLKIT_MAX_HEAVY_JOBS", 2)


def heavy_job_timeout_s() -> int:
    """Longest wait, in seconds, for a free analysis slot before giving up (``CELLKIT_HEAVY_JOB_TIMEOUT_S``)."""
    return _positive_int("CELLKIT_HEAVY_JOB_TIMEOUT_S", 600)


IMAGE_STORES = ("files", "database", "off")


def image_store() -> str:
    """How analysed images are kept for reopening (``CELLKIT_IMAGE_STORE``): ``files`` (content-addressed PNG files
    beside the database, the default), ``database`` (blobs in the database) or ``off``."""
    mode = os.environ.get("CELLKIT_IMAGE_STORE", "files").strip().lower() or "files"
    if mode not in IMAGE_STORES:
        from cellkit.errors import CellkitError

        raise CellkitError(f"CELLKIT_IMAGE_STORE: expected one of {', '.join(IMAGE_STORES)}, got {mode!r}")
    return mode


def check() -> None:
    """Read every setting that has a rule once, so a bad value is one CellkitError at start, not one per image (or,
    for the image store, after the analyses were already saved)."""
    for read in (max_pixels, max_request_pixels, max_heavy_jobs, heavy_job_timeout_s, image_store):
        read()
