"""Clean-up (reviewers and operators): the latest mismatch audit's ranking, a page at a time, each pair with
its score breakdown and the pool's best alternative caption and image; filter by current verdict; send the
checked pairs to a verification round; operators run a new audit as a job."""
from __future__ import annotations

import streamlit as st

from app.jobs import launch
from app.services import audit as audit_service
from app.services.settings import settings
from app.web import runtime, state, widgets
from storage import read_models
from storage.audit import VERDICT_FILTERS
from storage.errors import PairlabError
from storage.store import Store
from storage.users import UserInfo

PAGE_SIZE = 10
ALL = "all"


def render() -> None:
    user = runtime.require_page("review")
    store = runtime.get_store()
    st.title("Clean-up")
    runtime.show_flash()
    run = audit_service.latest_run(store, user)
    _run_audit(store, user)
    if run is None:
        st.info("No mismatch audit yet. An operator runs one here (Run audit) or with 'pairlab audit WS'.")
        return
    st.caption(f"Audit {run.id} of {run.created_at:%Y-%m-%d %H:%M} UTC (model v{run.params.get('model_version')}): "
               f"{run.pairs} pairs, most likely mismatched first. Pool rank: a component's place among all pairs, "
               "1 = the most suspicious.")
    verdict = st.segmented_control("Current verdict", (ALL, *VERDICT_FILTERS), default=ALL, key=state.CLEANUP_VERDICT,
                                   on_change=lambda: st.session_state.update({state.CLEANUP_PAGE: 0}))
    page = st.session_state.setdefault(state.CLEANUP_PAGE, 0)
    rows, more = audit_service.cleanup_page(store, user, run.id, page=page, page_size=PAGE_SIZE,
                                            verdict=None if verdict in (None, ALL) else verdict)
    _pager(page, more)
    if not rows:
        st.info("No pair of this audit has that verdict." if page == 0 else "No more pairs.")
        return
    with st.form("cleanup_send"):
        for row in rows:
            _row(run.id, row)
        st.multiselect("Assign to annotators (empty: anyone may take a pair)",
                                runtime.read(read_models.annotator_names), key=state.CLEANUP_ASSIGN)
        st.number_input("Annotators per pair (overlap)", min_value=1, step=1, key=state.CLEANUP_OVERLAP,
                                  value=settings(store).annotation.overlap)
        st.form_submit_button("Send checked pairs to verification", type="primary", on_click=_send,
                              args=(store, user, run.id, [row.pair_id for row in rows]))


def _run_audit(store: Store, user: UserInfo) -> None:
    """Operators: queue an audit job (one at a time) and watch its progress."""
    if runtime.allowed(user, "operate") and st.button("Run audit", icon=":material/troubleshoot:",
                                                      help="Score every pair with the current model (a job)"):
        try:
            st.session_state[state.CLEANUP_JOB] = launch.launch_audit(store, user).id
        except PairlabError as exc:
            st.error(str(exc))
    job_id = st.session_state.get(state.CLEANUP_JOB)
    if job_id is not None:
        widgets.job_panel(store, job_id)


def _pager(page: int, more: bool) -> None:
    with st.container(horizontal=True):
        st.button("Previous", icon=":material/chevron_left:", disabled=page == 0,
                  on_click=lambda: st.session_state.update({state.CLEANUP_PAGE: page - 1}))
        st.text(f"Page {page + 1}")
        st.button("Next", icon=":material/chevron_right:", disabled=not more,
                  on_click=lambda: st.session_state.update({state.CLEANUP_PAGE: page + 1}))


def _row(run_id: int, row: audit_service.CleanupRow) -> None:
    with st.container(border=True):
        pick, picture, caption, evidence = st.columns([1.6, 3, 5, 4], gap="small")
        pick.checkbox(f"Rank {row.rank}", key=state.item_key(state.CLEANUP_PICK, run_id, row.pair_id))
        with picture:
            widgets.thumbnail(row.image_path)
        with caption:
            st.text(row.text)
            st.caption(f"{row.external_id} · mismatch {row.score:.3f} · verdict: {row.verdict or 'none'}")
            st.dataframe(row.components, hide_index=True, width="stretch")
            if row.caption_rank is not None and row.image_rank is not None:
                st.caption(f"{row.caption_rank:.0%} of the other captions match its image better than its own; "
                           f"{row.image_rank:.0%} of the other images match its caption better.")
        with evidence:
            if row.best_caption or row.best_image:
                st.caption("Best alternative in the pool")
            if row.best_caption:
                st.text(f"{row.best_caption.get('text', '')} ({row.best_caption.get('id')})")
            if row.best_image:
                widgets.thumbnail(str(row.best_image.get("image", "")))
                st.caption(f"image of {row.best_image.get('id')}")


def _send(store: Store, user: UserInfo, run_id: int, shown: list[int]) -> None:
    """The form's callback: queue the checked pairs of ``shown`` with the form's assignees and overlap."""
    keys = {pair_id: state.item_key(state.CLEANUP_PICK, run_id, pair_id) for pair_id in shown}
    picked = [pair_id for pair_id, key in keys.items() if st.session_state.get(key)]
    if not picked:
        runtime.flash("Check the pairs to send first.", "warning")
        return
    try:
        report = audit_service.queue_verification(
            store, actor=user, run_id=run_id, pair_ids=picked, assign=st.session_state.get(state.CLEANUP_ASSIGN, []),
            overlap=int(st.session_state.get(state.CLEANUP_OVERLAP) or 1))
    except PairlabError as exc:
        runtime.flash(str(exc), "error")
        return
    for pair_id in picked:
        st.session_state[keys[pair_id]] = False
    runtime.flash(f"Sent to verification: {report.summary()}.")
