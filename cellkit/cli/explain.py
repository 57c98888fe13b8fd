"""CLI command ``cellkit explain IMAGE --method gradcam --node NODE --out map.png [--npy map.npy]``.

The PNG is the map blended over the crop (square-padded like the model sees it); ``--npy`` writes
the raw map (S, S) float32 in [0, 1] at the model's input size. The default node is the predicted
label. One line on stdout: method, node, seconds and the faithfulness AUCs. Unknown node, method or
unreadable image: one line on stderr, exit 2.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import typer


def explain_command(
    image: Path = typer.Argument(..., help="a single-cell crop (PNG/JPEG/TIFF...)"),
    method: str = typer.Option("gradcam", "--method", "-m", help="gradcam|gradcampp|layercam|occlusion|ig|saliency"),
    node: str = typer.Option(None, "--node", "-n", help="taxonomy node id to explain (default: predicted label)"),
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write: the map over the crop"),
    npy: Path = typer.Option(None, "--npy", help="also write the raw map as .npy"),
    model: str = typer.Option(
        None,
        "--model",
        help="classifier name, bundled or adapted (default: this machine's default, see `cellkit models`)",
    ),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="overlay opacity"),
    cmap: str = typer.Option("jet", help="matplotlib colour map"),
    faithfulness: bool = typer.Option(True, "--faithfulness/--no-faithfulness", help="deletion/insertion AUCs"),
    threads: int = typer.Option(
        1, min=0, max=256, help="torch threads (0 = torch's default); 1 was fastest on a shared CPU"
    ),
) -> None:
    """Explain why the classifier gives a crop the probability it does for one node of the tree."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads stall a busy CPU
    import numpy as np
    import torch

    from cellkit.classify import load_classifier
    from cellkit.errors import CellkitError
    from cellkit.explain import explain, get_explainer
    from cellkit.explain.render import COLORMAPS, overlay
    from cellkit.io import atomic_write_bytes, check_out, encode_png, read_image

    if threads:
        torch.set_num_threads(threads)
    get_explainer(method)  # unknown method: fail before loading anything
    if cmap not in COLORMAPS:
        raise CellkitError(f"unknown colour map {cmap!r}; expected one of: {', '.join(COLORMAPS)}")
    if out.suffix.lower() != ".png":
        raise CellkitError(f"--out must end in .png, got {out.name!r}")
    target = check_out(out, inputs=[image])
    if npy is not None and check_out(npy, "--npy", inputs=[image]) == target:
        raise CellkitError(f"--npy {npy}: it is the --out file too; give the heat map its own file")
    crop = read_image(image)
    clf = load_classifier(model)
    if node is not None and node not in clf.taxonomy:
        raise CellkitError(f"unknown node {node!r}; expected one of: {', '.join(clf.taxonomy.ids)}")
    heatmap = explain(clf, crop, node, method, with_faithfulness=faithfulness)
    atomic_write_bytes(out, encode_png(overlay(crop, heatmap.values, alpha, cmap, prep=clf.prep)))
    if npy is not None:
        buf = io.BytesIO()
        np.save(buf, heatmap.values)
        atomic_write_bytes(npy, buf.getvalue())
    scores = " ".join(f"{k}={v:.3f}" for k, v in heatmap.scores.items())
    typer.echo(f"{heatmap.method} node={heatmap.target} {scores} -> {out}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this module's commands to the cellkit app."""
    app.command("explain")(explain_command)
