"""Models: the comparison of classifier architectures, and each model card's metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cellkit import (
    CellkitError,
    classifier_comparison,
    default_names,
    default_spec,
    list_specs,
    load_taxonomy,
    red_cell_comparison,
)
from ui import widgets
from ui.adapt import adapt_ui, show_report
from ui.widgets import plain, plain_number

COLUMN_NAMES = {  # comparison tables: what a column is called on screen
    "model": "Model", "arch": "Architecture", "init": "Initialised from", "input_px": "Input (px)",
    "params_M": "Parameters (M)", "weights_MB": "Weights (MB)", "train_images_seen": "Training images seen",
    "train_min": "Training (min)", "ms_per_crop": "ms per crop", "crops_per_s": "Crops per s",
    "pbc8_precision": "Precision, 8 classes", "pbc8_recall": "Recall, 8 classes", "pbc8_f1": "Macro-F1, 8 classes",
    "leaf_precision": "Precision, leaves", "leaf_recall": "Recall, leaves", "leaf_f1": "Macro-F1, leaves",
    "ece": "Calibration error", "shipped": "Shipped",
    "macro_F1_points": "Macro-F1, labelled points", "accuracy_points": "Accuracy, labelled points",
    "macro_F1_end_to_end": "Macro-F1, end to end", "accuracy_end_to_end": "Accuracy, end to end",
    "cells_missed": "Cells missed by the detector",
    "shift_mean_acc": "Under shifts, mean accuracy", "shift_worst_acc": "Under shifts, worst accuracy",
    "other_labs_acc": "Other labs' cells, accuracy", "other_labs_seen": "Trained on those labs",
}  # fmt: skip

SOURCE_COLUMNS = {
    "n": "crops",
    "ood_score_median": "median unusualness",
    "ood_flagged": "flagged for review",
    "top_class_share": "largest class",
    "mean_confidence_leaf": "mean confidence",
}


def other_labs_ui(card: dict, tax) -> None:
    """The card's figures on white cells of three other labs that we labelled (bench/other_labs_labelled.py)."""
    other = card.get("other_labs_labelled")
    if not other:
        return
    seen = other.get("trained_on_these_labs")
    st.markdown(
        "**White cells of three other labs, labelled by us**: "
        + ("this model trained on other cells of these labs, so this is not a first look at a new lab" if seen
           else "this model never saw these labs")
    )  # fmt: skip
    classes = sorted({c for r in other["rows"].values() for c in r["recall"]}, key=tax.display)
    rows = [
        {"lab": lab, "cells": r["n"], "accuracy": r["accuracy"], "balanced accuracy": r["balanced_accuracy"],
         "flagged for review": r["flagged"], "wrong and not flagged": r["wrong_unflagged"],
         **{f"{tax.display(c)} found": plain_number(r["recall"].get(c), 2) for c in classes}}
        for lab, r in other["rows"].items()
    ]  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_other_labs")
    st.caption(f"What this cannot show: {other.get('cannot_show', '')} Command: `{other.get('command', '')}`")


def adapt_evidence_ui() -> None:
    """What adapting did on real other labs (bench/adapt_other_labs.py), from the default white-cell model's card."""
    try:
        spec = default_spec("classifier", cell_type="wbc", machine=False)
    except CellkitError:  # no white-cell model: the page says so elsewhere
        return
    tax = load_taxonomy(spec.taxonomy)
    for run in spec.card.get("other_labs_adapt") or []:
        seen = "trained on these labs" if run.get("base_trained_on_these_labs") else "never saw these labs"
        base = run.get("base_display") or plain(run["base_model"])
        st.markdown(
            f"**Measured on three real other labs** (white cells we labelled): *{base}* ({seen}), "
            f"adapted with up to {run['per_class']} labelled cells per cell type, scored on the lab's other images "
            f"(mean of {run['seeds']} draws; before and after: balanced accuracy)"
        )
        rows = [  # rows of other set-ups (cells of one lab given, another part scored) lack some columns
            {"lab": lab, "cells given": sum(r["labelled_counts"].values()), "cells scored": r["eval_cells"],
             "before": r["before"]["balanced_accuracy"], "after, labelled": r["after_labelled"]["balanced_accuracy"],
             "after, unlabelled": plain_number((r.get("after_unlabelled") or {}).get("balanced_accuracy"), 3),
             "flagged before": r["before"]["flagged"], "flagged after": r["after_labelled"]["flagged"],
             "wrong, unflagged after": r["after_labelled"]["wrong_unflagged"],
             "seconds": plain_number(r.get("adapt_seconds"), 1)}
            for lab, r in run["rows"].items()
        ]  # fmt: skip
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"models_adapt_evidence_{run['base_model']}")
        for lab, r in run["rows"].items():
            given = r.get("balanced_over_types_given")
            if given and r.get("types_given_per_class"):
                names = ", ".join(tax.display(t) for t in r["types_given_per_class"])
                st.caption(
                    f"{lab}: over the cell types given {run['per_class'] // 2} or more labelled cells ({names}), "
                    f"balanced accuracy {given['before']:.2f} before, {given['after']:.2f} after."
                )
        st.caption(f"What this cannot show: {run.get('cannot_show', '')} Command: `{run.get('command', '')}`")


