"""Train the hierarchical classifier: seeded, resumable, class-balanced, with a progress bar.

The network outputs one logit per taxonomy leaf; a sample labelled at any node of the tree teaches the sum of
that node's leaves (:mod:`cellkit.train.losses`); where training starts is :mod:`cellkit.train.init_weights`.
After training: temperature scaling on the validation split, the review verdict's statistics on penultimate
features, metrics on the test split, all written into the model card.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cellkit import config
from cellkit.classify import Classifier, save_classifier
from cellkit.errors import CellkitError
from cellkit.models import ModelSpec, sha256_file
from cellkit.nets import penultimate_and_logits
from cellkit.preprocess import Preprocess
from cellkit.taxonomy import DEFAULT_DATASET, DEFAULT_TAXONOMY, Taxonomy, load_taxonomy
from cellkit.train.augment import augment_batch, synthetic_outliers
from cellkit.train.data import (
    ImageSet,
    append_extra,
    extra_source,
    index_folder,
    load_image_set,
    load_split,
    near_duplicate_groups,
    save_split,
    split_indices,
)
from cellkit.train.distill import distillation_loss, teacher_leaf_probs
from cellkit.train.init_weights import make_model, target_layer_for
from cellkit.train.losses import hierarchical_loss, mixed_sampling_weights, target_masks
from cellkit.unknown import OodScorer, calibrate

DATASET_MODEL_KEYS = ("applies_to", "crop_reference", "crop_scale")  # a dataset rule's ``model`` block may set


def apply_dataset_model_rule(spec: ModelSpec, taxonomy: Taxonomy, dataset: str) -> None:
    """What the dataset says a model trained on it is (e.g. red-cell crops: ``applies_to: [rbc]``, cut at the
    slide's scale), written into the spec; a key outside ``DATASET_MODEL_KEYS`` is an error."""
    rule = taxonomy.datasets.get(dataset, {}).get("model", {}) or {}
    unknown = sorted(set(rule) - set(DATASET_MODEL_KEYS))
    if unknown:
        raise CellkitError(
            f"taxonomy {taxonomy.name!r}, dataset {dataset!r}: model keys {unknown} not understood; "
            f"expected {', '.join(DATASET_MODEL_KEYS)}"
        )
    for key, value in rule.items():
        setattr(spec, key, list(value) if isinstance(value, list) else value)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the card)."""

    data: str
    name: str = "classifier"
    arch: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    taxonomy: str = DEFAULT_TAXONOMY
    dataset: str = DEFAULT_DATASET
    input_size: int = 112
    cache_size: int = 128
    epochs: int = 10
    samples_per_epoch: int = 0  # 0 = one pass over the training split
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    freeze_blocks: int = 2  # timm EfficientNet: freeze stem + the first N stages (cheap on CPU)
    patience: int = 4
    seed: int = 0
    threads: int = 1
    limit_per_class: int = 0  # 0 = all; else subsample the training split per target node
    split_file: str = ""  # reuse a saved split (JSON of file lists)
    max_minutes: float = 0.0  # stop early after this much training time (0 = no limit)
    workdir: str = ""  # checkpoints; default cache_dir()/train/<name>
    out: str = ""  # weights folder; default config.weights_dir()
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    ood_dim: int = 128  # legacy Mahalanobis only
    ood_method: str = "knn"  # cellkit.unknown.METHODS
    ood_flag_share: float = 0.05  # share of held-out known cells the review verdict may flag
    min_group_prob: float = 0.5  # below this top-level group probability a cell is "unsure" (review)
    threshold: float = 0.5
    crop_scale: float = 2.5  # PBC framing: WBC box side = 0.39 x field side (TXL-PBC boxes of PBC images)
    view: float = 1.0  # the network sees the centre fraction of each crop (0.7: the cell fills ~56 %)
    zoom: list[float] = field(default_factory=lambda: [0.8, 1.35])  # framing jitter range (>1 zooms in)
    colour_norm: bool = False  # white-balance every image to the training split's slide background
    colour_strength: float = 1.0  # scale of the stain / hue / tone jitter (1 = HED +-35 %, hue +-0.25 rad)
    framing: str = ""  # "nucleus": every image is re-framed around its white cell (cellkit.framing), as at inference
    optics: float = 0.0  # probability of each of low resolution, defocus and JPEG per training image
    outliers: float = 0.0  # share of each batch replaced by synthetic outliers taught a uniform answer
    outlier_weight: float = 0.5  # weight of the outlier-exposure loss
    init_from: str = ""  # start from this model's weights (name in the weights folder) instead of ImageNet
    average_with: str = ""  # with init_from: average the two models' weights (WiSE-FT, Wortsman et al. 2022)
    average_weight: float = 0.5  # share of init_from in the average (the rest is average_with)
    ema: float = 0.0  # > 0: evaluate and keep an exponential moving average of the weights (timm ModelEmaV3)
    distill_from: list[str] = field(default_factory=list)  # teachers, each on the clean file (cellkit.train.distill)
    distill_weight: float = 0.5  # share of the distillation loss (the rest is the label loss)
    distill_temperature: float = 2.0
    exclude: list[str] = field(default_factory=list)  # nodes whose images are left out of train and val
    # (leave-one-class-out: bench/unknown_bench.py checks that the left-out class gets flagged)
    extra: list[str] = field(default_factory=list)  # labelled <node id>/<image> folders joining the training part only
    extra_share: float = 0.25  # share of the sampling mass the extra images get together (the rest: the main data)
    default: bool = False
    progress: bool = True

    @property
    def work(self) -> Path:
        return Path(self.workdir or config.cache_dir() / "train" / self.name)

    @property
    def weights_out(self) -> Path:
        return Path(self.out or config.weights_dir())


# ---- evaluation helpers ---------------------------------------------------------------------
@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: np.ndarray, cfg: TrainConfig, batch_size: int = 128, features: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw leaf logits (and penultimate features) of cached uint8 images (n, S, S, 3), already at ``cfg.view``."""
    model.eval()
    prep = Preprocess(cfg.input_size, tuple(cfg.mean), tuple(cfg.std))  # cached crops: framed, viewed, balanced
    logits, feats = [], []
    for start in range(0, len(images), batch_size):
        x = prep(list(images[start : start + batch_size]))
        f, lg = penultimate_and_logits(model, x)
        logits.append(lg.numpy())
        if features:
            feats.append(f.numpy())
    return np.concatenate(logits), (np.concatenate(feats) if features else None)


