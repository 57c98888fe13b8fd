"""`cellkit stats`: summary, JSON, root listing, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import sys

import pytest
from _datasets import make_classification, make_yolo

from cellkit.cli import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cellkit", "stats", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_stats_prints_summary_and_writes_json(tmp_path, monkeypatch, capsys):
    root = make_classification(tmp_path / "cls")
    code, out, err = run(monkeypatch, capsys, root, "--json", tmp_path / "out" / "s.json")
    assert code == 0, err
    assert "images: 16  readable: 15  unreadable: 1" in out
    assert "neutrophil" in out and "band_neutrophil" in out and "level 1: myeloid 9" in out
    assert "neutrophil/SNE_broken.jpg" in out and "smudge" in out
    assert "indexing" in err  # the progress bar goes to stderr
    data = json.loads((tmp_path / "out" / "s.json").read_text())
    assert data["per_class"]["ig"] == 4 and data["readable"] == 15
    code, out, _ = run(monkeypatch, capsys, root)
    assert code == 0 and "from cache" in out


def test_stats_on_detection_set(tmp_path, monkeypatch, capsys):
    root, _ = make_yolo(tmp_path / "yolo")
    code, out, _ = run(monkeypatch, capsys, root, "--threshold", "0")
    assert code == 0
    assert "train" in out and "boxes per class" in out and "phash distance <= 0 bits" in out


def test_stats_on_a_root_lists_datasets(tmp_path, monkeypatch, capsys):
    make_classification(tmp_path / "root" / "cells", corrupt=False)
    make_yolo(tmp_path / "root" / "smears")
    code, out, _ = run(monkeypatch, capsys, tmp_path / "root")
    assert code == 0 and "holds 2 datasets" in out and "cells" in out and "smears" in out
    code, out, _ = run(monkeypatch, capsys, tmp_path / "root", "--dataset", "smears")
    assert code == 0 and "smears  (yolo" in out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: p, "folder is empty"),
        (lambda p: (p / "a.txt").write_text("x") and p, "no images found"),
        (lambda p: (p / "c").mkdir() or ((p / "c" / "x.png").write_bytes(b"broken") and p), "could be read"),
    ],
)
def test_stats_bad_paths_exit_2_with_one_line(tmp_path, monkeypatch, capsys, make, message):
    code, out, err = run(monkeypatch, capsys, make(tmp_path))
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip() and "indexing" not in line]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