def robustness_ui(card: dict, tax) -> None:
    """The card's robustness bench (shifts of the PBC test split, TXL-PBC sources) and unknown-cell bench."""
    rob = card.get("robustness")
    if rob:
        st.markdown("**Other labs, imitated**: the PBC test split under stain, optics and framing shifts")
        rows = [
            {"condition": c, "PBC-8 accuracy": v.get("pbc8_accuracy"), "5-class accuracy": v.get("mature5_accuracy"),
             "flagged for review": v.get("flagged")}
            for c, v in rob["conditions"].items()
        ]  # fmt: skip
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_rob")
        src = rob.get("txl_pbc_sources") or {}
        if src:
            st.markdown("**White cells of other labs** (TXL-PBC sources, no labels): predicted shares and flagged")
            table = pd.DataFrame(src).T
            table.columns = [
                tax.display(c[6:]) if c.startswith("share_") else SOURCE_COLUMNS.get(c, c) for c in table.columns
            ]
            st.dataframe(table, key="models_src")
        st.caption(f"What this cannot show: {rob.get('cannot_show', '')} Command: {rob.get('command', '')}")
    other_labs_ui(card, tax)
    unk = card.get("unknown_bench")
    if unk:
        st.markdown("**Cells never taught**: leave-one-class-out on PBC (the class held out must be flagged)")
        honest = unk.get("loco_honest")
        if honest:
            shipped = honest.get("shipped_rule")
            st.markdown(
                f"A backbone trained without *{honest['held_out_name']}*: AUROC {honest['auroc']:.3f}; "
                f"{honest['flagged_at_5pct_known']:.0%} of them flagged when 5 % of known cells are, "
                f"{honest['flagged_at_10pct_budget']:.0%} at the 10 % budget "
                f"({honest['known_flagged_at_10pct_budget']:.0%} of known flagged)."
                + (f" With the review rule as shipped: {shipped['held_out_flagged']:.0%} of them go to review, and "
                   f"{shipped['known_flagged']:.0%} of known cells." if shipped else "")
            )  # fmt: skip
            for more in honest.get("also", []):
                rule = more["shipped_rule"]
                st.markdown(
                    f"Trained without *{more['held_out_name']}* instead: AUROC {more['auroc']:.3f}; "
                    f"{more['flagged_at_10pct_budget']:.0%} flagged at the 10 % budget; with the rule as shipped "
                    f"{rule['held_out_flagged']:.0%} to review, {rule['known_flagged']:.0%} of known cells."
                )
            if honest.get("recipe"):
                st.caption(f"How: {honest['recipe']}. Immature granulocytes stand in for blasts (PBC has none).")
            st.caption(
                "Below, the shipped backbone (which saw every class) with only the head and the detector "
                "refitted: optimistic."
            )
        rows = [
            {"held out": tax.display(x), "AUROC": r[unk["method"]]["auroc"],
             "held-out cells flagged": r[unk["method"]]["flagged_held_out"],
             "known cells flagged": r[unk["method"]]["flagged_known"]}
            for x, r in unk["loco"].items()
        ]  # fmt: skip
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="models_unk")
        st.caption(unk.get("notes", ""))


