"""Run a batch job: check the folder, skip what is done, run an engine, rebuild the summary and the table.

``run_batch`` is what ``cellkit batch`` calls. A job folder holds one job: ``job.json`` records its
models (names and sha256) and tiling, and a re-run with other settings is refused rather than mixing
results of two models in one table. One run at a time per folder (a lock that dies with the process).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellkit.batch.engines import ENGINES, default_threads, run_local, run_ray
from cellkit.batch.outputs import is_done, read_record, write_cells, write_summary
from cellkit.batch.tasks import Task
from cellkit.errors import CellkitError
from cellkit.pipeline import ModelChoice
from cellkit.writes import atomic_write_text, check_out_dir

JOB_FILE = "job.json"
MANIFEST_FILE = "tasks.txt"  # the keys of the last run's images: what summary.csv lists and an import stores
COMPARED = ("models", "tile", "overlap")  # what a re-run must share with the job in the folder


@dataclass
class BatchReport:
    """What a run did: images found, skipped (done before), analysed now (tried, failed ones included), failed (all
    error rows, earlier runs' too), seconds; ``errors``: this run's failures (see :attr:`failed_now`)."""

    found: int
    skipped: int
    analysed: int
    failed: int
    seconds: float
    summary: Path
    cells: Path
    n_cells: int
    errors: list[str] = field(default_factory=list)

    @property
    def failed_now(self) -> int:
        """Images of this run that failed (error rows written now)."""
        return len(self.errors)

    @property
    def succeeded_now(self) -> int:
        """Images of this run that were analysed without an error."""
        return self.analysed - self.failed_now

    @property
    def images_per_s(self) -> float:
        return self.analysed / self.seconds if self.seconds > 0 else 0.0


def job_settings(choice: ModelChoice, tile: int | None = None, overlap: int | None = None) -> dict[str, Any]:
    return {"models": choice.to_dict(), "tile": tile, "overlap": overlap}


def read_job(out: Path) -> dict[str, Any] | None:
    path = out / JOB_FILE
    if not path.exists():
        return None
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CellkitError(f"{path}: unreadable job file ({exc}); use another --out folder") from None
    if not isinstance(job, dict) or not isinstance(job.get("settings"), dict):
        raise CellkitError(f"{path}: not a cellkit job file (no settings); use another --out folder")
    if not isinstance(job.get("job_id"), str) or not job["job_id"].strip():
        raise CellkitError(f"{path}: not a cellkit job file (no job_id); use another --out folder")
    return job


def read_manifest(out: Path) -> set[str] | None:
    """The keys of the images of the job's last run (``tasks.txt``), or None for a folder written before it."""
    path = out / MANIFEST_FILE
    try:
        keys = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CellkitError(f"{path}: unreadable list of the job's images ({exc}); run the batch again") from None
    if not keys:  # emptied by hand: never a reason to take every image out of the stored job
        raise CellkitError(f"{path}: the list of the job's images is empty; run the batch again to rewrite it")
    return keys


def _describe(key: str, value: Any) -> str:
    if key != "models" or not isinstance(value, dict):
        return str(value)
    names = [value.get(r) for r in ("detector", "classifier", "rbc_model") if value.get(r)]
    return " + ".join(names)


def _check_same(old: dict[str, Any], settings: dict[str, Any], out: Path) -> None:
    for key in COMPARED:
        was, now = old["settings"].get(key), settings.get(key)
        if was != now:
            what = f"other {key} ({_describe(key, was)}; now {_describe(key, now)})"
            if _describe(key, was) == _describe(key, now):
                what = "the same model names but other weights (sha256)"
            raise CellkitError(
                f"--out {out} holds a job run with {what}; "
                "re-run with the same options to resume it, or choose a new --out folder"
            )


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    try:
        fh = open(out / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    except OSError as exc:  # a folder or an unwritable file where the lock goes
        raise CellkitError(f"--out {out}: cannot use its lock file .lock ({exc.strerror}); remove it") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CellkitError(f"--out {out}: another batch run is using this folder; wait for it to finish") from None
        yield
    finally:
        fh.close()


def _clean_temp(out: Path) -> None:
    """Temp files of records whose writer was killed mid-write (never a whole record)."""
    for tmp in (out / "results").glob("*/.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def run_batch(
    tasks: Sequence[Task],
    out: str | os.PathLike,
    settings: dict[str, Any],
    *,
    engine: str = "local",
    workers: int = 1,
    threads: int | None = None,
    address: str | None = None,
    retry_errors: bool = False,
    command: str = "",
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    models: Any = None,
) -> BatchReport:
    """Analyse every task not done yet into ``out``, then rebuild ``summary.csv`` and ``cells.parquet``.

    ``on_start(to_do, skipped)`` is called once before the work, ``on_done(status_row)`` per image.
    ``models`` (already loaded) is used by the in-process local worker only.
    """
    if engine not in ENGINES:
        raise CellkitError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if workers < 1:
        raise CellkitError(f"--workers: expected 1 or more, got {workers}")
    if threads is not None and threads < 1:
        raise CellkitError(f"--threads: expected 1 or more, got {threads}")
    out = Path(os.path.abspath(check_out_dir(out)))
    try:
        (out / "results").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise CellkitError(f"--out {out}: cannot create the folder ({why}); choose a writable folder") from None
    threads = threads or default_threads(workers)
    with _locked(out):
        old = read_job(out)
        if old is not None:
            _check_same(old, settings, out)
        job = old or {"job_id": uuid.uuid4().hex, "created": datetime.now(UTC).isoformat(timespec="seconds")}
        job.update(settings=settings, command=command or job.get("command", ""))
        atomic_write_text(out / JOB_FILE, json.dumps(job, indent=2), fallback=False)
        _clean_temp(out)
        # before the work: an import during the run, or after it was killed, knows this run's images
        atomic_write_text(out / MANIFEST_FILE, "".join(f"{t.key}\n" for t in tasks), fallback=False)
        todo = [t for t in tasks if not is_done(out, t, retry_errors)]
        skipped = len(tasks) - len(todo)
        if on_start:
            on_start(len(todo), skipped)
        t0 = time.perf_counter()
        failed_now: list[str] = []

        def done(row: dict[str, Any]) -> None:
            if row["status"] == "error":
                failed_now.append(row["error"])
            if on_done:
                on_done(row)

        if todo:
            if engine == "local":
                run_local(todo, str(out), settings, workers, threads, done, models=models)
            else:
                run_ray(todo, str(out), settings, workers, threads, done, address=address)
        seconds = time.perf_counter() - t0
        records = _records(out, tasks)
        write_summary(out, records())
        failed = sum(1 for r in records() if r["status"] == "error")
        n_cells = write_cells(out, records(), _node_ids(records()))
    return BatchReport(
        len(tasks), skipped, len(todo), failed, seconds, out / "summary.csv", out / "cells.parquet", n_cells, failed_now
    )


def _records(out: Path, tasks: Sequence[Task]) -> Callable[[], Iterator[dict[str, Any]]]:
    """A re-iterable view of the tasks' records, read one at a time (a task without one is an error row)."""

    def gen() -> Iterator[dict[str, Any]]:
        for task in tasks:
            rec = read_record(out, task.key)
            yield rec or {"key": task.key, "path": task.ref, "status": "error", "error": f"{task.ref}: not analysed"}

    return gen


def _node_ids(records: Iterator[dict[str, Any]]) -> list[str]:
    for rec in records:
        if rec.get("status") == "ok" and rec["result"].get("node_ids"):
            return list(rec["result"]["node_ids"])
    return []
