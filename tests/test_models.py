from __future__ import annotations

import pytest

from cellkit.errors import CellkitError
from cellkit.models import ModelSpec, default_spec, list_specs, load_spec


def _spec(name="m1", **kw):
    return ModelSpec(name=name, task="classifier", arch="tiny", weights=f"{name}.safetensors", input_size=32,
                     labels=["a", "b"], **kw)  # fmt: skip


def test_spec_round_trip_and_default(tmp_path):
    _spec("m1").save(tmp_path)
    _spec("m2", card={"default": True}).save(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    assert [s.name for s in list_specs(tmp_path)] == ["m1", "m2"]
    assert default_spec("classifier", tmp_path).name == "m2"
    assert load_spec("m1", tmp_path).input_size == 32


def test_missing_and_invalid_specs(tmp_path):
    with pytest.raises(CellkitError, match="not found"):
        load_spec("nope", tmp_path)
    with pytest.raises(CellkitError, match="no detector"):
        default_spec("detector", tmp_path)
    with pytest.raises(CellkitError, match="task must be"):
        ModelSpec(name="x", task="segmenter", arch="a", weights="w", input_size=3, labels=[])


def test_view_must_be_a_centre_fraction(tmp_path):
    assert _spec("m1").view == 1.0  # cards written before the field existed keep seeing the whole crop
    _spec("m3", view=0.7).save(tmp_path)
    assert load_spec("m3", tmp_path).view == 0.7
    for bad in (0.0, 1.5):
        with pytest.raises(CellkitError, match="view must be in"):
            _spec("m4", view=bad)


def test_background_must_be_rgb():
    assert _spec("m5", background=[255, 228, 203]).background == [255, 228, 203]
    for bad in ([255, 228], [0, 10, 10], [300, 1, 1]):
        with pytest.raises(CellkitError, match="background must be"):
            _spec("m6", background=bad)


def test_models_made_on_this_machine_are_found_beside_the_bundled_ones(tmp_path, monkeypatch):
    bundled, home = tmp_path / "weights", tmp_path / "home"
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(bundled))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    _spec("shipped", card={"default": True}).save(bundled)
    _spec("my_lab").save(home / "models")
    _spec("shipped", view=0.5).save(home / "models")  # a user copy never shadows the bundled model
    assert [s.name for s in list_specs()] == ["shipped", "my_lab"]
    mine = load_spec("my_lab")
    assert not mine.bundled and mine.weights_path == home / "models" / "my_lab.safetensors"
    assert load_spec("shipped").bundled and load_spec("shipped").view == 1.0
    assert default_spec("classifier").name == "shipped"
    assert "folder" not in mine.to_json()


def test_classifiers_are_listed_per_detector_class(tmp_path, monkeypatch):
    from cellkit.classify import build_tiny_classifier, save_classifier
    from cellkit.models import default_spec, list_specs

    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path))
    white = build_tiny_classifier(seed=0)
    red = build_tiny_classifier(seed=1)
    red.spec.name, red.spec.weights, red.spec.applies_to = "a_red_cell_model", "a_red_cell_model.safetensors", ["rbc"]
    red.spec.card = {"default": True}  # even marked default, it is never the white-cell default
    save_classifier(white.model, white.spec, tmp_path)
    save_classifier(red.model, red.spec, tmp_path)
    assert [s.name for s in list_specs(task="classifier", cell_type="wbc")] == [white.spec.name]
    assert [s.name for s in list_specs(task="classifier", cell_type="rbc")] == ["a_red_cell_model"]
    assert default_spec("classifier").name == white.spec.name
    assert default_spec("classifier", cell_type="rbc").name == "a_red_cell_model"
    assert len(list_specs(task="classifier")) == 2


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("view", "a", "view must be a number"),
        ("input_size", "abc", "input_size must be an integer"),
        ("input_size", None, "input_size must be an integer"),
        ("input_size", True, "input_size must be an integer"),
        ("labels", 5, "labels must be a list"),
        ("labels", [1, 2], "labels must hold strings"),
        ("mean", "abc", "mean must be a list"),
        ("threshold", "x", "threshold must be a number"),
        ("ood", "garbage", "ood must be an object"),
        ("weights", "../../../../etc/passwd", "weights must be a file name beside the card"),
        ("weights", "..", "weights must be a file name"),
    ],
)
def test_a_hand_edited_card_is_one_clear_error_and_does_not_hide_the_others(tmp_path, key, value, message):
    import json

    _spec("good").save(tmp_path)
    raw = json.loads(_spec("edited").to_json())
    raw[key] = value
    (tmp_path / "edited.json").write_text(json.dumps(raw))
    with pytest.raises(CellkitError, match=message):
        load_spec("edited", tmp_path)
    assert [s.name for s in list_specs(tmp_path)] == ["good"]  # listing every model still works


def test_the_pipeline_refuses_a_model_for_the_wrong_cell_type(tmp_path, monkeypatch):
    """A red-cell model named as the white-cell classifier (or the reverse) is one clear error."""
    from cellkit.pipeline import resolve_models

    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "home"))
    ModelSpec(name="det", task="detector", arch="yolov8n.yaml", weights="det.safetensors", input_size=320,
              labels=["wbc", "rbc", "platelet"], card={"default": True}).save(tmp_path)  # fmt: skip
    _spec("white").save(tmp_path)
    _spec("red", applies_to=["rbc"]).save(tmp_path)
    assert resolve_models(classifier="white", rbc_model="red").rbc_model == "red"
    with pytest.raises(CellkitError, match="--classifier red: it classifies \\['rbc'\\] boxes, not wbc"):
        resolve_models(classifier="red")
    with pytest.raises(CellkitError, match="--rbc-model white: it classifies"):
        resolve_models(classifier="white", rbc_model="white")


