"""Rendering helpers shared by pages. Text from data always goes through ``st.text`` or dataframes, never Markdown."""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from app.web import runtime
from learner.encoders.images import open_image
from storage.jobs import JobView, get_job
from storage.store import Store

JOB_POLL_SECONDS = 1.0
FIT_BOX = (720, 480)  # the fitted image's largest size in pixels; "Zoom" shows the original
_MARKDOWN_PUNCTUATION = frozenset("\\`*_{}[]()#+-.!|<>~$:=\"'&%@^,;?/")


def literal(text: str) -> str:
    """``text`` backslash-escaped for widgets whose option labels Streamlit renders as Markdown (pills)."""
    return "".join("\\" + ch if ch in _MARKDOWN_PUNCTUATION else ch for ch in str(text))


def upright_jpeg(path: str, fit: tuple[int, int] | None = None) -> bytes:
    """The image decoded upright (``learner.encoders.images.open_image``, as the encoders see it), fitted into
    ``fit`` when given, as JPEG bytes. Re-encoded rather than sent as the file's bytes, since Streamlit
    re-encodes wide images without their EXIF orientation. Only local files are read, so a path from data
    can never make the browser fetch a URL."""
    image = open_image(path)
    if fit is not None:
        image.thumbnail(fit)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90 if fit else 95)
    return out.getvalue()


@st.cache_data(max_entries=256, show_spinner=False)
def _fitted(path: str, mtime: float) -> bytes:  # mtime: a changed file is a new cache entry
    return upright_jpeg(path, FIT_BOX)


@st.dialog("Full-size image", width="large")
def _zoom_dialog(path: str) -> None:
    if Path(path).is_file():
        st.image(upright_jpeg(path), width="content")


def pair_image(path: str, *, key: str) -> None:
    """The image fitted into ``FIT_BOX``, with a button that opens it at full size."""
    file = Path(path)
    if not file.is_file():
        st.warning("This pair has no image file to show.")
        st.text(path)
        return
    st.image(_fitted(str(file), file.stat().st_mtime), width="content")
    if st.button("Zoom", key=key, icon=":material/zoom_in:", help="Show the image at full size"):
        _zoom_dialog(path)


def thumbnail(path: str) -> None:
    """The image fitted into its column (no zoom), or a note when the pair has no image file."""
    file = Path(path)
    if not file.is_file():
        st.text("(no image file)")
        return
    st.image(_fitted(str(file), file.stat().st_mtime), width="stretch")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def key_value_table(values: dict[str, Any]) -> None:
    st.dataframe([{"component": k, "value": format_value(v)} for k, v in values.items()], hide_index=True,
                 width="stretch")


def job_status(job: JobView) -> None:
    """One job's state: a progress bar while it runs, the outcome when finished."""
    if job.status == "failed":
        st.error(f"Job {job.id} ({job.kind}) failed.")
        st.text(job.message)
    elif job.status == "done":
        st.success(f"Job {job.id} ({job.kind}) finished.")
    elif job.status == "cancelled":
        st.warning(f"Job {job.id} ({job.kind}) cancelled.")
        st.text(job.message)
    else:
        st.progress(job.progress, text=f"Job {job.id} ({job.kind}) {job.status}: {job.progress:.0%}")
        st.text(job.message)


def job_panel(store: Store, job_id: int, *, on_finished: Callable[[JobView], None] | None = None) -> None:
    """Poll a job with ``st.fragment(run_every=...)`` while it is queued or running.

    When the job finishes, the whole page reruns once so tables and charts pick up its effect.
    """
    first = runtime.read(get_job, job_id)

    @st.fragment(run_every=None if first.finished else JOB_POLL_SECONDS)
    def panel() -> None:
        job = runtime.read(get_job, job_id)
        job_status(job)
        if job.finished and not first.finished:
            st.rerun(scope="app")

    panel()
    if first.finished and on_finished is not None:
        on_finished(first)
