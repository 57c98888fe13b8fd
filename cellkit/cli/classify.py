"""CLI command ``cellkit classify INPUT... --out preds.csv``.

One CSV row per image found (files, folders searched recursively, zips): ``path`` (as found),
``leaf`` (argmax leaf id: the best guess), ``label`` (deepest confident node id, or ``unknown`` when the
cell is flagged for review), ``confidence``, ``ood_score``, ``review`` (why it was flagged),
``p_<node id>`` for every node of the tree, and ``error`` (empty when the image was classified).
Exit codes: 0 when at least one image was classified (unreadable ones are listed on stderr);
1 when nothing could be classified (no images, or all unreadable); 2 for a missing input or model.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import typer

from cellkit.cli._file_errors import FileErrors


def classify_command(
    inputs: list[Path] = typer.Argument(..., help="image files, folders (searched recursively) or .zip archives"),
    out: Path = typer.Option(None, "--out", "-o", help="CSV to write (default: print the CSV to stdout)"),
    model: str = typer.Option(
        None,
        "--model",
        help="classifier name, bundled or adapted (default: this machine's default, see `cellkit models`)",
    ),
    batch_size: int = typer.Option(64, min=1, help="crops per forward pass"),
    threads: int = typer.Option(0, min=0, max=256, help="torch threads (0 = torch's default)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on stderr"),
) -> None:
    """Classify white-cell crops framed any way: each is re-framed around its central cell first."""
    import torch
    from tqdm import tqdm

    from cellkit.classify import load_classifier
    from cellkit.cli.slide import _out_format
    from cellkit.errors import CellkitError
    from cellkit.io import atomic_write_bytes, check_out, iter_images
    from cellkit.results_table import classify_items, finished_rows, result_columns
    from cellkit.writes import save_unsaved

    if out:
        check_out(out, inputs=inputs)  # before any work: a folder, device or unwritable path fails now, not after
        _out_format(out, ("csv",))  # the one format it writes: a CSV named result.png was written as asked
    if threads:
        torch.set_num_threads(threads)
    items = iter_images(inputs)  # raises CellkitError (exit 2) for a missing path before reading
    first = next(items, None)
    clf = load_classifier(model)
    if "wbc" not in (clf.spec.applies_to or ["wbc"]):  # a red-cell model's framing and classes are not white cells
        raise CellkitError(
            f"--model {clf.spec.name}: it classifies {', '.join(clf.spec.applies_to)} boxes, not white-cell crops; "
            "give a white-cell model (`cellkit analyze` classifies red cells on whole smears)"
        )
    bar = tqdm(desc="classifying", unit="img", file=sys.stderr, disable=not progress)
    columns = result_columns(clf.taxonomy)
    rows: list[dict] = []
    try:
        classify_items(clf, _chain(first, items), batch_size=batch_size, progress=bar.update, rows=rows)
    except KeyboardInterrupt:  # Ctrl-C: what was finished is kept, never the --out file (it would look complete)
        bar.close()
        done = finished_rows(rows)
        name = f"{Path(out).stem if out else 'classify'}.partial.csv"
        kept = save_unsaved(name, _csv(columns, done)) if done else None
        if kept is not None:
            typer.echo(f"interrupted: the {len(done)} image(s) finished so far were saved to {kept}", err=True)
        raise
    bar.close()
    table = _csv(columns, rows)
    if out:
        atomic_write_bytes(out, table)
    else:
        sys.stdout.write(table.decode("utf-8"))
    errors = [r for r in rows if r["error"]]
    report = FileErrors(str(out) if out else "the CSV's error column")
    for r in errors:
        report(r["path"], r["error"])
    report.close()
    done = len(rows) - len(errors)
    if out:
        typer.echo(f"classified {done} of {len(rows)} images -> {out}", err=True)
    if done == 0:
        typer.echo("error: no image could be classified" + ("" if rows else " (no images found)"), err=True)
    if errors or done == 0:  # like detect and analyze: any file that failed makes the exit code 1
        raise typer.Exit(1)


def _csv(columns: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _chain(first, rest):
    if first is not None:
        yield first
        yield from rest


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this module's commands to the cellkit app."""
    app.command("classify")(classify_command)
