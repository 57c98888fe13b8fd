"""What a batch job will analyse: one :class:`Task` per image, found from files, folders, zips and lists.

Tasks are path-based (a file, or a member of a zip file), so any worker that sees the same filesystem
(a shared disk, a mounted object store) can read them. Nothing is decoded here.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cellkit.errors import CellkitError
from cellkit.io import IMAGE_SUFFIXES, is_image_name, link_problem, printable, walk_files, zip_image_names

LIST_SUFFIXES = (".txt", ".lst")  # an INPUT with one of these suffixes is a list of paths, one per line


@dataclass(frozen=True)
class Task:
    """One image of a job. ``ref`` is how it is named in every output (the path as given, ``zip/member`` for
    a zip member); ``error`` is set when it was found but cannot be read at all (a hostile zip, a broken link,
    a listed path that is not there): it becomes an error row without being opened."""

    ref: str
    path: str  # absolute path of the file on disk
    member: str = ""  # member of the zip at ``path``; "" for a plain image file
    error: str = ""

    def __post_init__(self) -> None:  # ``path`` stays as the system gave it (to open the file); names printable
        object.__setattr__(self, "ref", printable(self.ref))
        object.__setattr__(self, "error", printable(self.error))

    @property
    def key(self) -> str:
        """Stable id of the image within any job: its result file is ``results/<key[:2]>/<key>.json``."""
        raw = os.fsencode(self.path) + b"\0" + self.member.encode("utf-8", "surrogateescape")
        return hashlib.sha1(raw).hexdigest()[:20]

    def stamp(self) -> list[int] | None:
        """[size, mtime_ns] of the file now (None when it is gone): a changed file is analysed again."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return [int(st.st_size), int(st.st_mtime_ns)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Task:
        return cls(str(raw["ref"]), str(raw["path"]), str(raw.get("member", "")), str(raw.get("error", "")))


def find_tasks(inputs: Iterable[str | os.PathLike]) -> list[Task]:
    """Every image among INPUT: files, folders (recursive, sorted), zips and ``.txt``/``.lst`` lists of paths
    (relative paths taken from the list's folder; blank lines and ``#`` comments skipped). A path given on the
    command line that does not exist raises CellkitError; one inside a list becomes an error task. Each image
    appears once, however many inputs lead to it."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise CellkitError("no INPUT given; pass image files, folders, zips or a .txt list of paths")
    for p in paths:
        if not p.exists() and not p.is_symlink():
            raise CellkitError(f"{p}: no such file or folder")
    seen: set[tuple[object, str]] = set()
    tasks: list[Task] = []
    for task in _expand(paths, from_list=False):  # once per file on disk, whatever path or link led to it
        real = (_file_id(task.path) if not task.error else task.key, task.member)
        if real not in seen:
            seen.add(real)
            tasks.append(task)
    if not tasks:
        where = ", ".join(map(str, paths))
        raise CellkitError(f"no images found in {where}; expected {', '.join(IMAGE_SUFFIXES)} files or .zip archives")
    return tasks


def _file_id(path: str) -> object:
    """The file itself: device and inode (one for every symbolic or hard link to it), else its real path."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def _expand(paths: list[Path], from_list: bool) -> Iterator[Task]:
    for p in paths:
        try:
            p.lstat()
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # one bad line of a list is that line's error, not the job's end
                yield Task(f"{str(p)[:120]}…", os.path.abspath(p), error=f"{str(p)[:80]}…: file name too long")
                continue
        if p.is_symlink() and not p.exists():
            yield Task(str(p), os.path.abspath(p), error=link_problem(p))
        elif not p.exists():
            yield Task(str(p), os.path.abspath(p), error=f"{p}: listed but not found")
        elif p.is_dir():
            for f in walk_files(p):
                if f.suffix.lower() == ".zip" or is_image_name(f.name):
                    yield from _expand([f], from_list=True)
        elif p.suffix.lower() in LIST_SUFFIXES and not from_list:
            yield from _expand(_read_list(p), from_list=True)
        elif p.suffix.lower() == ".zip":
            yield from _zip_tasks(p)
        else:  # any other file given by name: read_image says what is wrong with it
            yield Task(str(p), os.path.abspath(p))


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = f"cannot read the list of paths ({exc}); expected UTF-8 text, one path per line"
        raise CellkitError(f"{path}: {why}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def _zip_tasks(path: Path) -> Iterator[Task]:
    full = os.path.abspath(path)
    try:
        members = zip_image_names(path)
    except CellkitError as exc:
        yield Task(str(path), full, error=str(exc))
        return
    for member in sorted(set(members)):
        if members.count(member) > 1:  # a worker reads a member by its name: it could only ever read the last one
            why = f"{members.count(member)} members of the zip have this name; unzip them into a folder first"
            yield Task(f"{path}/{member}", full, member, error=f"{path}/{member}: {why}")
        else:
            yield Task(f"{path}/{member}", full, member)