def default_model_ui(specs: list) -> None:
    """Make the sidebar's white-cell model this machine's default (app and commands), or go back to the bundled
    one: a lab that adapted a model should not have to pick it again in every session."""
    from cellkit import machine_default, set_machine_default

    chosen = widgets.classifier_name()  # None: the sidebar shows the default
    mine = machine_default()
    shown = {s.name: s.card.get("display_name") or s.name for s in specs}
    left, right = st.columns(2)
    try:
        if chosen and left.button(f"Make {shown.get(chosen, chosen)} the default on this machine",
                                  icon=":material/star:", key="models_make_default"):  # fmt: skip
            set_machine_default(chosen)
            st.session_state["classifier_name"] = None  # it is the default now
            st.rerun()
        if mine and right.button("Back to the bundled default", icon=":material/restart_alt:",
                                 key="models_bundled_default"):  # fmt: skip
            set_machine_default(None)
            st.session_state["classifier_name"] = mine if mine in shown else None  # the sidebar keeps its model
            st.rerun()
    except CellkitError as exc:
        widgets.error(exc)
    if mine:
        st.caption(plain(f"Default white-cell model on this machine: {shown.get(mine, mine)}, set here "
                         f"(`cellkit models --bundled-default` goes back)."))  # fmt: skip


def confusion_figure(confusion: dict, names: list[str], normalise: bool) -> go.Figure:
    """Heatmap of a confusion matrix (rows = truth), row-normalised to recall when asked."""
    m = np.asarray(confusion["matrix"], float)
    z = m / np.maximum(m.sum(1, keepdims=True), 1) if normalise else m
    text = [[f"{v:.2f}" if normalise else f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Blues", text=text, texttemplate="%{text}"))
    fig.update_layout(height=120 + 38 * len(names), margin=dict(l=10, r=10, t=30, b=10))
    fig.update_xaxes(title="predicted", tickangle=-40)
    fig.update_yaxes(title="true", autorange="reversed")
    return fig


st.title("Models")
comparison = classifier_comparison(list_specs(task="classifier", cell_type="wbc"))
if comparison:
    st.subheader("White-cell models side by side (held-out PBC test split)")
    rows = pd.DataFrame(comparison["rows"]).drop(columns="name")
    for col in rows.columns[rows.isna().any()]:  # not measured: a dash, not "None"
        rows[col] = [plain_number(v, 3 if col.startswith(("shift", "other_labs_acc")) else None) for v in rows[col]]
    st.dataframe(rows.rename(columns=COLUMN_NAMES), hide_index=True)
    st.caption(
        f"{comparison['note']} *Under shifts*: PBC-8 accuracy on 600 test crops under the robustness bench's "
        "stain, optics and framing shifts (`python bench/robustness.py`), the mean and the worst condition. "
        "*Other labs' cells*: accuracy on 143 white cells of three other labs (TXL-PBC's Raabin-WBC, BCCD and BCDD "
        "images) that we labelled, not a hematologist (`python bench/other_labs_labelled.py`); not a first look at "
        "those labs where the model trained on their other cells. A dash where a model was not benched."
    )

red_models = list_specs(task="classifier", cell_type="rbc")
if red_models:
    st.subheader("Red-cell models side by side (held-out Chula RBC-12 images)")
    red_rows = pd.DataFrame(red_cell_comparison(red_models)).drop(columns="name")
    st.dataframe(red_rows.rename(columns=COLUMN_NAMES), hide_index=True)
    st.caption(
        "Macro-F1 and accuracy over the 12 named forms (Uncategorised left out) of the held-out images of the "
        "by-image split: on the labelled points (each cell cropped around its point), and end to end (the "
        "bundled detector's boxes, as a user gets them; a cell with no box counts as an error). One lab, one "
        "microscope: other labs' red cells are not measured. Command: `python bench/rbc_morphology.py --model "
        "NAME --card` (installed models) or `--compare` (kept in weights/rbc_comparison.json, for models not shipped)."
    )

specs = list_specs()
if not specs:
    st.info("No model in weights/: train one with `cellkit train classifier` or `cellkit train detector`.")
else:
    st.subheader("Installed models")
    defaults = set(default_names().values())  # one rule, with the command line's `cellkit models`
    st.dataframe(
        pd.DataFrame(
            [
                {"Model": s.card.get("display_name") or s.name,
                 "Name": s.name + (" ★" if s.name in defaults else ""), "Task": s.task,
                 "Architecture": s.arch, "Input (px)": s.input_size,
                 "sha256": str(s.card.get("sha256", ""))[:12], "Command": s.card.get("command", "")}
                for s in specs
            ]
        ),
        hide_index=True,
    )  # fmt: skip
    st.caption("★ the default: the model used when none is chosen, in the app and by the commands.")
    default_model_ui(specs)
    classifiers = [s for s in specs if s.task == "classifier" and s.card.get("metrics_test")]
    if classifiers:
        names = [s.card.get("display_name") or s.name for s in classifiers]  # display names, never ids
        chosen = widgets.classifier_name()  # the sidebar's model (None: the default one)
        default = next((i for i, s in enumerate(classifiers) if s.name == chosen),
                       next((i for i, s in enumerate(classifiers) if s.card.get("default")), 0))  # fmt: skip
        picked = next((s for s in specs if s.name == chosen), None)
        if picked is not None and picked not in classifiers:  # an adapted model: no test split of its own
            base = (picked.card.get("adapted_from") or {}).get("name", "")
            base_shown = next((s.card.get("display_name") or s.name for s in specs if s.name == base), base)
            st.info(
                f"The sidebar's model, {picked.card.get('display_name') or picked.name}, has no test-split card: "
                + (f"it was adapted from {base_shown}, and its own figures are the cross-validated ones of its "
                   "adaptation, under *Adapt a model to your lab* below. " if base else "")
                + "The card shown here is another model's.",
                icon=":material/info:",
            )  # fmt: skip
        spec = classifiers[st.selectbox("Classifier card", range(len(names)), default, format_func=names.__getitem__)]
        card, test = spec.card, spec.card["metrics_test"]
        tax = load_taxonomy(spec.taxonomy)
        c = st.columns(4)
        grouping = next(iter(tax.groupings), None)  # the taxonomy's first named cut (PBC: its 8 classes)
        if grouping:
            n_groups = len(tax.groupings[grouping])
            c[0].metric(f"macro-F1, {n_groups} classes", f"{test.get(grouping, {}).get('macro_f1', float('nan')):.3f}")
        c[1].metric(f"macro-F1, {len(tax.leaves)} leaves", f"{test['leaf']['macro_f1']:.3f}")
        ece = test["calibration"].get("ece_leaf")
        c[2].metric("ECE (leaf, calibrated)", "n/a" if ece is None else f"{ece:.3f}")
        c[3].metric("ms per crop", card.get("speed", {}).get("single_crop_ms_median", "—"))
        levels = {**({grouping: f"{len(tax.groupings[grouping])} classes"} if grouping else {}), "leaf": "Leaves"}
        level = st.radio("Level", list(levels), format_func=levels.get, horizontal=True, key="models_level")
        part = test.get(level, test["leaf"])
        left, right = st.columns([2, 3])
        per_class = pd.DataFrame(part["per_class"]).T.rename_axis("class").reset_index()
        per_class["class"] = [tax.node(c).name for c in per_class["class"]]
        left.dataframe(per_class, hide_index=True)
        left.caption("Per tree level (macro-F1): " + ", ".join(
            f"level {d}: {v['macro_f1']:.3f}" for d, v in test.get("levels", {}).items()))  # fmt: skip
        normalise = right.toggle("Row-normalise (recall)", value=True, key="models_norm")
        labels = [tax.node(c).name for c in part["confusion"]["labels"]]
        right.plotly_chart(confusion_figure(part["confusion"], labels, normalise), key="models_cm")
        robustness_ui(card, tax)
        with st.expander("Full model card (data, split, training history, calibration, sha256, command)"):
            st.json(card, expanded=False)

adapted = [s for s in specs if s.card.get("adaptation")]
with st.expander("Adapt a model to your lab", icon=":material/tune:", expanded=False):
    st.caption(
        "A few labelled crops per cell type (10 are enough to start) from your own lab: the model learns your "
        "stain and scanner in about a minute. Figures are cross-validated on your crops. The new model is saved "
        "beside your database (never over a bundled one) and appears in the sidebar's model picker."
    )
    adapt_evidence_ui()
    adapt_ui("models_adapt")
    for s in adapted:
        made = str(s.card.get("created", ""))[:16].replace("T", " ")
        base = widgets.model_display_name(s.card["adapted_from"]["name"])
        st.markdown(f"**{plain(widgets.model_display_name(s.name))}** — adapted from {plain(base)}, {plain(made)}")
        show_report(s.card["adaptation"], load_taxonomy(s.taxonomy))

# ---- misclassification explorer (owner: explainability; keep this section last) -------------
from ui.explorer import explorer_section  # noqa: E402

explorer_section()
