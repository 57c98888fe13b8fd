"""CLI contract of `cellkit detect` and `cellkit analyze` (models swapped for deterministic doubles)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
from _fakes import ColourDetector, tiny_classifier_for
from typer.testing import CliRunner

import cellkit.classify
import cellkit.detect
from cellkit.cli import app
from cellkit.errors import CellkitError
from cellkit.io import encode_png
from cellkit.store import Store, StoreError
from cellkit.synth import make_smear


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setattr(cellkit.detect, "load_detector", lambda name=None: ColourDetector(tile=256, overlap=64))
    monkeypatch.setattr(cellkit.classify, "load_classifier", tiny_classifier_for)
    folder = tmp_path / "in"
    folder.mkdir()
    truth = {}
    for k, (w, h) in enumerate([(640, 480), (700, 520)]):
        img, boxes, _cls = make_smear(w, h, n_wbc=2, n_rbc=15, n_platelet=3, seed=30 + k)
        (folder / f"s{k}.png").write_bytes(encode_png(img))
        truth[f"s{k}.png"] = len(boxes)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder, truth


def test_detect_writes_one_row_per_box_and_reports_bad_files(images, tmp_path):
    folder, truth = images
    out = tmp_path / "dets.csv"
    result = CliRunner().invoke(app, ["detect", str(folder), "--out", str(out)])
    assert result.exit_code == 1  # one file failed, the others were processed
    assert "zz_broken.jpg" in result.stderr
    df = pd.read_csv(out)
    assert list(df.columns[:7]) == ["path", "x1", "y1", "x2", "y2", "class", "confidence"]
    ok = df[df["error"].isna()]
    for name, n in truth.items():
        assert (ok["path"].str.endswith(name)).sum() == n
    assert set(ok["class"]) == {"wbc", "rbc", "platelet"}
    bad = df[df["error"].notna()]
    assert len(bad) == 1 and bad["path"].iloc[0].endswith("zz_broken.jpg")


def test_detect_classify_adds_tree_columns(images, tmp_path):
    folder, _truth = images
    out = tmp_path / "dets.csv"
    result = CliRunner().invoke(app, ["detect", str(folder / "s0.png"), "--out", str(out), "--classify"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert {"leaf", "label", "p_myeloid", "p_lymphocyte"} <= set(df.columns)
    wbc = df[df["class"] == "wbc"]
    assert wbc["label"].notna().all()
    # issue 11's contract: every red cell gets one of the 13 red-cell labels (the bundled red-cell model's kind)
    red_cells = {"normal", "macrocyte", "microcyte", "spherocyte", "target_cell", "stomatocyte", "ovalocyte",
                 "teardrop", "burr_cell", "schistocyte", "hypochromia", "elliptocyte", "uncategorised"}  # fmt: skip
    rbc = df[df["class"] == "rbc"]
    assert len(rbc) and set(rbc["label"]) <= red_cells, set(rbc["label"])
    assert set(wbc["label"]).isdisjoint(red_cells) and {"p_normal", "p_schistocyte"} <= set(df.columns)
    off = tmp_path / "off.csv"
    args = ["detect", str(folder / "s0.png"), "--out", str(off), "--classify", "--rbc-model", "none"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert pd.read_csv(off).query("`class` == 'rbc'")["label"].isna().all()


def test_analyze_json_csv_and_save(images, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    folder, truth = images
    zpath = tmp_path / "batch.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(folder / "s0.png", "a/s0.png")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["analyze", str(zpath), str(folder / "s1.png"), "--out", str(out), "--save", "--owner", "lab1"]
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(out.read_text())
    assert [sum(r["counts"].values()) for r in reports] == [truth["s0.png"], truth["s1.png"]]
    assert all(r["differential"] and r["analysis_id"] for r in reports)
    assert [a["id"] for a in Store().list_analyses("lab1")] == sorted((r["analysis_id"] for r in reports), reverse=True)
    csv_out = tmp_path / "report.csv"
    assert CliRunner().invoke(app, ["analyze", str(folder / "s1.png"), "--out", str(csv_out)]).exit_code == 0
    assert len(pd.read_csv(csv_out)) == truth["s1.png"]


def test_analyze_keeps_the_report_when_the_database_fails(images, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    folder, truth = images

    def busy(self, *args, **kwargs):
        raise StoreError("database busy: another program holds it (try again)", kind="busy")

    monkeypatch.setattr(Store, "save_analysis", busy)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["analyze", str(folder / "s0.png"), str(folder / "s1.png"), "--out", str(out), "--save"]
    )
    assert result.exit_code == 1
    assert "2 analysis(es) not stored in the database" in result.output and str(out) in result.output
    reports = json.loads(out.read_text())
    assert [sum(r["counts"].values()) for r in reports] == [truth["s0.png"], truth["s1.png"]]
    assert all("database busy" in r["db_error"] for r in reports)


def test_analyze_save_to_an_unusable_database_fails_before_the_work(images, tmp_path, monkeypatch, capsys):
    from _cli import run_cli

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'afile' / 'cli.db'}")
    out = tmp_path / "report.json"
    code, _, err = run_cli(monkeypatch, capsys, "analyze", images[0] / "s0.png", "--out", out, "--save")
    assert code != 0 and not out.exists()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err


def test_analyze_save_while_another_program_locks_the_database(images, tmp_path, monkeypatch):
    """A real SQLite lock held past the timeout: the reports are written, one line says what was not stored."""
    import sqlite3

    path = tmp_path / "locked.db"
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{path}")
    monkeypatch.setenv("CELLKIT_DB_TIMEOUT", "0.5")
    Store().check()  # the schema exists; then another program takes the write lock
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    folder, truth = images
    out = tmp_path / "report.json"
    try:
        result = CliRunner().invoke(app, ["analyze", str(folder / "s0.png"), "--out", str(out), "--save"])
    finally:
        locker.rollback()
        locker.close()
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "not stored in the database" in lines[0] and "busy" in lines[0], result.output
    reports = json.loads(out.read_text())
    assert sum(reports[0]["counts"].values()) == truth["s0.png"] and "db_error" in reports[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["detect", "nope.png", "--out", "x.csv"], "no such file"),
        (["analyze", "x.png", "--out", "r.txt"], ".json or"),
        (["detect", "--out", "x.csv"], "no INPUT"),
    ],
)
def test_bad_invocations_raise_cellkit_error(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, CellkitError) and match in str(result.exception)


def test_console_command_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cellkit", "detect", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr


def test_analyze_case_aggregates_fields_into_one_report_and_pdf(images, tmp_path):
    folder, _truth = images
    out, pdf = tmp_path / "case.json", tmp_path / "case.pdf"
    args = ["analyze", str(folder / "s0.png"), str(folder / "s1.png"), "--case", "P-17", "--target-wbc", "200"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--pdf", str(pdf)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    case, fields = report["case"], report["fields"]
    assert case["case"] == "P-17" and case["fields"] == 2 == len(fields) and case["target_wbc"] == 200
    assert case["white_cells_counted"] == sum(sum(v["count"] for v in f["differential"].values()) for f in fields)
    assert case["counted"]["rbc"] == sum(f["counts"]["rbc"] for f in fields)  # no box rejected here
    assert f"case P-17: {case['white_cells_counted']} of 200 white cells" in result.stderr
    assert pdf.read_bytes().startswith(b"%PDF")


def test_analyze_case_counts_a_copy_of_a_field_once(images, tmp_path):
    import shutil

    folder, _truth = images
    copy = tmp_path / "s0_copy.png"
    shutil.copy(folder / "s0.png", copy)  # the same smear under another name
    out = tmp_path / "case.json"
    args = ["analyze", str(folder / "s0.png"), str(copy), str(folder / "s1.png"), "--case", "P-18", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    case = json.loads(out.read_text())["case"]
    assert case["fields"] == 2 and case["images"] == ["s0.png", "s1.png"]
    assert "s0_copy.png is the same image as" in result.stderr and "counted once" in result.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--pdf", "x.pdf"], "need --case"),
        (["--case", "A", "--out-csv"], None),
        (["--case", "A", "--target-wbc", "0"], "--target-wbc: expected 1 to 10,000"),
        (["--case", "A", "--target-wbc", "100000"], "--target-wbc: expected 1 to 10,000"),
        (["--case", "  ", "--pdf", "x.pdf"], "--case: expected a case name"),
        (["--case", "A", "--pdf", "x.txt"], "expected a .pdf"),
    ],
)
def test_analyze_case_options_are_checked_before_the_work(images, tmp_path, extra, expected):
    folder, _truth = images
    if expected is None:  # a case report is JSON
        result = CliRunner().invoke(app, ["analyze", str(folder), "--case", "A", "--out", str(tmp_path / "c.csv")])
        assert isinstance(result.exception, CellkitError) and "the case report is JSON" in str(result.exception)
        return
    extra = [str(tmp_path / e) if e.endswith((".pdf", ".txt")) else e for e in extra]
    result = CliRunner().invoke(app, ["analyze", str(folder), "--out", str(tmp_path / "c.json"), *extra])
    assert isinstance(result.exception, CellkitError) and expected in str(result.exception)  # one line, exit 2
    assert not (tmp_path / "c.json").exists()


def test_analyze_case_run_again_adds_to_the_open_case_of_that_name_never_a_second_one(images, tmp_path, monkeypatch):
    """Running ``--case c1 --save`` twice made two cases named c1 and stored every field twice."""
    from cellkit.case import case_summary

    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    folder, _truth = images
    args = ["analyze", str(folder / "s0.png"), str(folder / "s1.png"), "--case", "P-20", "--save", "--owner", "lab1"]
    first = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c1.json")])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c2.json")])
    assert again.exit_code == 0, again.output
    store = Store()
    (case,) = store.list_cases("lab1")
    assert case["name"] == "P-20" and case["fields"] == 2  # one case, each image once
    assert "note: adding to your open case P-20 (#1, 2 field(s) stored)" in again.stderr
    assert f"{folder / 's0.png'} is already field #1 of case P-20: not analysed or stored again" in again.stderr
    one, two = (json.loads((tmp_path / n).read_text())["case"] for n in ("c1.json", "c2.json"))
    assert two["fields"] == 2 and two["white_cells_counted"] == one["white_cells_counted"]
    img, _b, _c = make_smear(600, 450, n_wbc=3, n_rbc=12, n_platelet=2, seed=77)
    (folder / "s2.png").write_bytes(encode_png(img))
    third = CliRunner().invoke(app, ["analyze", str(folder / "s2.png"), "--case", "P-20", "--save", "--owner", "lab1",
                                     "--out", str(tmp_path / "c3.json")])  # fmt: skip
    assert third.exit_code == 0, third.output
    report = json.loads((tmp_path / "c3.json").read_text())
    stored = [r for _i, r in store.case_fields(case["id"], "lab1")]
    assert report["case"]["fields"] == 3 == len(stored) and len(report["fields"]) == 1  # the case's, this run's
    assert report["case"]["white_cells_counted"] == case_summary("P-20", stored)["white_cells_counted"]
    assert "counted over 3 field(s), 2 of them stored before this run" in third.stderr
    summary = case_summary("P-20", stored)
    store.sign_off(case["id"], "lab1", "Dr A", summary)
    signed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c4.json")])
    assert isinstance(signed.exception, CellkitError) and "is signed off (version 1); amend it" in str(signed.exception)
    assert len(store.list_cases("lab1")) == 1 and not (tmp_path / "c4.json").exists()


def test_analyze_save_of_an_image_stored_before_by_the_same_models_reports_it_and_stores_nothing(
    images, tmp_path, monkeypatch
):
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    folder, _truth = images
    args = ["analyze", str(folder / "s0.png"), "--save", "--owner", "lab1", "--out", str(tmp_path / "r.json")]
    assert CliRunner().invoke(app, args).exit_code == 0
    store = Store()
    (first,) = store.list_analyses("lab1")
    store.add_correction(first["id"], 0, "lymphocyte", "lab1", author="Dr A")  # reviewed since
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert f"is stored before with the same models (analysis #{first['id']}): not analysed or stored again" in (
        again.stderr
    )
    assert "1 image(s) analysed" in again.stderr and "1 stored before, reported from the database" in again.stderr
    assert len(store.list_analyses("lab1")) == 1
    (report,) = json.loads((tmp_path / "r.json").read_text())
    assert report["analysis_id"] == first["id"] and report["corrections"] == {"0": "lymphocyte"}  # with its review
    other = CliRunner().invoke(app, [*args, "--rbc-model", "none"])  # other models: another analysis
    assert other.exit_code == 0 and "stored before" not in other.stderr
    assert len(store.list_analyses("lab1")) == 2
    tiled = CliRunner().invoke(app, [*args, "--tile", "320", "--overlap", "64"])  # other tiling: other boxes
    assert tiled.exit_code == 0 and "stored before" not in tiled.stderr
    assert len(store.list_analyses("lab1")) == 3


def test_analyze_case_with_a_bad_model_makes_no_case(images, tmp_path, monkeypatch):
    """The case was created before the models were loaded: a typo in --model left an empty case behind."""
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    folder, _truth = images
    args = ["analyze", str(folder / "s0.png"), "--case", "ACC1", "--save", "--owner", "lab1", "--model", "nosuch",
            "--out", str(tmp_path / "c.json")]  # fmt: skip
    bad = CliRunner().invoke(app, args)
    assert isinstance(bad.exception, CellkitError) and "not found" in str(bad.exception)
    assert Store().list_cases("lab1") == []


@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_ctrl_c_in_analyze_keeps_the_finished_images_apart_and_never_writes_the_out_file(
    images, tmp_path, monkeypatch, capsys, suffix
):
    """Ctrl-C after hours of `analyze -o` wrote nothing at all (with --save, the database alone kept them)."""
    import cellkit.slide
    from tests._cli import run_cli

    folder, truth = images
    monkeypatch.setenv("CELLKIT_DB_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "home"))
    real, calls = cellkit.slide.analyze, []

    def stopped_on_the_second_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cellkit.slide, "analyze", stopped_on_the_second_image)
    out = tmp_path / f"report.{suffix}"
    code, _, err = run_cli(monkeypatch, capsys, "analyze", folder / "s0.png", folder / "s1.png", "-o", out, "--save",
                            "--owner", "lab1")  # fmt: skip
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted" and not out.exists()
    (kept,) = (tmp_path / "home" / "unsaved").glob(f"*report.partial.{suffix}")
    assert f"the 1 image(s) analysed so far were saved to {kept}; 1 of them are in the database" in err
    if suffix == "json":
        (report,) = json.loads(kept.read_text())
        assert report["path"].endswith("s0.png") and report["analysis_id"]
    else:
        cells = pd.read_csv(kept)
        assert len(cells) == truth["s0.png"] and cells["path"].str.endswith("s0.png").all()
    assert len(Store().list_analyses("lab1")) == 1
