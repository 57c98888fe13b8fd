"""Time the dataset index: first (uncached) index, cached reopen, and a full summary.

Usage: python bench/bench_stats.py [PATH] [--workers N]   (default PATH: ../shared/data/pbc)
Uses a fresh temporary cache folder so the first run really decodes every image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(ROOT.parent / "shared" / "data" / "pbc"))
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: cores, max 4)")
    parser.add_argument("--reopen", type=int, default=3, help="cached reopen repetitions (best is reported)")
    args = parser.parse_args()
    if not Path(args.path).is_dir():
        print(f"error: {args.path}: no such folder", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="cellkit-bench-") as tmp:
        os.environ["CELLKIT_CACHE_DIR"] = tmp
        from cellkit.dataset_index import index_dataset
        from cellkit.stats import summary

        print(f"machine: {os.cpu_count()} cores, load average before {os.getloadavg()}")
        t0 = time.perf_counter()
        first = index_dataset(args.path, progress=True, workers=args.workers)
        t_first = time.perf_counter() - t0
        n = len(first.images)
        print(f"first index: {n} images, {first.n_computed} decoded in {t_first:.1f} s = {n / t_first:.0f} img/s")
        print(f"  load average after first index {os.getloadavg()}")
        reopen = []
        for _ in range(args.reopen):
            t0 = time.perf_counter()
            again = index_dataset(args.path)
            reopen.append(time.perf_counter() - t0)
            assert again.n_computed == 0, "cache miss on reopen"
        print(f"cached reopen: best {min(reopen):.2f} s of {args.reopen} ({n / min(reopen):.0f} img/s), 0 decoded")
        t0 = time.perf_counter()
        s = summary(again)
        print(
            f"summary (counts, duplicates, balancing): {time.perf_counter() - t0:.2f} s; "
            f"{s['duplicates']['pairs']} duplicate pairs, {len(s['unreadable'])} unreadable"
        )
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.parquet"))
        print(f"cache size on disk: {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
