"""CLI commands for train: ``cellkit train classifier`` and ``cellkit evaluate`` (classifier metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cellkit.taxonomy import DEFAULT_DATASET, DEFAULT_TAXONOMY


def train_classifier_command(
    data: Path = typer.Option(None, "--data", help="folder with <class>/<image> (default: ../shared/data/pbc)"),
    name: str = typer.Option("classifier", help="model name: weights/<name>.safetensors + weights/<name>.json"),
    arch: str = typer.Option("tf_efficientnet_lite0", help="timm model name or cellkit_small_cnn / cellkit_tiny_cnn"),
    scratch: bool = typer.Option(False, "--scratch", help="random init instead of the ImageNet EfficientNet-Lite0"),
    taxonomy: str = typer.Option(DEFAULT_TAXONOMY, help="taxonomy name or YAML path"),
    dataset: str = typer.Option(
        DEFAULT_DATASET, help="the taxonomy's dataset rule for folder names (and the card's attribution)"
    ),
    input_size: int = typer.Option(112, min=16, max=1024, help="network input size in pixels"),
    epochs: int = typer.Option(10, min=0, help="0 with --init-from: re-finalise that model under new settings"),
    samples_per_epoch: int = typer.Option(0, min=0, help="images drawn per epoch (0 = size of the training split)"),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(1e-3, min=1e-7, max=1.0, help="peak learning rate"),
    label_smoothing: float = typer.Option(0.1, min=0.0, max=0.5),
    freeze_blocks: int = typer.Option(2, min=0, help="pretrained EfficientNet: freeze stem + first N stages"),
    patience: int = typer.Option(4, min=0, help="early stopping: epochs without a better val macro-F1"),
    seed: int = typer.Option(0, min=0),
    threads: int = typer.Option(1, min=1, max=256, help="torch threads (keep 1 when sharing the CPU)"),
    limit_per_class: int = typer.Option(0, min=0, help="subsample the training split per class (0 = all)"),
    split_file: Path = typer.Option(None, help="reuse a saved split JSON (file lists) instead of making one"),
    max_minutes: float = typer.Option(0.0, min=0.0, help="stop after this much training time (0 = no limit)"),
    workdir: Path = typer.Option(None, help="checkpoint folder (default ~/.cache/cellkit/train/<name>)"),
    out: Path = typer.Option(None, help="weights folder (default: the project's weights/)"),
    crop_scale: float = typer.Option(
        2.5, min=1.0, max=10.0, help="crop side / cell box side used when cutting crops from smears"
    ),
    view: float = typer.Option(1.0, min=0.2, max=1.0, help="centre fraction of each crop the network sees"),
    zoom: tuple[float, float] = typer.Option((0.8, 1.35), help="framing jitter range (min max), > 1 zooms in"),
    colour_norm: bool = typer.Option(
        False, "--colour-norm", help="white-balance images to the training data's slide background (also at inference)"
    ),
    colour_strength: float = typer.Option(1.0, min=0.0, max=3.0, help="scale of the stain/hue/tone augmentation"),
    framing: str = typer.Option("", help="'nucleus': re-frame every crop around its white cell (also at inference)"),
    optics: float = typer.Option(0.0, min=0.0, max=1.0, help="probability of low-res, defocus and JPEG per image"),
    outliers: float = typer.Option(0.0, min=0.0, max=0.5, help="share of each batch made synthetic outliers"),
    init_from: str = typer.Option("", help="start from this model's weights (name in weights/) instead of ImageNet"),
    exclude: list[str] = typer.Option(None, "--exclude", help="leave this node's images out (leave-one-class-out)"),
    extra: list[Path] = typer.Option(
        None, "--extra", help="labelled <node id>/<image> folder joining the training part only (repeatable)"
    ),
    extra_share: float = typer.Option(0.25, help="with --extra: share of the training draws from the extra images"),
    ood_method: str = typer.Option(
        "knn", help="review score: knn, vim, mahalanobis or energy (bench/unknown_bench.py)"
    ),
    ood_flag_share: float = typer.Option(0.05, min=0.0, max=0.5, help="share of held-out known cells flagged"),
    average_with: str = typer.Option("", help="with --init-from: average its weights with this model's (WiSE-FT)"),
    average_weight: float = typer.Option(0.5, min=0.0, max=1.0, help="share of --init-from in the average"),
    ema: float = typer.Option(0.0, min=0.0, max=0.99999, help="keep an EMA of the weights with this decay (0 = off)"),
    distill_from: list[str] = typer.Option(
        None, "--distill-from", help="teacher model(s), each classifying the clean file; the student learns them"
    ),
    distill_weight: float = typer.Option(0.5, min=0.0, max=1.0, help="share of the distillation loss"),
    distill_temperature: float = typer.Option(2.0, min=0.5, max=10.0, help="softening of both distributions"),
    default: bool = typer.Option(False, "--default", help="mark this model as the default classifier"),
    resume: bool = typer.Option(False, "--resume", help="continue from <workdir>/last.pt"),
    replace: bool = typer.Option(False, "--replace", help="replace a model of this name in the weights folder"),
) -> None:
    """Train the hierarchical classifier (seeded, resumable, with progress bars) and write its model card."""
    from cellkit import config
    from cellkit.errors import CellkitError
    from cellkit.models import check_model_name
    from cellkit.taxonomy import load_taxonomy
    from cellkit.train.classifier import TrainConfig, train_classifier
    from cellkit.unknown import METHODS
    from cellkit.writes import check_out_dir

    check_model_name(name, "--name")
    check_finite(max_minutes, "--max-minutes")
    check_new_model(name, out, replace)
    known = load_taxonomy(taxonomy).datasets
    if known and dataset not in known:
        raise CellkitError(f"--dataset: expected one of {', '.join(sorted(known))} (the taxonomy's), got {dataset!r}")
    for teacher in [init_from, average_with, *(distill_from or [])]:
        if teacher:
            check_model_name(teacher, "model name")
    if not 0 < zoom[0] <= zoom[1]:
        raise CellkitError(f"--zoom: expected 0 < min <= max, got {zoom[0]} {zoom[1]}")
    if not 0 < extra_share < 1:
        raise CellkitError(f"--extra-share: expected 0 < share < 1, got {extra_share}")
    if ood_method not in METHODS:
        raise CellkitError(f"--ood-method: expected one of {', '.join(METHODS)}, got {ood_method!r}")
    for folder, option in ((out, "--out"), (workdir, "--workdir")):
        if folder is not None:
            check_out_dir(folder, option)
    root = data or (config.data_dir() / DEFAULT_DATASET if config.data_dir() else None)
    if root is None:
        raise CellkitError("no training data: pass --data <folder with class sub-folders> or set CELLKIT_DATA_DIR")
    cfg = TrainConfig(
        data=str(root), name=name, arch=arch, pretrained=not scratch, taxonomy=taxonomy, dataset=dataset,
        input_size=input_size,
        cache_size=max(128, input_size), epochs=epochs, samples_per_epoch=samples_per_epoch, batch_size=batch_size,
        lr=lr, label_smoothing=label_smoothing, freeze_blocks=freeze_blocks, patience=patience, seed=seed,
        threads=threads, limit_per_class=limit_per_class, split_file=str(split_file or ""),
        max_minutes=max_minutes, workdir=str(workdir or ""), out=str(out or ""), default=default, crop_scale=crop_scale,
        view=view, zoom=list(zoom), colour_norm=colour_norm, colour_strength=colour_strength,
        framing=framing, optics=optics, outliers=outliers, init_from=init_from, exclude=list(exclude or []),
        extra=[str(folder) for folder in extra or []], extra_share=extra_share,
        average_with=average_with, average_weight=average_weight, ood_method=ood_method, ood_flag_share=ood_flag_share,
        ema=ema, distill_from=list(distill_from or []), distill_weight=distill_weight,
        distill_temperature=distill_temperature,
    )  # fmt: skip
    path = train_classifier(cfg, resume=resume)
    card = json.loads(path.with_name(f"{name}.json").read_text())["card"]
    test = card["metrics_test"]
    ece = test["calibration"].get("ece_leaf")
    typer.echo(
        f"saved {path} — test macro-F1 leaf {test['leaf']['macro_f1']:.4f}, "
        f"pbc8 {test.get('pbc8', {}).get('macro_f1', float('nan')):.4f}, ECE {'n/a' if ece is None else f'{ece:.4f}'}"
    )


def evaluate_command(
    model: str = typer.Option(None, "--model", help="classifier name in weights/ (default: the default one)"),
    data: Path = typer.Option(None, "--data", help="labelled folder <class>/<image> (default ../shared/data/pbc)"),
    split_file: Path = typer.Option(None, help="split JSON; default: the one named in the model card, if present"),
    part: str = typer.Option("test", help="split part to evaluate: train, val or test"),
    every: bool = typer.Option(False, "--all", help="every image under --data, no split (e.g. your lab's own folder)"),
    out: Path = typer.Option(None, "--out", help="write the full report as JSON here"),
) -> None:
    """Evaluate a classifier: macro-F1 at leaves / PBC-8 / tree levels, ECE; prints a summary."""
    from cellkit import config
    from cellkit.classify import load_classifier
    from cellkit.errors import CellkitError
    from cellkit.evaluate import evaluate_classifier
    from cellkit.io import atomic_write_bytes, check_out

    if part not in ("train", "val", "test"):
        raise CellkitError(f"--part: expected train, val or test, got {part!r}")
    if out:
        from cellkit.cli.slide import _out_format

        check_out(out, inputs=[data] if data else [])
        _out_format(out, ("json",))  # the report is JSON: a report named r.csv was written as asked
    clf = load_classifier(model)
    root = data or (config.data_dir() / DEFAULT_DATASET if config.data_dir() else None)
    if root is None:
        raise CellkitError("no evaluation data: pass --data <folder with class sub-folders>")
    if every and split_file is not None:
        raise CellkitError("--all scores every image: give --split-file or --all, not both")
    if split_file is None and not every:
        named = clf.spec.card.get("data", {}).get("split_file")
        candidate = config.weights_dir() / named if named else None
        split_file = candidate if candidate and candidate.is_file() else None
    report = evaluate_classifier(clf, root, split_file, part)
    typer.echo(f"model {clf.spec.name} on {root} ({part if split_file else 'all images'}, n={report['n']})")
    for key in ("leaf", "pbc8"):
        if key in report:
            r = report[key]
            if not r["n"]:
                typer.echo(f"  {key:5s} no image is labelled this finely (n=0)")
                continue
            typer.echo(f"  {key:5s} macro-F1 {r['macro_f1']:.4f}  accuracy {r['accuracy']:.4f}  n={r['n']}")
    for depth, r in report["levels"].items():
        if r["n"]:
            typer.echo(f"  level {depth} macro-F1 {r['macro_f1']:.4f}  accuracy {r['accuracy']:.4f}")
    ece = report["calibration"]["ece_leaf"]
    typer.echo(f"  ECE (leaf) {'n/a' if ece is None else f'{ece:.4f}'}  NLL {report['calibration']['nll']:.4f}")
    skipped = report["unlabelled"]
    if skipped["count"]:
        typer.echo(f"note: {skipped['count']} image(s) are in no folder that names a cell type of {clf.spec.name} "
                   f"and were left out; first: {skipped['first'][0]}", err=True)  # fmt: skip
    if out:
        atomic_write_bytes(out, (json.dumps(report, indent=1) + "\n").encode())
        typer.echo(f"  report written to {out}")
    bad = report["unreadable"]
    if bad["count"]:  # scored without them: said, and the exit code says the figures are not over every image
        typer.echo(
            f"error: {bad['count']} unreadable image(s) left out of these figures; first: {bad['first'][0]}", err=True
        )
        raise typer.Exit(1)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``train classifier`` and ``evaluate``; ``train detector`` is registered separately below."""
    train_app.command("classifier")(train_classifier_command)
    train_app.command("detector")(train_detector_command)
    app.command("evaluate")(evaluate_command)


