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
    fig = plots.model_data_bar(table)
    assert len(fig.data) > 0
    assert {t.name for t in fig.data} == {"Data", "Split sizes"}  # words on screen, not card keys
    assert not any("_" in str(x) for t in fig.data for x in t.x)


def test_integers_that_count_no_images_are_left_out():
    spec = ModelSpec(
        name="m", task="detector", arch="a", weights="m.safetensors", input_size=8, labels=["x"],
        card={"display_name": "Cells (v2)", "data": {"max_hash_distance": 8, "train_images_used": 700}},
    )  # fmt: skip
    table = model_data.model_data_table([spec])
    assert table["key"].tolist() == ["train_images_used"] and table["shown"].tolist() == ["Cells (v2)"]
    assert model_data.words("data.cbc_dropped_same_bccd_name") == "CBC dropped same BCCD name"


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
