"""Framing: find the white cell in tight, loose, off-centre, crowded and border crops; pad with slide background."""

from __future__ import annotations

import numpy as np
import pytest

from cellkit.errors import CellkitError
from cellkit.framing import cut_square, frame_crop, locate_cell
from cellkit.preprocess import Preprocess

BACKGROUND = (240, 222, 205)  # a beige slide, unlike the grey a naive pad would use
RBC = (215, 150, 150)
CYTOPLASM = (205, 185, 215)
NUCLEUS = (95, 45, 135)


def _disc(img: np.ndarray, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour


def field(wbcs: list[tuple[float, float, float]], size: tuple[int, int] = (400, 400), seed: int = 0) -> np.ndarray:
    """A drawn smear field: red cells around white cells (cx, cy, radius) with three-lobed nuclei."""
    rng = np.random.default_rng(seed)
    img = np.empty((*size, 3), np.uint8)
    img[:] = BACKGROUND
    for _ in range(40):
        cx, cy = rng.uniform(0, size[1]), rng.uniform(0, size[0])
        if all(np.hypot(cx - x, cy - y) > r + 22 for x, y, r in wbcs):
            _disc(img, cx, cy, 16, RBC)
    for cx, cy, r in wbcs:
        _disc(img, cx, cy, r, CYTOPLASM)
        for k in range(3):  # lobes a little apart, as in a segmented neutrophil
            a = 2 * np.pi * k / 3
            _disc(img, cx + np.cos(a) * r * 0.38, cy + np.sin(a) * r * 0.38, r * 0.3, NUCLEUS)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def centre_of(loc) -> np.ndarray:
    x1, y1, x2, y2 = loc.xyxy
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2])


@pytest.mark.parametrize(
    "name, half, shift",
    [("tight", 1.1, 0.0), ("pbc_like", 2.5, 0.0), ("loose", 6.0, 0.0), ("off_centre", 2.5, 0.7)],
)
def test_finds_the_cell_however_the_crop_is_framed(name, half, shift):
    r = 30
    img = field([(200, 200, r)], size=(600, 600) if half > 4 else (400, 400))
    c = np.array([img.shape[1] / 2, img.shape[0] / 2])
    img = field([(c[0], c[1], r)], size=img.shape[:2])
    side = round(2 * r * half)
    left, top = round(c[0] - side / 2 + shift * r), round(c[1] - side / 2 - shift * r)
    crop = cut_square(img, left, top, side)
    loc = locate_cell(crop)
    assert loc.found and loc.n_cells == 1, name
    truth = c - [left, top]
    assert np.hypot(*(centre_of(loc) - truth)) < 0.35 * r, name
    found_side = loc.xyxy[2] - loc.xyxy[0]
    assert 0.6 * 2 * r < found_side < 1.6 * 2 * r, f"{name}: side {found_side:.0f} for a cell of {2 * r}"


def test_two_cells_takes_the_central_one_and_says_so():
    img = field([(150, 200, 28), (265, 200, 28)], size=(400, 400))
    crop = img[100:300, 60:280]  # both cells inside, the left one nearer the centre
    loc = locate_cell(crop)
    assert loc.n_cells == 2
    assert "2 cells" in loc.note
    assert abs(centre_of(loc)[0] - (150 - 60)) < 12


def test_lobes_of_one_nucleus_are_one_cell():
    crop = field([(100, 100, 34)], size=(200, 200))
    loc = locate_cell(crop)
    assert loc.n_cells == 1 and loc.note == ""


def test_border_crop_is_padded_with_the_slide_background_not_grey():
    img = field([(40, 200, 30)], size=(400, 400))  # the cell close to the image's left edge
    crop = img[120:280, 0:140]  # a crop that was clipped by that edge: the cell sits near its left side
    framed = frame_crop(crop, scale=2.5)
    assert framed.shape[0] == framed.shape[1] > 100  # centred on the cell at x = 40: runs past the left edge
    pad = framed[:, :5].reshape(-1, 3).astype(float)  # the padded strip left of the image edge
    assert np.abs(np.median(pad, axis=0) - BACKGROUND).max() < 12
    assert np.abs(np.median(pad, axis=0) - 128).max() > 40


