"""`cellkit classify` contract: columns, error rows on stderr, exit codes; `cellkit evaluate` summary."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from cellkit.classify import build_tiny_classifier, save_classifier
from cellkit.synth import make_crop
from cellkit.taxonomy import load_taxonomy
from tests._cli import run_cli as run


@pytest.fixture()
def weights(tmp_path, monkeypatch) -> Path:
    clf = build_tiny_classifier()
    clf.spec.card = {"default": True}
    folder = tmp_path / "weights"
    save_classifier(clf.model, clf.spec, folder)
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(folder))
    return folder


def lab_folder(root: Path, n: int = 3) -> Path:
    """A lab's own labelled folder: ``lymphocyte/`` and ``neutrophil/`` with ``n`` drawn crops each."""
    for folder, kind in (("lymphocyte", 0), ("neutrophil", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(make_crop(kind, 40, i)).save(root / folder / f"cell_{i}.png")
    return root


def crops_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    Image.fromarray(make_crop(0, 64, 0)).save(root / "a.png")
    Image.fromarray(make_crop(2, 80, 1)).save(root / "sub" / "b.jpg")
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG not really")
    with zipfile.ZipFile(root / "more.zip", "w") as zf:
        from cellkit.io import encode_png

        zf.writestr("c.png", encode_png(make_crop(3, 50, 2)))
    return root


def test_classify_writes_contract_csv(tmp_path, weights, monkeypatch, capsys):
    folder = crops_folder(tmp_path / "crops")
    out = tmp_path / "preds.csv"
    code, _, err = run(monkeypatch, capsys, "classify", folder, "--out", out)
    assert code == 1, err  # broken.png failed; the others are still classified and written
    rows = list(csv.DictReader(out.open()))
    tax = load_taxonomy("pbc")
    header = list(rows[0])
    assert header[:8] == ["path", "leaf", "label", "confidence", "ood_score", "review", "note", "shown_as"]
    assert header[8:-1] == [f"p_{n}" for n in tax.ids] and header[-1] == "error"
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"a.png", "b.jpg", "broken.png", "c.png"}
    assert str(folder / "a.png") in [r["path"] for r in rows]  # path as found
    assert by_name["broken.png"]["error"] and not by_name["broken.png"]["leaf"]
    assert "broken.png" in err and "classified 3 of 4" in err
    good = by_name["a.png"]
    assert good["leaf"] in tax.leaves and good["label"] in tax.ids and not good["error"]
    assert good["shown_as"] == tax.display(good["label"])  # the display name, as on screen
    assert float(good["confidence"]) == pytest.approx(float(good[f"p_{good['label']}"]), abs=1e-6)
    roots = sum(float(good[f"p_{r}"]) for r in tax.roots)
    assert roots == pytest.approx(1.0, abs=1e-4)


def test_a_zip_of_many_broken_files_prints_a_count_not_a_line_each(tmp_path, weights, monkeypatch, capsys):
    from cellkit.cli._file_errors import MAX_FILE_ERRORS

    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as zf:
        for i in range(MAX_FILE_ERRORS + 15):
            zf.writestr(f"cell_{i:03d}.png", b"not a png")
    out = tmp_path / "preds.csv"
    code, _, err = run(monkeypatch, capsys, "classify", tmp_path / "broken.zip", "--out", out)
    assert code == 1
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert sum("cell_" in x for x in lines) == MAX_FILE_ERRORS
    assert f"15 more file(s) failed ({MAX_FILE_ERRORS + 15} in all)" in err and str(out) in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == MAX_FILE_ERRORS + 15 and all(r["error"] for r in rows)  # every file is still a row


def test_a_file_name_with_a_newline_stays_on_one_error_line(tmp_path, weights, monkeypatch, capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    (folder / "bad\nerror: fake.png").write_bytes(b"not a png")
    code, _, err = run(monkeypatch, capsys, "classify", folder, "--out", tmp_path / "p.csv")
    assert code == 1
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 2 and "bad\\nerror: fake.png" in lines[0]  # the file's, and "no image could be classified"


def test_exit_codes(tmp_path, weights, monkeypatch, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    code, out, err = run(monkeypatch, capsys, "classify", bad)
    assert code == 1 and "no image could be classified" in err
    assert out.startswith("path,leaf,label")  # the CSV (with the error row) still goes to stdout
    code, _, err = run(monkeypatch, capsys, "classify", tmp_path / "missing.png")
    assert code == 2 and err.strip().count("\n") == 0 and "no such file" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(monkeypatch, capsys, "classify", empty)
    assert code == 1 and "no images found" in err


def test_no_model_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "none"))
    Image.fromarray(make_crop(0, 32, 0)).save(tmp_path / "a.png")
    code, _, err = run(monkeypatch, capsys, "classify", tmp_path / "a.png")
    assert code == 2 and "cellkit train classifier" in err


def test_evaluate_on_labelled_folder(tmp_path, weights, monkeypatch, capsys):
    root = tmp_path / "pbc"
    for folder, prefix, kind in (("lymphocyte", "LY", 0), ("ig", "MY", 1), ("ig", "IG", 1)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(make_crop(kind, 40, i)).save(root / folder / f"{prefix}_{i}.png")
    code, out, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--out", tmp_path / "r.json")
    assert code == 0, err
    assert "leaf  macro-F1" in out and "pbc8  macro-F1" in out and "n=9" in out and "ECE" in out
    assert (tmp_path / "r.json").is_file()


def test_evaluate_skips_and_names_a_corrupt_image(tmp_path, weights, monkeypatch, capsys):
    import json

    root = tmp_path / "lab"
    lab_folder(root)
    (root / "neutrophil" / "cell_0.png").write_bytes(b"truncated")
    code, out, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all", "--out", tmp_path / "r.json")
    assert code == 1 and "n=5" in out  # scored over the five it could read
    assert "1 unreadable image(s) left out" in err and "cell_0.png" in err
    assert json.loads((tmp_path / "r.json").read_text())["unreadable"]["count"] == 1
    for p in (root / "lymphocyte").iterdir():
        p.write_bytes(b"x")
    (root / "neutrophil" / "cell_1.png").write_bytes(b"x")
    (root / "neutrophil" / "cell_2.png").write_bytes(b"x")
    code, _, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all")
    assert code == 2 and "none of the 6 images" in err


def test_evaluate_scores_a_labs_own_folder_with_all(tmp_path, weights, monkeypatch, capsys):
    """The card's split file names another dataset's images: --all scores every image of the lab's folder."""
    import json

    root = tmp_path / "my_lab"
    lab_folder(root)
    (weights / "split.json").write_text(json.dumps({"train": [], "val": [], "test": ["pbc/x/y.jpg"]}))
    card = weights / "tiny.json"
    raw = json.loads(card.read_text())
    raw["card"]["data"] = {"split_file": "split.json"}
    card.write_text(json.dumps(raw))
    code, _, err = run(monkeypatch, capsys, "evaluate", "--data", root)
    assert code == 2 and "add --all" in err and err.count("\n") == 1
    code, out, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all")
    assert code == 0, err
    assert "(all images, n=6)" in out
    code, _, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all", "--split-file", weights / "split.json")
    assert code == 2 and "not both" in err


def test_a_red_cell_model_is_refused_for_white_cell_crops(tmp_path, monkeypatch, capsys):
    clf = build_tiny_classifier("rbc12")
    clf.spec.name, clf.spec.weights, clf.spec.applies_to = "tiny_rbc", "tiny_rbc.safetensors", ["rbc"]
    save_classifier(clf.model, clf.spec, tmp_path / "w")
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    Image.fromarray(make_crop(0, 32, 0)).save(tmp_path / "a.png")
    code, _, err = run(monkeypatch, capsys, "classify", tmp_path / "a.png", "--model", "tiny_rbc")
    assert code == 2 and "it classifies rbc boxes, not white-cell crops" in err and err.count("\n") == 1


def test_evaluate_a_folder_of_plain_neutrophils_names_what_it_left_out(tmp_path, weights, monkeypatch, capsys):
    root = tmp_path / "lab"
    for folder in ("neutrophil", "granulocyte"):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(make_crop(1, 40, i)).save(root / folder / f"cell_{i}.png")
    code, out, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all")
    assert code == 0, err
    assert "leaf  no image is labelled this finely (n=0)" in out and "ECE (leaf) n/a" in out and "n=2" in out
    assert "2 image(s) are in no folder that names a cell type" in err and "granulocyte/cell_0.png" in err


def test_evaluate_and_stats_never_write_over_an_input_image(tmp_path, weights, monkeypatch, capsys):
    root = tmp_path / "lab"
    (root / "neutrophil").mkdir(parents=True)
    image = root / "neutrophil" / "cell_0.png"
    Image.fromarray(make_crop(1, 40, 0)).save(image)
    before = image.read_bytes()
    code, _, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all", "--out", image)
    assert code == 2 and "input image" in err
    code, _, err = run(monkeypatch, capsys, "stats", root, "--json", image)
    assert code == 2 and "input image" in err
    assert image.read_bytes() == before


def test_symlinked_class_folders_are_read_by_evaluate_like_stats(tmp_path, weights, monkeypatch, capsys):
    source = tmp_path / "elsewhere" / "lymphocyte"
    source.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(make_crop(0, 40, i)).save(source / f"LY_{i}.png")
    root = tmp_path / "lab"
    (root / "neutrophil").mkdir(parents=True)
    Image.fromarray(make_crop(1, 40, 0)).save(root / "neutrophil" / "cell_0.png")
    (root / "lymphocyte").symlink_to(source, target_is_directory=True)
    (root / "neutrophil" / "loop").symlink_to(root, target_is_directory=True)  # a loop ends
    code, out, err = run(monkeypatch, capsys, "evaluate", "--data", root, "--all")
    assert code == 0, err
    assert "n=3" in out


def test_classify_refuses_an_empty_model_name_instead_of_the_default(tmp_path, weights, monkeypatch, capsys):
    Image.fromarray(make_crop(0, 32, 0)).save(tmp_path / "a.png")
    code, out, err = run(monkeypatch, capsys, "classify", tmp_path / "a.png", "--model", "", "--no-progress")
    assert code == 2 and out == "" and err.count("\n") == 1 and "got an empty one (leave the option out" in err
    code, out, err = run(monkeypatch, capsys, "classify", tmp_path / "a.png", "--model", "../weights/tiny")
    assert code == 2 and "no folder" in err and err.count("\n") == 1
    code, out, _ = run(monkeypatch, capsys, "classify", tmp_path / "a.png", "--no-progress")
    assert code == 0 and out.startswith("path,leaf")  # left out: the default model


@pytest.mark.parametrize("name", ["result.png", "result.json", "result"])
def test_classify_refuses_an_out_it_cannot_write_and_says_what_it_writes(tmp_path, weights, monkeypatch, capsys, name):
    """``classify -o result.png`` wrote a CSV named result.png."""
    Image.fromarray(make_crop(0, 32, 0)).save(tmp_path / "a.png")
    code, out, err = run(monkeypatch, capsys, "classify", tmp_path / "a.png", "-o", tmp_path / name, "--no-progress")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"--out {tmp_path / name}: expected a .csv file name" in err and not (tmp_path / name).exists()
    code, _, err = run(monkeypatch, capsys, "classify", tmp_path / "a.png", "-o", tmp_path / "R.CSV", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "R.CSV").read_text().startswith("path,leaf,label")


def test_ctrl_c_keeps_the_finished_images_apart_and_never_writes_the_out_file(tmp_path, weights, monkeypatch, capsys):
    """Ctrl-C after an hour of classifying wrote nothing at all; a partial --out would look complete."""
    import cellkit.classify

    folder = lab_folder(tmp_path / "crops", n=3)  # 6 crops, in batches of 2
    real = cellkit.classify.Classifier.predict
    calls = []

    def stopped_on_the_second_batch(self, images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(cellkit.classify.Classifier, "predict", stopped_on_the_second_batch)
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "home"))
    out = tmp_path / "preds.csv"
    code, _, err = run(monkeypatch, capsys, "classify", folder, "--out", out, "--batch-size", "2", "--no-progress")
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted" and not out.exists()
    (kept,) = (tmp_path / "home" / "unsaved").glob("*preds.partial.csv")
    assert f"the 2 image(s) finished so far were saved to {kept}" in err
    rows = list(csv.DictReader(kept.open()))
    assert len(rows) == 2 and all(r["leaf"] and not r["error"] for r in rows)
