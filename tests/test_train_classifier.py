"""Training end to end on a tiny synthetic PBC-like folder, the inner-node loss, split, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cellkit.classify import load_classifier
from cellkit.errors import CellkitError
from cellkit.evaluate import classification_report, expected_calibration_error, fit_temperature
from cellkit.synth import make_crop
from cellkit.taxonomy import load_taxonomy
from cellkit.train.classifier import TrainConfig, prepare_data, train_classifier
from cellkit.train.data import extra_source, index_folder, load_image_set, near_duplicate_groups, split_indices
from cellkit.train.losses import hierarchical_loss, level_balanced_weights, mixed_sampling_weights, target_masks

# folder, file prefix, synthetic kind: PBC layout, incl. images labelled only at inner nodes
LAYOUT = [
    ("lymphocyte", "LY", 0),
    ("platelet", "PLATELET", 1),
    ("neutrophil", "SNE", 2),
    ("neutrophil", "NEUTROPHIL", 2),
    ("ig", "MY", 3),
    ("ig", "IG", 3),
]


def make_dataset(root: Path, per_class: int = 14, side: int = 40) -> Path:
    for folder, prefix, kind in LAYOUT:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = make_crop(kind, side, seed=1000 * kind + i + len(prefix))
            rng = np.random.default_rng(i * 7 + len(prefix))
            for _ in range(3):  # random dark marks: distinct perceptual hashes (not near-duplicates)
                y, x = rng.integers(0, 32, 2)
                img[y : y + 8, x : x + 8] = rng.integers(0, 120, 3)
            Image.fromarray(img).save(root / folder / f"{prefix}_{i}.png")
    return root


def test_inner_node_loss_is_log_of_summed_leaves():
    tax = load_taxonomy("pbc")
    masks = target_masks(["myeloid_immature", "lymphocyte"], tax)
    assert masks[0].sum() == 3 and masks[1].sum() == 1
    logits = torch.randn(2, len(tax.leaves), requires_grad=True)
    loss = hierarchical_loss(logits, masks, smoothing=0.0)
    p = torch.softmax(logits, 1)
    expected = -(torch.log(p[0][masks[0]].sum()) + torch.log(p[1][masks[1]].sum())) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    # descending the loss raises the node's total probability, not one particular subtype
    with torch.no_grad():
        stepped = torch.softmax(logits - 1.0 * logits.grad, 1)
    assert stepped[0][masks[0]].sum() > p[0][masks[0]].sum()


def test_level_balanced_weights_favour_rare_classes():
    tax = load_taxonomy("pbc")
    nodes = ["segmented_neutrophil"] * 90 + ["basophil"] * 10
    w = level_balanced_weights(nodes, tax)
    assert w[-1] > w[0] and w.sum() == pytest.approx(1.0)


def test_split_is_stratified_and_keeps_duplicates_together():
    nodes = ["a"] * 40 + ["b"] * 20
    hashes = np.arange(60, dtype=np.uint64) * np.uint64(0x0F0F0F0F0F)
    hashes[1] = hashes[0]  # a near-duplicate pair
    groups = near_duplicate_groups(hashes, max_dist=0)
    split = split_indices(nodes, groups, seed=3)
    assert sum(len(v) for v in split.values()) == 60
    assert {0, 1} <= set(split["train"]) or {0, 1} <= set(split["val"]) or {0, 1} <= set(split["test"])
    for part in split.values():
        labels = [nodes[i] for i in part]
        assert labels.count("a") >= 5 and labels.count("b") >= 2
    again = split_indices(nodes, groups, seed=3)
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_report_counts_inner_labels_only_where_they_apply():
    tax = load_taxonomy("pbc")
    leaf = np.zeros((3, len(tax.leaves)))
    leaf[0, tax.leaves.index("myelocyte")] = 1
    leaf[1, tax.leaves.index("myelocyte")] = 1
    leaf[2, tax.leaves.index("lymphocyte")] = 1
    report = classification_report(["myeloid_immature", "myelocyte", "lymphocyte"], leaf, tax)
    assert report["leaf"]["n"] == 2 and report["pbc8"]["n"] == 3 and report["pbc8"]["accuracy"] == 1.0
    assert report["levels"]["1"]["n"] == 3 and report["levels"]["2"]["n"] == 3
    assert report["levels"]["3"]["n"] == 2 and report["levels"]["4"]["n"] == 2


def test_ece_and_temperature():
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([1, 1])) == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), labels] += 2.0
    masks = np.eye(4, dtype=bool)[labels]
    t1, t3 = fit_temperature(logits, masks), fit_temperature(logits * 3, masks)
    assert t3 / t1 == pytest.approx(3.0, rel=0.05)  # over-confident logits get a proportionally larger T


def tiny_runs(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    """A synthetic dataset, a private cache and weights folder, and the settings of a one-epoch tiny run."""
    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    data = make_dataset(tmp_path / "data")
    common = dict(
        data=str(data), arch="cellkit_tiny_cnn", pretrained=False, input_size=32, cache_size=40, epochs=1,
        samples_per_epoch=32, batch_size=16, out=str(tmp_path / "w"), progress=False,
    )  # fmt: skip
    return data, common


def test_train_end_to_end_and_resume(tmp_path):
    data = make_dataset(tmp_path / "data")
    _, nodes = index_folder(data, load_taxonomy("pbc"))
    assert "myeloid_immature" in nodes and "neutrophil" in nodes and "myelocyte" in nodes
    cfg = TrainConfig(
        data=str(data), name="synthetic", arch="cellkit_tiny_cnn", pretrained=False, input_size=32, cache_size=40,
        epochs=2, samples_per_epoch=96, batch_size=16, lr=5e-3, workdir=str(tmp_path / "work"),
        out=str(tmp_path / "weights"), ood_dim=8, progress=False, default=True,
    )  # fmt: skip
    path = train_classifier(cfg)
    card = json.loads((tmp_path / "weights" / "synthetic.json").read_text())
    assert card["card"]["sha256"] and card["card"]["metrics_test"]["leaf"]["n"] > 0
    assert len(card["card"]["training"]["history"]) == 2
    assert card["temperature"] > 0 and card["ood"]["method"] == "knn" and card["ood"]["threshold"] > 0
    assert card["ood"]["min_group_prob"] == 0.5 and "flagged" in card["ood"]["calibration"]
    assert path.is_file() and (tmp_path / "work" / "last.pt").is_file()
    ckpt = torch.load(tmp_path / "work" / "last.pt", weights_only=True)  # plain types only: no pickled code
    assert ckpt["state"]["epoch"] == 2 and ckpt["cfg"]["name"] == "synthetic"
    clf = load_classifier(folder=tmp_path / "weights")
    assert clf.spec.name == "synthetic"
    # resume continues from the checkpoint up to the new epoch count
    cfg.epochs = 3
    train_classifier(cfg, resume=True)
    card = json.loads((tmp_path / "weights" / "synthetic.json").read_text())
    assert [h["epoch"] for h in card["card"]["training"]["history"]] == [1, 2, 3]


def test_training_with_a_view_caches_the_centre_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(tmp_path / "cache"))
    data = make_dataset(tmp_path / "data")
    tax = load_taxonomy("pbc")
    whole = load_image_set(data, tax, 40)
    centre = load_image_set(data, tax, 40, view=0.5)
    assert len(list((tmp_path / "cache").glob("cls_*.npz"))) == 2  # one cache per view
    assert not np.array_equal(whole.images, centre.images)
    cfg = TrainConfig(
        data=str(data), name="zoomed", arch="cellkit_tiny_cnn", pretrained=False, input_size=32, cache_size=40,
        epochs=1, samples_per_epoch=32, batch_size=16, workdir=str(tmp_path / "work"), out=str(tmp_path / "w"),
        ood_dim=8, progress=False, view=0.5, zoom=[0.9, 1.1], colour_norm=True, colour_strength=1.5,
    )  # fmt: skip
    train_classifier(cfg)
    clf = load_classifier("zoomed", folder=tmp_path / "w")
    assert clf.spec.view == 0.5 and clf.spec.card["training"]["config"]["zoom"] == [0.9, 1.1]
    assert len(clf.spec.background) == 3  # colour_norm: the reference background travels with the model
    assert clf.spec.card["training"]["config"]["colour_strength"] == 1.5


def test_training_for_other_labs_frames_degrades_and_starts_from_a_model(tmp_path, monkeypatch):
    """--framing nucleus, --optics, --outliers and --init-from: recorded in the card, used at inference."""
    _data, common = tiny_runs(tmp_path, monkeypatch)
    train_classifier(TrainConfig(name="first", workdir=str(tmp_path / "k1"), **common))
    cfg = TrainConfig(
        name="robust", workdir=str(tmp_path / "k2"), framing="nucleus", optics=0.5, outliers=0.25, init_from="first",
        ood_method="mahalanobis", **common,
    )  # fmt: skip
    train_classifier(cfg)
    clf = load_classifier("robust")
    assert clf.spec.framing == "nucleus" and clf.prep.framing == "nucleus"
    assert clf.scorer is not None and clf.scorer.method == "mahalanobis"
    conf = clf.spec.card["training"]["config"]
    assert (conf["optics"], conf["outliers"], conf["init_from"]) == (0.5, 0.25, "first")
    # epochs 0: the starting model itself, re-finalised under new preprocessing (framing, OOD, calibration)
    train_classifier(TrainConfig(name="refinal", workdir=str(tmp_path / "k4"), init_from="first", framing="nucleus",
                                 **{**common, "epochs": 0}))  # fmt: skip
    first, refinal = load_classifier("first"), load_classifier("refinal")
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, refinal.model.state_dict()[k]), k
    assert refinal.spec.framing == "nucleus" and refinal.spec.card["training"]["epochs_run"] == 0
    with pytest.raises(CellkitError, match="do not fit"):
        train_classifier(
            TrainConfig(
                name="bad", workdir=str(tmp_path / "k3"), init_from="first", **{**common, "arch": "cellkit_small_cnn"}
            )
        )


def test_leave_one_class_out_removes_every_image_under_the_node():
    from cellkit.train.classifier import _without

    tax = load_taxonomy("pbc")
    nodes = ["band_neutrophil", "neutrophil", "lymphocyte", "myelocyte", "myeloid_immature"]
    kept = _without(np.arange(5), nodes, ["myeloid_immature"], tax)
    assert [nodes[i] for i in kept] == ["band_neutrophil", "neutrophil", "lymphocyte"]
    assert list(_without(np.arange(5), nodes, [], tax)) == list(range(5))
    with pytest.raises(CellkitError, match="unknown node"):
        _without(np.arange(5), nodes, ["blast"], tax)


def test_weight_averaging_mixes_two_fine_tunings_of_one_model():
    from cellkit.train.init_weights import average_states

    a = {"w": torch.zeros(3), "n": torch.tensor(5)}
    b = {"w": torch.ones(3), "n": torch.tensor(9)}
    mixed = average_states(a, b, 0.25)
    assert torch.allclose(mixed["w"], torch.full((3,), 0.75)) and int(mixed["n"]) == 5
    with pytest.raises(CellkitError, match="different layers"):
        average_states(a, {"w": torch.ones(3)}, 0.5)


def test_ema_weights_are_the_ones_kept_and_resumed(tmp_path):
    data = make_dataset(tmp_path / "data")
    cfg = TrainConfig(
        data=str(data), name="averaged", arch="cellkit_tiny_cnn", pretrained=False, input_size=32, cache_size=40,
        epochs=1, samples_per_epoch=64, batch_size=16, lr=5e-3, workdir=str(tmp_path / "work"),
        out=str(tmp_path / "weights"), progress=False, ema=0.9,
    )  # fmt: skip
    train_classifier(cfg)
    ckpt = torch.load(tmp_path / "work" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "work" / "best.pt", weights_only=True)
    key = "classifier.weight"
    assert torch.equal(best[key], ckpt["ema"][key]) and not torch.equal(ckpt["ema"][key], ckpt["model"][key])
    cfg.epochs = 2
    train_classifier(cfg, resume=True)
    card = json.loads((tmp_path / "weights" / "averaged.json").read_text())
    assert card["card"]["training"]["config"]["ema"] == 0.9 and len(card["card"]["training"]["history"]) == 2


def test_the_card_metrics_are_what_evaluation_from_the_files_gives(tmp_path):
    """The card's test figures come from the training cache; read from the files they must not change."""
    from cellkit.evaluate import evaluate_classifier

    data = make_dataset(tmp_path / "data", side=72)  # files larger than the cache: resized twice in training
    cfg = TrainConfig(
        data=str(data), name="parity", arch="cellkit_tiny_cnn", pretrained=False, input_size=32, cache_size=40,
        epochs=2, samples_per_epoch=96, batch_size=16, lr=5e-3, workdir=str(tmp_path / "work"),
        out=str(tmp_path / "weights"), progress=False, split_file=str(tmp_path / "split.json"),
    )  # fmt: skip
    train_classifier(cfg)
    clf = load_classifier("parity", folder=tmp_path / "weights")
    assert clf.spec.resample_size == 40  # trained from a 40 px cache: inference resamples through it
    from_files = evaluate_classifier(clf, data, tmp_path / "split.json", "test", progress=False)
    card = clf.spec.card["metrics_test"]
    assert from_files["leaf"]["n"] == card["leaf"]["n"]
    assert abs(from_files["calibration"]["nll"] - card["calibration"]["nll"]) < 0.02
    assert from_files["leaf"]["confusion"] == card["leaf"]["confusion"]