def test_crop_without_nucleus_is_left_as_it_is():
    crop = field([], size=(120, 120))
    loc = locate_cell(crop)
    assert not loc.found and "no nucleus" in loc.note
    assert frame_crop(crop, 2.5, loc) is not None and frame_crop(crop, 2.5, loc).shape == crop.shape


def test_blank_and_tiny_crops_do_not_crash():
    assert not locate_cell(np.full((50, 50, 3), 230, np.uint8)).found
    assert not locate_cell(np.zeros((2, 3, 3), np.uint8)).found
    with pytest.raises(CellkitError, match="expected an RGB crop"):
        locate_cell(np.zeros((5, 5, 7), np.uint8))


def test_tight_and_loose_crops_of_one_cell_reach_the_network_alike():
    """The reason framing exists: the same cell, cropped two ways, gives nearly the same input."""
    img = field([(300, 300, 30)], size=(600, 600))
    prep = Preprocess(64, view=0.7, framing="nucleus", crop_scale=2.5)
    tight = prep.canonical(img[265:335, 265:335]).astype(float)
    loose = prep.canonical(img[120:480, 120:480]).astype(float)
    unframed = Preprocess(64, view=0.7).canonical(img[265:335, 265:335]).astype(float)
    assert np.abs(tight - loose).mean() < 0.5 * np.abs(unframed - loose).mean()


def test_crops_framed_like_the_training_data_are_left_exactly_as_they_are():
    img = field([(200, 200, 30)], size=(400, 400))
    side = round(2.5 * 2 * 30 * 1.05)  # the cell about 1/2.5 of the side, centred
    crop = img[200 - side // 2 : 200 - side // 2 + side, 200 - side // 2 : 200 - side // 2 + side]
    assert frame_crop(crop, 2.5) is crop or np.array_equal(frame_crop(crop, 2.5), crop)
    tight = img[165:235, 165:235]
    assert frame_crop(tight, 2.5).shape[0] > tight.shape[0]  # a tight crop is re-framed (padded out)


def test_a_long_thin_image_is_framed_in_bounded_memory():
    """100000 x 1 pixels would pad to a 100000-pixel square (28 GiB): it is cut from a downscaled copy."""
    from cellkit.framing import MAX_SQUARE_SIDE, cut_square
    from cellkit.preprocess import square_pad

    thin = np.full((1, 100_000, 3), 200, np.uint8)
    square = cut_square(thin, 0, -50_000, 100_000)
    assert square.shape == (MAX_SQUARE_SIDE, MAX_SQUARE_SIDE, 3) and (square == 200).all()
    assert square_pad(thin).shape == (MAX_SQUARE_SIDE, MAX_SQUARE_SIDE, 3)  # what a classifier does with it


def test_a_dark_speck_near_a_round_nucleus_is_not_taken_for_one_of_its_lobes():
    """Raabin-WBC and BCDD crops: a dark fragment beside a lymphocyte once doubled the found nucleus."""
    img = np.empty((150, 150, 3), np.uint8)
    img[:] = BACKGROUND
    _disc(img, 75, 75, 30, CYTOPLASM)
    _disc(img, 75, 75, 20, NUCLEUS)  # one round nucleus, 40 px across
    _disc(img, 75 + 20 + 14 + 7, 75, 7, NUCLEUS)  # a speck 14 px (0.4 x the nucleus' side) from its edge
    loc = locate_cell(img)
    x1, y1, x2, y2 = loc.nucleus_xyxy
    assert loc.found and loc.n_cells == 1
    assert 30 <= x2 - x1 <= 50 and 30 <= y2 - y1 <= 50  # the nucleus alone, not nucleus + gap + speck (68 px)


def _red_cell_pairs(img: np.ndarray, centres: list[tuple[float, float]], r: float = 16) -> None:
    """Overlapping pairs of dense red cells, drawn by transmission (the overlap absorbs twice), as in BCDD smears."""
    transmission = np.array([0.85, 0.38, 0.45])  # haemoglobin: passes red, absorbs green and blue
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    out = img.astype(np.float64)
    for cx, cy in centres:
        for dx in (-0.45 * r, 0.45 * r):
            out[(xx - cx - dx) ** 2 + (yy - cy) ** 2 <= r * r] *= transmission
    img[:] = np.clip(out, 0, 255).astype(np.uint8)


def test_overlapping_red_cells_beside_the_nucleus_are_not_taken_for_lobes():
    """In loose crops the darker overlaps of red cells passed the threshold and were joined to the nucleus,
    so the cell came out up to twice its size (Raabin-WBC and BCDD loose crops, bench/framing_bench.py)."""
    r = 24
    img = field([(300, 300, r)], size=(600, 600), seed=3)
    _red_cell_pairs(img, [(300 + 2.1 * r, 300), (300, 300 - 2.1 * r), (300 - 2.2 * r, 300 + 1.2 * r)])
    crop = img[150:450, 150:450]  # loose: about 6x the cell
    loc = locate_cell(crop)
    assert loc.found and loc.n_cells == 1
    assert np.hypot(*(centre_of(loc) - [150, 150])) < 0.35 * r
    found_side = loc.xyxy[2] - loc.xyxy[0]
    assert 0.6 * 2 * r < found_side < 1.6 * 2 * r, f"side {found_side:.0f} for a cell of {2 * r}"


def _disc_cv(img: np.ndarray, centre: tuple[int, int], r: int, colour: tuple[int, int, int]) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= r * r] = colour


