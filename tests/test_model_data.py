"""What the bundled models were trained on, read from their cards: counts, notes, the image split."""

from __future__ import annotations

from cellkit import model_data, plots
from cellkit.models import ModelSpec


def test_model_data_table_reads_card_counts():
    spec = ModelSpec(
        name="m", task="classifier", arch="a", weights="m.safetensors", input_size=8, labels=["x"],
        card={"data": {"dataset": "PBC", "n_images": 10, "split_sizes": {"train": 6, "val": 2, "test": 2}}},
    )  # fmt: skip
    table = model_data.model_data_table([spec])
    assert table[table["table"] == "data.split_sizes"].set_index("key")["count"].to_dict() == {
        "train": 6, "val": 2, "test": 2,
    }  # fmt: skip
    assert model_data.model_data_notes(spec) == {"dataset": "PBC"}
    assert len(plots.model_data_bar(table).data) > 0


def test_model_split_table_from_split_file(tmp_path):
    (tmp_path / "split.json").write_text(
        '{"seed": 0, "train": ["neutrophil/BNE_1.jpg", "ig/IG_2.jpg", "eosinophil/EO_3.jpg"], "test": ["smudge/x.jpg"]}'
    )
    spec = ModelSpec(
        name="m", task="classifier", arch="a", weights="m.safetensors", input_size=8, labels=["x"],
        card={"data": {"split_file": "split.json"}},
    )  # fmt: skip
    table = model_data.model_split_table(spec, folder=tmp_path)
    assert table.set_index("file")["node"].to_dict() == {
        "neutrophil/BNE_1.jpg": "band_neutrophil", "ig/IG_2.jpg": "myeloid_immature",
        "eosinophil/EO_3.jpg": "eosinophil", "smudge/x.jpg": None,
    }  # fmt: skip
    assert table.groupby("split").size().to_dict() == {"test": 1, "train": 3}
    spec.card = {}
    assert model_data.model_split_table(spec, folder=tmp_path) is None
