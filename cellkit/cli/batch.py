"""``cellkit batch`` (resumable analysis of whole archives) and ``cellkit import`` (a job into the database).

Exit codes: 0 every image analysed; 1 some images failed (error rows in summary.csv) or the database
import failed; 2 nothing was done (bad option, no input, an unwritable --out, a job folder of other settings).
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import typer

from cellkit.cli._file_errors import FileErrors


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``batch`` and ``import`` to the cellkit app."""

    @app.command("batch")
    def batch_command(
        inputs: list[Path] = typer.Argument(None, help="Images, folders (recursive), zips or .txt lists of paths."),
        out: Path = typer.Option(..., "--out", "-o", help="Job folder: per-image results, summary.csv, cells.parquet."),
        engine: str = typer.Option("local", help="local (process pool) or ray (Ray Data; optional extra)."),
        workers: int = typer.Option(1, help="Worker processes (local) or actors (ray)."),
        threads: int = typer.Option(None, min=1, max=256, help="Torch threads per worker (default: cores / workers)."),
        address: str = typer.Option(
            None, help="Ray cluster, e.g. ray://host:10001 (default: RAY_ADDRESS, else local)."
        ),
        classify: bool = typer.Option(True, "--classify/--no-classify", help="Classify cells, or detect and count."),
        detector: str = typer.Option(None, help="Detector name (default: bundled)."),
        classifier: str = typer.Option(
            None, "--classifier", "--model", help="White-cell classifier (default: bundled)."
        ),
        rbc_model: str = typer.Option(None, "--rbc-model", help="Red-cell model (default: bundled; 'none': off)."),
        tile: int = typer.Option(None, help="Tile side in pixels for large images (default: model card)."),
        overlap: int = typer.Option(None, help="Tile overlap in pixels (default: model card)."),
        retry_errors: bool = typer.Option(False, "--retry-errors", help="Analyse images that failed before again."),
        save: bool = typer.Option(False, "--save", help="Then import the finished job into the database."),
        owner: str = typer.Option(None, help="Owner of the imported job (default: your user name)."),
    ) -> None:
        """Analyse whole archives: one result per image as soon as it is done; a re-run resumes."""
        from tqdm import tqdm

        from cellkit.batch import find_tasks, job_settings, run_batch
        from cellkit.cli.slide import _check_tiling
        from cellkit.pipeline import resolve_models

        _check_tiling(tile, overlap, detector)
        tasks = find_tasks(inputs or [])
        settings = job_settings(resolve_models(classify, detector, classifier, rbc_model), tile, overlap)
        store = _store(save)
        bar: dict[str, Any] = {}

        def started(todo: int, skipped: int) -> None:
            if skipped:
                typer.echo(f"{skipped} of {len(tasks)} image(s) already done in {out}; skipping them", err=True)
            bar["bar"] = tqdm(total=todo, desc="images", unit="img", leave=False)

        errors = FileErrors(f"{out}/summary.csv")

        def done(row: dict[str, Any]) -> None:
            if row["status"] == "error":
                errors(row["path"], row["error"])
            bar["bar"].update()

        try:
            report = run_batch(
                tasks, out, settings, engine=engine, workers=workers, threads=threads, address=address,
                retry_errors=retry_errors, command=" ".join(["cellkit", *sys.argv[1:]]), on_start=started, on_done=done,
            )  # fmt: skip
        finally:
            if "bar" in bar:
                bar["bar"].close()
            errors.close()
        rate = f" ({report.images_per_s:.2f} img/s)" if report.analysed else ""
        earlier = report.failed - report.failed_now  # error rows of images skipped as done before
        kept = f" ({earlier} of them with errors kept; --retry-errors tries them again)" if earlier else ""
        typer.echo(
            f"{report.succeeded_now} analysed now{rate}, {report.failed_now} failed, {report.skipped} skipped as done "
            f"before{kept}; {report.summary} and {report.cells} ({report.n_cells} cells)",
            err=True,
        )
        if store is not None:
            _import(out, store, owner)
        if report.failed:
            raise typer.Exit(1)

    @app.command("import")
    def import_command(
        job: Path = typer.Argument(..., help="A job folder written by `cellkit batch --out`."),
        owner: str = typer.Option(None, help="Owner of the imported job (default: your user name)."),
    ) -> None:
        """Load a batch job's finished images into the database (again: only what is new)."""
        _import(job, _store(True), owner)


def _store(save: bool) -> Any:
    if not save:
        return None
    from cellkit.store import Store

    store = Store()
    store.check()  # a database that is down or read-only fails now, before the work
    return store


def _import(out: Path, store: Any, owner: str | None) -> None:
    from cellkit.batch import import_job
    from cellkit.store import StoreError

    try:
        job_id, added, total, unreadable, dropped = import_job(out, store, owner or getpass.getuser())
    except StoreError as exc:
        typer.echo(f"error: {exc}; the results stay in {out}: run `cellkit import {out}` again", err=True)
        raise typer.Exit(1) from None
    gone = f"; {dropped} no longer in the job's last run taken out of it" if dropped else ""
    typer.echo(f"batch job #{job_id}: {added} image(s) stored now, {total} in the job{gone}", err=True)
    if unreadable:  # never a silent gap: the records are named, and the exit code says the import is incomplete
        shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        typer.echo(
            f"error: {len(unreadable)} result file(s) could not be read and were not stored ({shown}); run "
            f"`cellkit batch ... --out {out}` again to redo those images, then `cellkit import {out}`",
            err=True,
        )
        raise typer.Exit(1)
