"""Bad outputs, bad options and write faults: one clear line, exit != 0, nothing lost, nothing left behind.

Runs as root in CI, so "cannot write" is made with paths a permission bit cannot fix: a path under a
regular file, a folder or a FIFO as ``--out``; disk-full by making ``os.replace`` / ``os.fsync`` fail.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cli import run_cli
from _fakes import ColourDetector, tiny_classifier_for

import cellkit.classify
import cellkit.detect
from cellkit import config
from cellkit.io import encode_png
from cellkit.synth import BACKGROUND, make_smear


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Inputs (one smear, one blank slide), a pre-existing report, and a model loader that records its use."""
    loads: list[str] = []

    def fake_detector(name=None):
        loads.append("detector")
        return ColourDetector(tile=256, overlap=64)

    monkeypatch.setattr(cellkit.detect, "load_detector", fake_detector)
    monkeypatch.setattr(cellkit.classify, "load_classifier", tiny_classifier_for)
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "home"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    img, _boxes, _cls = make_smear(400, 300, n_wbc=1, n_rbc=6, n_platelet=1, seed=3)
    (inputs / "smear.png").write_bytes(encode_png(img))
    (inputs / "blank.png").write_bytes(encode_png(np.full((200, 200, 3), BACKGROUND, np.uint8)))
    (tmp_path / "somefile").write_text("a regular file")
    (tmp_path / "adir.csv").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "null.csv").symlink_to("/dev/null")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.csv").write_text("old report\n")
    return tmp_path, loads


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_fifo() else None)
        for p in sorted(root.rglob("*"))
    }


def _one_error_line(err: str) -> str:
    progress = re.compile(r"\d+img \[")  # tqdm's bar, redrawn with \r on stderr
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not progress.search(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("somefile/out.csv", [], "somefile is a file, not a folder"),
        ("somefile/deeper/out.csv", [], "somefile is a file, not a folder"),
        ("adir.csv", [], "is a folder"),
        ("pipe.csv", [], "device, FIFO or socket"),
        ("null.csv", [], "device, FIFO or socket"),  # a link to /dev/null: only stat()ed, never opened
        ("out/r.csv", ["--tile", "0"], "--tile: expected 64 to 8192 pixels"),
        ("out/r.csv", ["--tile", "100000"], "got 100000"),
        ("out/r.csv", ["--overlap", "-5"], "--overlap: expected 0 or more pixels, got -5"),
        ("out/r.csv", ["--tile", "256", "--overlap", "128"], "below half the tile (128) pixels, got 128"),
        ("out/r.csv", ["--overlap", "5000"], "below half the tile (320) pixels, got 5000"),  # the card's tile
        ("out/r.txt", [], "expected a .csv file name"),
    ],
    ids=["under-a-file", "deep-under-a-file", "folder", "fifo", "link-to-dev-null", "tile-0", "tile-huge", "overlap<0",
         "overlap-half", "overlap-card-tile", "suffix"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["detect", "analyze"])
def test_bad_out_or_option_fails_before_any_work(setup, monkeypatch, capsys, command, out, extra, message):
    root, loads = setup
    if command == "analyze" and out.endswith(".txt"):
        message = "expected a .json or .csv file name"
    before = _snapshot(root)
    code, stdout, err = run_cli(monkeypatch, capsys, command, root / "in", "--out", root / out, *extra)
    line = _one_error_line(err)
    assert code == 2 and stdout == "" and message in line
    assert line.count(Path(out).name) <= 1  # the file is named once
    assert loads == []  # refused before loading a model or reading an image
    assert _snapshot(root) == before  # nothing written, nothing removed, no temp file


def test_stats_json_and_explain_npy_are_checked_first(setup, monkeypatch, capsys):
    root, _ = setup
    before = _snapshot(root)
    code, _, err = run_cli(monkeypatch, capsys, "stats", root / "in", "--json", root / "adir.csv")
    assert code == 2 and "--json" in _one_error_line(err) and "is a folder" in err
    code, _, err = run_cli(monkeypatch, capsys, "stats", root / "in", "--json", root / "summary.csv")
    assert code == 2 and _one_error_line(err).endswith("summary.csv: expected a .json file name")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--out", root / "report.txt")
    assert code == 2 and _one_error_line(err).endswith("report.txt: expected a .json file name")
    crop = root / "in" / "blank.png"
    code, _, err = run_cli(monkeypatch, capsys, "explain", crop, "--out", root / "x.png", "--npy", root / "pipe.csv")
    assert code == 2 and "--npy" in _one_error_line(err) and "FIFO" in err
    code, _, err = run_cli(monkeypatch, capsys, "classify", crop, "--out", root / "somefile" / "p.csv")
    assert code == 2 and "not a folder" in _one_error_line(err)
    assert _snapshot(root) == before


