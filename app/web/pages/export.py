"""Export (operator): write the workspace in a chosen format as a job, then offer the file."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.jobs.launch import launch_export
from app.web import runtime, state, widgets
from storage.errors import PairlabError
from storage.exporters import EXPORT_FORMATS
from storage.jobs import JobView, recent_jobs

MIME = {"jsonl": "application/jsonl", "csv": "text/csv", "coco": "application/json",
        "label-studio": "application/json", "npz": "application/octet-stream"}


def render() -> None:
    user = runtime.require_page("operate")
    store = runtime.get_store()
    st.title("Export")
    runtime.show_flash()
    with st.form("export"):
        fmt = st.selectbox("Format", EXPORT_FORMATS, key=state.EXPORT_FORMAT)
        submitted = st.form_submit_button("Export", type="primary")
    if submitted:
        try:
            job = launch_export(store, user, fmt=fmt)
        except PairlabError as exc:
            st.error(str(exc))
        else:
            st.session_state[state.EXPORT_JOB] = job.id
            st.rerun()
    job_id = st.session_state.get(state.EXPORT_JOB)
    if job_id is not None:
        widgets.job_panel(store, job_id, on_finished=_download)
    finished = [j for j in runtime.read(recent_jobs, kinds=("export",)) if j.status == "done" and j.result]
    if finished:
        st.subheader("Earlier exports")
        st.dataframe([{"job": j.id, "format": j.result.get("format"), "file": j.result.get("file"),
                       "rows": j.result.get("rows"),
                       "finished (UTC)": j.finished_at.strftime("%Y-%m-%d %H:%M:%S") if j.finished_at else ""}
                      for j in finished], hide_index=True, width="stretch")


def _download(job: JobView) -> None:
    if job.status != "done" or not job.result:
        return
    path = Path(job.result["path"])
    if not path.is_file():
        st.warning("The exported file is no longer in the workspace.")
        return
    st.text(f"{job.result.get('rows', 0)} rows written to exports/{path.name} in the workspace")
    st.download_button(f"Download {path.name}", data=path.read_bytes(), file_name=path.name,
                       mime=MIME.get(job.result.get("format"), "application/octet-stream"), type="primary",
                       icon=":material/download:", on_click="ignore")
