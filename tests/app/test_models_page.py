"""AppTest of the Models page (cards, robustness figures, adapting a model) and of the sidebar model picker."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cellkit.classify import build_tiny_classifier, save_classifier
from cellkit.io import encode_png
from cellkit.synth import make_crop
from tests.app._markdown import visible

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Bundled weights (one tiny default classifier with bench figures in its card) and an empty CELLKIT_HOME."""
    import streamlit as st

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    weights, home = tmp_path / "weights", tmp_path / "home"
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(tmp_path / "cache"))
    clf = build_tiny_classifier(seed=3)
    clf.spec.card = {
        "default": True,
        "robustness": {
            "conditions": {"clean": {"pbc8_accuracy": 0.9, "mature5_accuracy": 0.8, "flagged": 0.05}},
            "txl_pbc_sources": {"BCCD": {"n": 10, "ood_flagged": 0.2, "share_neutrophil": 0.5}},
            "cannot_show": "real other-lab stains.",
            "command": "python bench/robustness.py",
        },
    }
    save_classifier(clf.model, clf.spec, weights)
    st.cache_resource.clear()
    yield weights, home
    st.cache_resource.clear()


def labelled_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for node, kind in (("eosinophil", 1), ("lymphocyte", 2)):
            for i in range(6):
                zf.writestr(f"{node}/c{i}.png", encode_png(make_crop(kind, 48, 10 * kind + i)))
    return buf.getvalue()


def test_models_page_adapts_a_model_from_an_uploaded_zip(folders):
    weights, home = folders
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=120).run()
    assert not at.exception
    at.file_uploader(key="models_adapt_zip").set_value([("lab.zip", labelled_zip(), "application/zip")])
    at.run()
    at.text_input(key="models_adapt_name").set_value("lab_one")
    at.button(key="models_adapt_go").click()
    at.run()
    assert not at.exception, at.exception
    assert any("Saved as lab_one" in visible(s.value) for s in at.success)
    assert (home / "models" / "lab_one.json").is_file() and not (weights / "lab_one.json").exists()
    labels = [df.value.iloc[:, 0].tolist() for df in at.dataframe]
    assert any("Balanced accuracy" in col for col in labels)


def test_adapting_under_a_bundled_name_is_refused_with_one_message(folders):
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=120).run()
    at.file_uploader(key="models_adapt_zip").set_value([("lab.zip", labelled_zip(), "application/zip")])
    at.run()
    at.text_input(key="models_adapt_name").set_value("tiny")
    at.button(key="models_adapt_go").click()
    at.run()
    assert not at.exception
    assert any("bundled model" in e.value for e in at.error)


def test_model_picker_lists_bundled_and_adapted_models(folders):
    _, home = folders
    clf = build_tiny_classifier(seed=4)
    clf.spec.name, clf.spec.weights = "lab_two", "lab_two.safetensors"
    save_classifier(clf.model, clf.spec, home / "models")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    picker = at.sidebar.selectbox(key="model_picker")
    assert picker.options == ["tiny · default", "lab_two · adapted here"]
    picker.set_value("lab_two").run()
    assert at.session_state["classifier_name"] == "lab_two"
    assert at.query_params["model"] in ("lab_two", ["lab_two"])  # in the URL, so a reload keeps it
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    again.query_params["model"] = "lab_two"  # a reload: a new session with the same URL
    again.run()
    assert again.session_state["classifier_name"] == "lab_two"
    assert again.sidebar.selectbox(key="model_picker").value == "lab_two"
    again.sidebar.selectbox(key="model_picker").set_value("tiny").run()
    assert "model" not in again.query_params and again.session_state["classifier_name"] is None


def test_adapt_zip_over_the_upload_limit_is_refused(folders, monkeypatch):
    monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", "1")
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=120).run()
    assert at.file_uploader(key="models_adapt_zip").proto.max_upload_size_mb == 1
    at.file_uploader(key="models_adapt_zip").set_value(
        [("[big](http://evil).zip", b"\0" * (1024 * 1024 + 1), "application/zip")]
    )
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "upload limit of 1 MB" in at.error[0].value and "](" not in at.error[0].value
    assert at.button(key="models_adapt_go").disabled