def test_model_id_is_file_safe_and_keeps_what_it_can_of_the_name():
    from cellkit.models import NAME_RULE, model_id

    assert model_id("Lab B May-Grünwald") == "lab_b_may-grunwald"
    assert model_id("my_lab") == "my_lab" and model_id(" ../Ward 3/..") == "ward_3"
    assert NAME_RULE.match(model_id("x" * 200)) and len(model_id("x" * 200)) == 64
    with pytest.raises(CellkitError, match="Latin letters"):
        model_id("日本")


def test_a_white_cell_model_chosen_as_this_machine_s_default_is_the_default_while_it_is_installed(
    tmp_path, monkeypatch
):
    """A lab that adapted a model had to pick it again in every session and on every command."""
    from cellkit.models import machine_default, set_machine_default

    bundled, home = tmp_path / "weights", tmp_path / "home"
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(bundled))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    _spec("shipped", card={"default": True}).save(bundled)
    ModelSpec(name="finder", task="detector", arch="yolo", weights="d.pt", input_size=640, labels=["wbc"]).save(bundled)
    _spec("my_lab").save(home / "models")
    assert machine_default() is None and default_spec("classifier").name == "shipped"
    set_machine_default("my_lab")
    assert machine_default() == "my_lab" and default_spec("classifier").name == "my_lab"
    assert default_spec("classifier", machine=False).name == "shipped"  # adapt starts from the bundled model
    assert default_spec("detector").name == "finder"  # only the white-cell model's default is the machine's
    with pytest.raises(CellkitError, match="not a white-cell classifier"):
        set_machine_default("finder")
    with pytest.raises(CellkitError, match="not found"):
        set_machine_default("nope")
    assert machine_default() == "my_lab"  # a refused choice changes nothing
    (home / "models" / "my_lab.json").unlink()  # deleted: the bundled default again, never an error
    assert default_spec("classifier").name == "shipped"
    set_machine_default(None)
    assert machine_default() is None
    (home / "settings.json").write_text("{not json")  # hand-edited into garbage: the bundled default
    assert machine_default() is None and default_spec("classifier").name == "shipped"


def test_the_models_command_lists_the_default_and_sets_it(tmp_path, monkeypatch, capsys):
    from _cli import run_cli

    bundled, home = tmp_path / "weights", tmp_path / "home"
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(bundled))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    _spec("shipped", card={"default": True}).save(bundled)
    _spec("my_lab", card={"display_name": "Lab B"}).save(home / "models")
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert (
        code == 0 and "shipped\tclassifier\tbundled\t  (default)" in out and "my_lab\tclassifier\tadapted here" in out
    )
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--set-default", "my_lab")
    assert code == 0 and "my_lab\tclassifier\tadapted here\tLab B  (default)" in out
    code, _, err = run_cli(monkeypatch, capsys, "models", "--set-default", "nope")
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    code, out, _ = run_cli(monkeypatch, capsys, "models", "--bundled-default")
    assert code == 0 and "shipped\tclassifier\tbundled\t  (default)" in out


def test_a_model_name_with_a_folder_is_refused_never_joined_to_the_weights_folder(tmp_path):
    """``--model ../outside`` read ``weights/../outside.json``: a card from anywhere the path led."""
    _spec("outside").save(tmp_path)  # beside the weights folder, not in it
    _spec("m1").save(tmp_path / "weights")
    for bad in ("../outside", "sub/m1", ".hidden", "/abs/m1"):
        with pytest.raises(CellkitError, match=r"a model is named by letters, digits.*no folder") as info:
            load_spec(bad, tmp_path / "weights")
        assert repr(bad) in str(info.value)
    assert load_spec(tmp_path / "outside.json").name == "outside"  # a card's path, given as such, is read
    assert load_spec("m1", tmp_path / "weights").name == "m1"


def test_an_empty_model_name_is_refused_not_read_as_the_default(tmp_path, monkeypatch):
    from cellkit.classify import build_tiny_classifier, load_classifier, save_classifier
    from cellkit.pipeline import resolve_models

    clf = build_tiny_classifier()
    clf.spec.card = {"default": True}
    save_classifier(clf.model, clf.spec, tmp_path)
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path))
    assert load_classifier(None).spec.name == "tiny"  # no name: the default
    for call in (lambda: load_classifier(""), lambda: load_spec(" "), lambda: resolve_models(detector="")):
        with pytest.raises(CellkitError, match=r"got an empty one \(leave the option out for the default model\)") as e:
            call()
        assert "cellkit train" not in str(e.value)  # a bad name is no reason to train a model


def test_a_card_outside_the_model_folders_cannot_be_the_default_and_defaults_are_one_rule(tmp_path, monkeypatch):
    from cellkit.models import default_names, machine_default, set_machine_default

    bundled, home = tmp_path / "weights", tmp_path / "home"
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(bundled))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    _spec("shipped", card={"default": True}).save(bundled)
    _spec("red", card={"default": True}, applies_to=["rbc"]).save(bundled)
    _spec("elsewhere").save(tmp_path / "loose")
    with pytest.raises(CellkitError, match="not an installed model"):
        set_machine_default(str(tmp_path / "loose" / "elsewhere.json"))  # it was saved, then never found
    assert machine_default() is None
    assert default_names() == {"classifier": "shipped", "classifier_rbc": "red"}  # no detector installed here
