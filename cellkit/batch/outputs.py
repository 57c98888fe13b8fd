"""A batch job's folder: one result file per image, then ``summary.csv`` and ``cells.parquet`` built from them.

Layout of ``--out DIR``::

    job.json                      what the job runs (models with sha256, tiling); a re-run must match it
    results/<key[:2]>/<key>.json  one record per image, written atomically as soon as the image is done
    summary.csv                   one row per image: path,status,wbc,rbc,platelet,error, NRBC, platelets to
                                  review, differential, forms (the Slide page's figures, by its rules)
    cells.parquet                 one row per box of every image

The per-image records are the truth: summary and table are rebuilt from them (in task order) at the end of
every run, so a killed job that is run again never duplicates or loses a row.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cellkit.batch.tasks import Task
from cellkit.errors import CellkitError
from cellkit.writes import atomic_write, atomic_write_bytes, atomic_write_text

SUMMARY_FIRST = ["path", "status", "wbc", "rbc", "platelet", "error"]
CELL_FIRST = ["path", "key", "box"]
TEXT_COLUMNS = ("rbc_forms_withheld",)  # summary columns of text among the counts (never filled with 0)


def record_path(out: Path, key: str) -> Path:
    return out / "results" / key[:2] / f"{key}.json"


def write_record(out: Path, record: dict[str, Any]) -> None:
    """The image's record, atomically (no fallback: a job whose folder cannot be written must stop)."""
    atomic_write_text(record_path(out, record["key"]), json.dumps(record, allow_nan=True), fallback=False)


def read_record(out: Path, key: str) -> dict[str, Any] | None:
    """The record of ``key`` (None when there is none yet, or it cannot be read: the image is done again)."""
    try:
        rec = json.loads(record_path(out, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if valid_record(rec, key) else None  # not a record this version wrote: the image is done again


def valid_record(rec: Any, key: str | None = None) -> bool:
    """Whether ``rec`` has the shape this version writes and reads back (summary row, cells table, database),
    for ``key`` when given. A hand-edited or damaged record is treated as missing: its image is analysed again."""
    from cellkit.slide import SlideResult

    try:
        if not isinstance(rec, dict) or not isinstance(rec.get("source", {}), dict):
            return False
        if not isinstance(rec["key"], str) or (key is not None and rec["key"] != key):
            return False
        if not isinstance(rec["path"], str) or not isinstance(rec.get("error", ""), str):
            return False
        if rec.get("status") not in ("ok", "error") or not isinstance(rec.get("timings", {}), dict):
            return False
        field = None
        if rec["status"] == "ok":
            result = rec["result"]
            field = SlideResult.from_dict(result)
            if not _storable(field):
                return False
            counts = result.get("counts", {})
            if not all(isinstance(v, int) for v in counts.values()) or not isinstance(result.get("cells", []), list):
                return False
            if not all(isinstance(c, dict) for c in result.get("cells", [])):
                return False
        _summary_row(rec, field)  # every field the summary reads
        return True
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, CellkitError):
        return False


def _storable(r: Any) -> bool:
    """Whether a result's fields have the types the database and the outputs write (a hand-edited record's
    ``"models": {"detector": "yolo"}`` or ``"image_shape": ["480", "x"]`` read back, then failed the import)."""

    def strings(values: Iterable[Any]) -> bool:
        return all(isinstance(v, str) for v in values)

    return (
        len(r.image_shape) >= 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in r.image_shape[:2])
        and all(isinstance(m, dict) and strings(m.values()) for m in r.models.values())
        and strings(r.models)
        and isinstance(r.name, str)
        and isinstance(r.image_sha256, str)
        and strings(r.node_ids)
        and strings(r.taxonomies)
        and strings(r.groups)
        and strings(r.groups.values())
        and strings(r.corrections.values())
        and strings(r.added.values())
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in r.timings.values())
    )


def is_done(out: Path, task: Task, retry_errors: bool = False) -> bool:
    """Whether ``task`` already has a record for the same file (same size and modification time)."""
    rec = read_record(out, task.key)
    if rec is None or rec.get("source", {}).get("stamp") != task.stamp():
        return False
    return not (retry_errors and rec.get("status") == "error")


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """One row of summary.csv, by the Slide page's rules: ``wbc`` the white cells (:meth:`SlideResult.white_cells`,
    nucleated red cells apart in ``nrbc``), ``platelets_to_review`` (flagged platelet boxes that count as platelets
    until a person decides), the WBC differential (``wbc_<group>``, ``wbc_<group>_pct``) and the red-cell forms
    (``rbc_<form>``), left empty where the red cells are off the red-cell model's scale (``rbc_forms_withheld``
    says why, as the Red cells tab does)."""
    from cellkit.slide import SlideResult

    result = record.get("result") or {}
    return _summary_row(record, SlideResult.from_dict(result) if result else None)