def test_dataset_model_rule_makes_a_red_cell_card():
    """A model trained on red-cell crops says so in its card: rbc boxes, cut at the slide's scale."""
    from cellkit.models import ModelSpec
    from cellkit.taxonomy import load_taxonomy
    from cellkit.train.classifier import apply_dataset_model_rule

    spec = ModelSpec(name="r", task="classifier", arch="cellkit_tiny_cnn", weights="r.safetensors", input_size=32,
                     labels=["a"], taxonomy="rbc12")  # fmt: skip
    apply_dataset_model_rule(spec, load_taxonomy("rbc12"), "chula_rbc12")
    assert (spec.applies_to, spec.crop_reference, spec.crop_scale) == (["rbc"], "slide", 2.0)
    white = ModelSpec(name="w", task="classifier", arch="cellkit_tiny_cnn", weights="w.safetensors", input_size=32,
                      labels=["a"])  # fmt: skip
    apply_dataset_model_rule(white, load_taxonomy("pbc"), "pbc")  # no rule: unchanged
    assert white.applies_to == ["wbc", "platelet"] and white.crop_reference == "cell"


def test_distillation_teaches_the_teachers_clean_answer(tmp_path, monkeypatch):
    """--distill-from: teacher probabilities from the files (cached in the work folder), used in the loss."""
    from cellkit.train.distill import distillation_loss, teacher_leaf_probs

    logits = torch.tensor([[2.0, 0.0, -1.0]])
    same = torch.softmax(logits, dim=1)
    assert distillation_loss(logits, same, 1.0).abs() < 1e-6
    assert distillation_loss(logits, torch.tensor([[0.1, 0.1, 0.8]]), 2.0) > 0.1

    data, common = tiny_runs(tmp_path, monkeypatch)
    train_classifier(TrainConfig(name="teacher", workdir=str(tmp_path / "k1"), **common))
    tax = load_taxonomy("pbc")
    paths, _ = index_folder(data, tax)
    idx = np.arange(0, len(paths), 2)
    cache = tmp_path / "teacher.npz"
    probs = teacher_leaf_probs(["teacher"], data, paths, idx, tax, cache)
    assert probs.shape == (len(paths), len(tax.leaves)) and np.allclose(probs[idx].sum(1), 1, atol=1e-5)
    assert not probs[1].any()  # only the images asked for
    clf = load_classifier("teacher")
    direct = clf.predict_arrays([np.asarray(Image.open(data / paths[0]).convert("RGB"))])["node_probs"][0]
    assert np.allclose(probs[0], direct[[tax.ids.index(leaf) for leaf in tax.leaves]], atol=1e-5)
    two = teacher_leaf_probs(["teacher", "teacher"], data, paths, idx, tax)  # one model twice: the same answer
    assert np.allclose(two[idx], probs[idx], atol=1e-5)
    assert np.array_equal(teacher_leaf_probs(["teacher"], data, paths, idx, tax, cache), probs)  # from the cache

    cfg = TrainConfig(name="student", workdir=str(tmp_path / "k2"), distill_from=["teacher"], distill_weight=0.7,
                      **common)  # fmt: skip
    train_classifier(cfg)
    assert (tmp_path / "k2" / "teacher.npz").is_file()
    conf = load_classifier("student").spec.card["training"]["config"]
    assert conf["distill_from"] == ["teacher"] and conf["distill_weight"] == 0.7
    with pytest.raises(CellkitError, match=r"model 'nobody' not found") as err:
        train_classifier(TrainConfig(name="s2", workdir=str(tmp_path / "k3"), distill_from=["nobody"], **common))
    assert str(err.value).count("train one with") == 1  # one hint, not two


