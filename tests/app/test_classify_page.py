"""AppTest of the Classify page with an untrained tiny classifier (no bundled weights needed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cellkit.io import encode_png
from cellkit.synth import make_crop

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("tiny_classifier")


def _run_with(files: list[tuple[str, bytes, str]]) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages/classify.py"), default_timeout=60).run()
    assert not at.exception
    at.file_uploader(key="classify_upload").set_value(files)
    return at.run()


def test_no_upload_shows_help():
    at = AppTest.from_file(str(ROOT / "app_pages/classify.py"), default_timeout=60).run()
    assert not at.exception and at.info


def test_crops_and_bad_file():
    files = [
        ("cell0.png", encode_png(make_crop(0, 80, 1)), "image/png"),
        ("cell1.png", encode_png(make_crop(3, 64, 2)), "image/png"),
        ("broken.png", b"this is not an image", "image/png"),
    ]
    at = _run_with(files)
    assert not at.exception
    assert any("broken.png" in e.value for e in at.error)
    values = {m.label: m.value for m in at.metric}
    assert values["Crops classified"] == "2" and values["Unreadable"] == "1"
    table = at.dataframe[0].value
    assert list(table["File"]) == ["cell0.png", "cell1.png", "broken.png"]
    assert table["Best guess"].iloc[0] and table["Error"].iloc[2] and table["Best guess"].iloc[2] == ""
    assert abs(table["P(Myeloid)"].iloc[0] + table["P(Lymphoid)"].iloc[0] + table["P(Erythroid)"].iloc[0]
               + table["P(Megakaryocytic)"].iloc[0] - 1) < 1e-3  # fmt: skip
    assert not any("_" in c for c in table.columns)  # display names on screen, never ids
    assert not any("_" in str(v) for v in table["Best guess"])


def test_zip_upload_and_traversal_zip():
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as zf:
        for i in range(3):
            zf.writestr(f"crops/c{i}.png", encode_png(make_crop(i, 48, i)))
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/evil.png", encode_png(make_crop(0, 48, 0)))
    at = _run_with(
        [("crops.zip", good.getvalue(), "application/zip"), ("evil.zip", evil.getvalue(), "application/zip")]
    )
    assert not at.exception
    assert any("unsafe path" in e.value for e in at.error)
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "3"


def test_cells_flagged_for_review_are_shown_as_unidentified(unsure_classifier):
    files = [("a.png", encode_png(make_crop(0, 80, 1)), "image/png")]
    at = _run_with(files)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Unidentified — review"] == "1"
    assert any(c.value.startswith("Classified with ") for c in at.caption)  # the page names the model that ran
    assert any("Unidentified — review" in w.value and "Best guess" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert "unsure" in table["Why review"].iloc[0] and table["Best guess"].iloc[0]
    assert table["Shown as"].iloc[0] == "Unidentified — review"  # the table says it too (the CSV: shown_as)
    assert table["Confidence"].iloc[0] == "—"  # a flagged cell has no confidence of its own: a dash, never None
    warning = next(w.value for w in at.warning if "Best guess" in w.value)  # one best guess: the table's
    assert f"Best guess: {table['Best guess'].iloc[0]} ({float(table['P(best guess)'].iloc[0]):.2f})" in warning


def test_same_file_name_twice_and_markdown_in_names_do_not_break_the_page():
    crop = encode_png(make_crop(0, 80, 1))
    files = [("[x](http://evil).png", crop, "image/png"), ("[x](http://evil).png", crop, "image/png")]
    at = _run_with(files)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "2"
    assert not any("evil" in md.value for md in at.markdown)  # names are shown as plain text only


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_zip_members_and_markdown_names_in_errors():
    from tests.app._markdown import shows_literally

    crop = encode_png(make_crop(1, 48, 0))
    dup, evil = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(dup, "w") as zf:
        for _ in range(3):
            zf.writestr("c.png", crop)  # the same member name three times
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("**bold** [x](http://evil).png", crop)
    files = [
        ("dup.zip", dup.getvalue(), "application/zip"),
        ("dup.zip", dup.getvalue(), "application/zip"),  # and the same zip twice
        ("**evil**.zip", evil.getvalue(), "application/zip"),
        ("[click](http://evil).png", b"broken", "image/png"),
    ]
    at = _run_with(files)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "6"
    assert len(at.error) == 2
    for e, name in zip(at.error, ("**evil**.zip", "[click](http://evil).png"), strict=True):
        shown = e.value.replace("\\", "").replace("\u2060", "")  # what the reader sees
        assert name in shown and shows_literally(e.value, shown), e.value
    assert not any("evil" in md.value for md in at.markdown)


def test_upload_limit_follows_cellkit_max_upload_mb(monkeypatch):
    monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", "1")
    at = AppTest.from_file(str(ROOT / "app_pages/classify.py"), default_timeout=60).run()
    assert at.file_uploader(key="classify_upload").proto.max_upload_size_mb == 1  # the browser's own check
    big = encode_png(make_crop(0, 80, 1)) + b"\0" * (1024 * 1024)  # over 1 MB (bytes after IEND)
    at = _run_with([("big.png", big, "image/png"), ("ok.png", encode_png(make_crop(0, 80, 1)), "image/png")])
    assert not at.exception
    assert len(at.error) == 1 and "big.png" in at.error[0].value and "upload limit of 1 MB" in at.error[0].value
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "1"  # the big one is never read


def test_top_leaves_are_horizontal_bars_in_class_colours():
    """The Top-5 chart: one horizontal bar per leaf, its length the probability (no hairlines)."""
    from cellkit.classify import build_tiny_classifier
    from cellkit.synth import make_crop
    from ui.widgets import top_leaves_bar

    clf = build_tiny_classifier()
    pred = clf.predict([make_crop(1, 64, 0)])[0]
    bar = top_leaves_bar(clf.taxonomy, pred).data[0]
    assert bar.orientation == "h" and len(bar.x) == 5 and list(bar.x) == sorted(bar.x)
    assert len(set(bar.marker.color)) == 5


def test_a_very_long_thin_crop_is_classified_and_shown_without_ending_the_page():
    """Streamlit's JPEG stops at 65,500 px and a 100000 x 1 crop shown 96 px wide would be 0 px high."""
    strip = np.full((1, 100_000, 3), 200, np.uint8)
    cell = encode_png(make_crop(0, 80, 1))
    at = _run_with([("strip.png", encode_png(strip), "image/png"), ("cell.png", cell, "image/png")])
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "2"


