"""Seconds per crop for every explanation method (and for the faithfulness curves), on this CPU.

    python bench/bench_explain.py                  # the default classifier in weights/, else an
                                                   # untrained tf_efficientnet_lite0 at 128 px
    python bench/bench_explain.py --arch tf_efficientnet_lite0 --size 112 --threads 2

Speed does not depend on the weights, so the untrained stand-in gives the same figures as the real
model of that architecture and size. Prints one line per method: median and max wall-clock seconds over
``--repeats`` crops after one warm-up, the median CPU seconds of the process (with ``--threads 1``
that is what the wall clock would read on an idle core: the machine is shared, so read both), the
median seconds of the faithfulness curves, the mean deletion / insertion AUCs (compare with the
random-order line above the table), the mean Spearman correlation with the map of a randomised
model (sanity check: near 0 is good) and the settings that method used. Crops are real PBC images
when ../shared/data/pbc exists (synthetic ones otherwise); each is explained for its predicted label.
Targets: Grad-CAM <= 0.1 s, integrated gradients <= 2 s, occlusion <= 3 s.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import time

# OpenMP threads that spin while waiting make a shared, busy CPU 10-20x slower with 2 threads
# (measured: Grad-CAM 5.7 s instead of 0.06 s at load 5). Passive waiting must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from cellkit.errors import CellkitError
from cellkit.explain import EXPLAINERS, faithfulness, random_reference, sanity_check
from cellkit.synth import make_crop

TARGETS = {"gradcam": 0.1, "ig": 2.0, "occlusion": 3.0}


def stand_in(arch: str, size: int):
    """An untrained timm model of the bundled architecture wrapped in a Classifier."""
    from cellkit.classify import Classifier
    from cellkit.models import ModelSpec
    from cellkit.nets import build_model
    from cellkit.taxonomy import load_taxonomy

    tax = load_taxonomy("pbc")
    spec = ModelSpec(
        name=f"{arch}-untrained",
        task="classifier",
        arch=arch,
        weights="none",
        input_size=size,
        labels=list(tax.leaves),
        target_layer="blocks.6" if "efficientnet" in arch else "",
    )
    return Classifier(build_model(arch, len(tax.leaves)), spec, tax)


def settings(method: str, size: int) -> str:
    occlusion = importlib.import_module("cellkit.explain.occlusion")
    integrated_gradients = importlib.import_module("cellkit.explain.integrated_gradients")
    if method == "occlusion":
        w, s = occlusion.window_and_stride(size)
        return f"window {w}px stride {s}px -> {occlusion.GRID**2} patches, {occlusion.PER_EVAL} per forward"
    if method == "ig":
        return f"n_steps {integrated_gradients.N_STEPS}, internal_batch_size {integrated_gradients.N_STEPS}"
    return ""


def load_crops(folder: str | None, n: int) -> tuple[list, str]:
    """``n`` real crops spread over the class folders of ``folder`` (PBC by default), else synthetic ones."""
    from pathlib import Path

    from cellkit import config
    from cellkit.io import IMAGE_SUFFIXES, read_image

    root = Path(folder) if folder else (config.data_dir() or Path("/nonexistent")) / "pbc"
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        return [make_crop(k % 6, 288, seed=k) for k in range(n)], "synthetic crops (cellkit.synth.make_crop, 288 px)"
    per_class = [sorted(q for q in c.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) for c in classes]
    paths = [files[k // len(classes)] for k in range(n) if (files := per_class[k % len(classes)])]
    return [read_image(p) for p in paths], f"{len(paths)} images of {root}, one class after the other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="classifier name in weights/ (default: the default one)")
    ap.add_argument("--arch", default="tf_efficientnet_lite0", help="stand-in architecture when no weights")
    ap.add_argument("--size", type=int, default=128, help="stand-in input size")
    ap.add_argument("--untrained", action="store_true", help="always use the untrained stand-in")
    ap.add_argument("--images", default=None, help="folder with <class>/ sub-folders (default: ../shared/data/pbc)")
    ap.add_argument("--node", default=None, help="node to explain (default: each crop's predicted label)")
    ap.add_argument("--repeats", type=int, default=5, help="timed crops (after one warm-up crop)")
    ap.add_argument("--sanity", type=int, default=2, help="crops for the randomisation check (0 = skip)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--methods", default=",".join(EXPLAINERS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    clf = None
    if not args.untrained:
        try:
            from cellkit.classify import load_classifier

            clf = load_classifier(args.model)
        except CellkitError as exc:
            print(f"# no trained classifier ({exc}); using an untrained stand-in")
    if clf is None:
        clf = stand_in(args.arch, args.size)
    size = clf.spec.input_size
    load = os.getloadavg()  # other jobs share these cores: wall-clock figures depend on it
    print(
        f"# model {clf.spec.name} ({clf.spec.arch}) at {size}px, target layer {clf.spec.target_layer!r}, "
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cpus, "
        f"{platform.processor() or platform.machine()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    crops, described = load_crops(args.images, args.repeats + 1)
    xs = [clf.preprocess([c]) for c in crops]
    nodes = [args.node or clf.predict([c])[0].label for c in crops]
    print(f"# crops: {described}; nodes: {'predicted label' if not args.node else args.node}")
    ref = [random_reference(clf, x, n) for x, n in zip(xs[1:], nodes[1:], strict=True)]
    rd = statistics.mean(r["random_deletion_auc"] for r in ref)
    ri = statistics.mean(r["random_insertion_auc"] for r in ref)
    print(f"# random pixel order: deletion AUC {rd:.3f}, insertion AUC {ri:.3f} (means over the timed crops)")
    print(
        f"{'method':<10} {'median s':>8} {'max s':>6} {'cpu s':>6} {'target':>6} {'faith s':>7} "
        f"{'del AUC':>7} {'ins AUC':>7} {'sanity rho':>10}  settings"
    )
    for name in args.methods.split(","):
        fn = EXPLAINERS[name]
        times, cpu, faith, scores = [], [], [], []
        for i, (x, node) in enumerate(zip(xs, nodes, strict=True)):
            t0, c0 = time.perf_counter(), time.process_time()
            hm = fn(clf, x, node)
            t1, c1 = time.perf_counter(), time.process_time()
            sc = faithfulness(clf, x, node, hm.values)
            t2 = time.perf_counter()
            if i:  # first crop is the warm-up
                times.append(t1 - t0)
                cpu.append(c1 - c0)
                faith.append(t2 - t1)
                scores.append(sc)
        pairs = list(zip(xs[1:], nodes[1:], strict=True))[: args.sanity]
        rhos = [sanity_check(clf, x, n, fn)["spearman"] for x, n in pairs]
        rho = f"{statistics.mean(rhos):10.2f}" if rhos else f"{'-':>10}"
        med = statistics.median(times)
        target = TARGETS.get(name)
        flag = "" if target is None else ("ok" if med <= target else "SLOW")
        print(
            f"{name:<10} {med:8.3f} {max(times):6.3f} {statistics.median(cpu):6.3f} {target or '':>6} "
            f"{statistics.median(faith):7.3f} {statistics.mean(s['deletion_auc'] for s in scores):7.3f} "
            f"{statistics.mean(s['insertion_auc'] for s in scores):7.3f} {rho}  {settings(name, size)} {flag}"
        )
    load = os.getloadavg()
    print(f"# load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
