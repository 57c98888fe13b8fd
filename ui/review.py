"""Fast review, CellaVision-style: a gallery to click, a key per class, next/previous, undo, add a missed cell.

Keys use Streamlit's own ``st.button(shortcut=...)`` rather than ``streamlit-shortcuts``: that package's listener
also fires while the reviewer types a note (a "1" in a note would reclassify the cell), the built-in one does
not. Clicks on the gallery and on the image use ``streamlit-image-coordinates``.
"""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import streamlit as st

from cellkit import REJECTIONS, crop_box

TILE = 112  # gallery thumbnail side (px): large enough to see granules and nuclear lobes
PER_ROW = 8
REJECT_KEYS = {"reject_artefact": "A", "reject_smudge": "S", "reject_not_a_cell": "X"}
REJECT_NAMES = {"reject_artefact": "Artefact", "reject_smudge": "Smudge", "reject_not_a_cell": "No cell"}
CLASS_KEYS = [*"123456789", "0", *"QWETYUIOP"]  # C and R are reserved by Streamlit


def class_keys(taxonomy) -> dict[str, str]:
    """{node id: key}: the taxonomy's leaves, then its inner nodes, a key each while keys last."""
    leaves = [n for n in taxonomy.ids if taxonomy.is_leaf(n)]
    inner = [n for n in taxonomy.ids if not taxonomy.is_leaf(n)]
    return dict(zip([*leaves, *inner], CLASS_KEYS, strict=False))