@pytest.mark.parametrize("content", [[], ["notes.txt"]], ids=["empty", "no-images"])
@pytest.mark.parametrize("command", ["detect", "analyze"])
def test_folder_without_images_is_an_error(setup, monkeypatch, capsys, command, content):
    root, loads = setup
    folder = root / "nothing"
    folder.mkdir()
    for name in content:
        (folder / name).write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, command, folder, "--out", root / "out" / "r.csv")
    assert code == 2 and "no images found in" in _one_error_line(err)
    assert loads == [] and not (root / "out" / "r.csv").exists()


def test_symlinked_out_is_written_through(setup, monkeypatch, capsys):
    root, _ = setup
    link = root / "link.csv"
    link.symlink_to(root / "out" / "report.csv")
    code, _, _ = run_cli(monkeypatch, capsys, "detect", root / "in", "--out", link)
    assert code == 0
    assert link.is_symlink() and os.readlink(link) == str(root / "out" / "report.csv")
    frame = pd.read_csv(root / "out" / "report.csv")
    assert set(frame["path"].map(lambda p: Path(p).name)) == {"smear.png", "blank.png"}
    assert not list(root.rglob(".*.tmp"))


def test_image_without_detections_gets_a_row(setup, monkeypatch, capsys):
    root, _ = setup
    for command, out in [("detect", "d.csv"), ("analyze", "a.csv")]:
        args = ["--no-classify"] if command == "analyze" else []
        code, _, err = run_cli(monkeypatch, capsys, command, root / "in", "--out", root / out, *args)
        assert code == 0, err
        frame = pd.read_csv(root / out)
        blank = frame[frame["path"].str.endswith("blank.png")]
        assert len(blank) == 1 and blank[["x1", "y1", "x2", "y2", "class"]].isna().all(axis=None)
        assert (frame["path"].str.endswith("smear.png")).sum() >= 2


def _fail_for(folder: Path, real):
    """A stand-in for an os function that fails with 'disk full' for paths inside ``folder`` only."""

    def fake(*args, **kwargs):
        paths = [a for a in args if isinstance(a, str | os.PathLike)]
        if any(Path(os.fspath(p)).resolve().parent == folder.resolve() for p in paths):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize("fault", ["replace", "fsync"])
@pytest.mark.parametrize(("command", "name"), [("detect", "report.csv"), ("analyze", "report.json")])
def test_disk_full_after_the_work_keeps_the_results(setup, monkeypatch, capsys, fault, command, name):
    root, _ = setup
    out_dir = root / "out"
    old = _snapshot(out_dir)
    if fault == "replace":
        monkeypatch.setattr(os, "replace", _fail_for(out_dir, os.replace))
    else:  # the temp file's data does not fit: fsync (by file descriptor) fails for the report only
        real_fsync, real_fdopen = os.fsync, os.fdopen
        opened: dict[int, str] = {}

        def fdopen(fd, *a, **k):
            opened[fd] = os.readlink(f"/proc/self/fd/{fd}")
            return real_fdopen(fd, *a, **k)

        def fsync(fd):
            if Path(opened.get(fd, "/")).parent == out_dir.resolve():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = run_cli(monkeypatch, capsys, command, root / "in", "--out", out_dir / name)
    line = _one_error_line(err)
    assert code == 2 and "No space left on device" in line and "the results were saved to" in line
    saved = Path(line.rsplit("saved to ", 1)[1])
    assert saved.parent == config.home() / "unsaved" and saved.name.endswith(name)
    text = saved.read_text()
    assert "smear.png" in text and "blank.png" in text  # the whole report, not a part
    assert _snapshot(out_dir) == old  # the old report untouched, no temp file left


