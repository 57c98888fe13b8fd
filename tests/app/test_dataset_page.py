"""AppTest of the Dataset page: charts for a typed path, sub-dataset pick, clear errors for bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cellkit.models import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from _datasets import make_classification, make_yolo  # noqa: E402

from tests.app._markdown import shows_literally, visible  # noqa: E402

PAGE = str(ROOT / "app_pages" / "dataset.py")


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch, tmp_path):
    """Pages import ``ui`` from the repo root; weights come from an empty temporary folder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "weights"))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    cells = make_classification(tmp_path / "data" / "cells")
    (cells / "platelet" / "PLATELET_9.png").write_bytes((cells / "lymphocyte" / "LY_1.png").read_bytes())
    make_yolo(tmp_path / "data" / "smears")
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_default_root_shows_charts_and_detection_tabs(data_root):
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception and not errors(at)
    assert at.text_input[0].value == str(data_root)
    assert len(at.get("plotly_chart")) >= 5  # sunburst, classes, balancing, colour x2, sizes, mosaic...
    import json

    traces = [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]
    shown = [str(t.get("name") or "") for t in traces] + [str(x) for t in traces for x in t.get("labels") or []]
    assert "Segmented neutrophil" in shown and not [x for x in shown if "_" in x]  # legends and wedges: names
    assert any("could not be read" in w.value for w in at.warning)  # the corrupt JPEG
    assert any("No bundled models" in i.value for i in at.info)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "17" and metrics["Unreadable"] == "1" and metrics["Exact pairs"] == "1"
    assert int(metrics["Different labels"]) >= 1 and len(at.get("image")) >= 2  # pairs are shown side by side
    tables = [d.value for d in at.dataframe]
    assert all("_" not in str(c) for t in tables for c in t.columns)  # headers in words, never snake_case ids
    pairs = next(t for t in tables if "Image A" in t.columns)
    assert "ig" not in set(pairs["Class A"]) | set(pairs["Class B"])  # a folder id is shown by its cell type
    sub = next(s for s in at.selectbox if s.label == "Sub-dataset")
    sub.set_value("smears").run()
    assert not at.exception and not errors(at)
    assert len(at.get("plotly_chart")) >= 4
    assert any(m.label == "Boxes" for m in at.metric)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: p / "empty", "folder is empty"),
        (lambda p: p / "texts", "no images found"),
        (lambda p: p / "broken", "could be read"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, monkeypatch, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("hello")
    (tmp_path / "broken" / "cls").mkdir(parents=True)
    (tmp_path / "broken" / "cls" / "x.jpg").write_bytes(b"\xff\xd8 broken")
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(make(tmp_path)))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert len(errors(at)) == 1 and message in errors(at)[0]
    assert not at.get("plotly_chart")


def test_typed_path_inside_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_DATA_DIR", f"{tmp_path / 'other'}{os.pathsep}{tmp_path / 'data'}")
    (tmp_path / "other").mkdir()
    make_classification(tmp_path / "data" / "typed", corrupt=False)
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.text_input[0].set_value(str(tmp_path / "data" / "typed")).run()  # in the second root
    assert not at.exception and not errors(at) and at.get("plotly_chart")


def test_no_data_folder_configured(tmp_path, monkeypatch):
    monkeypatch.setattr("cellkit.config.data_roots", lambda: [])
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception and any("CELLKIT_DATA_DIR" in i.value for i in at.info)
    make_classification(tmp_path / "typed", corrupt=False)
    at.text_input[0].set_value(str(tmp_path / "typed")).run()  # no root: nothing can be opened
    assert not at.exception and len(errors(at)) == 1 and not at.get("plotly_chart")
    assert "no data folder is configured" in errors(at)[0].lower()


@pytest.mark.parametrize(
    "typed",
    [
        lambda root, outside: "/etc",
        lambda root, outside: f"{root}/../",
        lambda root, outside: f"{root}/cells/../../outside",
        lambda root, outside: str(root / "link_out"),
        lambda root, outside: str(outside),
    ],
    ids=["etc", "parent", "dotdot", "symlink-out", "sibling"],
)
def test_folders_outside_the_data_folder_are_refused(data_root, typed):
    outside = data_root.parent / "outside"
    make_classification(outside, corrupt=False)
    (data_root / "link_out").symlink_to(outside, target_is_directory=True)
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.text_input[0].set_value(typed(data_root, outside)).run()
    assert not at.exception
    assert len(errors(at)) == 1 and "outside the data folder" in visible(errors(at)[0])
    assert not at.get("plotly_chart") and not at.metric  # nothing of it was read or shown