def _summary_row(record: dict[str, Any], field: Any) -> dict[str, Any]:
    """:func:`summary_row` of a record whose result is already rebuilt (``field``; None for an error row)."""
    counts = field.reviewed_counts() if field is not None else {}
    row: dict[str, Any] = {
        "path": record["path"],
        "status": record["status"],
        "wbc": field.white_cells() if field is not None else None,
        "rbc": counts.get("rbc") if field is not None else None,
        "platelet": counts.get("platelet") if field is not None else None,
        "error": record.get("error", ""),
    }
    if field is None:
        row["seconds"] = record.get("timings", {}).get("total_s")
        return row
    for group, v in field.differential().items():
        row[f"wbc_{group}"] = v["count"]
        row[f"wbc_{group}_pct"] = v["percent"]
    nrbc = field.nrbc()
    if nrbc.get("count") is not None:
        row["nrbc"] = nrbc["count"]
        row["nrbc_per_100_wbc"] = nrbc["per_100_wbc"]
    if field.node_ids:  # classified: the platelet boxes the model flagged or called a white cell
        row["platelets_to_review"] = len(field.platelets_to_review())
    forms = record.get("rbc_forms", {})
    if forms:
        withheld = record.get("rbc_forms_withheld")
        if withheld is None:  # a record written before the rule was recorded: the red-cell model's card says
            withheld = _red_cell_scale_warning(field)
        if not isinstance(withheld, str):
            raise TypeError(f"rbc_forms_withheld: expected text, got {type(withheld).__name__}")
        row["rbc_forms_withheld"] = withheld
        for form, v in forms.items():
            row[f"rbc_{form}"] = None if withheld else v["count"]
        from cellkit.rbc_grading import red_cell_findings

        schisto = next((f for f in red_cell_findings(forms) if f.form == "schistocyte"), None)
        row["rbc_schistocyte_pct"] = schisto.percent if schisto is not None and not withheld else None
    row["seconds"] = record.get("timings", {}).get("total_s")
    return row


def _red_cell_scale_warning(field: Any) -> str:
    """The same rule for a record that did not record it, with the card of the red-cell model it names."""
    from cellkit.rbc_grading import scale_warning

    spec = _card(str(field.models.get("classifier_rbc", {}).get("name", "")))
    return scale_warning(field, spec) if spec is not None else ""


@functools.lru_cache(maxsize=16)
def _card(name: str) -> Any:
    """A model's card by name (None when it is not installed here): read once per summary, not once per row."""
    from cellkit.models import load_spec

    if not name:
        return None
    try:
        return load_spec(name)
    except CellkitError:
        return None


def write_summary(out: Path, records: Iterable[dict[str, Any]]) -> int:
    """``summary.csv`` from the records, atomically; returns the number of rows."""
    import pandas as pd

    rows = [summary_row(r) for r in records]
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c not in SUMMARY_FIRST and c != "seconds")
    frame = frame.reindex(columns=SUMMARY_FIRST + extra + ["seconds"])
    text = [c for c in extra if c in TEXT_COLUMNS]
    count_cols = ["wbc", "rbc", "platelet"] + [
        c for c in extra if c not in TEXT_COLUMNS and not c.endswith(("_pct", "_per_100_wbc"))
    ]
    ok = frame["status"] == "ok"
    withheld = ok & frame["rbc_forms_withheld"].fillna("").astype(bool) if "rbc_forms_withheld" in frame else ok & False
    for col in count_cols:  # an image without that group counts 0 of it; error rows and withheld forms stay empty
        fill = ok & ~withheld if col.startswith("rbc_") else ok
        frame.loc[fill, col] = frame.loc[fill, col].fillna(0)
        frame[col] = frame[col].astype("Int64")
    for col in text:
        frame[col] = frame[col].fillna("")
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    atomic_write_bytes(out / "summary.csv", buf.getvalue().encode(), fallback=False)
    return len(frame)


ROWS_PER_GROUP = 65_536  # cells per Parquet row group: few groups (small footer), bounded memory


def _cell_chunks(records: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The boxes of the analysed images (the records' ``cells``, as exported), in chunks of whole images."""
    chunk: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        for box, cell in enumerate(rec["result"].get("cells", [])):
            chunk.append({"path": rec["path"], "key": rec["key"], "box": box, **cell})
        if len(chunk) >= ROWS_PER_GROUP:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_cells(out: Path, records: Iterable[dict[str, Any]], node_ids: list[str]) -> int:
    """``cells.parquet``: every box of every analysed image, streamed one image at a time; returns the rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = ["path", "key", "class", "leaf", "label", "review", "corrected", "shown_as"]
    fields = [pa.field(c, pa.string()) for c in ("path", "key")] + [pa.field("box", pa.int32())]
    fields += [pa.field(c, pa.float32()) for c in ("x1", "y1", "x2", "y2")]
    fields += [pa.field("class", pa.string()), pa.field("confidence", pa.float32())]
    if node_ids:
        fields += [pa.field(c, pa.string()) for c in ("leaf", "label")]
        fields += [pa.field(c, pa.float32()) for c in ("cls_confidence", "ood_score")]
        fields += [pa.field(c, pa.string()) for c in ("review", "corrected", "shown_as")]
        fields += [pa.field(f"p_{n}", pa.float32()) for n in node_ids]
    schema = pa.schema(fields)
    total = 0

    def write(fh: Any) -> None:
        nonlocal total
        with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
            for chunk in _cell_chunks(records):
                frame = pd.DataFrame.from_records(chunk).reindex(columns=schema.names)
                for col in text:
                    if col in frame:
                        frame[col] = frame[col].fillna("").astype(str)
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                total += len(frame)

    try:
        atomic_write(out / "cells.parquet", write, fallback=False)
    except (pa.ArrowException, ValueError) as exc:
        raise CellkitError(f"cannot write {out / 'cells.parquet'}: {exc}") from None
    return total