def _bomb_png() -> bytes:
    """A valid PNG header declaring 30000 x 30000 pixels (900 MP) with almost no data: a decode bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _make_bad(kind: str, folder: Path) -> tuple[Path, str]:
    """One bad input in ``folder`` and a fragment of the message it must give."""
    good = encode_png(np.full((64, 64, 3), BACKGROUND, np.uint8))
    if kind == "corrupt":
        (folder / "corrupt.png").write_bytes(good[:40])
        return folder / "corrupt.png", "corrupt.png"
    if kind == "wrong-type":
        (folder / "notes.jpg").write_text("this is a text file with an image suffix")
        return folder / "notes.jpg", "notes.jpg"
    if kind == "bomb":
        (folder / "bomb.png").write_bytes(_bomb_png())
        return folder / "bomb.png", "limit per image"
    if kind == "nested-zip":
        (folder / "outer.zip").write_bytes(_zip({"inner.zip": _zip({"a.png": good})}))
        return folder / "outer.zip", "zip inside a zip"
    if kind == "traversal-zip":
        (folder / "evil.zip").write_bytes(_zip({"../../escaped.png": good}))
        return folder / "evil.zip", "evil.zip"
    if kind == "dangling-link":
        (folder / "gone.png").symlink_to(folder / "never-there.png")
        return folder / "gone.png", "broken symbolic link"
    raise AssertionError(kind)


BAD_INPUTS = ["corrupt", "wrong-type", "bomb", "nested-zip", "traversal-zip", "dangling-link"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("command", ["classify", "detect", "analyze"])
def test_every_bad_input_is_one_line_naming_it_once_and_nothing_else_changes(setup, monkeypatch, capsys, kind, command):
    """A bad file beside a good one: the good one is done, the bad one is a row and one stderr line, exit 1."""
    tmp, _ = setup
    folder = tmp / "mixed"
    folder.mkdir()
    (folder / "smear.png").write_bytes((tmp / "in" / "smear.png").read_bytes())
    bad, fragment = _make_bad(kind, folder)
    before = _snapshot(tmp)
    out = tmp / "out" / "result.csv"
    code, _, err = run_cli(monkeypatch, capsys, command, folder, "--out", out)
    assert code == 1, err
    errors = [line for line in re.split(r"[\r\n]", err) if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], err
    assert errors[0].count(bad.name) <= 1, errors[0]  # the file is named once, not twice
    rows = pd.read_csv(out, keep_default_na=False)
    assert (rows["error"] != "").any() and (rows["error"] == "").any()  # the bad one is a row, the good one done
    after = _snapshot(tmp)
    assert {k: v for k, v in after.items() if k != "out/result.csv"} == before  # nothing else written or changed
    assert not list(tmp.parent.glob("escaped.png")) and not (tmp / "escaped.png").exists()


@pytest.mark.parametrize("command", ["classify", "detect", "analyze"])
def test_a_file_name_that_is_not_utf8_is_reported_not_a_crash(setup, monkeypatch, capsys, command):
    """Linux allows any bytes in a name: the image is analysed and its name printed with U+FFFD."""
    tmp, _ = setup
    folder = tmp / "odd"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"bad\xff\xfename.png")
    with open(raw, "wb") as fh:
        fh.write((tmp / "in" / "smear.png").read_bytes())
    out = tmp / "out" / "odd.csv"
    code, _, err = run_cli(monkeypatch, capsys, command, folder, "--out", out)
    assert code == 0, err
    paths = pd.read_csv(out)["path"].astype(str)
    assert paths.str.endswith("bad\ufffd\ufffdname.png").all()


def test_a_batch_over_a_file_name_that_is_not_utf8_finishes(setup, monkeypatch, capsys):
    from cellkit.batch.tasks import find_tasks

    tmp, _ = setup
    folder = tmp / "odd"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"x\xff.png"), "wb") as fh:
        fh.write(b"not an image")
    (task,) = find_tasks([folder])
    assert task.ref.endswith("x\ufffd.png") and len(task.key) == 20 and os.path.exists(task.path)


def test_out_that_is_one_of_the_inputs_is_refused(setup, monkeypatch, capsys):
    """classify writes any file name and explain a .png: neither may replace the image it reads."""
    tmp, loads = setup
    victim = tmp / "in" / "smear.png"
    before = victim.read_bytes()
    for args in (["classify", victim], ["classify", tmp / "in"], ["explain", victim]):
        code, _, err = run_cli(monkeypatch, capsys, *args, "--out", victim)
        assert code == 2 and "would be overwritten" in _one_error_line(err), err
    assert victim.read_bytes() == before and loads == []


def test_a_bug_is_one_line_with_a_crash_log_and_ctrl_c_says_interrupted(setup, monkeypatch, capsys):
    """The entry point's last resort: an unforeseen exception is one line (exit 1), its traceback in a log."""
    tmp, _ = setup

    def broken(*args, **kwargs):
        raise ValueError("something\nunforeseen")

    monkeypatch.setattr(cellkit.classify, "load_classifier", broken)
    code, _, err = run_cli(monkeypatch, capsys, "classify", tmp / "in" / "smear.png", "--no-progress")
    line = _one_error_line(err)
    assert code == 1 and line.startswith("error: unexpected ValueError: something unforeseen; details in ")
    log = Path(line.rsplit("details in ", 1)[1])
    assert log.is_relative_to(tmp / "home") and "Traceback" in log.read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cellkit.classify, "load_classifier", interrupted)
    code, _, err = run_cli(monkeypatch, capsys, "classify", tmp / "in" / "smear.png", "--no-progress")
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/some/file")

    monkeypatch.setattr(cellkit.classify, "load_classifier", disk_full)
    code, _, err = run_cli(monkeypatch, capsys, "classify", tmp / "in" / "smear.png", "--no-progress")
    assert code == 2 and _one_error_line(err) == "error: No space left on device (/some/file)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "classifier", "--name", "../evil"], "--name: expected letters"),
        (["train", "classifier", "--name", ""], "--name: expected letters"),
        (["train", "classifier", "--zoom", "2", "1"], "--zoom: expected 0 < min <= max"),
        (["train", "classifier", "--ood-method", "bogus"], "--ood-method: expected one of"),
        (["train", "detector", "--name", "../evild"], "--name: expected letters"),
        (["train", "classifier", "--max-minutes", "inf"], "--max-minutes: expected a finite number, got inf"),
        (["train", "detector", "--hours", "inf"], "--hours: expected a finite number, got inf"),
        (["train", "classifier", "--dataset", "nosuch"], "--dataset: expected one of"),
        (["evaluate", "--part", "bogus"], "--part: expected train, val or test"),
    ],
)
def test_training_and_evaluation_options_are_checked_before_any_work(setup, monkeypatch, capsys, args, message):
    tmp, _ = setup
    before = _snapshot(tmp)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and message in _one_error_line(err)
    assert _snapshot(tmp) == before and not (tmp.parent / "evil.json").exists()


