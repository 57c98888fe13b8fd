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
