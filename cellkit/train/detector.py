"""Train the wbc / rbc / platelet detector (ultralytics YOLOv8 from its yaml, CPU, offline, resumable).

The run folder keeps ultralytics' own checkpoints (``weights/last.pt`` for ``--resume``); they are
pickles we wrote ourselves and are only read here. What ships is ``weights/<name>.safetensors``
(the network's state dict, no pickle) plus a JSON model card with the test metrics (overall, per
class, per TXL-PBC source), the data provenance and the exact command.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.models import ModelSpec, sha256_file
from cellkit.writes import atomic_write_bytes, atomic_write_text

CLASS_NAMES = ["wbc", "rbc", "platelet"]
ATTRIBUTION = (
    "TXL-PBC v2 (Lu Gan et al., MIT) and CBC (Alam & Islam, Healthc. Technol. Lett. 2019, MIT; BCCD re-annotated)"
)


def _run_dir(name: str) -> Path:
    return config.cache_dir() / "runs" / name


def _export(model: Any, path: Path) -> None:
    """Save a torch module's float32 state dict as safetensors (atomic)."""
    from safetensors.torch import save

    state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state), mode=0o644)


def _metrics(res: Any) -> dict[str, Any]:
    box = res.box
    out: dict[str, Any] = {"mAP50": round(float(box.map50), 4), "mAP50_95": round(float(box.map), 4), "per_class": {}}
    names = res.names if isinstance(res.names, dict) else dict(enumerate(res.names))
    for i, c in enumerate(box.ap_class_index):
        out["per_class"][names[int(c)]] = {
            "mAP50": round(float(box.ap50[i]), 4),
            "mAP50_95": round(float(box.ap[i]), 4),
        }
    out["precision"], out["recall"] = round(float(box.mp), 4), round(float(box.mr), 4)
    return out


def _source_subsets(data_yaml: Path, txl_dir: Path, split: str = "test") -> dict[str, Path]:
    """One data yaml per TXL-PBC source (metadata.csv) over the ``split`` images."""
    meta = txl_dir / "metadata.csv"
    if not meta.is_file():
        return {}
    data = yaml.safe_load(data_yaml.read_text())
    img_dir = Path(data[split])
    with open(meta, newline="") as fh:
        source = {r["New_Image_Name"]: r["Source_Dataset"] for r in csv.DictReader(fh)}
    groups: dict[str, list[str]] = {}
    for img in sorted(img_dir.glob("*.png")):
        groups.setdefault(source.get(img.name, "unknown"), []).append(str(img))
    out = {}
    for src, files in groups.items():
        lst = data_yaml.parent / f"{split}_{src}.txt"
        atomic_write_text(lst, "\n".join(files) + "\n", fallback=False)
        sub = dict(data, val=str(lst), test=str(lst))
        path = data_yaml.parent / f"{split}_{src}.yaml"
        atomic_write_text(path, yaml.safe_dump(sub, sort_keys=False), fallback=False)
        out[src] = path
    return out


def _load_init(yolo: Any, name: str) -> None:
    """Load a shipped detector's safetensors weights into ``yolo`` and make ultralytics train from them."""
    from safetensors.torch import load_file

    from cellkit.models import load_spec

    spec = load_spec(name)
    if spec.task != "detector" or list(spec.labels) != CLASS_NAMES:
        raise CellkitError(f"--init-from {name}: expected a detector of classes {CLASS_NAMES}, got {spec.labels}")
    yolo.model.load_state_dict(load_file(str(spec.weights_path)))
    # ultralytics seeds the trainer's model from ``yolo.model`` only when the YOLO object holds a checkpoint
    yolo.ckpt = {"init_from": name}


def evaluate_detector(
    weights: str | Path, spec: ModelSpec, data_yaml: str | Path, txl_dir: str | Path | None = None, split: str = "test"
) -> dict[str, Any]:
    """mAP50 / mAP50-95 overall, per class and per TXL-PBC source for shipped safetensors weights."""
    from safetensors.torch import load_file

    from cellkit._yolo import build_yolo

    yolo = build_yolo(spec.arch, nc=len(spec.labels))
    yolo.model.load_state_dict(load_file(str(weights)))
    yolo.model.names = dict(enumerate(spec.labels))
    kw = dict(imgsz=spec.input_size, batch=8, device="cpu", plots=False, verbose=False, workers=0, conf=0.001, iou=0.6)
    kw["project"], kw["name"], kw["exist_ok"] = str(config.cache_dir() / "runs"), "eval", True
    data_yaml = Path(data_yaml)
    result = {"split": split, **_metrics(yolo.val(data=str(data_yaml), split=split, **kw))}
    if txl_dir:
        result["per_source"] = {}
        for src, sub in _source_subsets(data_yaml, Path(txl_dir), split).items():
            result["per_source"][src] = _metrics(yolo.val(data=str(sub), split=split, **kw))
    return result


