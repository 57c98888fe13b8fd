"""What a lab the model never saw gets: train with the labelled cells of some labs, score the others.

    python bench/leave_one_lab_out.py --hold-out Raabin-WBC            # about 25 min on 2 idle threads
    python bench/leave_one_lab_out.py --hold-out BCCD BCDD --json out.json

The default model's recipe (``classifier_lite0_v4``'s card) with ``--extra`` limited to the labs *not* held out
(the train part of ``bench/data/txl_pbc_wbc_labels.csv``), its last epoch averaged ``--average-weight`` : rest
with the base model (WiSE-FT), then scored on the held-out labs' eval cells by ``other_labs_labelled.score``. The
base model's figures are printed beside it, and the 80 cells of BCCD's ``cbc/`` eval images (``CBC_ROW``) as a
fourth row, held out with BCCD. The labels are ours (see ``other_labs_labelled.py``); with few labs
and few classes per lab this is a rough estimate, and the OOD flag of the averaged model is not refitted (its
``flagged`` figures are the base model's bank on new features: ignore them).

The base must be a model that never saw these labs. ``classifier_lite0_v3`` (v4's start) is no longer bundled:
restore it from the repository's history into a folder of its own and point ``CELLKIT_WEIGHTS_DIR`` there
(with ``pbc_split.json``), e.g. ``git show f81d897:weights/classifier_lite0_v3.json > DIR/classifier_lite0_v3.json``
and the same for ``.safetensors``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def _bench() -> object:
    spec = importlib.util.spec_from_file_location("other_labs_labelled", HERE / "other_labs_labelled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold-out", nargs="+", required=True, help="TXL-PBC sources never trained on")
    parser.add_argument("--base", default="classifier_lite0_v3", help="the model fine-tuned (default v4's start)")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--samples-per-epoch", type=int, default=6400)
    parser.add_argument("--extra-share", type=float, default=0.15)
    parser.add_argument("--average-weight", type=float, default=0.7, help="share of the fine-tuned weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from cellkit import config
    from cellkit.classify import load_classifier

    bench = _bench()
    unknown = sorted(set(args.hold_out) - set(bench.SOURCES))
    if unknown:
        raise SystemExit(f"--hold-out: expected some of {', '.join(bench.SOURCES)}, got {', '.join(unknown)}")
    data = config.data_dir()
    if data is None or not (data / "txl_pbc").is_dir():
        raise SystemExit("no ../shared/data/txl_pbc: set CELLKIT_DATA_DIR")
    from cellkit.errors import CellkitError
    from cellkit.models import load_spec

    try:
        load_spec(args.base)
    except CellkitError as exc:
        raise SystemExit(f"--base {args.base}: {exc} (see this script's docstring)") from None
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="lolo_"))
    extra = work / "extra"
    shutil.rmtree(extra, ignore_errors=True)
    for source, items in bench.labelled_crops(data / "txl_pbc", "train", 2.5).items():
        if source not in args.hold_out:
            bench.write_crops(extra, source, items)
    n_extra = sum(1 for _ in extra.rglob("*.png"))
    print(f"training with {n_extra} labelled cells of the labs not held out ({work})", flush=True)
    subprocess.run(
        [
            sys.executable, "-m", "cellkit", "train", "classifier", "--name", "lolo", "--init-from", args.base,
            "--framing", "nucleus", "--optics", "0.3", "--colour-strength", "1.5", "--view", "0.7",
            "--zoom", "0.8", "1.25", "--colour-norm", "--epochs", str(args.epochs),
            "--samples-per-epoch", str(args.samples_per_epoch), "--lr", "3e-4", "--patience", str(args.epochs),
            "--threads", str(args.threads), "--split-file", str(config.weights_dir() / "pbc_split.json"),
            "--input-size", "128", "--ood-flag-share", "0.08", "--extra", str(extra),
            "--extra-share", str(args.extra_share), "--out", str(work / "out"), "--workdir", str(work / "run"),
            "--replace",  # a re-run in the same --work folder
        ],
        check=True,
    )  # fmt: skip
    last = torch.load(work / "run" / "last.pt", map_location="cpu", weights_only=True)["model"]
    clf = load_classifier(args.base)
    base = {k: v.clone() for k, v in clf.model.state_dict().items()}
    crops = bench.labelled_crops(data / "txl_pbc", "eval", clf.spec.crop_scale)
    more = bench.cbc_crops(data, clf.spec.crop_scale)  # BCCD's cbc/ eval images: 80 more cells of that lab
    if more:
        crops[bench.CBC_ROW] = more
    lab_of = {bench.CBC_ROW: "BCCD"}
    report: dict[str, dict[str, object]] = {}
    w = args.average_weight
    for label, state in (
        (args.base, base),
        (f"trained without {' + '.join(args.hold_out)}", {k: w * last[k] + (1 - w) * v if v.is_floating_point() else v
                                                          for k, v in base.items()}),
    ):  # fmt: skip
        clf.model.load_state_dict(state)
        clf.model = clf.model  # rebuild the folded inference copy
        report[label] = {src: bench.score(clf, crops[src]) for src in (*bench.SOURCES, bench.CBC_ROW) if src in crops}
        for src, row in report[label].items():
            seen = "held out" if lab_of.get(src, src) in args.hold_out else "seen"
            print(f"{label:<36} {src:<11} ({seen:<8}) acc {row['accuracy']:.3f} recall {row['recall']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"hold_out": args.hold_out, "report": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