def _page_folders(tmp_path, monkeypatch):
    """The page run from the repository with its own weights folder and home; returns the weights folder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "weights"


def perfect_test_metrics(clf) -> dict:
    """Test metrics of a model right on 40 crops (the card block the Models page needs to show a model)."""
    import numpy as np

    from cellkit.evaluate import classification_report

    leaves = list(clf.taxonomy.leaves)
    probs = np.eye(len(leaves))[np.arange(40) % len(leaves)] * 0.9 + 0.1 / len(leaves)
    return classification_report([leaves[i % len(leaves)] for i in range(40)], probs, clf.taxonomy)


def test_models_page_shows_the_robustness_bench_of_the_card(tmp_path, monkeypatch):
    """A card with test metrics and bench figures: the metrics, the imitated-labs table and the TXL-PBC shares."""
    import streamlit as st

    weights = _page_folders(tmp_path, monkeypatch)
    clf = build_tiny_classifier(seed=3)
    clf.spec.card = {
        "default": True,
        "metrics_test": perfect_test_metrics(clf),
        "robustness": {
            "conditions": {
                "clean": {"pbc8_accuracy": 0.985, "mature5_accuracy": 0.984, "flagged": 0.07},
                "stain of BCDD, tight, 2x fewer px": {
                    "pbc8_accuracy": 0.833,
                    "mature5_accuracy": 0.79,
                    "flagged": 0.56,
                },
            },
            "txl_pbc_sources": {"BCCD": {"n": 10, "ood_flagged": 0.4, "share_neutrophil": 0.5}},
            "cannot_show": "real other-lab stains.",
            "command": "python bench/robustness.py",
        },
    }
    save_classifier(clf.model, clf.spec, weights)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["macro-F1, 11 leaves"] == "1.000"
    tables = [d.value for d in at.dataframe]
    rob = next(t for t in tables if "condition" in t.columns)
    assert list(rob["condition"]) == ["clean", "stain of BCDD, tight, 2x fewer px"]
    assert rob["PBC-8 accuracy"].tolist() == [0.985, 0.833]
    src = next(t for t in tables if "BCCD" in t.index)
    assert "Neutrophil" in src.columns and "share_neutrophil" not in src.columns  # display names, never ids
    assert any("real other-lab stains." in c.value for c in at.caption)
    st.cache_resource.clear()


def test_models_page_compares_red_cell_models_with_plain_column_names(folders):
    """Two red-cell models with bench figures in their cards: one row each, columns named for people."""
    weights, _home = folders
    for k, (name, f1) in enumerate((("rbc_a", 0.81), ("rbc_b", 0.74))):
        clf = build_tiny_classifier("rbc12", seed=k)
        clf.spec.name, clf.spec.applies_to = name, ["rbc"]
        clf.spec.card = {
            "display_name": f"Red cells {name[-1].upper()}",
            "chula_bench": {"on_points": {"macro_f1_12_forms": f1, "accuracy_12_forms": 0.84},
                            "end_to_end": {"macro_f1_12_forms": f1 - 0.01, "accuracy_12_forms": 0.8, "missed": 0.02}},
        }  # fmt: skip
        save_classifier(clf.model, clf.spec, weights)
    measured = {"name": "rbc_gone", "model": "Red cells, not shipped", "macro_F1_points": 0.5, "shipped": False}
    (weights / "rbc_comparison.json").write_text(json.dumps({"rows": [measured]}))
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "Macro-F1, end to end" in d.value.columns)
    assert table["Model"].tolist() == ["Red cells A", "Red cells B", "Red cells, not shipped"]
    assert table["Shipped"].tolist() == [True, True, False]
    assert table["Macro-F1, labelled points"].tolist() == [0.81, 0.74, 0.5]
    assert not any("_" in c for c in table.columns)  # display names, never ids


def test_models_page_compares_white_cell_models_with_the_installed_default_first(folders):
    """Installed white-cell models come from their cards (the default among them); measured-only rows follow."""
    import numpy as np

    from cellkit.evaluate import classification_report

    weights, _home = folders
    for k, name in enumerate(("wbc_home", "wbc_any_lab")):
        clf = build_tiny_classifier(seed=k)
        leaves = list(clf.taxonomy.leaves)
        probs = np.eye(len(leaves))[np.arange(22) % len(leaves)] * 0.9 + 0.1 / len(leaves)
        clf.spec.name = name
        clf.spec.card = {
            "default": k == 1,
            "display_name": f"White cells {k + 1}",
            "metrics_test": classification_report([leaves[i % len(leaves)] for i in range(22)], probs, clf.taxonomy),
            "training": {"config": {"pretrained": True, "init_from": "wbc_home" if k else ""}},
            "robustness": {"conditions": {"clean": {"pbc8_accuracy": 0.99}, "tight": {"pbc8_accuracy": 0.5 + 0.4 * k},
                                          "blur": {"pbc8_accuracy": 0.9}}},
        }  # fmt: skip
        if k == 1:  # bench/other_labs_labelled.py --write-card
            row = {
                "n": 10,
                "accuracy": 0.8,
                "balanced_accuracy": 0.7,
                "flagged": 0.3,
                "wrong_unflagged": 0.1,
                "recall": {"lymphocyte": 0.5, "neutrophil": 0.9},
            }
            lab_a = {**row, "recall": {"lymphocyte": 0.5}}  # no neutrophil labelled in this lab: a dash
            clf.spec.card["other_labs_labelled"] = {
                "rows": {"Lab A": lab_a, "all three": row},
                "trained_on_these_labs": True,
                "cannot_show": "Few cells.",
            }
            score = {"accuracy": 0.6, "balanced_accuracy": 0.5, "flagged": 0.6, "wrong_unflagged": 0.0, "recall": {}}
            after = {**score, "balanced_accuracy": 0.87, "flagged": 0.5, "balanced_accuracy_per_seed": [0.87]}
            clf.spec.card["other_labs_adapt"] = [{  # bench/adapt_other_labs.py
                "base_model": "wbc_old", "base_display": "White cells, old", "base_trained_on_these_labs": False,
                "per_class": 10, "seeds": 1, "command": "python bench/adapt_other_labs.py", "cannot_show": "Few.",
                "rows": {"Lab A": {"labelled_counts": {"neutrophil": 10, "lymphocyte": 3}, "eval_cells": 20,
                                   "before": score, "after_labelled": after, "after_unlabelled": score,
                                   "adapt_seconds": 9.5},
                         "Lab A, other images": {  # --cbc-split's row: no unlabelled run, no timing
                             "labelled_counts": {"neutrophil": 10, "lymphocyte": 8, "monocyte": 1}, "eval_cells": 30,
                             "types_given_per_class": ["lymphocyte", "neutrophil"], "before": score,
                             "after_labelled": after, "balanced_over_types_given": {"before": 0.4, "after": 0.9}}},
            }]  # fmt: skip
        save_classifier(clf.model, clf.spec, weights)
    tiny = json.loads((weights / "tiny.json").read_text())
    tiny["card"]["default"] = False  # one default white-cell model: wbc_any_lab
    (weights / "tiny.json").write_text(json.dumps(tiny))
    measured = {"model": "wbc_gone", "display_name": "White cells, not shipped", "leaf_f1": 0.5, "shipped": True}
    (weights / "classifier_comparison.json").write_text(json.dumps({"rows": [measured], "note": "Measured here."}))
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "Under shifts, worst accuracy" in d.value.columns)
    assert table["Model"].tolist() == ["White cells 2", "White cells 1", "White cells, not shipped"]  # default first
    assert table["Shipped"].tolist() == [True, True, False]  # a saved row is never "shipped"
    assert table["Under shifts, worst accuracy"].tolist() == ["0.900", "0.500", "—"]
    assert table["Under shifts, mean accuracy"].tolist()[:2] == ["0.900", "0.700"]
    assert table["Initialised from"].tolist()[:2] == ["ImageNet, then White cells 1", "ImageNet"]  # names, not ids
    assert table["Macro-F1, leaves"].tolist()[0] == 1.0
    assert table["Other labs' cells, accuracy"].tolist() == ["0.800", "—", "—"]
    assert table["Trained on those labs"].tolist()[0] == "True"
    labs = next(d.value for d in at.dataframe if "lab" in d.value.columns)  # the default model's card
    assert labs["lab"].tolist() == ["Lab A", "all three"]
    assert {"Lymphocyte found", "Neutrophil found", "wrong and not flagged"} <= set(labs.columns)
    assert labs["Lymphocyte found"].tolist() == ["0.50", "0.50"]
    assert labs["Neutrophil found"].tolist() == ["—", "0.90"]
    assert any("not a first look at a new lab" in m.value for m in at.markdown)
    assert any("Measured here." in c.value for c in at.caption)
    card = next(b for b in at.selectbox if b.label == "Classifier card")
    assert sorted(card.options) == ["White cells 1", "White cells 2"]  # display names, never ids
    assert card.options[card.index] == "White cells 2"  # the default model's card first shown
    start = next(b for b in at.selectbox if b.label == "Start from")
    assert {"White cells 1", "White cells 2"} <= set(start.options) and "wbc_home" not in start.options
    adapted = next(d.value for d in at.dataframe if "after, labelled" in d.value.columns)  # adapting on real labs
    assert adapted.iloc[0].to_dict() | {} == {
        "lab": "Lab A", "cells given": 13, "cells scored": 20, "before": 0.5, "after, labelled": 0.87,
        "after, unlabelled": "0.500", "flagged before": 0.6, "flagged after": 0.5, "wrong, unflagged after": 0.0,
        "seconds": "9.5"}  # fmt: skip
    other = adapted.iloc[1]
    assert (other["lab"], other["cells given"], other["after, labelled"]) == ("Lab A, other images", 19, 0.87)
    assert other["after, unlabelled"] == other["seconds"] == "—"  # not measured in that set-up: a dash, never None
    assert any("over the cell types given 5 or more labelled cells (Lymphocyte, Neutrophil), balanced accuracy 0.40 "
               "before, 0.90 after" in c.value for c in at.caption)  # fmt: skip
    assert any("*White cells, old* (never saw these labs)" in m.value for m in at.markdown)
    chosen = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60)
    chosen.session_state["classifier_name"] = "wbc_home"  # picked in the sidebar: its card is shown first
    chosen.run()
    card = next(b for b in chosen.selectbox if b.label == "Classifier card")
    assert card.options[card.index] == "White cells 1"
    start = next(b for b in chosen.selectbox if b.label == "Start from")
    assert start.options[start.index] == "White cells 1"  # adapting starts from the model chosen, not the first
    start = next(b for b in at.selectbox if b.label == "Start from")
    assert start.options[start.index] == "White cells 2"  # no choice: the default model


@pytest.mark.parametrize("broken", ["labels", "weights"])
def test_a_broken_adapted_model_says_what_to_do_in_display_names(folders, broken):
    """An adapted model (CELLKIT_HOME/models) whose card no longer fits, or whose weights are gone."""
    _, home = folders
    clf = build_tiny_classifier(seed=4)
    clf.spec.name, clf.spec.weights = "lab_two", "lab_two.safetensors"
    clf.spec.card = {"adapted_from": {"name": "tiny", "sha256": ""}, "adaptation": {}}
    save_classifier(clf.model, clf.spec, home / "models")
    card = home / "models" / "lab_two.json"
    if broken == "labels":  # a hand-edited card: one output renamed
        raw = json.loads(card.read_text())
        raw["labels"][raw["labels"].index("band_neutrophil")] = "band"
        card.write_text(json.dumps(raw))
    else:
        (home / "models" / "lab_two.safetensors").unlink()
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60)
    at.session_state["classifier_name"] = "lab_two"  # chosen in the sidebar's model picker
    at.run()
    assert not at.exception and len(at.error) == 1
    text = visible(at.error[0].value)
    assert "train one" not in text
    assert "adapt it again (`cellkit adapt ... --name lab_two --replace`) or delete its card" in text
    assert str(card) in text
    if broken == "labels":
        assert "it has no output for Band neutrophil" in text
        assert not any(leaf in text for leaf in ("band_neutrophil", "segmented_neutrophil", "promyelocyte"))
    else:
        assert "the weights" in text.lower() and "of the adapted model 'lab_two' are missing" in text


def test_models_page_shows_the_honest_leave_one_class_out_figure_with_the_shipped_rule(tmp_path, monkeypatch):
    import streamlit as st

    weights = _page_folders(tmp_path, monkeypatch)
    clf = build_tiny_classifier(seed=3)
    honest = {"held_out_name": "Immature granulocyte", "auroc": 0.954, "flagged_at_5pct_known": 0.749,
              "flagged_at_10pct_budget": 0.876, "known_flagged_at_10pct_budget": 0.099,
              "shipped_rule": {"held_out_flagged": 0.847, "known_flagged": 0.079},
              "recipe": "from ImageNet",
              "also": [{"held_out_name": "Monocyte", "auroc": 0.94, "flagged_at_10pct_budget": 0.75,
                        "shipped_rule": {"held_out_flagged": 0.729, "known_flagged": 0.074}}]}  # fmt: skip
    clf.spec.card = {"default": True, "metrics_test": perfect_test_metrics(clf),
                     "unknown_bench": {"loco": {}, "method": "knn", "loco_honest": honest}}  # fmt: skip
    save_classifier(clf.model, clf.spec, weights)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "AUROC 0.954" in text and "With the review rule as shipped: 85% of them go to review" in text
    assert any("stand in for blasts" in c.value for c in at.caption)
    assert "Trained without *Monocyte* instead: AUROC 0.940" in text and "73% to review" in text
    st.cache_resource.clear()


def test_adapted_models_are_listed_by_display_name_with_a_readable_date(folders):
    weights, home = folders
    raw = json.loads((weights / "tiny.json").read_text())
    raw["card"]["display_name"] = "White cells (home)"
    (weights / "tiny.json").write_text(json.dumps(raw))
    clf = build_tiny_classifier(seed=4)
    clf.spec.name, clf.spec.weights = "lab_two", "lab_two.safetensors"
    clf.spec.card = {"adapted_from": {"name": "tiny", "sha256": ""}, "adaptation": {"steps": ["head fine-tuned"]},
                     "created": "2026-12-02T03:00:00+0000"}  # fmt: skip
    save_classifier(clf.model, clf.spec, home / "models")
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60).run()
    assert not at.exception
    line = next(visible(m.value) for m in at.markdown if "adapted from" in m.value)
    assert "adapted from White cells (home), 2026-12-02 03:00" in line and "+0000" not in line


def test_an_adapted_model_picked_in_the_sidebar_is_told_apart_from_the_card_shown(folders):
    """The card of another model stood under the sidebar's adapted model with no word that it was another's."""
    import numpy as np

    from cellkit.evaluate import classification_report

    weights, home = folders
    clf = build_tiny_classifier(seed=1)
    leaves = list(clf.taxonomy.leaves)
    probs = np.eye(len(leaves))[np.arange(22) % len(leaves)] * 0.9 + 0.1 / len(leaves)
    clf.spec.name = "wbc_home"
    clf.spec.card = {"display_name": "White cells 1",
                     "metrics_test": classification_report([leaves[i % len(leaves)] for i in range(22)], probs,
                                                           clf.taxonomy)}  # fmt: skip
    save_classifier(clf.model, clf.spec, weights)
    lab = build_tiny_classifier(seed=2)
    lab.spec.name, lab.spec.weights = "lab_b", "lab_b.safetensors"
    lab.spec.card = {"display_name": "Lab B", "adapted_from": {"name": "wbc_home"}, "adaptation": {"seconds": 1}}
    save_classifier(lab.model, lab.spec, home / "models")
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60)
    at.session_state["classifier_name"] = "lab_b"
    at.run()
    assert not at.exception
    note = next(i.value for i in at.info if "has no test-split card" in i.value)
    assert "Lab B" in note and "adapted from White cells 1" in note and "another model's" in note
    plain = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60).run()
    assert not any("has no test-split card" in i.value for i in plain.info)


def test_a_model_is_named_as_people_name_it_and_its_files_get_a_safe_id(folders):
    """ "Lab B May-Grünwald" was refused with a rule on letters and underscores."""
    _, home = folders
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=120).run()
    at.file_uploader(key="models_adapt_zip").set_value([("lab.zip", labelled_zip(), "application/zip")])
    at.run()
    at.text_input(key="models_adapt_name").set_value("Lab B May-Grünwald")
    at.button(key="models_adapt_go").click()
    at.run()
    assert not at.exception and not at.error
    card = json.loads((home / "models" / "lab_b_may-grunwald.json").read_text(encoding="utf-8"))
    assert card["card"]["display_name"] == "Lab B May-Grünwald"
    assert any("Lab B May-Grünwald (file name lab_b_may-grunwald)" in visible(s.value) for s in at.success)
    at.text_input(key="models_adapt_name").set_value("日本")
    at.button(key="models_adapt_go").click()
    at.run()
    assert not at.exception and any("Latin letters or digits" in e.value for e in at.error)


def test_the_sidebar_s_model_can_be_made_this_machine_s_default_and_a_new_session_starts_with_it(folders):
    """The sidebar's choice was lost in every new session (a new tab without ?model=): a lab's adapted model had
    to be picked again each time."""
    _, home = folders
    clf = build_tiny_classifier(seed=4)
    clf.spec.name, clf.spec.weights, clf.spec.card = "lab_two", "lab_two.safetensors", {"display_name": "Lab Two"}
    save_classifier(clf.model, clf.spec, home / "models")
    at = AppTest.from_file(str(ROOT / "app_pages/models.py"), default_timeout=60)
    at.session_state["classifier_name"] = "lab_two"  # picked in the sidebar
    at.run()
    assert not at.exception and "models_bundled_default" not in [b.key for b in at.button]  # nothing to undo yet
    at.button(key="models_make_default").click().run()
    assert not at.exception and not at.error
    assert json.loads((home / "settings.json").read_text())["default_classifier"] == "lab_two"
    assert any("Default white-cell model on this machine: Lab Two" in visible(c.value) for c in at.caption)
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()  # a new tab, no ?model=
    assert fresh.sidebar.selectbox(key="model_picker").value == "lab_two"
    assert fresh.sidebar.selectbox(key="model_picker").options == ["tiny", "Lab Two · default · adapted here"]
    at.button(key="models_bundled_default").click().run()
    assert not at.exception and "default_classifier" not in json.loads((home / "settings.json").read_text())


def test_a_model_just_adapted_is_in_the_sidebar_s_picker_at_once(folders):
    """The success message said "Choose it in the sidebar's model picker" while the picker did not list it yet."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("app_pages/models.py").run()
    at.file_uploader(key="models_adapt_zip").set_value([("lab.zip", labelled_zip(), "application/zip")])
    at.run()
    at.text_input(key="models_adapt_name").set_value("Lab C")
    at.button(key="models_adapt_go").click().run()
    assert not at.exception and any("Saved as Lab C" in visible(s.value) for s in at.success)
    assert "Lab C · adapted here" in at.sidebar.selectbox(key="model_picker").options