def test_thumbnail_keeps_what_is_shown_small_and_not_too_thin():
    from ui.widgets import thumbnail

    assert thumbnail(np.zeros((1, 100_000, 3), np.uint8)).shape == (128, 512, 3)
    assert thumbnail(np.zeros((40, 30, 3), np.uint8)).shape == (40, 30, 3)  # small and not thin: unchanged


def test_a_zip_with_no_image_is_named_in_its_message():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "no image here")
    at = _run_with([("lab.zip", buf.getvalue(), "application/zip")])
    assert not at.exception
    assert any("lab.zip" in e.value and "no image in the zip" in e.value for e in at.error)


def test_the_last_upload_is_shown_again_after_a_visit_to_another_page():
    """Streamlit forgets an uploader's files when its page is left; the page keeps the last upload."""
    files = [("cell0.png", encode_png(make_crop(0, 80, 1)), "image/png")]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(str(ROOT / "app_pages/classify.py")).run()
    at.file_uploader(key="classify_upload").set_value(files).run()
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "1"
    at.switch_page(str(ROOT / "app_pages/dataset.py")).run()  # another page: the uploader's state is dropped
    at.switch_page(str(ROOT / "app_pages/classify.py")).run()
    assert not at.exception
    assert any("Your last upload (1 file)" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "1"
    at.button(key="classify_kept_clear").click().run()
    assert not at.metric and any("Upload one or more crops" in i.value for i in at.info)


def test_files_removed_from_the_uploader_on_the_page_are_gone_not_kept():
    """A crop removed by the user (the wrong patient's) must not stay on screen or in the CSV."""
    at = _run_with([("cell0.png", encode_png(make_crop(0, 80, 1)), "image/png")])
    assert {m.label: m.value for m in at.metric}["Crops classified"] == "1"
    at.file_uploader(key="classify_upload").set_value([]).run()  # removed in place
    assert not at.exception and not at.metric
    assert not any("Your last upload" in c.value for c in at.caption)
    at.run()  # and it stays gone on the next rerun
    assert not at.metric and any("Upload one or more crops" in i.value for i in at.info)


def test_a_rerun_reuses_the_answer_and_a_new_threshold_or_upload_classifies_again(monkeypatch):
    from cellkit.classify import Classifier

    calls = []
    original = Classifier.predict

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "predict", counted)
    at = _run_with([("cell0.png", encode_png(make_crop(0, 80, 1)), "image/png")])
    assert len(calls) == 1
    at.run()  # a rerun for something else (a click, a download)
    assert not at.exception and len(calls) == 1
    at.sidebar.slider[0].set_value(0.9).run()
    assert not at.exception and len(calls) == 2
    at.file_uploader(key="classify_upload").set_value([("cell1.png", encode_png(make_crop(3, 64, 2)), "image/png")])
    at.run()
    assert len(calls) == 3 and at.dataframe[0].value["File"].tolist() == ["cell1.png"]