def make_extra(root: Path, per_node: int = 6) -> Path:
    """A labelled folder in the adapt layout ``<node id>/<image>``, an inner node among them."""
    for node, kind in (("segmented_neutrophil", 2), ("neutrophil", 2), ("lymphocyte", 0)):
        (root / node).mkdir(parents=True, exist_ok=True)
        for i in range(per_node):
            img = make_crop(kind, 40, seed=5000 + 100 * kind + i + len(node))
            img[:6, :6] = (40 * i) % 255  # distinct images, with another lab's colour cast
            img = (img * np.array([0.85, 0.95, 1.0])).astype(np.uint8)
            Image.fromarray(img).save(root / node / f"cell{i}.png")
    return root


def test_mixed_sampling_weights_give_the_extra_images_their_share():
    tax = load_taxonomy("pbc")
    main = ["segmented_neutrophil"] * 90 + ["basophil"] * 10
    first = ["lymphocyte"] * 5 + ["segmented_neutrophil"] * 15
    second = ["neutrophil"] * 40 + ["monocyte"] * 20
    nodes = main + first + second
    sources = [None] * len(main) + [0] * len(first) + [1] * len(second)
    w = mixed_sampling_weights(nodes, sources, tax, 0.25)
    m, a, b = slice(0, 100), slice(100, 120), slice(120, 180)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    assert w[m].sum() == pytest.approx(0.75) and w[100:].sum() == pytest.approx(0.25)
    assert w[a].sum() == pytest.approx(0.25 * 20 / 80) and w[b].sum() == pytest.approx(0.25 * 60 / 80)
    # level-balanced within each part, as the main data alone would be
    assert np.allclose(w[m] / w[m].sum(), level_balanced_weights(main, tax))
    assert np.allclose(w[a] / w[a].sum(), level_balanced_weights(first, tax))
    assert np.allclose(w[b] / w[b].sum(), level_balanced_weights(second, tax))
    assert w[100] > w[119]  # the rare lymphocyte of the first extra set is drawn more often than its neutrophils
    draws = np.random.default_rng(0).choice(len(w), size=40_000, p=w)
    assert abs((draws >= 100).mean() - 0.25) < 0.01
    # without extra images the main data gets everything, exactly as before
    assert np.allclose(mixed_sampling_weights(main, [None] * 100, tax, 0.25), level_balanced_weights(main, tax))
    assert [extra_source(p) for p in ("extra0:a/b.png", "extra12:a/b.png", "lymphocyte/LY_1.png", "extrax:a")] == [
        0,
        12,
        None,
        None,
    ]


