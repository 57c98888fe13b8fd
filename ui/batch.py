"""Batch jobs on the Slide page: the jobs imported with ``cellkit batch --save`` / ``cellkit import``, per-job
totals, and any smear of a job opened like an analysis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.io import read_image, read_zip_member
from cellkit.words import count

JOB_COLUMNS = {
    "id": "Job", "created": "Imported", "folder": "Folder", "images": "Images", "analysed": "Analysed",
    "errors": "Errors", "wbc": "White cells", "rbc": "Red cells", "platelet": "Platelets",
}  # fmt: skip


def batch_owner() -> str:
    """Whose jobs are listed: the app's user (single-user mode: the account running the dashboard, which is also
    the default owner of ``cellkit batch --save``)."""
    from ui.widgets import app_user

    return app_user()


def job_image(item: dict):
    """The smear's pixels when its file lies inside a configured data folder (the browser reads nothing
    else), else None with the reason."""
    try:
        source = config.resolve_data_path(item.get("source") or "")
    except CellkitError:
        return None, "its file is outside the data folders this dashboard may read (CELLKIT_DATA_DIR)"
    try:
        if item.get("member"):
            got = read_zip_member(source, item["member"])
            if got.error:
                raise CellkitError(got.error)
            return got.take(), ""
        return read_image(source, name=item["path"]), ""
    except CellkitError as exc:
        return None, str(exc)


def batch_jobs_ui(store, open_analysis: Callable[[int, str, object, str], None]) -> None:
    """List this user's batch jobs; pick one and a smear of it; ``open_analysis(id, owner, image, note)`` opens it
    (``note`` says why there is no image)."""
    owner = batch_owner()
    jobs = store.list_batch_jobs(owner)
    if not jobs:
        st.caption(
            "No batch jobs yet. Run `cellkit batch FOLDER --out JOB --save` (or `cellkit import JOB`) "
            "and they appear here."
        )
        return
    st.dataframe([{JOB_COLUMNS[k]: j[k] for k in JOB_COLUMNS} for j in jobs], hide_index=True)
    job = st.selectbox(
        "Batch job",
        [j["id"] for j in jobs],
        key="batch_job",
        format_func=lambda i: next(f"#{j['id']} {Path(j['folder']).name} ({j['images']} images)" for j in jobs
                                   if j["id"] == i),
    )  # fmt: skip
    items = store.batch_items(job, owner)
    failed = [i for i in items if i["status"] != "ok"]
    if failed:
        st.warning(f"{count(len(failed), 'image')} of this job could not be analysed.", icon=":material/error:")
        st.dataframe([{"Image": i["path"], "Reason": i["error"]} for i in failed], hide_index=True)
    done = [i for i in items if i["analysis_id"] is not None]
    if not done:
        return
    pick = st.selectbox(
        "Smear",
        range(len(done)),
        key="batch_smear",
        format_func=lambda k: (
            f"{done[k]['path']}  ({done[k]['wbc']} WBC, {done[k]['rbc']} RBC, {done[k]['platelet']} platelets)"
        ),
    )
    if st.button("Open this smear", icon=":material/folder_open:", key="batch_open"):
        image, why = job_image(done[pick])
        note = f"This smear's image is not shown: {why}" if image is None else ""
        open_analysis(int(done[pick]["analysis_id"]), owner, image, note)
