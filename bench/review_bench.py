"""Server work per review action on the Slide page: 100 reclassifications by key, timed run by run.

Runs the real page under Streamlit's AppTest (the script, every widget, the database writes; no browser, no
network), with the bundled models on one real-looking field. A browser adds the round trip and drawing.

    python bench/review_bench.py [--actions 100] [--image PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=100)
    parser.add_argument("--image", type=Path, help="a smear image (default: a drawn 640x480 field)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="review-bench-")
    os.environ.update(CELLKIT_HOME=home, CELLKIT_CACHE_DIR=str(Path(home) / "cache"))
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from streamlit.testing.v1 import AppTest

    from cellkit.io import encode_png, read_image
    from cellkit.synth import make_demo_smear

    image = read_image(args.image) if args.image else make_demo_smear(640, 480, n_wbc=8, n_rbc=60, seed=1)[0]
    at = AppTest.from_file(str(ROOT / "app_pages/slide.py"), default_timeout=120).run()
    at.file_uploader(key="slide_upload").upload("field.png", encode_png(image), "image/png")
    started = time.perf_counter()
    at.run()
    upload_s = time.perf_counter() - started
    result = at.session_state["slide"]["result"]
    keys = ["slide_key_lymphocyte", "slide_key_monocyte", "slide_key_segmented_neutrophil", "slide_key_eosinophil"]
    times, page = [], []
    for k in range(args.actions):
        button = keys[k % len(keys)] if k % 5 else "slide_next"
        started = time.perf_counter()
        at.button(key=button).click().run()
        times.append(time.perf_counter() - started)
        page.append(at.session_state["slide_run_s"])
        if at.exception:
            raise SystemExit(f"the page failed: {at.exception[0].message}")
    times.sort()
    page.sort()
    n_cells = sum(1 for c in result.detections.class_name if c in ("wbc", "platelet"))
    print(f"field: {result.image_shape[1]}x{result.image_shape[0]} px, {len(result.detections)} boxes, "
          f"{n_cells} white cells and platelets to review; upload + analysis run {upload_s:.2f} s")  # fmt: skip
    print(f"{args.actions} actions (4 of 5 relabel + save, 1 of 5 next): median {statistics.median(times):.3f} s, "
          f"p90 {times[int(0.9 * len(times)) - 1]:.3f} s, max {times[-1]:.3f} s per action under AppTest; the page's "
          f"own script run: median {statistics.median(page):.3f} s, p90 {page[int(0.9 * len(page)) - 1]:.3f} s, "
          f"max {page[-1]:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
