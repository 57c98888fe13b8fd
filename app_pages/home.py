"""Home: what cellkit does, the four workflows, and what is installed on this machine."""

from __future__ import annotations

from importlib import metadata

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

import cellkit
from cellkit import CellkitError, config, list_specs, list_taxonomies, load_taxonomy
from ui.widgets import masked_db_url, metrics_summary, page_link_ui, plain, short_sha256, stored_analyses

WORKFLOWS = [
    ("app_pages/slide.py", "Slide analysis", ":material/biotech:",
     "A case of one or more fields: every cell found and classified, a differential over 100 or 200 white "
     "cells to review with the keyboard, sign off and print as a PDF."),
    ("app_pages/classify.py", "Classify crops", ":material/category:",
     "Single-cell images or a zip of them: probabilities at every level of the tree, "
     "out-of-distribution flags, CSV export."),
    ("app_pages/explain.py", "Explain", ":material/visibility:",
     "Grad-CAM, occlusion and integrated gradients for any node of the tree: see which pixels drove a call."),
    ("app_pages/dataset.py", "Dataset", ":material/dataset:",
     "Any image folder: class balance per tree level, stain by source, sizes, duplicates that leak."),
]  # fmt: skip

st.title("cellkit", anchor=False)
st.markdown(
    "#### Digital blood-smear morphology that runs on your own machine\n"
    "Find every cell, classify white cells from lineage down to subtype, "
    "and show *why* the model said so."
)

for col, (page, title, icon, text) in zip(st.columns(4), WORKFLOWS, strict=True):
    with col.container(border=True, height="stretch"):
        page_link_ui(page, title, icon)
        st.caption(text)

st.subheader("Installed here", anchor=False)
specs = list_specs()
if specs:
    rows = []
    for spec in specs:
        rows.append(
            {
                "Model": (spec.card.get("display_name") or spec.name) + (" ★" if spec.card.get("default") else ""),
                "Finds or names": "cells on a smear" if spec.task == "detector" else f"{len(spec.labels)} cell types",
                "Key results": metrics_summary(spec.card),
            }
        )
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption("★ default model of its task. Full model cards: `weights/<name>.json` for the bundled models, "
               "`CELLKIT_HOME/models/<name>.json` for the ones adapted here; all on the Models page.")  # fmt: skip
    page_link_ui("app_pages/models.py", "Compare models", ":material/leaderboard:")
else:
    st.info(
        f"No trained models in `{config.weights_dir()}` yet. Train them with "
        "`cellkit train classifier …` and `cellkit train detector …` (see the README); "
        "the Dataset page works without any model.",
        icon=":material/school:",
    )

technical = st.expander("Technical details: models, database, data folders, software", icon=":material/build:")
if specs:
    technical.dataframe(
        [{"name": s.name, "task": s.task, "architecture": s.arch, "input": f"{s.input_size} px",
          "sha256": short_sha256(s)} for s in specs],
        hide_index=True,
    )  # fmt: skip
db_col, data_col, ver_col = technical.columns(3)
with db_col.container(border=True, height="stretch"):
    st.markdown("**:material/database: Database**")
    try:
        raw_url = config.db_url()
    except OSError as exc:  # the default SQLite file's folder cannot be made (CELLKIT_HOME under a file...)
        raw_url = ""
        st.caption(":orange[no database:] " + plain(f"{exc.strerror or exc}; set CELLKIT_HOME or CELLKIT_DB_URL"))
    if raw_url:
        st.markdown(f"`{masked_db_url(raw_url)}`")
        try:
            from ui.resources import store
            from ui.widgets import session_owner

            total, mine = stored_analyses(store(), session_owner())
            st.caption(f"{total} stored analyses ({mine} of yours)")
        except (CellkitError, SQLAlchemyError) as exc:
            st.caption(":orange[database not reachable:] " + plain(str(exc).replace(raw_url, masked_db_url(raw_url))))
        except (ImportError, AttributeError):
            st.caption("Stored analyses: not available in this build.")
    st.caption("Set `CELLKIT_DB_URL` for any SQLAlchemy database.")

with data_col.container(border=True, height="stretch"):
    st.markdown("**:material/folder: Data folder**")
    roots = config.data_roots()
    if not roots:
        st.caption(
            "None set. Point `CELLKIT_DATA_DIR` at the folder(s) of your datasets: the app opens nothing outside them."
        )
    for data in roots:
        st.markdown(f"`{data}`")
        st.caption(":green[found]" if data.is_dir() else ":orange[not found] — check `CELLKIT_DATA_DIR`")
    if roots:
        st.caption("The Dataset and Explain pages open folders inside these only.")
    try:
        trees = ", ".join(f"`{name}` ({len(load_taxonomy(name).leaves)} classes)" for name in list_taxonomies())
        st.caption(f"Cell taxonomies: {trees}")
    except CellkitError as exc:
        st.caption(f":orange[taxonomy problem:] {exc}")

with ver_col.container(border=True, height="stretch"):
    st.markdown("**:material/memory: Software**")
    versions = {"cellkit": cellkit.__version__}
    for pkg in ("torch", "streamlit", "ultralytics"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    st.markdown("  \n".join(f"{k} `{v}`" for k, v in versions.items()))
    st.caption("Runs on a plain CPU.")

st.caption(
    ":material/lock: Images never leave this machine: models run locally, nothing is uploaded, "
    "usage telemetry is off. Research tool — not a medical device."
)
