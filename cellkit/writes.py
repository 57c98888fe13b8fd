"""Output files that never lose work: checked before the work, written atomically, kept on failure.

Every file cellkit writes (CLI ``--out`` reports, model weights and cards, checkpoints, caches) goes
through :func:`atomic_write`. The rules:

- :func:`check_out` runs before any heavy work: the target must not be a folder, a device, a FIFO or
  a socket, and its folder must exist (or be creatable) and be writable.
- Symbolic links are written through: the file the link points to is replaced; the link stays.
- Devices and other special files are refused, never replaced nor written to (writing to a FIFO
  blocks until someone reads; ``/dev/null`` would silently drop the results).
- The data goes to a hidden temp file in the target's folder, is flushed to disk, then ``os.replace``
  moves it over the target: readers see the old file or the whole new one, never half. The temp
  file is removed on any failure.
- When the write fails after the work was done (disk full, permission changed), the data is saved to
  a fallback file under ``CELLKIT_HOME/unsaved`` (else the system temp folder) and the CellkitError
  says where.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from cellkit import config
from cellkit.errors import CellkitError

Writer = Callable[[BinaryIO], object]


def _problem(target: Path) -> str | None:
    """Why ``target`` (symlinks already followed) cannot be replaced by a regular file, or None."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # a file in the way of the folder: reported by the folder check
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder; give a file name inside it"
    if not stat.S_ISREG(st.st_mode):
        return "is a device, FIFO or socket, not a regular file; refusing to write to it"
    return None


def output_target(path: str | os.PathLike) -> Path:
    """The regular file a write to ``path`` replaces (symlinks followed); CellkitError for folders and devices."""
    target = Path(os.path.realpath(Path(path).expanduser()))
    why = _problem(target)
    if why:
        raise CellkitError(f"{path}: {why}")
    return target


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (which may not exist yet), or None."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    probe = existing / f".cellkit-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        return f"folder {existing} is not writable ({exc.strerror})"
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def check_out(path: str | os.PathLike, option: str = "--out", inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check an output file before the work starts; returns the file that will be written.

    Raises CellkitError (one line naming ``option`` and the fix) when ``path`` is a folder, a device,
    FIFO or socket, lies in a folder that cannot be created or written, or would replace one of the
    ``inputs`` (an input file itself, or an existing image inside an input folder).
    """
    given = Path(path).expanduser()
    target = Path(os.path.realpath(given))
    dangling = given.is_symlink() and not target.parent.is_dir()  # never create folders where a link points
    why = (
        f"it is a symbolic link to {target}, whose folder does not exist"
        if dangling
        else _problem(target) or folder_problem(target.parent) or _input_problem(target, inputs)
    )
    if why:
        raise CellkitError(f"{option} {path}: {why}; choose a writable file path")
    return target


def _input_problem(target: Path, inputs: Sequence[str | os.PathLike]) -> str | None:
    """Why writing ``target`` would destroy an input, or None."""
    from cellkit.io import IMAGE_SUFFIXES

    for given in inputs or ():
        source = Path(os.path.realpath(Path(given).expanduser()))
        if source == target:
            return "it is one of the inputs and would be overwritten"
        inside = source.is_dir() and target.is_relative_to(source)
        if inside and target.suffix.lower() in IMAGE_SUFFIXES and target.exists():
            return f"it is an input image in {given} and would be overwritten"
    return None


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check an output folder before the work starts (not a file, creatable, writable)."""
    folder = Path(path).expanduser()
    why = f"{folder} is a file, not a folder" if folder.exists() and not folder.is_dir() else folder_problem(folder)
    if why:
        raise CellkitError(f"{option} {path}: {why}; choose a writable folder")
    return folder


def _replace(target: Path, write: Writer, mode: int | None) -> None:
    """Write ``target`` via a temp file beside it and os.replace; the temp file never outlives a failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        keep = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        keep = None
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None or keep is not None:
            os.chmod(tmp, mode if mode is not None else keep)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fallback_dirs() -> list[Path]:
    """Where results go when their own path cannot be written: CELLKIT_HOME/unsaved, then the temp folder."""
    return [config.home() / "unsaved", Path(tempfile.gettempdir()) / "cellkit-unsaved"]


def _save_fallback(name: str, write: Writer, mode: int | None) -> tuple[Path | None, str]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    reason = ""
    for folder in fallback_dirs():
        target = folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(2)}-{name or 'output'}"
        try:
            _replace(target, write, mode)
            return target, ""
        except OSError as exc:
            reason = exc.strerror or str(exc)
    return None, reason


def save_unsaved(name: str, data: bytes) -> Path | None:
    """Keep ``data`` that has no file of its own yet (an interrupted command's finished part) under
    :func:`fallback_dirs`; the path written, or None when no folder could take it."""
    return _save_fallback(name, lambda fh: fh.write(data), None)[0]


def atomic_write(path: str | os.PathLike, write: Writer, *, fallback: bool = True, mode: int | None = None) -> Path:
    """Write a file with ``write(binary_file)`` so that nothing is ever half-written or lost.

    Symlinks are written through; folders and devices are refused. On failure the temp file is
    removed and a CellkitError is raised; with ``fallback`` the data is first saved under
    :func:`fallback_dirs` and the message says where. ``mode`` sets the file's permissions (default:
    those of the file replaced, else the umask's). Returns the file written.
    """
    try:
        target = output_target(path)
        _replace(target, write, mode)
        return target
    except (OSError, CellkitError) as exc:
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            message = f"cannot write {path}: {reason}"
        else:
            message = str(exc) if str(exc).startswith("cannot write") else f"cannot write {exc}"
    if not fallback:
        raise CellkitError(message)
    saved, why = _save_fallback(Path(path).name, write, mode)
    if saved is not None:
        raise CellkitError(f"{message}; the results were saved to {saved}")
    raise CellkitError(f"{message}; the fallback copy failed too ({why}), so nothing was saved")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fallback: bool = True, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), fallback=fallback, mode=mode)


def atomic_write_text(path: str | os.PathLike, text: str, *, fallback: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fallback=fallback)
