"""Adapt a classifier to one lab in a minute on the CPU, from a few labelled crops or only unlabelled ones.

What changes, in order (each step is recorded in the new model's card):

1. **slide colour** — the lab's own slide background (median over its crops) becomes the spec's
   ``source_background``, so every crop is white-balanced with the same gains, even tight crops that
   show no background;
2. **normalisation statistics**, only when asked (``batchnorm=True``, ``cellkit adapt --batchnorm``) —
   BatchNorm running statistics are re-estimated on the lab's crops (AdaBN, Li et al. 2016) when there
   are at least :data:`MIN_BN_IMAGES`. Off by default because on real other labs it hurt
   (base ``classifier_lite0_v3``, which never saw those labs; our labelled cells of TXL-PBC): adapting
   from unlabelled crops with it, 5-class accuracy fell on Raabin-WBC 0.593 -> 0.500 and on BCCD
   0.719 -> 0.469 (slide colour alone: 0.605 and 0.719); with all 93 labelled Raabin-WBC cells, balanced
   accuracy 0.855 with it, 0.891 without. A lab's crops carry its class mix as well as its stain, and
   BatchNorm statistics learn both;
3. **the classifier head** (labelled crops only) — the last linear layer is fine-tuned on the
   penultimate features of the lab's crops (several augmented views each), with the tree-aware loss
   (a crop labelled ``neutrophil`` teaches the node, not a subtype), class-balanced, and pulled towards
   the base head so that 10 crops per class cannot wreck it;
4. **the review verdict** — the lab's features join the OOD feature bank, so its normal cells are not
   flagged as unlike the training data.

Before/after figures come from stratified k-fold cross-validation on the labelled crops: each fold
is adapted without its held-out crops, and both models are scored on them (balanced accuracy of the
forced choice, a prediction counting as right when it lies under the crop's label).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellkit import config
from cellkit.classify import Classifier, save_classifier
from cellkit.colour import background_rgb
from cellkit.errors import CellkitError, named
from cellkit.models import check_model_name, list_specs, sha256_file
from cellkit.nets import penultimate_and_logits
from cellkit.preprocess import Preprocess
from cellkit.taxonomy import UNKNOWN, Taxonomy
from cellkit.unknown import OodScorer

MIN_BN_IMAGES = 32  # fewer crops than this give BatchNorm statistics noisier than the base model's
VIEWS = 4  # augmented views per labelled crop for the head
UNLABELLED_ADVICE = (  # measured with bench/adapt_other_labs.py (classifier_lite0_v3 and _v4, 3 labs, 2026-12-01)
    "no labelled crops: whether this helps your lab cannot be measured. On three other labs' white cells, "
    "adapting from unlabelled crops changed 5-class accuracy by -0.02 to +0.04, while 10 labelled cells per "
    "cell type raised it by up to 0.57; label about 10 cells of each type to measure and adapt"
)


@dataclass
class LabelledCrops:
    """Crops with a taxonomy node each (``names`` say where they came from)."""

    images: list[np.ndarray]
    nodes: list[str]
    names: list[str]
    skipped: list[str] = field(default_factory=list)  # "name: why" for crops that could not be used
    dropped: dict[str, str] = field(default_factory=dict)  # folder -> "n crop(s): why" for folders none of whose
    # crops were used: a whole cell type the adapted model was not taught (cells left for review excepted)

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.nodes) == len(self.names)):
            raise CellkitError(
                f"LabelledCrops: expected as many nodes and names as images, got "
                f"{len(self.images)} / {len(self.nodes)} / {len(self.names)}"
            )

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.nodes).items()))


def read_labelled(
    inputs: list[str | Path | bytes], taxonomy: Taxonomy, upload_name: str = "upload.zip"
) -> LabelledCrops:
    """Crops from folders or zips laid out ``<node>/<image>`` (node id, name or abbreviation; inner nodes allowed).

    The reviewed-cells zip of the Slide page has this layout. Folders named ``unknown`` (cells left for
    review) and names that are no node of the taxonomy are skipped and listed in ``skipped``.
    """
    from itertools import chain

    from cellkit.io import iter_images, iter_zip

    images, nodes, names, skipped = [], [], [], []
    seen: Counter[str] = Counter()  # crops per folder, and the first reason one of its crops was not used
    first_why: dict[str, str] = {}
    zips = [iter_zip(b, name=upload_name) for b in inputs if isinstance(b, bytes)]  # messages name the user's file
    paths = [p for p in inputs if not isinstance(p, bytes)]
    for item in chain(iter_images(paths), *zips):
        folder = PurePosixPath(str(item.name).replace("\\", "/")).parent.name
        seen[folder] += 1
        node, why = _node_of(item, folder, taxonomy, upload_name)
        if node is None:
            skipped.append(named(item.name, why))
            first_why.setdefault(folder, why[len(item.name) + 2 :] if why.startswith(f"{item.name}: ") else why)
            continue
        images.append(item.image)
        nodes.append(node)
        names.append(str(item.name))
    if not images:
        where = ", ".join(str(p) for p in paths) or "the upload"
        why = f" ({len(skipped)} skipped, e.g. {skipped[0]})" if skipped else ""
        raise CellkitError(
            f"no labelled crops found in {where}{why}: expected <cell type>/<image> folders "
            f"(e.g. {', '.join(taxonomy.group_ids[:3])}) in a folder or zip"
        )
    used = Counter(PurePosixPath(n.replace("\\", "/")).parent.name for n in names)
    dropped = {
        f: f"{seen[f]} crop(s): {first_why[f]}"
        for f in sorted(seen)
        if not used[f] and f not in (UNKNOWN, upload_name) and f in first_why
    }
    return LabelledCrops(images, nodes, names, skipped, dropped)


def _node_of(item: Any, folder: str, taxonomy: Taxonomy, upload_name: str) -> tuple[str | None, str]:
    """The node a crop of ``folder`` teaches, or None and why it cannot be used: unreadable, in no folder, left for
    review, or in a folder that is no cell type (with the near one suggested)."""
    from cellkit.data import class_to_node

    if item.error or item.image is None:
        return None, item.error or "not a readable image"
    node = class_to_node(taxonomy, folder) if folder and folder != UNKNOWN else None
    if node is None and folder == upload_name:  # a crop at the top of the zip, in no folder
        return None, "in no cell-type folder; expected <cell type>/<image>, e.g. neutrophil/1.png"
    if node is None and folder == UNKNOWN:
        return None, "a cell left for review (unknown/), not a cell type: not used"
    if node is None:
        return None, f"folder {folder!r} is no cell type of taxonomy {taxonomy.name!r}" + _near(folder, taxonomy)
    return node, ""


def _near(folder: str, taxonomy: Taxonomy) -> str:
    """ "; did you mean neutrophil?" for a folder named nearly as a node ("Neutrophils", "lymphocyte "), else ""."""
    import difflib

    names = {n.lower(): n for n in taxonomy.ids}
    names.update({taxonomy.display(n).lower(): n for n in taxonomy.ids})
    close = difflib.get_close_matches(folder.strip().lower(), list(names), n=1, cutoff=0.75)
    return f"; did you mean {names[close[0]]}?" if close else ""


# ---- the steps -------------------------------------------------------------------------------
def lab_background(images: list[np.ndarray]) -> list[float]:
    """The lab's slide background: median over crops of each crop's brightest pixels' colour."""
    return [round(float(v), 1) for v in np.median(np.stack([background_rgb(im) for im in images]), axis=0)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> int:
    """Re-estimate every BatchNorm layer's running mean/var on ``x`` (AdaBN); returns the layers changed."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    finally:
        for m, (momentum, training) in zip(bns, saved, strict=True):
            m.momentum = momentum
            m.train(training)
    return len(bns)


def _views(x: torch.Tensor, n_views: int, seed: int) -> torch.Tensor:
    """Cheap label-preserving views of normalised crops: the 8 flips/rotations, and a little colour jitter."""
    g = torch.Generator().manual_seed(seed)
    out = [x]
    for v in range(1, n_views):
        y = torch.rot90(x, k=v % 4, dims=(2, 3))
        if v >= 4 or torch.rand(1, generator=g) < 0.5:
            y = torch.flip(y, dims=(3,))
        gain = 1 + (torch.rand(len(x), 3, 1, 1, generator=g) - 0.5) * 0.1
        out.append(y * gain)
    return torch.cat(out)


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([penultimate_and_logits(model, x[s : s + batch_size])[0] for s in range(0, len(x), batch_size)])


def fit_head(
    head: nn.Linear,
    feats: torch.Tensor,
    nodes: list[str],
    taxonomy: Taxonomy,
    steps: int = 150,
    pull: float = 1e-3,
    lr: float = 5e-3,
) -> nn.Linear:
    """A copy of ``head`` fine-tuned on (feats, nodes): tree-aware loss, class-balanced, pulled to the start."""
    from cellkit.train.losses import hierarchical_loss, target_masks

    new = copy.deepcopy(head)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    masks = target_masks(nodes, taxonomy)
    count = Counter(nodes)
    weights = torch.tensor([1.0 / count[n] for n in nodes])
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = hierarchical_loss(new(feats), masks, smoothing=0.05, weights=weights)
        loss = loss + pull * (F.mse_loss(new.weight, w0, reduction="sum") + F.mse_loss(new.bias, b0, reduction="sum"))
        loss.backward()
        opt.step()
    return new.eval()


# ---- one adaptation --------------------------------------------------------------------------
def _adapt_once(
    base: Classifier, labelled: LabelledCrops | None, unlabelled: list[np.ndarray], seed: int, batchnorm: bool = False
) -> tuple[Classifier, list[str]]:
    spec = copy.deepcopy(base.spec)
    model = copy.deepcopy(base.model)
    steps: list[str] = []
    all_images = (labelled.images if labelled else []) + list(unlabelled)
    if spec.background:
        framed = [base.prep.frame(im)[0] for im in all_images]
        spec.source_background = lab_background(framed)
        steps.append("slide colour: this lab's slide background is balanced to the training slides' before classifying")
    x_all = Preprocess.from_spec(spec)(all_images)
    if batchnorm and len(all_images) >= MIN_BN_IMAGES:
        n = recalibrate_batchnorm(model, x_all)
        steps.append(
            f"normalisation statistics: {n} BatchNorm layers re-estimated on the lab's {len(all_images)} crops"
        )
    elif batchnorm:
        steps.append(f"normalisation statistics kept: {len(all_images)} crops, fewer than the {MIN_BN_IMAGES} needed")
    model.eval()
    scorer = base.scorer
    if labelled is not None and len(labelled.images):
        x_lab = x_all[: len(labelled.images)]
        feats = features(model, _views(x_lab, VIEWS, seed))
        nodes = list(labelled.nodes) * VIEWS
        head = model.get_classifier()
        new_head = fit_head(head, feats, nodes, base.taxonomy)
        head.weight.data.copy_(new_head.weight.data)
        head.bias.data.copy_(new_head.bias.data)
        steps.append(
            f"cell types: the model's last layer is fitted to {len(labelled.images)} labelled crops, each seen "
            f"in {VIEWS} views"
        )
        if scorer is not None and "bank" in scorer.tensors:
            own = features(model, x_lab).half()
            tensors = dict(scorer.tensors)
            tensors["bank"] = torch.cat([tensors["bank"], own.to(tensors["bank"].dtype)])
            leaf_idx = penultimate_and_logits(model, x_lab)[1].argmax(1)
            tensors["labels"] = torch.cat([tensors["labels"], leaf_idx.clamp_max(int(tensors["labels"].max()))])
            scorer = OodScorer(scorer.method, tensors, scorer.params)
            steps.append(
                f"review verdict: {len(own)} of the lab's cells are known cells to it now, so cells like them "
                "are not flagged as unfamiliar"
            )
    return Classifier(model, spec, base.taxonomy, base.ood_stats, scorer=scorer), steps


def balanced_accuracy(clf: Classifier, images: list[np.ndarray], nodes: list[str]) -> tuple[float, dict[str, float]]:
    """Forced-choice balanced accuracy: a crop is right when the argmax leaf lies under its label."""
    preds = clf.predict(images)
    hit: dict[str, list[bool]] = {}
    for p, node in zip(preds, nodes, strict=True):
        hit.setdefault(node, []).append(node in clf.taxonomy.path(p.leaf))
    per = {n: float(np.mean(v)) for n, v in sorted(hit.items())}
    return float(np.mean(list(per.values()))), per


def _folds(nodes: list[str], k: int, seed: int) -> list[np.ndarray]:
    """Stratified fold index per crop (classes with fewer crops than k are spread as far as they go)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(nodes), np.int64)
    for node in sorted(set(nodes)):
        idx = rng.permutation([i for i, n in enumerate(nodes) if n == node])
        fold[idx] = np.arange(len(idx)) % k
    return [np.flatnonzero(fold == f) for f in range(k)]


