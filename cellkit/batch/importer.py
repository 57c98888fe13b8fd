"""Load a batch job's finished records into the database: one writer, in chunks, idempotently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from cellkit.batch.job import read_job, read_manifest
from cellkit.errors import CellkitError

CHUNK = 100  # images per transaction: a failure loses at most one chunk's transaction, never half of one


def _records(out: Path) -> list[Path]:
    return sorted((out / "results").glob("*/*.json"))


class Imported(NamedTuple):
    """What an import did: the job's id in the database, images added now, records in the job, and the records
    that could not be read (``results/...json`` paths; the next ``cellkit batch`` run of the job redoes them)."""

    job_id: int
    added: int
    total: int
    unreadable: list[str]
    dropped: int = 0  # images stored by an earlier import that the job's last run no longer holds: taken out


def import_job(
    out: str | Path, store: Any, owner: str, *, chunk: int = CHUNK, progress: Callable[[int, int], None] | None = None
) -> Imported:
    """Import every record of the job folder ``out`` (see :class:`Imported`).

    Run it again after more images finished (or after a failure): images already stored are skipped.
    """
    import json

    from cellkit.slide import SlideResult

    out = Path(out)
    job = read_job(out)
    if job is None:
        raise CellkitError(f"{out}: not a batch job folder (no job.json); run `cellkit batch ... --out {out}` first")
    job = {**job, "folder": str(out.resolve())}
    from cellkit.batch.outputs import valid_record

    files = _records(out)
    current = read_manifest(out)  # None: a folder of an older version, every record is the job's
    if current is not None:  # records of images the last run no longer has (a renamed or narrowed input): not stored
        files = [f for f in files if f.stem in current]
    job_id, added, unreadable = 0, 0, []
    seen: set[str] = set()
    for start in range(0, len(files), chunk):
        items: list[dict[str, Any]] = []
        for path in files[start : start + chunk]:
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
                ok = valid_record(rec, path.stem) and rec["key"] not in seen  # a copy under another name: once
                result = SlideResult.from_dict(rec["result"]) if ok and rec.get("status") == "ok" else None
            except (OSError, ValueError, KeyError, TypeError, AttributeError, CellkitError):
                ok = False
            if not ok:  # unreadable or not a record: said, and analysed again by the next run of the job
                unreadable.append(str(path.relative_to(out)))
                continue
            seen.add(rec["key"])
            source = rec.get("source", {})
            items.append(
                {
                    **{k: rec.get(k, "") for k in ("key", "path", "status", "error")},
                    "source": source.get("path", ""),
                    "member": source.get("member", ""),
                    "result": result,
                    "stamp": json.dumps([source.get("stamp"), rec.get("finished")]),  # a re-analysed image differs
                }
            )
        job_id, n = store.save_batch_items(job, owner, items)
        added += n
        if progress:
            progress(min(start + chunk, len(files)), len(files))
    if not files:
        job_id, _ = store.save_batch_items(job, owner, [])
    dropped = store.prune_batch_items(job, owner, current) if current is not None else 0
    return Imported(job_id, added, len(files), unreadable, dropped)
