"""The cell-lineage tree: stable node ids, levels, and node probabilities from leaf probabilities.

A model predicts a distribution over the *leaves*; every inner node's probability is the sum of
its leaves' probabilities, so the hierarchy is always consistent (a parent is never less likely
than a child). ``Taxonomy.node_matrix`` is the (n_nodes, n_leaves) 0/1 matrix doing that sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from cellkit.errors import CellkitError

TAXONOMY_DIR = Path(__file__).parent / "taxonomies"
# One colour per node, the same on every chart (Plotly's Dark24, then 8 of its Alphabet; display order).
PALETTE = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B", "#511CFB",
    "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042", "#1616A7",
    "#DA60CA", "#6C4516", "#0D2A63", "#AF0038", "#AA0DFE", "#3283FE", "#85660D", "#782AB6", "#1C8356", "#16FF32",
    "#FE00FA", "#1CBE4F",
)  # fmt: skip
UNKNOWN_COLOUR = "#9E9E9E"  # "Unidentified — review": grey, never a class colour
DEFAULT_TAXONOMY = "pbc"  # the white-cell tree of the bundled models: the one home of this name
DEFAULT_DATASET = "pbc"  # its dataset rule (folder names of ../shared/data/pbc)
UNKNOWN = "unknown"  # the label of a cell flagged for review (cellkit.unknown); never a node of a taxonomy
UNKNOWN_NAME = "Unidentified — review"
# A reviewer's rejection of a box (a correction to one of these): never counted in a differential or a form share.
REJECTIONS = {"reject_artefact": "Rejected: artefact", "reject_smudge": "Rejected: smudge cell",
              "reject_not_a_cell": "Rejected: not a cell"}  # fmt: skip


@dataclass(frozen=True)
class Node:
    """One node of the tree."""

    id: str
    name: str
    abbr: str
    parent: str | None = None


@dataclass(frozen=True, eq=False)
class Taxonomy:
    """A validated tree of :class:`Node` in display (depth-first) order."""

    name: str
    nodes: tuple[Node, ...]
    description: str = ""
    groupings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    datasets: dict[str, dict] = field(default_factory=dict)
    flagged_as: str = ""  # a leaf that reports cells flagged for review in exports (red cells: "uncategorised")
    # the clinical white-cell differential: "order" (groups, clinical order), "per_100_wbc" (reported per 100
    # white cells, not in the differential: NRBC), "not_white" (a white-cell box labelled so goes to review)
    differential: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, Node] = {}
        for node in self.nodes:
            if not node.id or not isinstance(node.id, str):
                raise CellkitError(f"taxonomy {self.name!r}: every node needs a string id, got {node.id!r}")
            if node.id in seen:
                raise CellkitError(f"taxonomy {self.name!r}: duplicate node id {node.id!r}; make ids unique")
            seen[node.id] = node
        for node in self.nodes:
            if node.parent is not None and node.parent not in seen:
                raise CellkitError(
                    f"taxonomy {self.name!r}: node {node.id!r} has unknown parent {node.parent!r}; "
                    "declare the parent node or fix the id"
                )
        for node in self.nodes:  # cycle check: walking up must reach a root
            walked = {node.id}
            parent = node.parent
            while parent is not None:
                if parent in walked:
                    raise CellkitError(
                        f"taxonomy {self.name!r}: cycle through node {node.id!r} (via {parent!r}); "
                        "a node cannot be its own ancestor"
                    )
                walked.add(parent)
                parent = seen[parent].parent
        if not self.nodes:
            raise CellkitError(f"taxonomy {self.name!r} has no nodes")
        for gname, members in self.groupings.items():
            self.cut(members, name=gname)  # validates
        if self.flagged_as and self.flagged_as not in seen:
            raise CellkitError(f"taxonomy {self.name!r}: flagged_as must be one of its nodes, got {self.flagged_as!r}")

    # ---- structure -------------------------------------------------------------------------
    @cached_property
    def _by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    @cached_property
    def ids(self) -> tuple[str, ...]:
        """All node ids in depth-first display order."""
        order: list[str] = []

        def visit(nid: str) -> None:
            order.append(nid)
            for child in self.children(nid):
                visit(child)

        for root in self.roots:
            visit(root)
        return tuple(order)

    @cached_property
    def roots(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes if n.parent is None)

    @cached_property
    def _children(self) -> dict[str | None, tuple[str, ...]]:
        out: dict[str | None, list[str]] = {}
        for n in self.nodes:
            out.setdefault(n.parent, []).append(n.id)
        return {k: tuple(v) for k, v in out.items()}

    def children(self, node_id: str) -> tuple[str, ...]:
        return self._children.get(self._check(node_id), ())

    @cached_property
    def leaves(self) -> tuple[str, ...]:
        """Leaf ids in display order; models output one probability per leaf in this order."""
        return tuple(i for i in self.ids if not self._children.get(i))

    def is_leaf(self, node_id: str) -> bool:
        return not self._children.get(self._check(node_id))

    def node(self, node_id: str) -> Node:
        return self._by_id[self._check(node_id)]

    def parent(self, node_id: str) -> str | None:
        return self.node(node_id).parent

    def path(self, node_id: str) -> tuple[str, ...]:
        """Ids from the root down to ``node_id`` (inclusive)."""
        out = [self._check(node_id)]
        while (p := self._by_id[out[-1]].parent) is not None:
            out.append(p)
        return tuple(reversed(out))

    def depth(self, node_id: str) -> int:
        """1 for a root (lineage), 2 for its children, ..."""
        return len(self.path(node_id))

    @cached_property
    def max_depth(self) -> int:
        return max(self.depth(i) for i in self.ids)

    def leaves_under(self, node_id: str) -> tuple[str, ...]:
        nid = self._check(node_id)
        return tuple(leaf for leaf in self.leaves if nid in self.path(leaf))

    def ancestor_at(self, node_id: str, depth: int) -> str:
        """The node's ancestor at ``depth`` (itself if it is shallower)."""
        p = self.path(node_id)
        return p[min(depth, len(p)) - 1]

    def display(self, node_id: str) -> str:
        """The name shown to people: the node's name, or "Unidentified — review" for the unknown verdict."""
        return UNKNOWN_NAME if node_id == UNKNOWN else self.node(node_id).name

    @property
    def group_ids(self) -> tuple[str, ...]:
        """The members of the first named cut (e.g. PBC-8), or the leaves when the taxonomy names none."""
        return tuple(next(iter(self.groupings.values()))) if self.groupings else self.leaves

    def colour(self, node_id: str) -> str:
        """The node's colour on every chart: distinct within the taxonomy (grey for unidentified cells)."""
        if node_id == UNKNOWN:
            return UNKNOWN_COLOUR
        return PALETTE[self.ids.index(self._check(node_id)) % len(PALETTE)]

    def primary_grouping(self) -> dict[str, str]:
        """See :attr:`_grouping` (a copy: callers may change it)."""
        return dict(self._grouping)

    @cached_property
    def _grouping(self) -> dict[str, str]:
        """Every node id -> its group in the taxonomy's first named cut (the differential); leaves when none.

        An inner node above groups maps to the one group that holds all its leaves ("erythroid", whose only leaf
        is the erythroblast, is an erythroblast); one spanning several groups maps to itself (a cell labelled only
        "myeloid" is counted as such).
        """
        out = {nid: nid for nid in self.ids}
        for member in self.group_ids:
            held = set(self.leaves_under(member))
            for nid in self.ids:
                if member in self.path(nid) or (not self.is_leaf(nid) and set(self.leaves_under(nid)) <= held):
                    out[nid] = member
        return out

    def _check(self, node_id: str) -> str:
        if node_id not in self._by_id:
            raise CellkitError(
                f"unknown node {node_id!r} in taxonomy {self.name!r}; expected one of: {', '.join(self.ids)}"
            )
        return node_id

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    # ---- probabilities ---------------------------------------------------------------------
    @cached_property
    def node_matrix(self) -> np.ndarray:
        """(n_nodes, n_leaves) float32 matrix M with M[i, j] = 1 if leaf j lies under node i."""
        m = np.zeros((len(self.ids), len(self.leaves)), dtype=np.float32)
        leaf_index = {leaf: j for j, leaf in enumerate(self.leaves)}
        for i, nid in enumerate(self.ids):
            for leaf in self.leaves_under(nid):
                m[i, leaf_index[leaf]] = 1.0
        return m

    def node_probs(self, leaf_probs: np.ndarray) -> np.ndarray:
        """Leaf probabilities (..., n_leaves) -> node probabilities (..., n_nodes), order ``ids``."""
        p = np.asarray(leaf_probs, dtype=np.float32)
        if p.shape[-1] != len(self.leaves):
            raise CellkitError(
                f"expected leaf probabilities with last dimension {len(self.leaves)} "
                f"(leaves of {self.name!r}), got shape {p.shape}"
            )
        return p @ self.node_matrix.T

    def deepest_confident(self, node_probs: np.ndarray, threshold: float = 0.5) -> str:
        """Descend from the most likely root while the best child's probability >= threshold.

        Returns the root itself when even the best root is below the threshold (the caller can
        read the probability to tell how unsure that is).
        """
        probs = dict(zip(self.ids, np.asarray(node_probs, dtype=float).tolist(), strict=True))
        current = max(self.roots, key=probs.__getitem__)
        while kids := self._children.get(current):
            best = max(kids, key=probs.__getitem__)
            if probs[best] < threshold:
                break
            current = best
        return current

    def cut(self, members: tuple[str, ...] | list[str], name: str = "cut") -> dict[str, str]:
        """Map every leaf to the member node above it; members must partition the leaves."""
        mapping: dict[str, str] = {}
        for m in members:
            for leaf in self.leaves_under(m):
                if leaf in mapping:
                    raise CellkitError(f"grouping {name!r}: leaf {leaf!r} lies under both {mapping[leaf]!r} and {m!r}")
                mapping[leaf] = m
        missing = [leaf for leaf in self.leaves if leaf not in mapping]
        if missing:
            raise CellkitError(f"grouping {name!r} does not cover leaves {missing}; add their ancestors")
        return mapping

    def level_map(self, depth: int) -> dict[str, str]:
        """Map every node to its ancestor at ``depth`` (the tree cut at that level)."""
        return {i: self.ancestor_at(i, depth) for i in self.ids}

    def to_frame(self):
        """A table of the nodes (id, name, abbr, parent, depth, is_leaf) for display."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "id": i,
                    "name": self.node(i).name,
                    "abbr": self.node(i).abbr,
                    "parent": self.parent(i) or "",
                    "depth": self.depth(i),
                    "is_leaf": self.is_leaf(i),
                }
                for i in self.ids
            ]
        )


def load_taxonomy(name_or_path: str | Path = DEFAULT_TAXONOMY) -> Taxonomy:
    """Load a bundled taxonomy by name (``pbc``, ``bone_marrow``) or any YAML file of that shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TAXONOMY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml")))
        raise CellkitError(f"taxonomy {str(name_or_path)!r} not found; use one of [{bundled}] or a YAML path")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:  # parsed once per file version: pages ask for display names per cell, per run
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CellkitError(f"taxonomy file {path} is not valid YAML: {exc}") from None
        _LOADED[key] = taxonomy_from_dict(raw, default_name=path.stem)
    return _LOADED[key]


