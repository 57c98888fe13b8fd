"""Peak memory of large and hostile inputs (issue 10, part 1): each case in a fresh subprocess.

Run: ``OMP_NUM_THREADS=2 python bench/memory_bench.py`` (add ``--only smear,bomb_cli`` to pick cases).
Every test image is generated here, in a temporary folder, and deleted afterwards:

- ``smear``: a 20000 x 15000 PNG smear (a 2000 x 1500 demo smear repeated) through
  ``cellkit analyze`` (detector + classifier): target <= 2 GB peak RSS.
- ``bomb_*``: a ~1 MB PNG of 19000 x 19000 white pixels (a decode bomb): decoded alone, through
  ``cellkit analyze``, and refused by a lower ``CELLKIT_MAX_PIXELS``: target refused or <= 2.5 GB.
- ``zip_*``: a ~2 MB zip of 20 PNGs of 6000 x 6000 through ``cellkit classify`` / ``cellkit analyze``
  (streamed, one image at a time) and the app's path (a request budget): target refused or <= 2.5 GB.
- ``responsive``: in one process, a heavy job holds the only slot, a second "session" queues with
  a message, and a light thread's 20 ms ticks are timed (the longest stall is reported).

Peak RSS is ``ru_maxrss`` of the child from ``os.wait4`` (Linux, KiB), so each figure is that one
process's own peak, the Python interpreter and torch included.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3
LOW_LIMIT = {"CELLKIT_MAX_PIXELS": "3e8"}  # 300 MP: the smear fits, the 361 MP bomb does not


# ----------------------------------------------------------------------------------- test images
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png(path: Path, width: int, height: int, band: Callable[[int, int], np.ndarray], level: int = 6) -> None:
    """Write an RGB PNG band by band (``band(y0, y1)`` -> (y1-y0, width, 3) uint8), never whole in memory."""
    comp = zlib.compressobj(level)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for y0 in range(0, height, 256):
            rows = band(y0, min(height, y0 + 256))
            raw = np.zeros((len(rows), 1 + width * 3), np.uint8)  # filter byte 0 + the row
            raw[:, 1:] = rows.reshape(len(rows), -1)
            out = comp.compress(raw.tobytes())
            if out:
                fh.write(_chunk(b"IDAT", out))
        fh.write(_chunk(b"IDAT", comp.flush()) + _chunk(b"IEND", b""))


def make_smear_png(path: Path, width: int = 20000, height: int = 15000) -> None:
    from cellkit.synth import make_demo_smear

    base, *_ = make_demo_smear(2000, 1500, n_wbc=12, n_rbc=260, n_platelet=30, seed=0)
    reps = -(-width // base.shape[1])

    def band(y0: int, y1: int) -> np.ndarray:
        rows = base[np.arange(y0, y1) % base.shape[0]]
        return np.tile(rows, (1, reps, 1))[:, :width]

    write_png(path, width, height, band, level=1)


def make_white_png(path: Path, side: int) -> None:
    write_png(path, side, side, lambda y0, y1: np.full((y1 - y0, side, 3), 255, np.uint8), level=9)


# ------------------------------------------------------------------------------------ measuring
def measure(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, object]:
    """Run ``cmd`` in a fresh process; its own peak RSS, wall time, exit code and last stderr line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    # communicate() has reaped the child; its rusage is in RUSAGE_CHILDREN only as a running max, so
    # each case runs through a tiny wrapper that prints its own child's ru_maxrss (see _WRAP).
    peak_kib = 0
    for line in out.splitlines():
        if line.startswith("PEAK_KIB "):
            peak_kib = int(line.split()[1])
    last = [ln for ln in err.strip().splitlines() if ln.strip() and "it/s" not in ln and "img/s" not in ln]
    rc = proc.returncode
    for line in out.splitlines():
        if line.startswith("RC "):
            rc = int(line.split()[1])
    return {
        "peak_gb": peak_kib * 1024 / GB,
        "wall_s": time.perf_counter() - t0,
        "rc": rc,
        "said": last[-1][:160] if last else "",
    }


_WRAP = (
    "import os,subprocess,sys\n"
    "p=subprocess.Popen(sys.argv[1:])\n"
    "_,status,ru=os.wait4(p.pid,0)\n"
    "print('PEAK_KIB',ru.ru_maxrss);print('RC',os.waitstatus_to_exitcode(status))\n"
)


