"""`cellkit stats PATH`: dataset summary in the terminal (counts, levels, splits, sources, duplicates)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cellkit.taxonomy import DEFAULT_TAXONOMY


def _line(label: str, counts: dict[str, Any], width: int = 22) -> None:
    typer.echo(f"{label}:")
    for key, value in counts.items():
        typer.echo(f"  {key:<{width}} {value}")


def print_summary(s: dict[str, Any]) -> None:
    """Human-readable summary of :func:`cellkit.stats.summary`."""
    typer.echo(f"{s['dataset']}  ({s['kind']}, {s['path']})")
    cached = "from cache" if s["indexed_now"] == 0 else f"{s['indexed_now']} images decoded"
    typer.echo(
        f"images: {s['images']}  readable: {s['readable']}  unreadable: {len(s['unreadable'])}"
        f"   [indexed in {s['index_seconds']:.1f} s, {cached}]"
    )
    if "per_class" in s:
        _line("per class (folder)", s["per_class"])
        _line("per finest label (taxonomy node, file-name prefix rule applied)", s["per_label"])
        typer.echo("per taxonomy level (images under each node):")
        for level, counts in s["per_level"].items():
            typer.echo(f"  {level}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if s["unmapped_classes"]:
            typer.echo(f"  not in the taxonomy (kept as their own label): {', '.join(s['unmapped_classes'])}")
    _line("per split", s["per_split"])
    _line("per source", s["per_source"])
    _line("image sizes (w x h)", dict(list(s["sizes"].items())[:8]))
    if "boxes" in s:
        _line("boxes per class", s["boxes"])
        typer.echo("mean boxes per image: " + ", ".join(f"{k} {v}" for k, v in s["boxes_per_image_mean"].items()))
        if s["label_errors"]:
            typer.echo(f"label files with errors: {s['label_errors']}")
    d = s["duplicates"]
    typer.echo(
        f"duplicates (phash distance <= {d['threshold_bits']} bits): {d['pairs']} pairs "
        f"({d['exact_pairs']} exact, {d['near_pairs']} near), {d['cross_split_pairs']} across splits, "
        f"{d['label_conflict_pairs']} with different labels"
    )
    for row in s["leakage"]:
        typer.echo(f"  leakage {row['splits']}: {row['exact']} exact, {row['near']} near")
    if "balanced" in s:
        typer.echo("balanced per level (before -> after):")
        for level, counts in s["balanced"].items():
            typer.echo(f"  {level}: " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in counts.items()))
    if s["unreadable"]:
        typer.echo(f"unreadable files ({len(s['unreadable'])}):")
        for row in s["unreadable"][:20]:
            typer.echo(f"  {row['file']}: {row['error']}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``cellkit stats``."""

    @app.command("stats")
    def stats_command(
        path: Path = typer.Argument(..., help="dataset folder, or a folder holding several datasets"),
        dataset: str = typer.Option(None, "--dataset", "-d", help="sub-dataset name inside a root folder"),
        taxonomy: str = typer.Option(DEFAULT_TAXONOMY, help="taxonomy name or YAML path for folder -> node mapping"),
        json_out: Path = typer.Option(None, "--json", help="also write the summary as JSON to this file"),
        threshold: int = typer.Option(4, min=0, max=64, help="near-duplicate phash distance (bits of 64)"),
        min_count: int = typer.Option(100, min=0, help="balancing never cuts a class below this many images"),
        no_cache: bool = typer.Option(False, "--no-cache", help="re-read every image instead of using the cache"),
    ) -> None:
        """Summarise a dataset: images per class / taxonomy level / split / source, sizes, duplicates."""
        from cellkit.data import list_datasets
        from cellkit.dataset_index import index_dataset
        from cellkit.stats import summary
        from cellkit.writes import check_out

        if json_out:
            from cellkit.cli.slide import _out_format

            check_out(json_out, "--json", inputs=[path])
            _out_format(json_out, ("json",), "--json")
        if dataset is None:
            found = list_datasets(path)
            if len(found) > 1:
                typer.echo(f"{path} holds {len(found)} datasets; pick one with --dataset NAME:")
                for d in found:
                    typer.echo(f"  {d.name:<16} {d.kind:<15} {d.n_images} images   {d.path}")
                if json_out:
                    rows = [{"name": d.name, "kind": d.kind, "images": d.n_images, "path": str(d.path)} for d in found]
                    _write_json(json_out, {"datasets": rows})
                return
        index = index_dataset(path, taxonomy, dataset=dataset, progress=True, use_cache=not no_cache)
        result = summary(index, threshold=threshold, min_count=min_count)
        print_summary(result)
        if json_out:
            _write_json(json_out, result)
            typer.echo(f"wrote {json_out}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from cellkit.writes import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
