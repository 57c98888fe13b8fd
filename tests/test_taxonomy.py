from __future__ import annotations

import numpy as np
import pytest

from cellkit.errors import CellkitError
from cellkit.taxonomy import load_taxonomy, taxonomy_from_dict

CONTRACT_IDS = {
    "myeloid", "myeloid_immature", "promyelocyte", "myelocyte", "metamyelocyte", "myeloid_mature",
    "neutrophil", "band_neutrophil", "segmented_neutrophil", "eosinophil", "basophil", "monocyte",
    "lymphoid", "lymphocyte", "erythroid", "erythroblast", "megakaryocytic", "platelet",
}  # fmt: skip


def test_default_tree_has_contract_ids_and_11_leaves():
    t = load_taxonomy()
    assert set(t.ids) == CONTRACT_IDS
    assert len(t.leaves) == 11
    assert t.path("band_neutrophil") == ("myeloid", "myeloid_mature", "neutrophil", "band_neutrophil")
    assert all(t.node(i).abbr and t.node(i).name for i in t.ids)


def test_node_probs_sum_leaves_and_roots_sum_to_one():
    t = load_taxonomy()
    rng = np.random.default_rng(0)
    leaf = rng.dirichlet(np.ones(len(t.leaves)), size=5)
    nodes = t.node_probs(leaf)
    roots = [t.ids.index(r) for r in t.roots]
    np.testing.assert_allclose(nodes[:, roots].sum(1), 1.0, atol=1e-5)
    ig = t.ids.index("myeloid_immature")
    want = leaf[:, [t.leaves.index(x) for x in ("promyelocyte", "myelocyte", "metamyelocyte")]].sum(1)
    np.testing.assert_allclose(nodes[:, ig], want, atol=1e-6)


def test_deepest_confident_stops_at_uncertain_parent():
    t = load_taxonomy()
    leaf = np.zeros(len(t.leaves))
    leaf[t.leaves.index("myelocyte")] = 0.45
    leaf[t.leaves.index("metamyelocyte")] = 0.45
    leaf[t.leaves.index("lymphocyte")] = 0.10
    assert t.deepest_confident(t.node_probs(leaf), 0.5) == "myeloid_immature"
    leaf2 = np.eye(len(t.leaves))[t.leaves.index("lymphocyte")]
    assert t.deepest_confident(t.node_probs(leaf2), 0.5) == "lymphocyte"


def test_pbc8_grouping_and_level_map():
    t = load_taxonomy()
    cut = t.cut(t.groupings["pbc8"])
    assert len(set(cut.values())) == 8
    assert t.level_map(1)["band_neutrophil"] == "myeloid"
    assert t.level_map(2)["lymphocyte"] == "lymphocyte"


def test_bone_marrow_tree_has_21_leaves():
    t = load_taxonomy("bone_marrow")
    assert len(t.leaves) == 21
    assert "smudge_cell" in t.leaves and "blast" in t.leaves


@pytest.mark.parametrize(
    "nodes, message",
    [
        ([{"id": "a"}, {"id": "a"}], "duplicate node id 'a'"),
        ([{"id": "a", "parent": "zz"}], "unknown parent 'zz'"),
        ([{"id": "a", "parent": "b"}, {"id": "b", "parent": "a"}], "cycle through node 'a'"),
    ],
)
def test_invalid_trees_name_the_node(nodes, message):
    with pytest.raises(CellkitError, match=message):
        taxonomy_from_dict({"name": "x", "nodes": nodes})


def test_unknown_taxonomy_and_node():
    with pytest.raises(CellkitError, match="not found"):
        load_taxonomy("nope")
    with pytest.raises(CellkitError, match="unknown node"):
        load_taxonomy().path("nope")


def test_every_node_has_its_own_colour_and_unidentified_is_grey():
    from cellkit.taxonomy import UNKNOWN, UNKNOWN_COLOUR, list_taxonomies, load_taxonomy

    for name in list_taxonomies():
        tax = load_taxonomy(name)
        colours = [tax.colour(i) for i in tax.ids]
        assert len(set(colours)) == len(colours), name  # basophil and band neutrophil no longer share a blue
        assert tax.colour(UNKNOWN) == UNKNOWN_COLOUR and UNKNOWN_COLOUR not in colours