def train_detector(
    txl_dir: str | Path | None = None,
    cbc_dir: str | Path | None = None,
    name: str = "detector",
    arch: str = "yolov8n.yaml",
    imgsz: int = 320,
    epochs: int = 30,
    hours: float | None = None,
    batch: int = 16,
    seed: int = 0,
    threads: int = 1,
    workers: int = 0,
    fraction: float = 1.0,
    resume: bool = False,
    out_dir: str | Path | None = None,
    evaluate: bool = True,
    command: str | None = None,
    chula_dir: str | Path | None = None,
    init_from: str = "",
) -> ModelSpec:
    """Train (or resume) a detector, export safetensors + card to ``out_dir`` (default weights/).

    ``init_from``: start from that detector's weights (a model name) instead of random ones (fine-tuning);
    ``chula_dir``: add Chula RBC-12's training images with red-cell boxes made from its points.
    """
    from cellkit.data_yolo import prepare_detection_data

    txl = Path(txl_dir) if txl_dir else (config.data_dir() or Path("missing")) / "txl_pbc"
    if not (txl / "images" / "train").is_dir():
        raise CellkitError(f"TXL-PBC not found at {txl}; pass --txl PATH (a YOLO folder with images/train)")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    t0 = time.time()
    data_root = config.cache_dir() / "det_data" / name
    data_yaml = prepare_detection_data(data_root, txl, cbc_dir, chula_dir=chula_dir)
    run = _run_dir(name)
    last = run / "weights" / "last.pt"
    from cellkit._yolo import build_yolo, yolo_class

    if resume:
        if not last.is_file():
            raise CellkitError(f"nothing to resume: {last} not found; start without --resume")
        yolo_class()(str(last)).train(resume=True, workers=workers, device="cpu")
    else:
        model = build_yolo(arch, nc=len(CLASS_NAMES))
        if init_from:
            _load_init(model, init_from)
        model.train(
            data=str(data_yaml),
            imgsz=imgsz,
            epochs=epochs,
            time=hours,
            batch=batch,
            workers=workers,
            device="cpu",
            seed=seed,
            deterministic=True,
            amp=False,
            plots=False,
            fraction=fraction,
            project=str(run.parent),
            name=run.name,
            exist_ok=True,
            close_mosaic=max(1, min(10, epochs // 5)),
            flipud=0.5,
            patience=max(epochs, 50),
            verbose=False,
            cache="ram" if fraction >= 0.5 else False,
        )
    best = run / "weights" / "best.pt"
    ckpt = best if best.is_file() else last
    if not ckpt.is_file():
        raise CellkitError(f"training produced no checkpoint in {run / 'weights'}; see the log above")
    trained = yolo_class()(str(ckpt))  # our own checkpoint, written by this run
    net = trained.model.float().eval()
    out = Path(out_dir or config.weights_dir())
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    _export(net, weights)
    args = yaml.safe_load((run / "args.yaml").read_text()) if (run / "args.yaml").is_file() else {}
    prov = json.loads((data_yaml.parent / "provenance.json").read_text())
    epochs_done = None
    results_csv = run / "results.csv"
    if results_csv.is_file():
        with open(results_csv, newline="") as fh:
            epochs_done = sum(1 for _ in csv.DictReader(fh))
    spec = ModelSpec(
        name=name,
        task="detector",
        arch=arch if not resume else str(args.get("model", arch)),
        weights=weights.name,
        input_size=int(args.get("imgsz", imgsz)),
        labels=list(CLASS_NAMES),
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        taxonomy="",
        card={
            "default": True,
            "sha256": sha256_file(weights),
            "command": command or " ".join(shlex.quote(a) for a in sys.argv),
            "framework": "ultralytics YOLOv8 (built from the model yaml, no downloaded weights)"
            + (f"; fine-tuned from the bundled {init_from!r}" if init_from else "; trained from scratch"),
            "data": {
                "train": "TXL-PBC train"
                + (" + CBC (de-duplicated)" if cbc_dir else "")
                + (" + Chula RBC-12 train images (red-cell boxes from points)" if chula_dir else ""),
                "val": "TXL-PBC val (checkpoint selection)",
                "test": "TXL-PBC test (held out, never seen in training)",
                "provenance": prov,
                "dedupe": (
                    "TXL-PBC's 103 BCCD images come from the same BCCD pool as CBC. Every CBC image whose BCCD "
                    "file name appears in TXL-PBC metadata.csv (any split) was dropped, then every remaining CBC "
                    f"image within perceptual-hash distance {prov.get('max_hash_distance')} of any TXL-PBC image "
                    "was dropped too, so no TXL test/val image (or near copy) is in training."
                )
                if cbc_dir
                else "CBC not used.",
                "attribution": ATTRIBUTION,
            },
            "train_args": {k: args.get(k) for k in ("imgsz", "epochs", "time", "batch", "seed", "optimizer", "lr0")},
            "epochs_completed": epochs_done,
            "train_seconds": round(time.time() - t0, 1),
            "tile": 640,
            "overlap": 192,
            "conf": 0.25,
            "iou": 0.5,
            "preprocessing": "RGB, letterboxed to input_size (grey 114 padding), scaled to [0, 1]",
        },
    )
    if evaluate:
        spec.card["metrics"] = evaluate_detector(weights, spec, data_yaml, txl)
    spec.save(out)
    return spec
