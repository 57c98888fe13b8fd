"""Throughput, memory and scaling of ``cellkit batch`` (issue 13): each run a fresh ``cellkit batch`` process.

Run: ``python bench/batch_bench.py`` (``--sizes 100 1000``, ``--workers 1 2``, ``--engines local ray``,
``--quick`` for a short smoke run). Inputs are the 118 TXL-PBC test smears (``../shared/data``) when
present, else 640 x 480 synthetic demo smears, linked under a temp folder as many times as needed
(one distinct path per image, so the job sees N images).

Per run it prints:

- ``steady img/s``: images finished per second between the first and the last record (record file
  times), so model loading and Ray start-up are left out; ``wall s`` includes them and the final
  summary/Parquet build;
- ``peak RSS`` of the main process and of the largest worker (sampled every 0.2 s with psutil);
- the scaling target: local engine, 2 workers >= 90 % of 2x the 1-worker rate (1 thread per worker
  in both, so a worker is one core).

What it cannot show: a real cluster (network file system, many nodes), disks slower than this
machine's, or images much larger than a field of view (those are bounded by the tiling, see
``bench/memory_bench.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
TXL_TEST = ROOT.parent / "shared" / "data" / "txl_pbc" / "images" / "test"


def pool(tmp: Path) -> tuple[list[Path], str]:
    """Source images: the TXL-PBC test smears, else drawn demo smears."""
    real = sorted(TXL_TEST.glob("*.png")) if TXL_TEST.is_dir() else []
    if real:
        return real, f"{len(real)} TXL-PBC test smears (360x363 to 640x480), repeated"
    from cellkit.io import encode_png
    from cellkit.synth import make_demo_smear

    out = []
    for k in range(20):
        path = tmp / "pool" / f"demo{k:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(make_demo_smear(640, 480, seed=k)[0]))
        out.append(path)
    return out, "20 synthetic 640x480 demo smears, repeated"


def inputs(tmp: Path, sources: list[Path], n: int) -> Path:
    folder = tmp / f"in{n}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for k in range(n):
            os.symlink(sources[k % len(sources)], folder / f"img{k:05d}.png")
    return folder


def run(folder: Path, out: Path, engine: str, workers: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "cellkit", "batch", str(folder), "--out", str(out), "--engine", engine]
    cmd += ["--workers", str(workers), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    log = out.with_suffix(".log")  # a file, not a pipe: a full pipe would block the job's progress bar
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err_fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_fh, text=True, env=env)
        peak_main, peak_worker = _watch(proc)
    err = log.read_text()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"cellkit batch failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    times = sorted(p.stat().st_mtime for p in (out / "results").glob("*/*.json"))
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    return {"n": len(times), "wall": wall, "steady": steady, "rss_main": peak_main, "rss_worker": peak_worker}


def _watch(proc: subprocess.Popen) -> tuple[int, int]:
    """Peak RSS of the job's main process and of its largest child, until it exits."""
    main = psutil.Process(proc.pid)
    peak_main, peak_worker = 0, 0
    while proc.poll() is None:
        try:
            peak_main = max(peak_main, main.memory_info().rss)
            for child in main.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    peak_worker = max(peak_worker, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    return peak_main, peak_worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"])
    ap.add_argument("--quick", action="store_true", help="40 images, local and ray, 1 and 2 workers")
    args = ap.parse_args()
    if args.quick:
        args.sizes = [40]
    with tempfile.TemporaryDirectory(prefix="cellkit-batch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sources, what = pool(tmp)
        print(f"inputs: {what}; {os.cpu_count()} cores; 1 torch thread per worker")
        print(f"{'engine':6} {'workers':>7} {'images':>6} {'steady img/s':>12} {'wall s':>7} "
              f"{'main RSS GB':>11} {'worker RSS GB':>13}")  # fmt: skip
        rates: dict[tuple[str, int, int], dict] = {}
        for n in sorted(args.sizes):
            folder = inputs(tmp, sources, n)
            # the 1000+ runs: local engine only, on the most workers (the scaling curve); both engines at the smallest
            combos = [(e, w) for e in args.engines for w in args.workers] if n == min(args.sizes) else [
                ("local", max(args.workers))
            ]  # fmt: skip
            for engine, workers in combos:
                out = tmp / f"out-{engine}-{workers}-{n}"
                r = run(folder, out, engine, workers, threads=1)
                rates[(engine, workers, n)] = r
                ram = r["rss_worker"] / 1e9 if engine == "ray" or workers > 1 else float("nan")
                print(f"{engine:6} {workers:>7} {r['n']:>6} {r['steady']:>12.2f} {r['wall']:>7.1f} "
                      f"{r['rss_main'] / 1e9:>11.2f} {ram:>13.2f}", flush=True)  # fmt: skip
        small = min(args.sizes)
        one, two = rates.get(("local", 1, small)), rates.get(("local", 2, small))
        if one and two:
            share = two["steady"] / (2 * one["steady"])
            verdict = "met" if share >= 0.9 else "MISSED"
            print(f"local, 2 workers vs 2x 1 worker: {share:.0%} (target >= 90 %: {verdict})")
        for w in args.workers:
            loc, ray = rates.get(("local", w, small)), rates.get(("ray", w, small))
            if loc and ray:
                print(f"ray overhead, {w} worker(s), {small} images: steady {ray['steady'] / loc['steady']:.2f}x the "
                      f"local rate, wall +{ray['wall'] - loc['wall']:.1f} s (start-up)")  # fmt: skip
        big = max(args.sizes)
        top = rates.get(("local", max(args.workers), big))
        if top and 1000 <= big < 10_000:
            projected = top["wall"] + (10_000 - big) / top["steady"]
            print(f"10,000 images, local, {max(args.workers)} workers: projected {projected / 60:.0f} min "
                  f"from the timed {big} (not measured)")  # fmt: skip


if __name__ == "__main__":
    main()