def run_case(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    return measure([sys.executable, "-c", _WRAP, *cmd], env)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cellkit", *args]


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


_DECODE = "from cellkit.io import read_image; a = read_image({path!r}); print(a.shape, file=__import__('sys').stderr)"
_APP_ZIP = (
    "from cellkit.io import PixelBudget, iter_zip\n"
    "from cellkit.errors import CellkitError\n"
    "data = open({path!r}, 'rb').read()\n"
    "try:\n"
    "    items = list(iter_zip(data, name='upload.zip', budget=PixelBudget()))\n"
    "except CellkitError as exc:\n"
    "    print('refused:', exc, file=__import__('sys').stderr)\n"
)
_RESPONSIVE = r"""
import sys, threading, time
from cellkit.detect import load_detector
from cellkit.io import read_image
from cellkit.limits import JobLimiter
from cellkit.slide import analyze
det = load_detector()
lim = JobLimiter(1)
stalls, msgs, done = [], [], threading.Event()
def ticker():
    while not done.is_set():
        t = time.perf_counter(); time.sleep(0.02); stalls.append(time.perf_counter() - t - 0.02)
def heavy():
    with lim.job(timeout=600):
        analyze(read_image(sys.argv[1]), det)
class Note:
    def __init__(self, m): msgs.append(m)
    def __enter__(self): return self
    def __exit__(self, *a): return False
def second():
    t = time.perf_counter()
    with lim.job(timeout=600, waiting=Note):
        pass
    msgs.append(f"second job waited {time.perf_counter() - t:.1f} s")
tick = threading.Thread(target=ticker); tick.start()
a = threading.Thread(target=heavy); a.start(); time.sleep(1.0)
b = threading.Thread(target=second); b.start()
t0 = time.perf_counter(); a.join(); b.join(); done.set(); tick.join()
print(f"heavy job {time.perf_counter() - t0 + 1:.0f} s; light thread ticks: {len(stalls)}, "
      f"longest stall {max(stalls) * 1000:.0f} ms, 99th pct {sorted(stalls)[int(0.99 * len(stalls))] * 1000:.0f} ms; "
      + " | ".join(msgs), file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    only = {c for c in args.only.split(",") if c}
    with tempfile.TemporaryDirectory(prefix="cellkit-membench-") as tmp:
        d = Path(tmp)
        smear, bomb, crops = d / "smear_20000x15000.png", d / "bomb_19000.png", d / "bomb_zip.zip"
        made = time.perf_counter()
        make_smear_png(smear)
        make_white_png(bomb, 19000)
        mid = d / "smear_6000.png"
        make_smear_png(mid, 6000, 6000)
        white = d / "white_6000.png"
        make_white_png(white, 6000)
        with zipfile.ZipFile(crops, "w", zipfile.ZIP_STORED) as zf:
            for i in range(20):
                zf.write(white, f"crops/crop_{i:02d}.png")
        print(
            f"test images made in {time.perf_counter() - made:.0f} s: smear {smear.stat().st_size / 1e6:.1f} MB, "
            f"bomb {bomb.stat().st_size / 1e6:.2f} MB, zip {crops.stat().st_size / 1e6:.2f} MB (20 x 6000x6000)",
            flush=True,
        )
        cases: list[tuple[str, list[str], dict[str, str] | None, float]] = [
            ("smear", cli("analyze", str(smear), "--out", str(d / "smear.json")), None, 2.0),
            ("bomb_decode", py(_DECODE.format(path=str(bomb))), None, 2.5),
            ("bomb_refused", cli("analyze", str(bomb), "--out", str(d / "b0.json")), LOW_LIMIT, 2.5),
            ("bomb_cli", cli("analyze", str(bomb), "--out", str(d / "b.json"), "--no-classify"), None, 2.5),
            ("zip_app", py(_APP_ZIP.format(path=str(crops))), None, 2.5),
            ("zip_classify", cli("classify", str(crops), "--out", str(d / "z.csv"), "--no-progress"), None, 2.5),
            ("zip_analyze", cli("analyze", str(crops), "--out", str(d / "z.json")), None, 2.5),
            ("responsive", [*py(_RESPONSIVE), str(mid)], None, 2.5),
        ]
        print(f"{'case':14s} {'peak RSS':>9s} {'target':>7s} {'met':>4s} {'wall':>6s} {'rc':>3s}  says", flush=True)
        for name, cmd, env, target in cases:
            if only and name not in only:
                continue
            r = run_case(cmd, env)
            ok = "yes" if r["peak_gb"] <= target else "NO"
            figures = f"{r['peak_gb']:7.2f} GB {target:5.1f} GB {ok:>4s} {r['wall_s']:5.0f}s {r['rc']:>3}"
            print(f"{name:14s} {figures}  {r['said']}", flush=True)


if __name__ == "__main__":
    main()