def test_extra_folders_join_the_training_part_only(tmp_path, monkeypatch):
    """--extra: decoded and colour-balanced like the main data, in training only; the split file is unchanged."""
    import cellkit.train.classifier as trainer
    from cellkit.colour import white_balance

    _data, common = tiny_runs(tmp_path, monkeypatch)
    extra = make_extra(tmp_path / "reviewed")
    tax = load_taxonomy("pbc")
    train_classifier(TrainConfig(name="base", workdir=str(tmp_path / "k0"), colour_norm=True, **common))
    plain, plain_split, plain_path = prepare_data(
        TrainConfig(workdir=str(tmp_path / "k0"), colour_norm=True, **common), tax
    )
    drawn: list[list] = []

    def spy(nodes, sources, taxonomy, share):
        drawn.append(list(sources))
        return mixed_sampling_weights(nodes, sources, taxonomy, share)

    monkeypatch.setattr(trainer, "mixed_sampling_weights", spy)
    cfg = TrainConfig(name="mixed", workdir=str(tmp_path / "k1"), colour_norm=True, init_from="base",
                      extra=[str(extra)], extra_share=0.4, **common)  # fmt: skip
    train_classifier(cfg)
    assert (tmp_path / "k1" / "split.json").read_text() == plain_path.read_text()
    assert "extra" not in (tmp_path / "k1" / "split.json").read_text()

    mixed, split, _ = prepare_data(cfg, tax)
    n = len(plain)
    rel, nodes = index_folder(extra, tax)
    assert "neutrophil" in nodes and mixed.paths[:n] == plain.paths
    assert mixed.paths[n:] == [f"extra0:{p}" for p in rel] and mixed.nodes[n:] == nodes
    assert set(range(n, len(mixed))) <= set(split["train"].tolist())
    assert np.array_equal(split["train"][: len(plain_split["train"])], plain_split["train"])
    for part in ("val", "test"):
        assert np.array_equal(split[part], plain_split[part]) and max(split[part]) < n
    # the reference background is the main data's; the extra crops are decoded as it is and balanced to it
    assert mixed.background == plain.background
    raw = load_image_set(extra, tax, common["cache_size"])
    assert np.array_equal(mixed.images[n:], np.stack([white_balance(im, plain.background) for im in raw.images]))
    assert not np.array_equal(mixed.images[n:], raw.images)
    # the training draws saw them
    assert drawn and drawn[-1].count(0) == len(rel) and drawn[-1].count(None) == len(plain_split["train"])

    card = load_classifier("mixed").spec.card
    conf = card["training"]["config"]
    assert (conf["extra"], conf["extra_share"], conf["init_from"]) == ([str(extra)], 0.4, "base")
    assert card["data"]["extra"] == [{"folder": str(extra), "n_images": len(rel)}]
    assert card["data"]["split_sizes"] == {k: len(v) for k, v in plain_split.items()}
    assert card["metrics_test"]["leaf"]["n"] == load_classifier("base").spec.card["metrics_test"]["leaf"]["n"]
    cfg.epochs = 2
    train_classifier(cfg, resume=True)
    assert [h["epoch"] for h in load_classifier("mixed").spec.card["training"]["history"]] == [1, 2]


def test_a_missing_or_empty_extra_folder_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    from _cli import run_cli

    data, common = tiny_runs(tmp_path, monkeypatch)
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    (empty / "lymphocyte").mkdir(parents=True)
    for folder, why in ((missing, "not found"), (empty, "no labelled images")):
        cfg = TrainConfig(name="m", workdir=str(tmp_path / "k"), extra=[str(folder)], **common)
        with pytest.raises(CellkitError, match=f"--extra {folder}: .*{why}"):
            train_classifier(cfg)
    with pytest.raises(CellkitError, match="not supported together"):
        train_classifier(TrainConfig(name="m", extra=[str(data)], distill_from=["x"], **common))
    assert not list((tmp_path / "cache").glob("cls_*.npz")) and not (tmp_path / "k").exists()  # nothing decoded
    code, _, err = run_cli(monkeypatch, capsys, "train", "classifier", "--data", data, "--extra", missing)
    assert code == 2 and str(missing) in err and "not found" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", "classifier", "--data", data, "--extra-share", "1")
    assert code == 2 and "--extra-share: expected 0 < share < 1, got 1.0" in err
    assert not list((tmp_path / "cache").glob("cls_*.npz"))
