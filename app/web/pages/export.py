"""Export (operator): write the workspace in a chosen format as a job, then offer the file and earlier ones."""
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
    finished = [j for j in runtime.read(recent_jobs, kinds=("export",)) if j.status == "done" and j.result
                and j.id != job_id]
    if finished:
        st.subheader("Earlier exports")
        for job in finished:
            _earlier(job)


def _earlier(job: JobView) -> None:
    """One earlier export: what it wrote, and its file to download while it is still in the workspace."""
    result = job.result
    when = job.finished_at.strftime("%Y-%m-%d %H:%M:%S") if job.finished_at else ""
    about, button = st.columns([3, 1], vertical_alignment="center")
    about.text(f"{result.get('file')}: {result.get('format')}, {result.get('rows', 0)} rows, "
               f"finished {when} UTC (job {job.id})")
    path = Path(result["path"])
    if not path.is_file():
        about.caption("The file is no longer in the workspace.")
        return
    with button:
        _download_button(path, result.get("format"), key=state.item_key(state.EXPORT_EARLIER, job.id))


def _download_button(path: Path, fmt: str | None, *, key: str | None = None, primary: bool = False) -> None:
    """A download of ``path`` that reads the file only when clicked (never on a rerun)."""
    st.download_button(f"Download {path.name}", data=lambda: path.read_bytes(), file_name=path.name,
                       mime=MIME.get(fmt, "application/octet-stream"), type="primary" if primary else "secondary",
                       icon=":material/download:", on_click="ignore", key=key)


def _download(job: JobView) -> None:
    if job.status != "done" or not job.result:
        return
    path = Path(job.result["path"])
    if not path.is_file():
        st.warning("The exported file is no longer in the workspace.")
        return
    st.text(f"{job.result.get('rows', 0)} rows written to exports/{path.name} in the workspace")
    _download_button(path, job.result.get("format"), primary=True)
