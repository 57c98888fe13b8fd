"""Explanation methods at any node of the tree: shape, range, target honoured, trust scores, hygiene, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cellkit.classify import Classifier, build_tiny_classifier
from cellkit.errors import CellkitError
from cellkit.explain import EXPLAINERS, explain, faithfulness, get_explainer, random_reference, sanity_check
from cellkit.explain._target import NodeProbability
from cellkit.explain.faithfulness import blurred, curves
from cellkit.explain.occlusion import window_and_stride
from cellkit.explain.render import maps_zip, overlay
from cellkit.explain.sanity import randomised_copy
from cellkit.models import ModelSpec
from cellkit.preprocess import Preprocess
from cellkit.synth import make_crop
from cellkit.taxonomy import load_taxonomy
from cellkit.types import Heatmap

SIZE = 32
GRID = (4, 3)  # regions: 4 rows x 3 columns of 8 x ~11 px, one per leaf (11 of 12 used)


class RegionNet(nn.Module):
    """Leaf j looks only at region j of the image: its logit is the amount of texture there.

    Texture = squared difference from the 3x3 local mean: hiding a region (a grey patch, a blurred
    copy) removes it. ``regions`` puts the texture of region j into channel j; ``conv_head`` (the CAM
    layer) is an identity 1x1 conv; logits are the scaled channel means. Any faithful map of leaf j
    must sit in region j, and of an inner node in the union of its leaves' regions.
    """

    def __init__(self, n_leaves: int, size: int = SIZE):
        super().__init__()
        masks = torch.zeros(n_leaves, size, size)
        rows, cols = GRID
        for j in range(n_leaves):
            r, c = divmod(j, cols)
            masks[j, r * size // rows : (r + 1) * size // rows, c * size // cols : (c + 1) * size // cols] = 1
        self.register_buffer("masks", masks)
        self.conv_head = nn.Conv2d(n_leaves, n_leaves, 1, bias=False)
        with torch.no_grad():
            self.conv_head.weight.copy_(torch.eye(n_leaves)[:, :, None, None])
        self.scale = 4.0 * size * size / masks.sum((1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(1, keepdim=True)
        local = F.avg_pool2d(grey, 3, stride=1, padding=1, count_include_pad=False)
        texture = 20.0 * (grey - local) ** 2 + 0.1  # positive everywhere
        a = self.conv_head(texture * self.masks[None])
        return a.mean((2, 3)) * self.scale


@pytest.fixture(scope="module")
def region_clf() -> Classifier:
    tax = load_taxonomy("pbc")
    spec = ModelSpec(
        name="region",
        task="classifier",
        arch="region",
        weights="none",
        input_size=SIZE,
        labels=list(tax.leaves),
        mean=[0.5, 0.5, 0.5],
        std=[0.5, 0.5, 0.5],
        target_layer="conv_head",
    )
    return Classifier(RegionNet(len(tax.leaves)), spec, tax)


@pytest.fixture(scope="module")
def tiny() -> Classifier:
    return build_tiny_classifier(input_size=SIZE)


@pytest.fixture(scope="module")
def x(region_clf) -> torch.Tensor:
    rng = np.random.default_rng(0)
    image = rng.integers(90, 170, (SIZE, SIZE, 3), dtype=np.uint8)  # textured, no region stands out
    return region_clf.preprocess([image])


def region_mask(clf: Classifier, node: str) -> np.ndarray:
    net = clf.model
    idx = [clf.taxonomy.leaves.index(lf) for lf in clf.taxonomy.leaves_under(node)]
    return net.masks[idx].sum(0).numpy() > 0


@pytest.mark.parametrize("method", list(EXPLAINERS))
def test_map_shape_range_finite(region_clf, x, method):
    hm = EXPLAINERS[method](region_clf, x, "monocyte")
    assert isinstance(hm, Heatmap)
    assert hm.values.shape == (SIZE, SIZE)
    assert hm.values.dtype == np.float32
    assert np.all(np.isfinite(hm.values))
    assert hm.values.min() >= 0 and hm.values.max() <= 1
    assert hm.values.max() > 0.5  # not a blank map
    assert hm.method == method and hm.target == "monocyte"


@pytest.mark.parametrize("method", list(EXPLAINERS))
@pytest.mark.parametrize("node", ["monocyte", "lymphocyte", "myeloid_immature"])
def test_map_sits_on_the_nodes_region(region_clf, x, method, node):
    """The target node is honoured, leaves and inner nodes alike (myeloid_immature = 3 regions)."""
    values = EXPLAINERS[method](region_clf, x, node).values
    inside = region_mask(region_clf, node)
    assert values[inside].mean() > 2 * values[~inside].mean() + 0.05, (method, node)


def test_different_nodes_give_different_maps(region_clf, x):
    for method, fn in EXPLAINERS.items():
        a, b = fn(region_clf, x, "eosinophil").values, fn(region_clf, x, "platelet").values
        assert np.abs(a - b).max() > 0.5 and np.abs(a - b).mean() > 0.03, method


def test_inner_node_target_is_the_sum_of_its_leaves(region_clf, x):
    tax = region_clf.taxonomy
    leaf_p = torch.softmax(region_clf.model(x), 1)[0].detach()
    for node in ("myeloid_immature", "myeloid", "neutrophil", "lymphocyte"):
        idx = [tax.leaves.index(lf) for lf in tax.leaves_under(node)]
        got = NodeProbability(region_clf, node)(x).detach()
        assert got.shape == (1, 1)
        assert float(got) == pytest.approx(float(leaf_p[idx].sum()), abs=1e-6)


def test_explain_accepts_a_crop_and_defaults_to_the_predicted_label(tiny):
    crop = make_crop(1, 80, seed=3)
    hm = explain(tiny, crop, None, "gradcam")
    assert hm.target == tiny.predict([crop])[0].label
    assert hm.values.shape == (SIZE, SIZE)
    for key in ("seconds", "deletion_auc", "insertion_auc"):
        assert key in hm.scores
    assert 0 <= hm.scores["deletion_auc"] <= 1 and 0 <= hm.scores["insertion_auc"] <= 1


def test_unknown_node_and_method_name_the_fix(tiny):
    crop = make_crop(0, 64)
    with pytest.raises(CellkitError, match=r"expected one of: .*myeloid_immature"):
        explain(tiny, crop, "macrophage", "gradcam")
    with pytest.raises(CellkitError, match="gradcam"):
        explain(tiny, crop, "monocyte", "shap")
    assert get_explainer("integrated_gradients") is EXPLAINERS["ig"]
    with pytest.raises(CellkitError, match="shape"):
        explain(tiny, torch.zeros(2, 3, SIZE, SIZE), "monocyte", "gradcam")


def test_faithfulness_curves_start_and_end_where_they_should(region_clf, x):
    node = "monocyte"
    p = float(NodeProbability(region_clf, node)(x).detach())
    p_blur = float(NodeProbability(region_clf, node)(blurred(x)).detach())
    good = EXPLAINERS["gradcam"](region_clf, x, node).values
    c = curves(region_clf, x, node, good)
    assert c.deletion[0] == pytest.approx(p, abs=1e-5) and c.insertion[-1] == pytest.approx(p, abs=1e-5)
    assert c.deletion[-1] == pytest.approx(p_blur, abs=1e-5) and c.insertion[0] == pytest.approx(p_blur, abs=1e-5)
    scores = faithfulness(region_clf, x, node, good)
    ref = random_reference(region_clf, x, node)
    for v in (*scores.values(), *ref.values()):
        assert 0.0 <= v <= 1.0


def test_faithfulness_ranks_a_right_map_above_a_wrong_one(region_clf):
    """Region j dark in the crop: blurring it (its mean brightens) raises p(j); a map on region j shows it."""
    node = "monocyte"
    image = np.full((SIZE, SIZE, 3), 200, np.uint8)
    image[region_mask(region_clf, node)] = 20
    image[::2, ::2] = 255  # texture so the blur changes something everywhere
    xx = region_clf.preprocess([image])
    right = region_mask(region_clf, node).astype(np.float32)
    wrong = region_mask(region_clf, "platelet").astype(np.float32)
    s_right = faithfulness(region_clf, xx, node, right)
    s_wrong = faithfulness(region_clf, xx, node, wrong)
    assert s_right["deletion_auc"] != pytest.approx(s_wrong["deletion_auc"], abs=1e-3)


def test_sanity_check_passes_on_a_real_method_and_flags_a_model_blind_one(tiny):
    crop = make_crop(2, 64, seed=1)
    for method in ("ig", "occlusion"):
        result = sanity_check(tiny, crop, "lymphocyte", EXPLAINERS[method])
        assert result["passed"] and abs(result["spearman"]) < 0.5 and not result["blank"], method

    def edges(clf, x, target):  # depends on the image only: the randomised model gives the same map
        g = x[0].mean(0).numpy()
        v = np.abs(np.gradient(g)[0]) + np.abs(np.gradient(g)[1])
        return Heatmap(v / v.max(), "edges", target)

    blind = sanity_check(tiny, crop, "lymphocyte", edges)
    assert not blind["passed"] and blind["spearman"] > 0.99 and blind["ssim"] > 0.99

    def blank(clf, x, target):
        return Heatmap(np.zeros((SIZE, SIZE)), "blank", target)

    assert sanity_check(tiny, crop, "lymphocyte", blank)["blank"]


def test_randomised_copy_leaves_the_original_alone(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    clone = randomised_copy(tiny)
    assert clone.model is not tiny.model and clone.lock is not tiny.lock
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    w = "conv_head.weight"
    assert not torch.equal(clone.model.state_dict()[w], after[w])


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("method", list(EXPLAINERS))
def test_no_hooks_grads_or_flags_left_behind(tiny, method):
    model = tiny.model
    flags = [p.requires_grad for p in model.parameters()]
    explain(tiny, make_crop(0, 64), "myeloid_immature", method)
    assert _hooks(model) == 0
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert tiny.lock.acquire(blocking=False)  # the lock was released
    tiny.lock.release()


def test_no_hooks_left_after_a_failing_cam(tiny, monkeypatch):
    monkeypatch.setattr(tiny.spec, "target_layer", "no.such.layer")
    with pytest.raises(CellkitError, match="target layer"):
        EXPLAINERS["gradcam"](tiny, make_crop(0, 64), "monocyte")
    assert _hooks(tiny.model) == 0


@pytest.mark.parametrize("method", ["gradcam", "ig", "saliency"])
def test_two_threads_two_targets_get_their_own_maps(tiny, method):
    crop = make_crop(4, 64, seed=2)
    fn = EXPLAINERS[method]
    alone = {node: fn(tiny, crop, node).values for node in ("myeloid_immature", "lymphocyte")}
    assert np.abs(alone["myeloid_immature"] - alone["lymphocyte"]).max() > 1e-3
    got: dict[str, list[np.ndarray]] = {node: [] for node in alone}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(node: str) -> None:
        try:
            barrier.wait()
            for _ in range(4):
                got[node].append(fn(tiny, crop, node).values)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(node,)) for node in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for node, maps in got.items():
        assert len(maps) == 4
        for m in maps:
            np.testing.assert_allclose(m, alone[node], atol=1e-5)
    assert _hooks(tiny.model) == 0


def test_occlusion_windows_tile_the_input():
    for size in (32, 64, 112, 128, 224):
        w, s = window_and_stride(size)
        assert (size - w) % s == 0 and (size - w) // s + 1 == 10


def test_overlay_and_zip(tiny):
    crop = make_crop(0, 90)
    hm = explain(tiny, crop, "monocyte", "gradcam", with_faithfulness=False)
    img = overlay(crop, hm.values, 0.4, "inferno")
    assert img.shape == (90, 90, 3) and img.dtype == np.uint8
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(maps_zip(crop, [hm]))).namelist()
    assert sorted(names) == ["crop.png", "gradcam_monocyte.npy", "gradcam_monocyte.png"]


def test_pictures_of_a_very_long_thin_crop_stay_small(tiny):
    """A 100000 x 1 crop once asked for a 100000 px square (30 GB) for the overlay and the download."""
    import io
    import zipfile

    from cellkit.explain.render import MAX_VIEW_SIDE
    from cellkit.io import read_image

    strip = np.full((1, 100_000, 3), 200, np.uint8)
    hm = explain(tiny, make_crop(0, 90), "monocyte", "gradcam", with_faithfulness=False)
    assert overlay(strip, hm.values).shape == (MAX_VIEW_SIDE, MAX_VIEW_SIDE, 3)
    with zipfile.ZipFile(io.BytesIO(maps_zip(strip, [hm]))) as zf:
        for name in ("crop.png", "gradcam_monocyte.png"):
            assert read_image(zf.read(name)).shape == (MAX_VIEW_SIDE, MAX_VIEW_SIDE, 3)


def test_overlay_shows_the_crop_as_a_zooming_model_sees_it():
    crop = np.full((100, 100, 3), 200, np.uint8)
    crop[30:70, 30:70] = (255, 0, 0)  # centre square: 40 % of the side
    flat = np.zeros((10, 10), np.float32)
    zooming = Preprocess(32, view=0.4)
    whole, zoomed = overlay(crop, flat, 0.0, size=80), overlay(crop, flat, 0.0, size=80, prep=zooming)
    assert (whole[..., 1] < 50).mean() == pytest.approx(0.16, abs=0.03)
    assert (zoomed[..., 1] < 50).mean() > 0.95  # the map covers exactly what the model saw


def test_overlay_shows_the_crop_framed_as_the_model_frames_it():
    """A tight crop is re-framed by the model; the overlay must show that framing, not the upload."""
    crop = np.full((60, 60, 3), (240, 222, 205), np.uint8)
    yy, xx = np.mgrid[:60, :60]
    crop[(xx - 30) ** 2 + (yy - 30) ** 2 < 28**2] = (205, 185, 215)
    crop[(xx - 30) ** 2 + (yy - 30) ** 2 < 18**2] = (95, 45, 135)
    flat = np.zeros((10, 10), np.float32)
    framing = Preprocess(32, framing="nucleus", crop_scale=2.5)
    framed = overlay(crop, flat, 0.0, size=80, prep=framing)
    np.testing.assert_array_equal(framed, framing.canonical(crop, 80))
    assert (framed[..., 1] < 80).mean() < (overlay(crop, flat, 0.0, size=80)[..., 1] < 80).mean()


def test_public_verb_works_whatever_was_imported_first(tiny):
    import cellkit
    import cellkit.explain as package
    from cellkit import explain as verb

    crop = make_crop(0, 48)
    for fn in (verb, package, cellkit.explain):
        assert fn(tiny, crop, "lymphocyte", "saliency", with_faithfulness=False).target == "lymphocyte"
    assert cellkit.EXPLAINERS is EXPLAINERS


@pytest.mark.realdata
def test_bundled_model_maps_beat_a_random_order_on_real_cells(shared_data, request):
    """On real PBC cells Grad-CAM and occlusion beat a random pixel order; occlusion and IG pass the sanity check."""
    from cellkit.classify import load_classifier
    from cellkit.io import read_image

    try:
        clf = load_classifier()
    except CellkitError as exc:
        pytest.skip(f"no bundled classifier: {exc}")
    folders = sorted(p for p in (shared_data / "pbc").iterdir() if p.is_dir())
    crops = [read_image(sorted(f.glob("*.jpg"))[3]) for f in folders]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # measured faster than 2 on the shared 2-core CI machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    for method, n in (("gradcam", len(crops)), ("occlusion", 4)):
        gains = []
        for crop in crops[:n]:
            node = clf.predict([crop])[0].leaf
            hm = explain(clf, crop, node, method)
            ref = random_reference(clf, crop, node)
            gains.append(
                (ref["random_deletion_auc"] - hm.scores["deletion_auc"])
                + (hm.scores["insertion_auc"] - ref["random_insertion_auc"])
            )
        assert np.mean(gains) > 0.05, (method, gains)
    for method in ("occlusion", "ig"):  # CAM maps at a 4x4 layer keep some image structure even without weights
        check = sanity_check(clf, crops[0], clf.predict([crops[0]])[0].leaf, EXPLAINERS[method])
        assert check["passed"], (method, check)
