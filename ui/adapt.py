"""Adapt a model to the user's lab from the app: a labelled zip, or the cells reviewed on the Slide page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cellkit.limits import heavy_job
from cellkit.words import count
from ui import resources
from ui.widgets import plain, refuse_oversized, sentence, upload_limit_mb


def adapt_ui(key: str, labelled_zip: bytes | None = None, base: str | None = None) -> None:
    """Name, base model and (unless given) a labelled zip -> cross-validated before/after -> a saved model.
    ``base``: the model offered first (the Slide page's: the one whose cells were reviewed); default the sidebar's
    choice, else the default model."""
    from cellkit.adapt import adapt, check_name, read_labelled, save_adapted
    from cellkit.models import default_spec, list_specs, model_id
    from ui.widgets import classifier_name

    specs = list_specs(task="classifier", cell_type="wbc")
    bases = [s.name for s in specs]
    shown = {s.name: s.card.get("display_name") or s.name for s in specs}
    if not bases:
        st.info("No classifier to adapt.")
        return
    zip_name = "reviewed cells"  # the Slide page's zip of the cells this user reviewed
    if labelled_zip is None:
        upload = st.file_uploader(
            "Labelled crops (zip with one folder per cell type, e.g. neutrophil/, lymphocyte/ …)",
            type=["zip"],
            key=f"{key}_zip",
            max_upload_size=upload_limit_mb(),
        )
        upload = next(iter(refuse_oversized([upload])), None)
        labelled_zip = upload.getvalue() if upload is not None else None
        zip_name = upload.name if upload is not None else zip_name
    c1, c2 = st.columns(2)
    shown_name = c1.text_input("Name of the new model", value="My lab", key=f"{key}_name", max_chars=64)
    first = next((b for b in (base, classifier_name(), _default_name(default_spec)) if b in bases), bases[0])
    base = c2.selectbox("Start from", bases, index=bases.index(first), format_func=shown.get, key=f"{key}_base")
    replace = st.checkbox("Replace a model of this name made here before", key=f"{key}_replace")
    done = st.session_state.pop(f"{key}_done", None)  # the last adaptation, said after the rerun that lists it
    if done is not None:
        show_report(done["report"], resources.classifier(done["base"]).taxonomy)
        st.success(done["message"])
    if not st.button("Adapt", icon=":material/tune:", key=f"{key}_go", disabled=labelled_zip is None):
        return
    spinner = st.spinner("Adapting (cross-validated; about a minute for 200 crops)…")
    with resources.user_errors(), heavy_job(waiting=st.spinner), spinner:  # one of the server's heavy-job slots
        name = model_id(shown_name)  # people name models as they like; the files get a safe id
        clf = resources.classifier(base)
        crops = read_labelled([labelled_zip], clf.taxonomy, upload_name=zip_name)
        check_name(name, replace)  # before a minute of work, not after
        result = adapt(clf, name, crops)
        if shown_name.strip() != name:
            result.classifier.spec.card["display_name"] = shown_name.strip()
        path = save_adapted(result, replace=replace)
    resources.classifier.clear()  # cached models reload on demand
    saved = shown_name.strip() if shown_name.strip() == name else f"{shown_name.strip()} (file name {name})"
    message = f"Saved as **{plain(saved)}** in {plain(path.parent)}. Choose it in the sidebar's model picker."
    st.session_state[f"{key}_done"] = {"report": result.report, "base": base, "message": message}
    st.rerun()  # the sidebar was drawn before the model existed: the rerun lists it there


def show_report(report: dict, taxonomy) -> None:
    """Before/after table of an adaptation report (cross-validated on the labelled crops)."""
    from cellkit.adapt import untaught_words

    cv = report.get("cross_validation", {})
    if cv.get("folds"):
        b, a = cv["before"], cv["after"]
        rows = [
            {"Measure": "Balanced accuracy", "Before": b["balanced_accuracy"], "After": a["balanced_accuracy"]},
            {"Measure": "Flagged for review", "Before": b["flagged_for_review"], "After": a["flagged_for_review"]},
        ]
        rows += [
            {"Measure": f"Recall, {taxonomy.display(n)}", "Before": b["per_class_recall"][n],
             "After": a["per_class_recall"][n]}
            for n in b["per_class_recall"]
        ]  # fmt: skip
        st.caption(f"{cv['folds']}-fold cross-validation on your {b['n']} crops: each fold held out in turn")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        advice = report.get("advice", "")
        if advice:
            (st.warning if "did not help" in advice else st.info)(plain(sentence(advice)))
    elif cv:
        st.caption(plain(f"No before/after figures: {cv.get('why', '')}"))
    if report.get("untaught"):
        st.warning(plain(sentence(untaught_words(report["untaught"], taxonomy))), icon=":material/warning:")
    for step in report.get("steps", []):  # may name the user's folders and files
        st.caption(plain(f"• {step}"))
    skipped = report.get("skipped") or []
    if skipped:
        st.text(f"{count(len(skipped), 'file')} skipped, e.g. {skipped[0]}")  # user file names: plain text


def _default_name(default_spec) -> str | None:
    """The default white-cell model's name (None when no model is bundled)."""
    from cellkit import CellkitError

    try:
        return default_spec("classifier", machine=False).name  # adapt from the bundled model, not an adapted one
    except CellkitError:
        return None
