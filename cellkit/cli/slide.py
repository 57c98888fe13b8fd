"""``cellkit detect`` (boxes per image) and ``cellkit analyze`` (boxes + classification + counts).

INPUT may be files, folders (recursive) or zips. One unreadable file in a batch gives an error row
(and a line on stderr); the others are still processed, and the exit code is 1. An image without
any box still gets one CSV row (only ``path`` filled), so every image found is accounted for.
Errors that stop everything (no input, no image found, a bad option, an ``--out`` that cannot be
written, no model) give one line on stderr and exit code 2, before any image is processed.
"""

from __future__ import annotations

import getpass
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from cellkit.cli._file_errors import FileErrors
from cellkit.errors import CellkitError

BOX_COLUMNS = ["path", "x1", "y1", "x2", "y2", "class", "confidence"]
TILE_RANGE = (64, 8192)  # pixels: below, cells no longer fit a tile; above, one tile's memory is too large


def _out_format(out: Path, allowed: tuple[str, ...], option: str = "--out") -> str:
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in allowed:
        raise CellkitError(f"{option} {out}: expected a {' or '.join('.' + a for a in allowed)} file name")
    return suffix


def _models(
    classify: bool, detector: str | None, classifier: str | None, rbc_model: str | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The detector, the white-cell classifier and {detector class: model} for the other classes: the red-cell
    model named by ``rbc_model`` ("none": no red-cell labels), else the bundled one when there is one."""
    from cellkit.pipeline import load_models, resolve_models

    models = load_models(resolve_models(classify, detector, classifier, rbc_model))
    return models.detector, models.classifier, models.by_class


def _check_inputs(inputs: list[Path] | None) -> Iterator[Any]:
    """The images of INPUT, lazily; CellkitError when INPUT is missing or holds no image at all."""
    from cellkit.io import IMAGE_SUFFIXES, iter_images

    if not inputs:
        raise CellkitError("no INPUT given; pass image files, folders or zips")
    for p in inputs:
        if not p.exists():
            raise CellkitError(f"{p}: no such file or folder")
    items = iter_images(inputs)
    first = next(items, None)
    if first is None:
        where = ", ".join(map(str, inputs))
        raise CellkitError(f"no images found in {where}; expected {', '.join(IMAGE_SUFFIXES)} files or .zip archives")
    return _chain(first, items)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _check_tiling(tile: int | None, overlap: int | None, detector: str | None = None) -> None:
    """Refuse tile sizes that would miss cells or exhaust memory, and overlaps of half a tile or more (of the
    detector card's own tile when ``--tile`` is left out: a job run with a bad overlap kept its folder stuck)."""
    lo, hi = TILE_RANGE
    if tile is not None and not lo <= tile <= hi:
        raise CellkitError(f"--tile: expected {lo} to {hi} pixels (or leave it out for the model's own), got {tile}")
    if overlap is None:
        return
    if overlap < 0:
        raise CellkitError(f"--overlap: expected 0 or more pixels, got {overlap}")
    side = tile if tile is not None else _card_tile(detector)
    if side is not None and 2 * overlap >= side:
        raise CellkitError(f"--overlap: expected below half the tile ({side // 2}) pixels, got {overlap}")


def _card_tile(detector: str | None) -> int | None:
    """The tile side of the detector's card (None when its card cannot be read: loading it says why later)."""
    from cellkit.models import default_spec, load_spec

    try:
        spec = load_spec(detector) if detector is not None else default_spec("detector")
    except CellkitError:
        return None
    return int(spec.card.get("tile", 640))


def _readable(items: Iterator[Any], errors: FileErrors, *sinks: list[dict[str, Any]]) -> Iterator[Any]:
    """Readable images among ``items`` (with a progress bar); each unreadable one goes to ``errors`` and every sink."""
    from tqdm import tqdm

    for item in tqdm(items, desc="images", unit="img", leave=False):
        if item.error:
            errors(item.name, item.error)
            for sink in sinks:
                sink.append({"path": item.name, "error": item.error})
            continue
        yield item


def _csv_bytes(rows: list[dict[str, Any]], first: list[str]) -> bytes:
    import pandas as pd

    frame = pd.DataFrame(rows)
    cols = first + [c for c in frame.columns if c not in first and c != "error"] + ["error"]
    frame = frame.reindex(columns=cols)
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _write_csv(rows: list[dict[str, Any]], out: Path, first: list[str]) -> None:
    from cellkit.io import atomic_write_bytes

    atomic_write_bytes(out, _csv_bytes(rows, first))


def _keep_interrupted(out: Path, fmt: str, reports: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Ctrl-C in ``analyze``: the images analysed so far go to ``CELLKIT_HOME/unsaved/``, never to ``--out`` (a
    partial report there would look complete); says where, on stderr."""
    from cellkit.writes import save_unsaved

    done = [r for r in reports if "error" not in r]
    if not done:
        return
    if fmt == "csv":
        data = _csv_bytes(rows, BOX_COLUMNS)
    else:
        buf = io.BytesIO()
        _dump_json(reports, buf)
        data = buf.getvalue()
    kept = save_unsaved(f"{out.stem}.partial.{fmt}", data)
    stored = sum(1 for r in done if "analysis_id" in r)
    note = f"; {stored} of them are in the database" if stored else ""
    if kept is not None:
        typer.echo(f"interrupted: the {len(done)} image(s) analysed so far were saved to {kept}{note}", err=True)


def _case_for(store: Any, owner: str, name: str, target_wbc: int) -> tuple[int, list[Any], int]:
    """The database case of ``--case NAME``: the owner's open case of that name when there is one (a re-run adds
    to it, never a second case of the name), else a new one. Returns its id, its fields stored before ((id, result)
    pairs) and its target; a case of that name that is signed off is refused (amend it to add fields)."""
    found = store.find_case(owner, name)
    if found is None:
        return store.create_case(owner, name, target_wbc), [], target_wbc
    if found["status"] != "open":
        raise CellkitError(
            f"--case {name}: your case of that name is signed off (version {found['version']}); amend it on the "
            "Slide page to add fields, or give another --case name"
        )
    note = f"note: adding to your open case {found['name']} (#{found['id']}, {found['fields']} field(s) stored)"
    if found["target_wbc"] != target_wbc:
        note += f"; its target stays {found['target_wbc']} white cells"
    typer.echo(note, err=True)
    return found["id"], store.case_fields(found["id"], owner), found["target_wbc"]


def _stored_before(
    store: Any, owner: str, case_id: int | None, case: str | None, digest: str, versions: dict, name: str
) -> tuple[int, Any] | None:
    """(id, result) of this image's analysis stored before, said on stderr, or None (analyse and store it). In a
    case: its field of these pixels (an image is one field of a case). Else: the owner's analysis of these pixels
    by the same models. The stored result is reported, with any review made of it."""
    from cellkit.store import StoreError

    try:
        if case_id is not None:
            aid = store.find_field(case_id, owner, digest)
            what = f"already field #{aid} of case {case}"
        else:
            aid = store.find_analysis(owner, digest, versions)
            what = f"stored before with the same models (analysis #{aid})"
        if aid is None:
            return None
        result = store.load_analysis(aid, owner)
    except StoreError:  # the save that follows asks the database again and says what is wrong
        return None
    typer.echo(f"note: {name} is {what}: not analysed or stored again", err=True)
    return aid, result


def _stored_image(store: Any, sha256: str) -> Any:
    """A stored field's pixels for its report thumbnails, or None when they are not kept (or cannot be read)."""
    try:
        return store.load_image(sha256)
    except CellkitError:
        return None


def _dump_json(obj: Any, fh: Any) -> None:
    """Indented JSON streamed into a binary file, never held whole as one string."""
    text = io.TextIOWrapper(fh, encoding="utf-8", write_through=True)
    json.dump(obj, text, indent=2)
    text.write("\n")
    text.detach()  # leave the file open: atomic_write closes it


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``detect`` and ``analyze`` to the cellkit app."""

    @app.command("detect")
    def detect(
        inputs: list[Path] = typer.Argument(None, help="Image files, folders or zips."),
        out: Path = typer.Option(..., "--out", "-o", help="CSV file to write (one row per box)."),
        classify: bool = typer.Option(False, "--classify", help="Also classify wbc/platelet boxes."),
        detector: str = typer.Option(None, help="Detector name in the weights folder (default: bundled)."),
        classifier: str = typer.Option(
            None,
            "--classifier",
            "--model",
            help="Classifier name, bundled or adapted (with --classify).",
        ),
        rbc_model: str = typer.Option(
            None,
            "--rbc-model",
            help="Red-cell morphology model (with --classify; default: the bundled one; 'none': off).",
        ),
        tile: int = typer.Option(None, help="Tile side in pixels for large images (default: model card)."),
        overlap: int = typer.Option(None, help="Tile overlap in pixels (default: model card)."),
    ) -> None:
        """Find cells: one CSV row per box (path, x1, y1, x2, y2, class, confidence[, leaf, label, p_<node>])."""
        from cellkit.io import check_out
        from cellkit.slide import analyze, detect_tiled

        _out_format(out, ("csv",))
        _check_tiling(tile, overlap, detector)
        check_out(out, inputs=inputs)
        items = _check_inputs(inputs)
        det, clf, by_class = _models(classify, detector, classifier, rbc_model)
        rows: list[dict[str, Any]] = []
        errors = FileErrors(str(out))
        for item in _readable(items, errors, rows):
            image = item.take()
            if clf is None:
                dets = detect_tiled(image, det, tile, overlap)
                del image
                frame_rows = [
                    {"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3], "class": c, "confidence": p}
                    for b, c, p in zip(
                        dets.xyxy.round(2).tolist(), dets.class_name, dets.confidence.round(4).tolist(), strict=True
                    )
                ]
            else:
                result = analyze(image, det, clf, tile, overlap, name=item.name, by_class=by_class)
                del image
                frame = result.to_frame().drop(columns=["cls_confidence", "ood_score", "corrected"], errors="ignore")
                frame_rows = frame.to_dict(orient="records")
            rows.extend({"path": item.name, **r} for r in frame_rows or [{}])  # no box: one row, path only
        _write_csv(rows, out, BOX_COLUMNS + (["leaf", "label"] if clf is not None else []))
        errors.close()
        failed = sum(1 for r in rows if "error" in r)
        n_boxes = sum(1 for r in rows if "x1" in r)
        typer.echo(f"{n_boxes} boxes written to {out}" + (f" ({failed} file(s) failed)" if failed else ""), err=True)
        if failed:
            raise typer.Exit(1)

    @app.command("analyze")
    def analyze_cmd(
        inputs: list[Path] = typer.Argument(None, help="Smear images, folders or zips."),
        out: Path = typer.Option(..., "--out", "-o", help="Report: .json (per image) or .csv (per cell)."),
        save: bool = typer.Option(False, "--save", help="Also store every analysis in the database."),
        owner: str = typer.Option(None, help="Owner of saved analyses (default: your user name)."),
        no_classify: bool = typer.Option(False, "--no-classify", help="Detect and count only."),
        detector: str = typer.Option(None, help="Detector name in the weights folder (default: bundled)."),
        classifier: str = typer.Option(
            None,
            "--classifier",
            "--model",
            help="Classifier name, bundled or adapted (default: this machine's default, see `cellkit models`).",
        ),
        rbc_model: str = typer.Option(
            None, "--rbc-model", help="Red-cell morphology model (default: the bundled one; 'none': off)."
        ),
        tile: int = typer.Option(None, help="Tile side in pixels for large images (default: model card)."),
        overlap: int = typer.Option(None, help="Tile overlap in pixels (default: model card)."),
        case: str = typer.Option(None, "--case", help="Count all images as the fields of one case (specimen)."),
        target_wbc: int = typer.Option(100, "--target-wbc", help="With --case: white cells to count (100 or 200)."),
        pdf: Path = typer.Option(None, "--pdf", help="With --case: the printable case report (PDF)."),
    ) -> None:
        """Detect, classify white cells and platelets, count: a JSON or CSV report (and the database)."""
        from cellkit.io import check_out
        from cellkit.slide import analyze
        from cellkit.writes import atomic_write

        fmt = _out_format(out, ("json", "csv"))
        _check_tiling(tile, overlap, detector)
        check_out(out, inputs=inputs)
        if case is not None and not case.strip():
            raise CellkitError("--case: expected a case name (a specimen or accession number), got an empty one")
        if (pdf is not None or target_wbc != 100) and not case:
            raise CellkitError("--pdf and --target-wbc need --case NAME (the images counted as one case)")
        if case and fmt != "json":
            raise CellkitError(f"--case: the case report is JSON; expected --out {out.with_suffix('.json')}")
        if not 1 <= target_wbc <= 10_000:  # the store's limit of a case's target
            raise CellkitError(f"--target-wbc: expected 1 to 10,000 white cells (usually 100 or 200), got {target_wbc}")
        if pdf is not None:
            _out_format(pdf, ("pdf",), "--pdf")
            check_out(pdf, "--pdf", inputs=inputs)
        items = _check_inputs(inputs)
        store = None
        if save:
            from cellkit.store import Store, StoreError

            store = Store()
            store.check()  # a database that is down or read-only fails now, before the work
            owner = owner or getpass.getuser()
        det, clf, by_class = _models(not no_classify, detector, classifier, rbc_model)  # a bad model: no case made
        case_id, earlier = None, []  # with --case --save: the case in the database, and its fields stored before
        if store is not None and case:  # the case in the database too: it opens on the Slide page
            case_id, earlier, target_wbc = _case_for(store, owner, case, target_wbc)
        from cellkit.slide import image_sha256, model_versions

        versions = model_versions(det, clf, by_class)
        reports: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        db_errors: list[str] = []
        fields: list[Any] = []  # with --case: the results, without pixels
        thumbs: list[tuple[Any, str]] = []  # with --case: the flagged cells, small
        reused: set[int] = set()  # analyses stored before that this run reports instead of storing them again
        from cellkit.case import case_thumbnails

        errors = FileErrors(str(out))
        first_of: dict[str, str] = {}  # with --case: pixels' hash -> the file first counted (an image is one field)
        try:  # Ctrl-C: the images finished so far are kept apart (CELLKIT_HOME/unsaved/), never as --out
            for item in _readable(items, errors, reports, rows):
                image = item.take()
                digest = image_sha256(image) if case or store is not None else ""
                if case:
                    if digest in first_of:  # a copy of a field under another name would count its cells twice
                        typer.echo(f"note: {item.name} is the same image as {first_of[digest]}: counted once", err=True)
                        del image
                        continue
                    first_of[digest] = item.name
                before = None
                # an image stored before is reported from the database, not stored twice; with --tile/--overlap given,
                # only a case's own field is (other tiling gives other boxes, and the store does not keep the tiling)
                if store is not None and (case_id is not None or (tile is None and overlap is None)):
                    before = _stored_before(store, owner, case_id, case, digest, versions, item.name)
                if before is not None:
                    aid, result = before
                    reused.add(aid)
                    result.name = Path(item.name).name
                else:
                    result = analyze(image, det, clf, tile, overlap, name=Path(item.name).name, by_class=by_class)
                if case:
                    fields.append(result)
                    thumbs += case_thumbnails(image, result)
                if store is not None and before is None:
                    try:  # kept by its pixels' hash, so the app reopens the analysis with its image
                        store.save_image(image, result.image_sha256)
                    except CellkitError as exc:
                        db_errors.append(str(exc))
                del image  # a 20000 x 15000 smear is 0.9 GB: freed before its report is built
                report = {"path": item.name, **result.to_dict()}
                if before is not None:
                    report["analysis_id"] = before[0]
                elif store is not None:
                    try:
                        report["analysis_id"] = store.save_analysis(result, owner=owner, file_name=item.name,
                                                                    case_id=case_id)  # fmt: skip
                    except StoreError as exc:  # the analysis is kept in the report; the database is told once
                        report["db_error"] = str(exc)
                        db_errors.append(str(exc))
                        if not exc.retryable:
                            store = None
                reports.append(report)
                if fmt == "csv":
                    cells = result.to_frame().to_dict(orient="records")
                    rows.extend({"path": item.name, **r} for r in cells or [{}])  # no cell: one row, path only
        except KeyboardInterrupt:
            _keep_interrupted(out, fmt, reports, rows)
            raise
        if case:
            from cellkit.case import case_summary

            red_model = (by_class or {}).get("rbc")
            stored = [r for aid, r in earlier if aid not in reused]  # the case's other fields count too
            if pdf is not None and store is not None:
                for r in stored:
                    img = _stored_image(store, r.image_sha256)
                    thumbs += case_thumbnails(img, r) if img is not None else []
            summary = case_summary(case, stored + fields, target_wbc,
                                   red_cell_spec=red_model.spec if red_model else None,
                                   detector_spec=det.spec)  # fmt: skip
            atomic_write(out, lambda fh: _dump_json({"case": summary, "fields": reports}, fh))
            if pdf is not None:
                from cellkit.case import case_display
                from cellkit.report_pdf import case_pdf

                names = case_display(stored + fields)  # every field the summary counts names its nodes
                atomic_write(pdf, lambda fh: fh.write(case_pdf(summary, names, thumbs)))
            done_wbc = summary["white_cells_counted"]
            kept = f", {len(stored)} of them stored before this run" if stored else ""
            typer.echo(
                f"case {case}: {done_wbc} of {target_wbc} white cells counted over {summary['fields']} field(s){kept}",
                err=True,
            )
        elif fmt == "json":
            atomic_write(out, lambda fh: _dump_json(reports, fh))
        else:
            _write_csv(rows, out, BOX_COLUMNS)
        errors.close()
        failed = sum(1 for r in reports if "error" in r)
        done = len(reports) - failed
        if db_errors:
            unsaved = sum(1 for r in reports if "error" not in r and "analysis_id" not in r)
            msg = f"error: {unsaved} analysis(es) not stored in the database ({db_errors[0]}); all are in {out}"
            typer.echo(msg, err=True)
            raise typer.Exit(1)
        again = f"; {len(reused)} stored before, reported from the database" if reused else ""
        typer.echo(
            f"{done} image(s) analysed, report in {out}" + (f" ({failed} failed)" if failed else "") + again, err=True
        )
        if failed:
            raise typer.Exit(1)