OUT_OF_RANGE = [
    ["train", "classifier", "--input-size", "0"],
    ["train", "classifier", "--lr", "-1"],
    ["train", "detector", "--imgsz", "0"],
    ["train", "detector", "--fraction", "0"],
    ["train", "classifier", "--seed", "-1"],
    ["train", "classifier", "--samples-per-epoch", "-5"],
    ["train", "classifier", "--patience", "-1"],
    ["train", "classifier", "--limit-per-class", "-1"],
    ["train", "classifier", "--freeze-blocks", "-1"],
    ["train", "classifier", "--max-minutes", "-1"],
    ["train", "classifier", "--threads", "100000"],
    ["train", "detector", "--hours", "0"],
    ["train", "detector", "--seed", "-1"],
    ["train", "detector", "--hours", "nan"],
    ["train", "classifier", "--max-minutes", "nan"],
]


@pytest.mark.parametrize("args", OUT_OF_RANGE)
def test_out_of_range_training_options_are_usage_errors(setup, monkeypatch, capsys, args):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    line = _one_error_line(err)
    assert code == 2 and "Invalid value" in line and f"cellkit {args[0]} {args[1]} --help" in line


def test_an_unknown_option_is_one_line_that_names_it(setup, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "classify", "--bogus-option")
    assert code == 2 and "--bogus-option" in _one_error_line(err)


def test_a_bad_setting_is_one_line_at_start_not_one_per_image(setup, monkeypatch, capsys):
    tmp, loads = setup
    monkeypatch.setenv("CELLKIT_MAX_PIXELS", "abc")
    code, _, err = run_cli(monkeypatch, capsys, "classify", tmp / "in", "--no-progress")
    assert code == 2 and "CELLKIT_MAX_PIXELS" in _one_error_line(err) and loads == []


def test_adapt_says_why_nothing_could_be_read(setup, monkeypatch, capsys):
    tmp, _ = setup
    (tmp / "text.png").write_text("hello")
    (tmp / "nozip.zip").write_text("nozip")
    code, _, err = run_cli(monkeypatch, capsys, "adapt", "--unlabelled", tmp / "text.png", "--name", "x1")
    assert code == 2 and "--unlabelled: none of the 1 file(s) could be read" in _one_error_line(err)
    code, _, err = run_cli(monkeypatch, capsys, "adapt", "--labelled", tmp / "nozip.zip", "--name", "x2")
    assert code == 2 and "not a readable zip archive" in _one_error_line(err)