@dataclass
class Adapted:
    """The adapted classifier and what was measured while making it."""

    classifier: Classifier
    report: dict[str, Any]


def adapt(
    base: Classifier,
    name: str,
    labelled: LabelledCrops | None = None,
    unlabelled: list[np.ndarray] | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: Any = None,
    batchnorm: bool = False,
) -> Adapted:
    """Adapt ``base`` to a lab (see the module docstring); cross-validated before/after when labelled.
    ``batchnorm`` re-estimates the BatchNorm statistics on the lab's crops too (off: it hurt on real labs)."""
    check_model_name(name)
    unlabelled = list(unlabelled or [])
    if labelled is None and not unlabelled:
        raise CellkitError("adapt: give labelled crops, unlabelled crops, or both")
    if labelled is None and not batchnorm and not base.spec.background:
        raise CellkitError(
            f"adapt: unlabelled crops alone change nothing in {base.spec.name} (it has no slide-colour reference); "
            "give labelled crops, or ask for BatchNorm statistics (--batchnorm)"
        )
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    report: dict[str, Any] = {"base_model": base.spec.name, "n_unlabelled": len(unlabelled)}
    if labelled is not None:
        report["labelled_counts"] = labelled.counts()
        report["skipped"] = labelled.skipped[:50]
        report["dropped"] = dict(labelled.dropped)  # cell types the lab labelled that this model was not taught
        report["untaught"] = untaught(labelled.nodes, base.taxonomy)
        k = int(min(folds, max(Counter(labelled.nodes).values())))
        if k >= 2:
            before, after = [], []
            for f, held in enumerate(_folds(labelled.nodes, k, seed)):
                if progress:
                    progress(f"fold {f + 1} of {k}")
                keep = np.setdiff1d(np.arange(len(labelled.nodes)), held)
                train = LabelledCrops(
                    [labelled.images[i] for i in keep],
                    [labelled.nodes[i] for i in keep],
                    [labelled.names[i] for i in keep],
                )
                fold_clf, _ = _adapt_once(base, train, unlabelled, seed + f, batchnorm)
                test_imgs, test_nodes = [labelled.images[i] for i in held], [labelled.nodes[i] for i in held]
                before.extend(zip(base.predict(test_imgs), test_nodes, strict=True))
                after.extend(zip(fold_clf.predict(test_imgs), test_nodes, strict=True))
            report["cross_validation"] = {
                "folds": k,
                "before": _summary(before, base.taxonomy),
                "after": _summary(after, base.taxonomy),
            }
            report["advice"] = advice(report["cross_validation"], _called(base.spec))
            still = report["cross_validation"]["after"]["flagged_for_review"]
            if still >= STILL_FLAGGED:  # the table says it; the advice must not read as if all were settled
                report["advice"] += f"; {still:.0%} of the held-out crops are still flagged for review"
        else:
            report["cross_validation"] = {"folds": 0, "why": "one crop per class: nothing to hold out"}
    else:
        report["advice"] = UNLABELLED_ADVICE
    if progress:
        progress("adapting on all crops")
    clf, steps = _adapt_once(base, labelled, unlabelled, seed, batchnorm)
    report["steps"] = steps
    report["seconds"] = round(time.perf_counter() - t0, 1)
    clf.spec = copy.deepcopy(clf.spec)
    clf.spec.name = name
    clf.spec.weights = f"{name}.safetensors"
    clf.spec.folder = ""
    clf.spec.card = {
        "default": False,
        "summary": f"{_called(base.spec)} adapted to a lab ({sum(report.get('labelled_counts', {}).values())} "
        f"labelled, {len(unlabelled)} unlabelled crops)",
        "adapted_from": {"name": base.spec.name, "sha256": base.spec.card.get("sha256", "")},
        "adaptation": report,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Adapted(clf, report)


STILL_FLAGGED = 0.2  # held-out crops still flagged after adapting, at or above which the advice says so
UNTAUGHT_WORDS = (
    "no labelled crops of {names}: the adapted model may call these less often than the base model did (on a "
    "real lab, 157 BCCD cells, monocytes fell from 0.75 to 0.08 recall when none were given); add some crops of "
    "every cell type your lab sees"
)


def untaught_words(groups: Sequence[str], taxonomy: Taxonomy) -> str:
    """The warning for :func:`untaught` classes, by their display names."""
    return UNTAUGHT_WORDS.format(names=", ".join(taxonomy.display(g) for g in groups))


def untaught(nodes: Sequence[str], taxonomy: Taxonomy) -> list[str]:
    """The taxonomy's primary classes (e.g. the 8 PBC groups) that none of the labelled nodes covers: adapting
    fits the model to the classes it is given, and the others lose ground (measured: bench/adapt_other_labs.py)."""
    taught = {leaf for node in set(nodes) for leaf in taxonomy.leaves_under(node)}
    groups: dict[str, list[str]] = {}
    for leaf, group in taxonomy.primary_grouping().items():
        if taxonomy.is_leaf(leaf):
            groups.setdefault(group, []).append(leaf)
    return [g for g, leaves in groups.items() if not taught & set(leaves)]


def _called(spec: Any) -> str:
    """A model as people read it: its display name, with its name when they differ ("White cells (v4)
    (classifier_lite0_v4)"), so the page and the CLI both say which one."""
    shown = (spec.card or {}).get("display_name") or spec.name
    return shown if shown == spec.name else f"{shown} ({spec.name})"


def advice(cv: dict[str, Any], base_name: str) -> str:
    """One line on whether the adapted model should be used: it must beat the base on held-out crops."""
    b, a = cv["before"]["balanced_accuracy"], cv["after"]["balanced_accuracy"]
    if a >= b + 0.01:
        return f"adapting helped on held-out crops (balanced accuracy {b:.3f} -> {a:.3f}): use the adapted model"
    if a <= b - 0.01:
        return (
            f"adapting did not help (balanced accuracy {b:.3f} -> {a:.3f} on held-out crops): keep using "
            f"{base_name}, or give more labelled crops"
        )
    return f"no clear change (balanced accuracy {b:.3f} -> {a:.3f} on held-out crops): either model will do"


def _summary(pairs: list[tuple[Any, str]], taxonomy: Taxonomy) -> dict[str, Any]:
    hit: dict[str, list[bool]] = {}
    for pred, node in pairs:
        hit.setdefault(node, []).append(node in taxonomy.path(pred.leaf))
    per = {n: round(float(np.mean(v)), 3) for n, v in sorted(hit.items())}
    return {
        "balanced_accuracy": round(float(np.mean(list(per.values()))), 3),
        "accuracy": round(float(np.mean([h for v in hit.values() for h in v])), 3),
        "per_class_recall": per,
        "flagged_for_review": round(float(np.mean([p.label == UNKNOWN for p, _ in pairs])), 3),
        "n": len(pairs),
    }


def check_name(name: str, replace: bool = False, folder: str | Path | None = None) -> None:
    """Names are file-safe, never those of a bundled model (an adapted model never replaces one), and not those
    of a model made here before unless ``replace``."""
    check_model_name(name)
    if any(s.name == name for s in list_specs(config.weights_dir())):
        raise CellkitError(f"model name {name!r} is a bundled model; choose another name")
    try:
        folder = Path(folder or config.user_models_dir())
    except OSError as exc:  # CELLKIT_HOME under a file, on a read-only disk...
        why = exc.strerror or exc
        raise CellkitError(f"cannot keep models in CELLKIT_HOME: {why}; set it to a writable folder") from None
    from cellkit.writes import folder_problem

    problem = folder_problem(folder)
    if problem:  # found before the work, not after it
        raise CellkitError(f"cannot save a model in {folder}: {problem}; set CELLKIT_HOME to a writable folder")
    if not replace and (folder / f"{name}.json").exists():
        raise CellkitError(f"a model named {name!r} already exists in {folder}; choose another name or replace it")


def save_adapted(adapted: Adapted, folder: str | Path | None = None, replace: bool = False) -> Path:
    """Write the adapted model and its card under CELLKIT_HOME/models (or ``folder``); returns the weights path.
    An earlier model of the same name is replaced only with ``replace``."""
    clf = adapted.classifier
    folder = Path(folder or config.user_models_dir())
    check_name(clf.spec.name, replace, folder)
    tensors = clf.scorer.tensors if clf.scorer is not None else clf.ood_stats
    path = save_classifier(clf.model, clf.spec, folder, tensors)
    clf.spec.card["sha256"] = sha256_file(path)
    clf.spec.save(folder)
    clf.spec.folder = str(folder)
    return path