def _montage(image, result, members: list[int], scale: float, selected: int | None) -> np.ndarray:
    rows = (len(members) + PER_ROW - 1) // PER_ROW
    sheet = np.full((rows * TILE, min(len(members), PER_ROW) * TILE, 3), 255, np.uint8)
    for k, i in enumerate(members):
        crop = cv2.resize(crop_box(image, result.detections.xyxy[i], scale), (TILE - 4, TILE - 4))
        y, x = (k // PER_ROW) * TILE, (k % PER_ROW) * TILE
        sheet[y + 2 : y + TILE - 2, x + 2 : x + TILE - 2] = crop
        if i == selected:
            cv2.rectangle(sheet, (x + 1, y + 1), (x + TILE - 2, y + TILE - 2), (255, 196, 0), 3)
        cv2.putText(sheet, f"#{i}", (x + 5, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(sheet, f"#{i}", (x + 5, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return sheet


def gallery_ui(image, result, clf, cells: list[int], key: str, per_group: int = 32, guesses: bool = False) -> None:
    """Large crops grouped by final label; a click on one selects it (``st.session_state[f"{key}_cell"]``, the
    cell picker's key), in a callback, so the page draws the new selection in the same run. ``guesses``: the
    labels are not reported (red-cell forms at a scale the model cannot tell): each heading says so."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    # a platelet box the model flagged or called a white cell, undecided, is counted as a platelet: it is grouped
    # apart and says so (it stood among the white cells of its label while the headline counted it as a platelet)
    undecided = set(result.platelets_to_review())
    groups = [(lab, "platelet" if i in undecided else "") for i, lab in enumerate(result.labels())]
    selected = st.session_state.get(f"{key}_cell")

    def heading(group: tuple[str, str]) -> str:
        return (
            ("Model's guess: " if guesses else "")
            + result.display_name(group[0])
            + (" · platelet boxes, counted as platelets until decided" if group[1] else "")
        )

    for n, group in enumerate(sorted({groups[i] for i in cells}, key=heading)):
        members = [i for i in cells if groups[i] == group][:per_group]
        total = sum(1 for i in cells if groups[i] == group)
        more = f", first {len(members)} shown" if total > len(members) else ""
        st.markdown(f"**{heading(group)}** ({total}{more})")
        sheet = _montage(image, result, members, clf.spec.crop_scale, selected)
        widget = f"{key}_gallery_{n}"
        pick = partial(_select, widget, f"{key}_cell", members, sheet.shape[1])
        streamlit_image_coordinates(sheet, width=min(sheet.shape[1], PER_ROW * 96), key=widget, cursor="pointer",
                                    on_click=pick)  # fmt: skip


def _select(widget: str, target: str, members: list[int], sheet_width: int) -> None:
    click = st.session_state.get(widget)
    if not click:
        return
    f = sheet_width / max(1, click["width"])
    k = int(click["y"] * f // TILE) * PER_ROW + int(click["x"] * f // TILE)
    if 0 <= k < len(members):
        st.session_state[target] = members[k]


def selected_ui(image, result, clf, cells: list[int], key: str) -> None:
    """The selected cell, large, with its final label and what the model said."""
    pick = st.session_state.get(f"{key}_cell")
    pick = pick if pick in cells else cells[0]
    said = result.detections.data["label"][pick]
    final = result.labels()[pick]
    crop = cv2.resize(crop_box(image, result.detections.xyxy[pick], clf.spec.crop_scale), (224, 224))
    words = f"#{pick} · **{result.display_name(final)}**" + (
        f" (model: {result.display_name(said)})" if final != said else " (the model's label)"
    )
    if pick in result.added:
        words += " · added by the reviewer"
    left, right = st.columns([1, 1])
    left.image(crop, width=224)
    right.markdown(f"Cell {pick_position(cells, pick)} of {len(cells)}  \n{words}")


def pick_position(cells: list[int], pick: int) -> int:
    return cells.index(pick) + 1 if pick in cells else 0


def shortcuts_ui(clf, cells: list[int], key: str, locked: bool, act) -> None:
    """One button (and key) per class and rejection, previous / next and undo, for the selected cell. Each calls
    ``act(kind, value)`` in its callback: ("label", node id) relabels the selected cell, ("move", cell) selects
    another cell, ("undo", None) undoes the reviewer's last step."""
    tax = clf.taxonomy
    st.caption(
        "Keys: a class key relabels the selected cell and moves to the next one; "
        + ", ".join(f"**{k}** {REJECTIONS[r].split(': ')[1]}" for r, k in REJECT_KEYS.items())
        + "; **→ / ←** next / previous cell; **Z** undo."
    )
    grid = st.columns(2)
    for n, (node, k) in enumerate(class_keys(tax).items()):
        grid[n % 2].button(tax.display(node), key=f"{key}_key_{node}", shortcut=k, disabled=locked, width="stretch",
                           on_click=act, args=("label", node))  # fmt: skip
    row = st.columns(3)
    for n, (node, k) in enumerate(REJECT_KEYS.items()):
        row[n].button(REJECT_NAMES[node], key=f"{key}_key_{node}", shortcut=k, help=REJECTIONS[node],
                      disabled=locked, width="stretch", on_click=act,
                      args=("label", node))  # fmt: skip
    nav = st.columns(3)
    current = st.session_state.get(f"{key}_cell")
    pos = cells.index(current) if current in cells else 0
    nav[0].button("Back", key=f"{key}_prev", shortcut="Left", width="stretch",
                  on_click=act, args=("move", cells[max(0, pos - 1)]))  # fmt: skip
    nav[1].button("Next", key=f"{key}_next", shortcut="Right", width="stretch",
                  on_click=act, args=("move", cells[min(len(cells) - 1, pos + 1)]))  # fmt: skip
    nav[2].button("Undo", key=f"{key}_undo_button", shortcut="Z", width="stretch",
                  disabled=locked or not st.session_state.get(f"{key}_undo"), on_click=act,
                  args=("undo", None))  # fmt: skip


def next_cell(cells: list[int], current: int) -> int:
    """The cell after ``current`` in gallery order (the last one stays)."""
    pos = cells.index(current) if current in cells else -1
    return cells[min(len(cells) - 1, pos + 1)]


def field_picture(image, result, max_side: int = 960) -> tuple[np.ndarray, float]:
    """The field with its boxes drawn (white cells blue, platelets purple, red cells thin red, added cells
    green), at most ``max_side`` px; and the factor from picture pixels back to image pixels."""
    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))  # a 100000 x 1 field is still one pixel high
    pic = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if f < 1 else image.copy()
    colours = {"wbc": (31, 119, 180), "platelet": (148, 103, 189), "rbc": (214, 39, 40)}
    for i, (box, cls) in enumerate(zip(result.detections.xyxy, result.detections.class_name, strict=True)):
        x1, y1, x2, y2 = (np.asarray(box) * f).round().astype(int)
        colour = (44, 160, 44) if i in result.added else colours.get(str(cls), (0, 0, 0))
        cv2.rectangle(pic, (x1, y1), (x2, y2), colour, 2 if cls != "rbc" or i in result.added else 1)
    return np.ascontiguousarray(pic), 1.0 / f


CELL_TYPES = {"wbc": "White cell", "platelet": "Platelet", "rbc": "Red cell"}  # detector classes, on screen


def add_cell_ui(image, result, key: str, locked: bool, act, kinds: list[str] | None = None) -> None:
    """Click on the field where the detector missed a cell: ``act("add", (detector class, x, y))`` in image pixels,
    in the click's callback. ``kinds``: the detector classes offered (those an installed model classifies)."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    offered = [k for k in CELL_TYPES if kinds is None or k in kinds]
    if not offered:
        st.info("No installed model classifies added cells.")
        return
    if st.session_state.get(f"{key}_add_kind") not in offered:
        st.session_state[f"{key}_add_kind"] = offered[0]  # e.g. red cells, chosen before their model was removed
    st.radio("Cell type to add", offered, format_func=CELL_TYPES.get, horizontal=True, key=f"{key}_add_kind",
             disabled=locked)  # fmt: skip
    st.caption("Click the centre of the missed cell; the model suggests its class, which you can then change. "
               "Added cells are drawn in green.")  # fmt: skip
    pic, back = field_picture(image, result)
    if locked:
        st.image(pic, width=min(pic.shape[1], 960))
        return
    widget = f"{key}_add_click"

    def clicked() -> None:
        click = st.session_state.get(widget)
        if click:
            f = pic.shape[1] / max(1, click["width"]) * back
            kind = st.session_state.get(f"{key}_add_kind", offered[0])
            act("add", (kind, float(click["x"]) * f, float(click["y"]) * f))

    streamlit_image_coordinates(pic, width=min(pic.shape[1], 960), key=widget, cursor="crosshair", on_click=clicked)