@pytest.mark.parametrize("command", ["classifier", "detector"])
def test_training_never_overwrites_a_model_unless_asked(setup, monkeypatch, capsys, tmp_path, command):
    out = tmp_path / "weights_out"
    out.mkdir()
    (out / "mine.json").write_text("{}")
    (out / "mine.safetensors").write_bytes(b"weights")
    code, _, err = run_cli(monkeypatch, capsys, "train", command, "--name", "mine", "--out", out)
    assert code == 2 and "a model named 'mine' already exists" in _one_error_line(err) and "--replace" in err
    assert (out / "mine.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize(
    "args", [["classify", "x.png", "--threads", "100000"], ["adapt", "--name", "x", "--seed", "-1"],
             ["explain", "x.png", "--threads", "100000"]]
)  # fmt: skip
def test_absurd_threads_and_negative_seeds_are_usage_errors(setup, monkeypatch, capsys, args):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "Invalid value" in _one_error_line(err)


@pytest.mark.parametrize("args", [["batch", "", "-o", "jw"], ["classify", ""], ["stats", " "], ["detect", "x.png", ""]])
def test_an_empty_input_is_refused_not_read_as_the_current_folder(setup, monkeypatch, capsys, args):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "is empty (an unset shell variable?)" in _one_error_line(err)


def test_an_empty_cellkit_home_is_the_default_not_the_working_folder(monkeypatch, tmp_path):
    from cellkit import config

    monkeypatch.setenv("CELLKIT_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert config.home() == tmp_path / ".cellkit"


def test_a_bad_image_store_setting_stops_before_any_analysis(setup, monkeypatch, capsys):
    """It was found only after the analyses were stored, and said they were not (a re-run then made duplicates)."""
    tmp, loads = setup
    monkeypatch.setenv("CELLKIT_IMAGE_STORE", "bogus")
    code, _, err = run_cli(monkeypatch, capsys, "analyze", tmp / "in" / "smear.png", "-o", tmp / "r.json", "--save")
    assert code == 2 and "CELLKIT_IMAGE_STORE: expected one of files" in _one_error_line(err) and loads == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "IN", "-o", "OUT/r.json", "--model", ""], "got an empty one (leave the option out"),
        (["analyze", "IN", "-o", "OUT/r.json", "--rbc-model", ""], "got an empty one (leave the option out"),
        (["detect", "IN", "-o", "OUT/r.csv", "--detector", "../weights/detector_v2"], "'../weights/detector_v2'"),
        (["batch", "IN", "-o", "OUT/job", "--model", "sub/x"], "model name 'sub/x': a model is named by letters"),
    ],
    ids=["empty-model", "empty-rbc-model", "detector-path", "batch-model-path"],
)
def test_a_model_option_that_is_empty_or_a_path_is_one_line_before_any_work(setup, monkeypatch, capsys, args, message):
    """``--model ''`` quietly meant the default model, and ``--model ../x`` read a card from outside the weights."""
    tmp, loads = setup
    args = [str(tmp / "in") if a == "IN" else a.replace("OUT", str(tmp / "out")) for a in args]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and stdout == "" and message in _one_error_line(err)
    assert loads == [] and not (tmp / "out" / "job").exists()


def test_training_on_too_few_images_to_split_saves_no_split_that_would_refuse_the_next_run(
    setup, monkeypatch, capsys, tmp_path
):
    """With 4 crops per cell type the split's test part was empty: split.json was saved, then refused, and it was
    reused (and refused again) after images were added, until a person found and deleted it."""
    from PIL import Image

    from cellkit.taxonomy import load_taxonomy
    from cellkit.train.classifier import TrainConfig, prepare_data

    rng = np.random.default_rng(0)
    data, work = tmp_path / "lab", tmp_path / "work"

    def add(per_type: int, start: int = 0) -> None:  # noise: distinct images, never near-duplicates
        for folder in ("lymphocyte", "neutrophil", "eosinophil"):
            (data / folder).mkdir(parents=True, exist_ok=True)
            for i in range(start, start + per_type):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / folder / f"c{i}.png")

    add(4)
    args = ["train", "classifier", "--data", data, "--arch", "cellkit_tiny_cnn", "--scratch", "--epochs", "1",
            "--workdir", work, "--out", tmp_path / "models", "--name", "few", "--input-size", "32"]  # fmt: skip
    code, _, err = run_cli(monkeypatch, capsys, *args)
    (line,) = [x for x in re.split(r"[\r\n]", err) if x.strip() and not x.startswith("decoding ")]  # bar apart
    assert code == 2 and line.startswith("error: 12 image(s) in")
    assert "too few to split: the test part would be empty" in line
    assert not (work / "split.json").exists() and not (tmp_path / "models").exists()
    add(3, start=4)  # 7 distinct images per cell type: the next run splits them
    cfg = TrainConfig(data=str(data), name="few", workdir=str(work), progress=False)
    _data, split, path = prepare_data(cfg, load_taxonomy("pbc"))
    assert path == work / "split.json" and path.is_file() and all(len(v) for v in split.values())