def test_a_symbolic_link_loop_is_one_error_in_words(data_root):
    (data_root / "loop_a").symlink_to(data_root / "loop_b")
    (data_root / "loop_b").symlink_to(data_root / "loop_a")
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.text_input[0].set_value(str(data_root / "loop_a")).run()
    assert not at.exception and len(errors(at)) == 1
    assert visible(errors(at)[0]) == f"{data_root / 'loop_a'} is a symbolic link loop; choose another folder"
    assert "RuntimeError" not in errors(at)[0] and not at.get("plotly_chart")


def test_markdown_in_folder_names_is_plain_text(tmp_path, monkeypatch):
    root = make_classification(tmp_path / "data" / "cells", corrupt=False)
    odd = root / "[x](evil.example) **b** _i_"
    odd.mkdir()
    (odd / "cell.png").write_bytes((root / "lymphocyte" / "LY_1.png").read_bytes())
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(tmp_path / "data"))
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception
    shown = [c.value for c in at.caption if "evil" in c.value]
    assert shown and all(shows_literally(c, visible(c)) for c in shown)


def test_bundled_model_cards_section(tmp_path, monkeypatch):
    monkeypatch.setattr("cellkit.config.data_dir", lambda: None)
    spec = ModelSpec(
        name="clf", task="classifier", arch="tiny", weights="clf.safetensors", input_size=8, labels=["a"],
        card={"data": {"dataset": "PBC", "split_sizes": {"train": 3, "val": 1, "test": 1}, "split_file": "s.json"},
              "display_name": "White cells (x)"},
    )  # fmt: skip
    spec.save(tmp_path / "weights")
    split = {"train": ["neutrophil/BNE_1.jpg", "neutrophil/SNE_2.jpg", "ig/MY_3.jpg"], "val": ["ig/PMY_4.jpg"]}
    (tmp_path / "weights" / "s.json").write_text(json.dumps({**split, "test": ["lymphocyte/LY_5.jpg"]}))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and len(at.get("plotly_chart")) == 2  # card counts + split per node
    assert any("balanced counts of its train split" in c.value for c in at.caption)
    split_chart = json.loads(at.get("plotly_chart")[1].proto.spec)
    xs = {x for trace in split_chart["data"] for x in trace.get("x", [])}
    assert "Band neutrophil" in xs and not any("_" in str(x) for x in xs)  # display names on the axis, never ids
    assert all("node" not in d.value.columns for d in at.dataframe)
    title = split_chart["layout"]["title"]["text"]
    assert title == "White cells (x): images per cell type and split"  # a chart title is no Markdown: no escapes


def test_links_inside_a_data_folder_that_lead_out_of_it_are_not_followed(tmp_path, monkeypatch):
    """A class folder or an image inside the data folder that links to a folder outside it stays unread."""
    data = tmp_path / "data"
    cells = make_classification(data / "cells", corrupt=False)
    outside = make_classification(tmp_path / "outside", corrupt=False)
    (cells / "basophil").symlink_to(outside / "lymphocyte", target_is_directory=True)  # a class folder out
    (cells / "lymphocyte" / "LY_secret.png").symlink_to(outside / "lymphocyte" / "LY_1.png")  # an image out
    (cells / "lymphocyte" / "LY_inside.png").symlink_to(cells / "platelet" / "PLATELET_1.png")  # within: kept
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(data))
    plain = sum(1 for p in cells.rglob("*") if p.suffix in (".png", ".jpg") and not p.is_symlink())
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    at.text_input[0].set_value(str(cells)).run()
    assert not at.exception and not errors(at)
    assert {m.label: m.value for m in at.metric}["Images"] == str(plain + 1)  # + the link that stays inside
    # the command line is not confined: it may read what its user can
    from cellkit.data import list_datasets

    assert list_datasets(str(cells))[0].n_images > plain + 1
