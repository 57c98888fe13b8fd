"""Seconds of server work for "Explain this cell" and for a node switch on the Explain page (default methods).

Runs the real page under Streamlit's AppTest with the bundled model: a crop handed over from the Slide page
(what "Explain this cell" does), then the node changed, each ``--repeats`` times on fresh crops.

    python bench/explain_page_bench.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_explain.py: no spinning threads on a shared CPU
ROOT = Path(__file__).resolve().parents[1]


def _crops(n: int) -> list:
    from cellkit.io import read_image

    pbc = ROOT.parent / "shared" / "data" / "pbc"
    files = sorted(pbc.rglob("*.jpg")) if pbc.is_dir() else []
    files = files[:: max(1, len(files) // n)][:n]
    if files:
        return [read_image(f) for f in files]
    from cellkit.synth import make_crop

    return [make_crop(k % 4, size=360, seed=k) for k in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.update(CELLKIT_HOME=tempfile.mkdtemp(prefix="explain-bench-"))
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from streamlit.testing.v1 import AppTest

    from cellkit import load_taxonomy
    from cellkit.models import default_spec

    ids = list(load_taxonomy(default_spec("classifier").taxonomy).ids)
    crops = _crops(args.repeats + 1)
    first, switch = [], []
    for k, crop in enumerate(crops):
        at = AppTest.from_file(str(ROOT / "app_pages/explain.py"), default_timeout=300)
        at.session_state["explain_crop"] = crop
        started = time.perf_counter()
        at.run()
        took = time.perf_counter() - started
        if at.exception:
            raise SystemExit(f"the page failed: {at.exception[0].message}")
        box = next(s for s in at.selectbox if s.label == "Node to explain")
        other = next(i for i in ids if i != box.value)  # another node of the tree
        started = time.perf_counter()
        box.set_value(other).run()
        moved = time.perf_counter() - started
        if k:  # the first one loads the model and warms the caches
            first.append(took)
            switch.append(moved)
        else:
            print(f"first visit (model load, imports): {took:.2f} s")
    print(f"Explain this cell: median {statistics.median(first):.2f} s, max {max(first):.2f} s; "
          f"node switch: median {statistics.median(switch):.2f} s, max {max(switch):.2f} s "
          f"({len(first)} crops, {args.threads} threads, Grad-CAM + IG + faithfulness)")  # fmt: skip


if __name__ == "__main__":
    main()
