"""The dataset index: colour and hashes per image, a corrupt file reported, the disk cache, interruption."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from _datasets import make_classification

import cellkit.dataset_index as dataset_index


@pytest.fixture
def cls_index(tmp_path):
    return dataset_index.index_dataset(make_classification(tmp_path / "cls"))


def test_index_adds_colour_and_hashes_and_reports_corrupt_file(cls_index):
    df = cls_index.images
    ok = df[df["error"].isna()]
    assert len(ok) == 15 and ok["phash"].str.len().eq(16).all() and ok["sha1"].str.len().eq(40).all()
    assert ok[dataset_index.COLOUR_COLUMNS].notna().all().all()
    assert ((ok["stained"] > 0) & (ok["stained"] <= 1)).all() and (ok["hue"].between(-180, 180)).all()
    bad = df[df["error"].notna()]
    assert list(bad["file"]) == ["neutrophil/SNE_broken.jpg"] and "corrupt" in bad["error"].item()


def test_colour_stats_of_known_colours():
    white = dataset_index.colour_stats(np.full((8, 8, 3), 255, np.uint8))
    assert white["od_r"] == 0 and white["stained"] == 0 and white["val"] == 1
    purple = dataset_index.colour_stats(np.tile(np.array([120, 40, 160], np.uint8), (8, 8, 1)))
    assert purple["stained"] == 1 and -110 < purple["hue"] < -60 and purple["od_g"] > purple["od_b"]


def test_cache_hit_reads_nothing_and_changed_files_are_reindexed(tmp_path, monkeypatch):
    root = make_classification(tmp_path / "cls")
    first = dataset_index.index_dataset(root)
    assert first.n_computed == 16 and first.cache_path.is_file()

    def boom(path):
        raise AssertionError(f"{path} decoded although cached")

    with monkeypatch.context() as patch:
        patch.setattr(dataset_index, "image_record", boom)
        again = dataset_index.index_dataset(root)
    assert again.n_computed == 0 and dataset_index.pending_images(root) == 0
    pd.testing.assert_frame_equal(again.images, first.images)

    changed = root / "lymphocyte" / "LY_1.png"
    changed.write_bytes((root / "lymphocyte" / "LY_2.png").read_bytes())
    os.utime(changed, ns=(1, 1))
    assert dataset_index.pending_images(root) == 1
    third = dataset_index.index_dataset(root)
    assert third.n_computed == 1
    assert (
        third.images.set_index("file").loc["lymphocyte/LY_1.png", "sha1"]
        == (third.images.set_index("file").loc["lymphocyte/LY_2.png", "sha1"])
    )


def test_damaged_cache_is_rebuilt(tmp_path):
    root = make_classification(tmp_path / "cls", corrupt=False)
    first = dataset_index.index_dataset(root)
    first.cache_path.write_bytes(b"garbage")
    assert dataset_index.index_dataset(root).n_computed == 15


def test_interrupted_index_keeps_what_was_done(tmp_path, monkeypatch):
    root = make_classification(tmp_path / "cls", corrupt=False)
    real, done = dataset_index.image_record, []

    def interrupt_at_sixth(path):
        if len(done) == 5:
            raise KeyboardInterrupt
        done.append(path)
        return real(path)

    with monkeypatch.context() as patch:
        patch.setattr(dataset_index, "image_record", interrupt_at_sixth)
        with pytest.raises(KeyboardInterrupt):
            dataset_index.index_dataset(root, workers=1)
    assert dataset_index.pending_images(root) == 10  # the five finished images were cached
    assert dataset_index.index_dataset(root).n_computed == 10


@pytest.mark.parametrize("mode", ["1", "P", "LA", "I;16", "RGBA"])
def test_every_mode_read_image_takes_is_indexed_at_any_size(tmp_path, mode):
    """1-bit and palette PNGs were "corrupt or truncated (image has wrong mode)" once big enough to be reduced."""
    from PIL import Image

    rgb = (np.random.default_rng(0).random((700, 900, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    img = img.convert("I;16") if mode == "I;16" else img.convert(mode)
    path = tmp_path / f"big_{mode.replace(';', '')}.png"
    img.save(path)
    rec = dataset_index.image_record(path)
    assert rec["error"] is None and (rec["width"], rec["height"]) == (900, 700), rec["error"]


def test_stats_keeps_the_pixel_limit_read_image_keeps(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("CELLKIT_MAX_PIXELS", "1000000")
    Image.new("RGB", (2000, 2000), (200, 150, 180)).save(tmp_path / "huge.png")
    rec = dataset_index.image_record(tmp_path / "huge.png")
    assert "over the 1 MP limit per image (CELLKIT_MAX_PIXELS)" in rec["error"] and rec["phash"] is None
