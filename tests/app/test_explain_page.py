"""AppTest of the Explain page and of the misclassification explorer (Models page), on a tiny classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cellkit.io import encode_png
from cellkit.synth import make_crop
from tests._datasets import make_classification
from tests.app._markdown import visible

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("tiny_classifier")


def _page() -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages/explain.py"), default_timeout=90)


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="explain_upload").set_value([(name, data, "image/png")])
    return at.run()


def test_upload_methods_maps_and_sanity():
    at = _page().run()
    assert not at.exception and at.info  # asks for a crop
    at = _upload(at, "cell.png", encode_png(make_crop(2, 80, 1)))
    assert not at.exception
    assert len(at.image) >= 3  # crop + Grad-CAM + integrated gradients
    captions = " ".join(c.value for c in at.caption)
    assert captions.count("deletion AUC") == 2
    at.multiselect(key="explain_methods").set_value(["gradcampp", "occlusion", "saliency"]).run()
    assert not at.exception
    assert " ".join(c.value for c in at.caption).count("deletion AUC") == 3
    at.selectbox[0].set_value("myeloid_immature").run()  # an inner node
    assert not at.exception
    at.button[0].click().run()  # sanity check with a randomised copy
    assert not at.exception
    assert "Sanity check" in " ".join(c.value for c in at.caption)


def test_bad_upload_is_one_error():
    at = _upload(_page().run(), "broken.png", b"this is not an image")
    assert not at.exception
    assert len(at.error) == 1


def test_crop_handed_over_by_the_slide_page():
    at = _page()
    at.session_state["explain_crop"] = make_crop(4, 64, 3)
    at.session_state["explain_label"] = "monocyte"
    at.run()
    assert not at.exception
    assert any("Label on the slide: monocyte" in c.value for c in at.caption)
    assert at.radio(key="explain_source").value == "Cell from the slide analysis"
    assert len(at.image) >= 3


def test_dataset_folder_source(tmp_path, monkeypatch):
    root = make_classification(tmp_path / "pbc", corrupt=False)
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(tmp_path))
    at = _page().run()
    at.radio(key="explain_source").set_value("Image of a dataset folder").run()
    at.text_input[0].set_value(str(root)).run()
    assert not at.exception
    assert len(at.image) >= 3
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception and at.error


@pytest.mark.parametrize(
    "typed",
    [
        lambda data, outside: "/etc",
        lambda data, outside: f"{data}/../outside/pbc",
        lambda data, outside: str(data / "link_out"),
    ],
    ids=["etc", "dotdot", "symlink-out"],
)
def test_dataset_folder_outside_the_data_folder_is_refused(tmp_path, monkeypatch, typed):
    data, outside = tmp_path / "data", tmp_path / "outside"
    make_classification(data / "pbc", corrupt=False)
    make_classification(outside / "pbc", corrupt=False)
    (data / "link_out").symlink_to(outside / "pbc", target_is_directory=True)
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(data))
    at = _page().run()
    at.radio(key="explain_source").set_value("Image of a dataset folder").run()
    assert not at.exception and len(at.image) >= 3  # the default folder, inside the data folder
    at.text_input(key="explain_folder").set_value(typed(data, outside)).run()
    assert not at.exception
    assert len(at.error) == 1 and "outside the data folder" in visible(at.error[0].value)
    assert not at.image and not at.selectbox  # no class folder or file name of it is listed


def test_class_folder_linking_out_of_the_data_folder_is_refused(tmp_path, monkeypatch):
    data, outside = tmp_path / "data", tmp_path / "outside"
    make_classification(data / "pbc", corrupt=False)
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "private.png").write_bytes(encode_png(make_crop(0, 48, 0)))
    (data / "pbc" / "aaa").symlink_to(outside / "secret", target_is_directory=True)  # listed first
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(data))
    at = _page().run()
    at.radio(key="explain_source").set_value("Image of a dataset folder").run()
    assert not at.exception
    assert len(at.error) == 1 and "outside the data folder" in visible(at.error[0].value)
    assert not any("private.png" in str(sb.options) for sb in at.selectbox)


def test_misclassification_explorer_refuses_folders_outside_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(tmp_path / "data"))
    make_classification(tmp_path / "outside")
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=90).run()
    at.text_input(key="explorer_folder").set_value(str(tmp_path / "data" / ".." / "outside"))
    at.button(key="explorer_run").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "outside the data folder" in visible(at.error[0].value)
    assert not any(m.label.startswith("Accuracy") for m in at.metric)


def test_misclassification_explorer(tmp_path, monkeypatch):
    root = make_classification(tmp_path / "pbc")
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=90).run()
    assert not at.exception
    at.text_input(key="explorer_folder").set_value(str(root))
    at.button(key="explorer_run").click().run()
    assert not at.exception
    assert any("unreadable" in w.value for w in at.warning)  # the corrupt JPEG
    for level in ("pbc8", "depth 1", "leaves"):
        at.selectbox(key="explorer_level").set_value(level).run()
        assert not at.exception
    assert any(m.label == "Accuracy, leaves (11 cell types)" for m in at.metric)  # words, not the level's id
    assert list(at.selectbox(key="explorer_level").options)[:2] == ["Leaves (11 cell types)", "8 classes"]
    # an untrained model cannot get 14 cells of 8 classes right: a gallery of errors is shown
    assert not at.success
    assert at.selectbox(key="explorer_true").value == at.session_state["explorer_true"]
    assert len(at.image) >= 3  # crop + Grad-CAM for the predicted and for the true node
    accuracy = next(m for m in at.metric if m.label.startswith("Accuracy"))
    assert np.isfinite(float(accuracy.value.rstrip("%")))


def test_a_cell_flagged_for_review_can_still_be_explained(unsure_classifier):
    at = AppTest.from_file(str(ROOT / "app_pages/explain.py"), default_timeout=120).run()
    at.file_uploader(key="explain_upload").set_value([("c.png", encode_png(make_crop(1, 64, 0)), "image/png")])
    at.run()
    assert not at.exception
    assert any("Unidentified — review" in w.value for w in at.warning)
    verdict = next(c.value for c in at.caption if c.value.startswith("Model "))
    assert "best guess" in verdict and "Unidentified — review** (" not in verdict  # no class's p beside "Unidentified"


def test_low_probability_node_is_warned_and_captions_are_plain_words():
    at = _upload(_page().run(), "cell.png", encode_png(make_crop(2, 80, 1)))
    node = at.selectbox[0]
    probs = [float(o.rsplit("p=", 1)[1]) for o in node.options]
    assert min(probs) < 0.2
    node.select_index(probs.index(min(probs))).run()
    assert not at.exception
    assert any("The maps below show what would make it look more like" in w.value for w in at.warning)
    captions = " ".join(c.value for c in at.caption)
    assert "than hiding random areas" in captions or "no faster than random areas" in captions
    assert all("(" not in o.split(" — ")[0] for o in at.selectbox[0].options)  # display names, no ids in brackets


def test_a_cell_from_the_slide_is_explained_with_the_model_that_analysed_its_field(monkeypatch):
    import cellkit.classify
    from cellkit.classify import build_tiny_classifier

    asked = []

    def named(name=None):
        asked.append(name)
        clf = build_tiny_classifier()
        clf.spec.name = name or "tiny"
        return clf

    monkeypatch.setattr(cellkit.classify, "load_classifier", named)
    import streamlit as st

    st.cache_resource.clear()
    at = _page()
    at.session_state["explain_crop"] = make_crop(1, 64, 0)
    at.session_state["explain_model"] = "field_model"
    at.session_state["explain_label"] = "Lymphocyte"
    at.run()
    assert not at.exception
    assert any("Explained with field_model, the model that analysed this cell's field" in visible(i.value)
               for i in at.info)  # fmt: skip
    assert "field_model" in asked
