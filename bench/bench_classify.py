"""Classifier speed: model load time, single-crop latency, batched throughput (CPU).

Run from the project root (the figures in the model card's README come from this command):

    python bench/bench_classify.py --threads 2 --n 50 --batches 5

Prints: load time of the default classifier (card + weights, after imports), median latency of one
crop through ``Classifier.predict`` (preprocessing + network + OOD score), and crops/s for batches of
64. Crops are synthetic 288 px images (speed does not depend on content). Other processes on the
machine slow these figures down; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="classifier name in weights/ (default: the default one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=50, help="single-crop repetitions")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import torch

    from cellkit.classify import load_classifier
    from cellkit.synth import make_crop

    torch.set_num_threads(args.threads)
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf = load_classifier(args.model)
    t_load = time.perf_counter() - t0

    crops = [make_crop(i % 6, 288, i) for i in range(args.batch)]
    clf.predict(crops[:4])  # warm-up
    single = []
    for i in range(args.n):
        t = time.perf_counter()
        clf.predict([crops[i % len(crops)]])
        single.append(time.perf_counter() - t)
    clf.predict(crops, batch_size=args.batch)
    t = time.perf_counter()
    for _ in range(args.batches):
        clf.predict(crops, batch_size=args.batch)
    rate = args.batches * args.batch / (time.perf_counter() - t)

    print(f"model           {clf.spec.name} ({clf.spec.arch}, {clf.spec.input_size} px)")
    print(f"threads         {torch.get_num_threads()}   load average {os.getloadavg()[0]:.2f}")
    print(f"import time     {t_import:.2f} s (torch + cellkit)")
    print(f"model load      {t_load:.2f} s (card + safetensors + build)")
    print(f"single crop     {1000 * statistics.median(single):.1f} ms median over {args.n}")
    print(f"batched         {rate:.0f} crops/s (batch {args.batch}, {args.batches} batches)")


if __name__ == "__main__":
    main()