@pytest.mark.parametrize("pale", [(100, 75, 175), (80, 58, 165)])
def test_a_paler_central_nucleus_beside_a_denser_one_at_the_edge_is_the_cell_found(pale):
    """A blast's pale chromatin beside a dense lymphocyte cut by the crop's edge: the central cell is framed and the
    second is said, never the neighbour framed instead."""
    img = np.full((200, 200, 3), (231, 226, 231), np.uint8)
    _disc_cv(img, (168, 165), 24, (55, 35, 150))
    _disc_cv(img, (100, 100), 30, pale)
    loc = locate_cell(img)
    assert loc.n_cells == 2 and np.hypot(*(centre_of(loc) - [100, 100])) < 5


def test_a_paler_lobe_stays_part_of_its_nucleus():
    img = np.full((200, 200, 3), (231, 226, 231), np.uint8)
    _disc_cv(img, (100, 100), 40, (205, 185, 215))  # cytoplasm
    for c, colour in [((80, 95), (55, 35, 150)), ((100, 110), (55, 35, 150)), ((122, 92), (95, 70, 172))]:
        _disc_cv(img, c, 12, colour)
    loc = locate_cell(img)
    x1, _, x2, _ = loc.nucleus_xyxy
    assert loc.n_cells == 1 and x2 - x1 > 60  # all three lobes (68 -> 134 px), not the two dark ones


def test_the_blue_weight_alone_keeps_dense_red_cell_rims_out_of_the_nucleus(monkeypatch):
    """Red cells absorb blue (haemoglobin's Soret band), nuclei pass it: without the seed rule too."""
    import cellkit.framing as framing

    monkeypatch.setattr(framing, "SEED", 0.0)
    r = 24
    img = field([(300, 300, r)], size=(600, 600), seed=3)
    _red_cell_pairs(img, [(300 + 2.1 * r, 300), (300, 300 - 2.1 * r), (300 - 2.2 * r, 300 + 1.2 * r)])
    loc = locate_cell(img[150:450, 150:450])
    assert loc.n_cells == 1 and loc.xyxy[2] - loc.xyxy[0] < 1.6 * 2 * r


@pytest.mark.parametrize("seed, joined", [(0.6, False), (0.0, True)])
def test_a_paler_part_touching_a_nucleus_is_no_lobe_of_it(monkeypatch, seed, joined):
    """A purple part about half as dark as the nucleus beside it (a red-cell rim, stain): above the threshold, but
    joined only without the seed rule."""
    import cellkit.framing as framing

    monkeypatch.setattr(framing, "SEED", seed)
    img = np.full((200, 200, 3), (231, 226, 231), np.uint8)
    _disc_cv(img, (100, 100), 14, (55, 35, 150))
    _disc_cv(img, (126, 100), 9, (100, 70, 170))
    x1, _, x2, _ = locate_cell(img).nucleus_xyxy
    assert (x2 - x1 > 40) == joined, x2 - x1