_LOADED: dict[tuple[str, int, int], Taxonomy] = {}  # a Taxonomy is never changed after it is built


def taxonomy_from_dict(raw: object, default_name: str = "custom") -> Taxonomy:
    """Build a :class:`Taxonomy` from the YAML structure (``name``, ``nodes`` list, ...)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise CellkitError("a taxonomy needs a mapping with a 'nodes' list of {id, name, abbr, parent}")
    nodes = []
    for i, item in enumerate(raw["nodes"]):
        if not isinstance(item, dict) or "id" not in item:
            raise CellkitError(f"taxonomy node #{i} needs at least an 'id', got {item!r}")
        nid = str(item["id"])
        nodes.append(
            Node(
                id=nid,
                name=str(item.get("name", nid)),
                abbr=str(item.get("abbr", nid[:3].upper())),
                parent=None if item.get("parent") is None else str(item["parent"]),
            )
        )
    groupings = {str(k): tuple(v) for k, v in (raw.get("groupings") or {}).items()}
    return Taxonomy(
        name=str(raw.get("name", default_name)),
        nodes=tuple(nodes),
        description=str(raw.get("description", "")),
        groupings=groupings,
        datasets=dict(raw.get("datasets") or {}),
        flagged_as=str(raw.get("flagged_as") or ""),
        differential={str(k): tuple(v) for k, v in (raw.get("differential") or {}).items()},
    )


def list_taxonomies() -> list[str]:
    """Names of the bundled taxonomies."""
    return sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml"))