# --- `cellkit train detector` (slide owner) -------------------------------------------------------
def train_detector_command(
    ctx: typer.Context,
    txl: Path = typer.Option(None, help="TXL-PBC folder (YOLO layout); default <data dir>/txl_pbc."),
    cbc: Path = typer.Option(None, help="CBC folder (Pascal VOC); de-duplicated against TXL-PBC."),
    no_cbc: bool = typer.Option(False, "--no-cbc", help="Train on TXL-PBC only."),
    chula: Path = typer.Option(None, help="Chula RBC-12 folder: its training images join, red-cell boxes from points."),
    init_from: str = typer.Option("", help="Start from this detector's weights (a model name) instead of random."),
    name: str = typer.Option("detector", help="Model name: weights/<name>.safetensors + <name>.json."),
    arch: str = typer.Option("yolov8n.yaml", help="ultralytics model yaml (never a downloaded .pt)."),
    imgsz: int = typer.Option(320, min=32, max=4096, help="Network input size in pixels."),
    epochs: int = typer.Option(30, min=1, help="Epochs (an estimate when --hours is given)."),
    hours: float = typer.Option(None, min=0.001, help="Train for this many hours (ultralytics fits the epochs to it)."),
    batch: int = typer.Option(16, min=1, help="Batch size."),
    seed: int = typer.Option(0, min=0, help="Random seed."),
    threads: int = typer.Option(1, min=1, max=256, help="torch threads (keep 1 when sharing the CPU)."),
    workers: int = typer.Option(0, min=0, help="Data-loader worker processes."),
    fraction: float = typer.Option(
        1.0, min=0.001, max=1.0, help="Fraction of the training images to use (for quick runs)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run of this --name."),
    replace: bool = typer.Option(False, "--replace", help="Replace a model of this name in the weights folder."),
    out: Path = typer.Option(None, help="Folder for weights + card (default: the project's weights/)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the test-split evaluation."),
) -> None:
    """Train the wbc/rbc/platelet detector (YOLOv8 from yaml, CPU, offline) and write weights + card with test mAP."""
    from cellkit import config
    from cellkit.models import check_model_name
    from cellkit.train.detector import train_detector
    from cellkit.writes import check_out_dir

    check_model_name(name, "--name")
    if hours is not None:
        check_finite(hours, "--hours")
    if out is not None:
        check_out_dir(out)
    check_new_model(name, out, replace)
    root = config.data_dir()
    if cbc is None and not no_cbc and root is not None and (root / "cbc").is_dir():
        cbc = root / "cbc"
    spec = train_detector(
        txl_dir=txl,
        cbc_dir=None if no_cbc else cbc,
        name=name,
        arch=arch,
        imgsz=imgsz,
        epochs=epochs,
        hours=hours,
        batch=batch,
        seed=seed,
        threads=threads,
        workers=workers,
        fraction=fraction,
        resume=resume,
        out_dir=out,
        evaluate=not no_eval,
        command=_command_line(ctx, "cellkit train detector"),
        chula_dir=chula,
        init_from=init_from,
    )
    m = spec.card.get("metrics", {})
    typer.echo(f"saved {spec.name}: test mAP50 {m.get('mAP50', 'n/a')}, mAP50-95 {m.get('mAP50_95', 'n/a')}")


def check_finite(value: float, option: str) -> None:
    """NaN and infinity pass a range check; refuse them with the option's name."""
    import math

    from cellkit.errors import CellkitError

    if not math.isfinite(value):
        raise CellkitError(f"{option}: expected a finite number, got {value}")


def check_new_model(name: str, out: Path | None, replace: bool) -> None:
    """Training never overwrites a model (a bundled one included) unless asked: refused before any work."""
    from cellkit import config
    from cellkit.errors import CellkitError

    folder = Path(out) if out is not None else config.weights_dir()
    if not replace and (folder / f"{name}.json").exists():
        raise CellkitError(
            f"a model named {name!r} already exists in {folder}; choose another --name, or pass --replace to replace it"
        )


def _command_line(ctx: typer.Context, prefix: str) -> str:
    """The options given on the command line, as a reproducible command (for the model card)."""
    import shlex

    parts = [prefix]
    for param in ctx.command.params:
        if getattr(ctx.get_parameter_source(param.name), "name", "") != "COMMANDLINE":
            continue
        flag, value = param.opts[0], ctx.params[param.name]
        parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)