@pytest.mark.parametrize("gap", [4, 8, 16])
def test_a_paler_central_nucleus_near_a_denser_one_is_its_own_cell_and_framed(gap):
    """A blast's pale chromatin (evidence about 0.57 x its neighbour's) with a dense lymphocyte a few pixels away:
    within lobe distance, the seed rule once dropped the pale nucleus and framed the neighbour (without the rule,
    both were taken for lobes of one nucleus). The central cell is framed and the second one is said."""
    img = np.full((200, 200, 3), (231, 226, 231), np.uint8)
    d = (30 + 24 + gap) / np.sqrt(2)  # the nuclei's edges ``gap`` px apart, along the diagonal
    _disc_cv(img, (round(100 + d), round(100 + d)), 30, (205, 185, 215))  # the lymphocyte's cytoplasm
    _disc_cv(img, (round(100 + d), round(100 + d)), 24, (55, 35, 150))
    _disc_cv(img, (100, 100), 30, (100, 75, 175))  # the blast's pale nucleus, drawn last (over the neighbour)
    loc = locate_cell(img)
    assert loc.found and loc.n_cells == 2 and "2 cells" in loc.note
    assert np.hypot(*(centre_of(loc) - [100, 100])) < 5
    x1, y1, x2, y2 = loc.nucleus_xyxy
    assert 50 <= x2 - x1 <= 70 and 50 <= y2 - y1 <= 70  # the pale nucleus alone (60 px), not both (> 110 px)


def _grey(img: np.ndarray) -> np.ndarray:
    """The drawn crop as a greyscale scan (luminance, BT.601) of shape (H, W)."""
    return np.round(img.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)


@pytest.mark.parametrize("form", ["grey", "equal_rgb", "noisy_rgb", "tinted_rgb"])
def test_a_greyscale_crop_finds_its_dark_nucleus(form):
    """Red + green - 2 x blue is 0 when the channels are equal: greyscale crops all went to review as "no cell
    found". They fall back to darkness; the cell is found and framed as in colour."""
    r = 30
    img = field([(200, 200, r)], size=(400, 400))
    crop = _grey(img[125:275, 125:275])  # PBC-like: the cell about 1/2.5 of the side
    if form != "grey":
        crop = np.repeat(crop[..., None], 3, axis=2)
    if form == "noisy_rgb":  # nearly equal: a few levels of noise per channel
        noise = np.random.default_rng(1).normal(0, 3, crop.shape)
        crop = np.clip(crop + noise, 0, 255).astype(np.uint8)
    if form == "tinted_rgb":  # a warm-toned monochrome scan: one tint, channels in fixed proportion
        crop = np.round(crop * [1.0, 0.92, 0.8]).astype(np.uint8)
    loc = locate_cell(crop)
    assert loc.found and loc.n_cells == 1 and loc.note == ""
    assert np.hypot(*(centre_of(loc) - [75, 75])) < 0.35 * r
    found_side = loc.xyxy[2] - loc.xyxy[0]
    assert 0.6 * 2 * r < found_side < 1.6 * 2 * r, f"side {found_side:.0f} for a cell of {2 * r}"


def test_a_greyscale_crop_with_several_cells_takes_the_central_one():
    crop = _grey(field([(150, 200, 28), (265, 200, 28)], size=(400, 400))[100:300, 60:280])
    loc = locate_cell(crop)
    assert loc.n_cells == 2 and "2 cells" in loc.note
    assert abs(centre_of(loc)[0] - (150 - 60)) < 12


def test_the_darkness_fallback_is_for_crops_without_colour_only():
    """Dense overlapping red cells are as dark as a nucleus, but coloured: a colour crop of them alone still finds
    no nucleus. A grey crop of pale red cells alone, or a blank one, finds none either."""
    colour = field([], size=(160, 160), seed=2)
    _red_cell_pairs(colour, [(50, 50), (110, 110), (50, 115)])
    assert not locate_cell(colour).found
    assert not locate_cell(_grey(field([], size=(120, 120)))).found
    assert not locate_cell(np.full((80, 80), 200, np.uint8)).found