def _rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain numbers, so the checkpoint loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos)}
    numpy_state.update(has_gauss=int(has_gauss), cached_gaussian=float(cached))
    return {"torch": torch.get_rng_state(), "numpy": numpy_state}


def _set_rng_state(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    n = saved["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))


def _save_checkpoint(obj: Any, path: Path) -> None:
    """torch.save through the one atomic-write rule (no fallback copy: the next epoch writes it again)."""
    from cellkit.writes import atomic_write

    atomic_write(path, lambda fh: torch.save(obj, fh), fallback=False)


# ---- training -------------------------------------------------------------------------------
def prepare_data(cfg: TrainConfig, taxonomy: Taxonomy) -> tuple[ImageSet, dict[str, np.ndarray], Path]:
    """Decode (cached) and split the data; the split is saved once and reused on resume."""
    data = _decoded(cfg, taxonomy, cfg.data)
    cfg.work.mkdir(parents=True, exist_ok=True)
    split_path = Path(cfg.split_file) if cfg.split_file else cfg.work / "split.json"
    if split_path.is_file():
        split = load_split(split_path, data.paths)
    else:
        groups = near_duplicate_groups(data.phash, max_dist=4)
        split = split_indices(data.nodes, groups, seed=cfg.seed)
        empty = [part for part, idx in split.items() if len(idx) == 0]
        if empty:  # refused before it is saved: a kept split.json would refuse the images added next as well
            distinct = len(np.unique(groups))
            raise CellkitError(
                f"{len(data)} image(s) in {cfg.data} ({distinct} distinct: near-duplicates stay together) are too "
                f"few to split: the {' and '.join(empty)} part would be empty. Each cell type's images go 70/15/15 "
                "to train/val/test, so one needs about 7 distinct images to reach test; add images, then run again"
            )
        meta = {
            "seed": cfg.seed,
            "fractions": [0.7, 0.15, 0.15],
            "stratified_by": "target node (folder + file-name prefix rule)",
            "near_duplicates": "phash Hamming distance <= 4 kept in one split",
            "n_near_duplicate_images": int(len(groups) - len(np.unique(groups))),
        }
        save_split(split_path, data.paths, split, meta)
    if min(len(v) for v in split.values()) == 0:
        fix = "add images per class" if cfg.split_file else f"add images per class, then delete {split_path}"
        raise CellkitError(f"split {split_path} leaves an empty train/val/test part; {fix}")
    if cfg.extra:  # appended after the split: the split file and val/test stay the main data's
        extras = [_decoded(cfg, taxonomy, folder) for folder in cfg.extra]
        n_main = len(data)
        data = append_extra(data, extras)
    if cfg.colour_norm:  # the reference background from the main training images only; every image balanced to it
        normalise_colour(data, split["train"], cfg.seed)
    if cfg.extra:
        split = {**split, "train": np.concatenate([split["train"], np.arange(n_main, len(data), dtype=np.int64)])}
    return data, split, split_path


def check_extra(cfg: TrainConfig, taxonomy: Taxonomy) -> None:
    """Before any decoding: every ``--extra`` folder holds labelled images, the share is in (0, 1), no teachers."""
    if not cfg.extra:
        return
    if not 0 < cfg.extra_share < 1:
        raise CellkitError(f"--extra-share: expected 0 < share < 1, got {cfg.extra_share}")
    if cfg.distill_from:
        raise CellkitError("--extra and --distill-from are not supported together; drop one of them")
    for folder in cfg.extra:
        root = Path(folder)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "not found"
            raise CellkitError(f"--extra {folder}: {what}; expected a folder of <node id>/<image>")
        try:
            index_folder(root, taxonomy, cfg.dataset)
        except CellkitError as exc:
            raise CellkitError(f"--extra {folder}: {exc}") from None


def _decoded(cfg: TrainConfig, taxonomy: Taxonomy, folder: str) -> ImageSet:
    """A labelled folder decoded as this run decodes its data (cache size, view, framing, crop scale); cached."""
    return load_image_set(
        folder,
        taxonomy,
        cfg.cache_size,
        cfg.dataset,
        progress=cfg.progress,
        view=cfg.view,
        framing=cfg.framing,
        crop_scale=cfg.crop_scale,
    )


def normalise_colour(data: ImageSet, train_idx: np.ndarray, seed: int = 0, sample: int = 2000) -> list[float]:
    """White-balance every image (in place) to the median slide background of training images."""
    from cellkit.colour import reference_background, white_balance

    pick = np.random.default_rng(seed).permutation(train_idx)[:sample]
    data.background = reference_background(data.images[pick])
    for i in range(len(data.images)):
        data.images[i] = white_balance(data.images[i], data.background)
    return data.background


def _without(idx: np.ndarray, nodes: list[str], exclude: list[str], taxonomy: Taxonomy) -> np.ndarray:
    """Indices whose node is not under any excluded node."""
    if not exclude:
        return idx
    for node in exclude:
        taxonomy.node(node)  # raises for a node the taxonomy does not have
    return np.array([i for i in idx if not any(x in taxonomy.path(nodes[i]) for x in exclude)], dtype=np.int64)


def _subsample(idx: np.ndarray, nodes: list[str], limit: int, seed: int) -> np.ndarray:
    if limit <= 0:
        return idx
    rng = np.random.default_rng(seed)
    keep = []
    arr = np.asarray(nodes)[idx]
    for node in np.unique(arr):
        members = idx[arr == node]
        keep.extend(rng.permutation(members)[:limit].tolist())
    return np.array(sorted(keep), dtype=np.int64)


def train_classifier(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train, calibrate, evaluate and save; returns the path of the written weights."""
    from cellkit.evaluate import classification_report

    torch.set_num_threads(max(1, cfg.threads))
    taxonomy = load_taxonomy(cfg.taxonomy)
    check_extra(cfg, taxonomy)
    data, split, split_path = prepare_data(cfg, taxonomy)
    split = {k: _without(v, data.nodes, cfg.exclude, taxonomy) for k, v in split.items()}
    train_idx = _subsample(split["train"], data.nodes, cfg.limit_per_class, cfg.seed)
    val_idx = split["val"]
    masks = target_masks(data.nodes, taxonomy)
    n_leaves = len(taxonomy.leaves)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, frozen = make_model(cfg, n_leaves)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = cfg.samples_per_epoch or len(train_idx)
    steps_per_epoch = max(1, per_epoch // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = min(200, total // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))) * 0.99 + 0.01

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ema = None
    if cfg.ema > 0:  # the averaged weights are what is evaluated, kept and shipped
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True)
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "bad": 0, "history": [], "seconds": 0.0}
    ckpt = cfg.work / "last.pt"
    if resume and ckpt.is_file():
        try:  # tensors and plain types only: loading never runs code from the file
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CellkitError(
                f"cannot resume from {ckpt}: not a checkpoint of this cellkit version ({str(exc).splitlines()[0]}); "
                "start without --resume"
            ) from None
        model.load_state_dict(saved["model"])
        if ema is not None and "ema" in saved:
            ema.module.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        state = saved["state"]
        _set_rng_state(saved["rng"])
    elif resume:
        raise CellkitError(f"nothing to resume: {ckpt} not found; start without --resume")

    state.setdefault("commands", []).append(_command_line())
    weights = mixed_sampling_weights(
        [data.nodes[i] for i in train_idx], [extra_source(data.paths[i]) for i in train_idx], taxonomy, cfg.extra_share
    )
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + state["epoch"])
    rng = np.random.default_rng(cfg.seed * 1000 + state["epoch"])
    val_nodes = [data.nodes[i] for i in val_idx]
    teacher = None
    if cfg.distill_from:
        teacher = torch.from_numpy(
            teacher_leaf_probs(cfg.distill_from, cfg.data, data.paths, train_idx, taxonomy, cfg.work / "teacher.npz")
        )
    started = time.time() - state["seconds"]

    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        epoch = state["epoch"]
        model.train()
        for mod in frozen:
            mod.eval()
        order = train_idx[rng.choice(len(train_idx), size=steps_per_epoch * cfg.batch_size, p=weights)]
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress)
        run_loss = 0.0
        for step in bar:
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            x = torch.from_numpy(data.images[idx]).permute(0, 3, 1, 2)
            x = augment_batch(
                x, cfg.input_size, gen, strength=cfg.colour_strength, zoom=(cfg.zoom[0], cfg.zoom[1]), optics=cfg.optics
            )
            n_out = round(cfg.outliers * len(idx))
            if n_out:  # the first n_out of a random order become outliers (idx is sorted by class folder)
                perm = torch.randperm(len(idx), generator=gen)
                x, idx = x[perm], idx[perm.numpy()]
                x = torch.cat([x[n_out:], synthetic_outliers(x[:n_out], gen)])
            logits = model((x - mean) / std)
            loss = hierarchical_loss(logits[n_out:], masks[idx[n_out:]], cfg.label_smoothing)
            if teacher is not None:  # the teachers' answer on the clean file, for the shifted crop
                kd = distillation_loss(logits[n_out:], teacher[idx[n_out:]], cfg.distill_temperature)
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
            if n_out:  # outlier exposure: a uniform answer over the leaves for crops that show no clear cell
                loss = loss + cfg.outlier_weight * (-F.log_softmax(logits[:n_out], dim=1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model, step=epoch * steps_per_epoch + step)
            run_loss = 0.95 * run_loss + 0.05 * loss.item() if step else loss.item()
            bar.set_postfix(loss=f"{run_loss:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        kept = ema.module if ema is not None else model
        logits, _ = predict_logits(kept, data.images[val_idx], cfg)
        report = classification_report(val_nodes, _softmax(logits), taxonomy)
        score = report["leaf"]["macro_f1"]
        state["seconds"] = time.time() - started
        state["history"].append(
            {
                "epoch": epoch + 1,
                "loss": round(run_loss, 4),
                "val_leaf_macro_f1": round(score, 4),
                "val_pbc8_macro_f1": round(report.get("pbc8", {}).get("macro_f1", float("nan")), 4),
                "minutes": round(state["seconds"] / 60, 1),
            }
        )
        print(json.dumps(state["history"][-1]), file=sys.stderr, flush=True)
        state["epoch"] = epoch + 1
        if score > state["best"]:
            state["best"], state["bad"] = score, 0
            _save_checkpoint(kept.state_dict(), cfg.work / "best.pt")
        else:
            state["bad"] += 1
        saved = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
        if ema is not None:
            saved["ema"] = ema.module.state_dict()
        _save_checkpoint({**saved, "state": state, "rng": _rng_state(), "cfg": asdict(cfg)}, ckpt)
        if cfg.max_minutes and state["seconds"] > cfg.max_minutes * 60:
            print(f"stopping: time budget of {cfg.max_minutes} min used", file=sys.stderr, flush=True)
            break

    if cfg.epochs > 0:
        model.load_state_dict(torch.load(cfg.work / "best.pt", map_location="cpu", weights_only=True))
    # epochs 0: the --init-from model as it is, re-finalised under this run's preprocessing (framing, colour)
    return finalize(cfg, model, taxonomy, data, split, split_path, state, classification_report)


def _command_line() -> str:
    """The command that started this process, when it was the ``cellkit`` CLI."""
    if not sys.argv or not ("cellkit" in Path(sys.argv[0]).name or Path(sys.argv[0]).parent.name == "cellkit"):
        return ""  # not the CLI (``cellkit ...`` or ``python -m cellkit ...``)
    return " ".join(["cellkit", *(shlex.quote(a) for a in sys.argv[1:])])


def _softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def finalize(
    cfg: TrainConfig,
    model: nn.Module,
    taxonomy: Taxonomy,
    data: ImageSet,
    split: dict[str, np.ndarray],
    split_path: Path,
    state: dict[str, Any],
    classification_report: Any,
) -> Path:
    """Temperature on val, OOD statistics, test metrics and speed -> weights + model card."""
    from cellkit.evaluate import fit_temperature

    val_idx, test_idx = split["val"], split["test"]
    masks = target_masks(data.nodes, taxonomy)
    val_logits, val_feats = predict_logits(model, data.images[val_idx], cfg, features=True)
    temperature = fit_temperature(val_logits, masks[val_idx].numpy())
    rng = np.random.default_rng(cfg.seed)
    fit_idx = rng.permutation(split["train"])[:4000]
    train_logits, train_feats = predict_logits(model, data.images[fit_idx], cfg, features=True)
    leaf_of = {leaf: j for j, leaf in enumerate(taxonomy.leaves)}
    fit_nodes = [data.nodes[i] for i in fit_idx]
    # OOD statistics per leaf class: inner-node-only images take the model's argmax leaf under their node
    fit_leaf = np.array(
        [
            leaf_of[n] if n in leaf_of else int(np.argmax(np.where(masks[i].numpy(), lg, -np.inf)))
            for n, i, lg in zip(fit_nodes, fit_idx, train_logits, strict=True)
        ]
    )
    scorer = OodScorer.fit(cfg.ood_method, train_feats, fit_leaf, head=model.get_classifier(), seed=cfg.seed)
    val_t = torch.from_numpy(val_logits / temperature)
    val_scores = scorer.score(torch.from_numpy(val_feats), val_t).numpy()
    val_probs = _softmax(val_logits, temperature) @ taxonomy.node_matrix.T
    groups = [taxonomy.ids.index(g) for g in taxonomy.group_ids]
    val_unsure = val_probs[:, groups].max(1) < cfg.min_group_prob
    threshold = calibrate(val_scores, val_unsure, cfg.ood_flag_share)

    test_logits, _ = predict_logits(model, data.images[test_idx], cfg)
    test_nodes = [data.nodes[i] for i in test_idx]
    report = classification_report(test_nodes, _softmax(test_logits, temperature), taxonomy)
    report_uncal = classification_report(test_nodes, _softmax(test_logits), taxonomy)
    val_report = classification_report([data.nodes[i] for i in val_idx], _softmax(val_logits, temperature), taxonomy)

    spec = ModelSpec(
        name=cfg.name,
        task="classifier",
        arch=cfg.arch,
        weights=f"{cfg.name}.safetensors",
        input_size=cfg.input_size,
        labels=list(taxonomy.leaves),
        mean=list(cfg.mean),
        std=list(cfg.std),
        taxonomy=cfg.taxonomy,
        target_layer=target_layer_for(cfg.arch),
        temperature=round(float(temperature), 4),
        crop_scale=cfg.crop_scale,
        view=cfg.view,
        resample_size=cfg.cache_size if cfg.cache_size != cfg.input_size else 0,  # what predict_logits saw
        framing=cfg.framing,
        background=list(data.background),
        threshold=cfg.threshold,
        ood={
            "method": cfg.ood_method,
            "params": scorer.params,
            "threshold": threshold,
            "flag_above": 1.0,
            "min_group_prob": cfg.min_group_prob,
            "calibration": f"ood_score = raw score / threshold; threshold set so that, with the unsure rule, "
            f"{cfg.ood_flag_share:.0%} of the validation split is flagged for review "
            f"(unsure alone: {val_unsure.mean():.1%})",
        },
    )
    apply_dataset_model_rule(spec, taxonomy, cfg.dataset)
    out = cfg.weights_out
    path = save_classifier(model, spec, out, scorer.tensors)
    clf = Classifier(model, spec, taxonomy, scorer=scorer)
    speed = measure_speed(clf)
    n_params = sum(p.numel() for p in model.parameters())
    sources = [extra_source(p) for p in data.paths]
    n_extra = [sources.count(k) for k in range(len(cfg.extra))]  # images per --extra folder (training part only)
    extra = [{"folder": f, "n_images": n} for f, n in zip(cfg.extra, n_extra, strict=True)]
    main_sizes = {k: sum(sources[i] is None for i in v) for k, v in split.items()}  # the split file's parts
    spec.card = {
        "default": cfg.default,
        "summary": f"{cfg.arch} ({'ImageNet-pretrained' if cfg.pretrained else 'from scratch'}), "
        f"{cfg.input_size}px, {len(taxonomy.leaves)} leaves of taxonomy {cfg.taxonomy!r}",
        "data": {
            "dataset": f"{cfg.dataset} ({cfg.data})",
            "attribution": taxonomy.datasets.get(cfg.dataset, {}).get("attribution", ""),
            "n_images": len(data) - sum(n_extra),
            "split_file": split_path.name,
            "split_sizes": main_sizes,
            **({"extra": extra} if extra else {}),
            "train_images_used": len(_subsample(split["train"], data.nodes, cfg.limit_per_class, cfg.seed)),
            "inner_node_labels": "images labelled at an inner node (PBC: IG_ -> myeloid_immature, NEUTROPHIL_ -> "
            "neutrophil) are trained with -log sum p(its leaves)",
        },
        "training": {
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
            "history": state["history"],
            "epochs_run": state["epoch"],
            "train_minutes": round(state["seconds"] / 60, 1),
            "best_val_leaf_macro_f1": round(state["best"], 4),
        },
        "metrics_test": report,
        "metrics_test_uncalibrated": {k: report_uncal[k] for k in ("calibration",)},
        "metrics_val": {k: val_report[k] for k in ("leaf", *taxonomy.groupings, "calibration") if k in val_report},
        "calibration": {"temperature": spec.temperature, "fitted_on": "val split (NLL, hierarchical targets)"},
        "speed": speed,
        "params": n_params,
        "weights_mb": round(path.stat().st_size / 1e6, 2),
        "sha256": sha256_file(path),
        "command": _command_line(),
        "commands_history": state.get("commands", []),
        "ood_val_threshold": threshold,
    }
    spec.save(out)
    return path


def measure_speed(clf: Classifier, n_single: int = 20, batch: int = 64, threads: int | None = None) -> dict[str, Any]:
    """Median single-crop latency and batched throughput on synthetic crops (no accuracy meaning)."""
    from cellkit.synth import make_crop

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        crops = [make_crop(i % 6, 128, i) for i in range(batch)]
        clf.predict(crops[:2])
        times = []
        for i in range(n_single):
            t = time.perf_counter()
            clf.predict([crops[i % batch]])
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        clf.predict(crops, batch_size=batch)
        clf.predict(crops, batch_size=batch)
        rate = 2 * batch / (time.perf_counter() - t)
        return {
            "single_crop_ms_median": round(1000 * float(np.median(times)), 2),
            "batched_crops_per_s": round(rate, 1),
            "batch": batch,
            "threads": torch.get_num_threads(),
        }
    finally:
        torch.set_num_threads(old)
