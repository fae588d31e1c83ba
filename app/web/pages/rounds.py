"""Rounds (operator): launch selection and training as jobs, watch them, see history and charts."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.jobs import launch
from app.services import rounds as rounds_service
from app.services.settings import settings
from app.web import runtime, state, widgets
from learner.selection.strategies import STRATEGY_NAMES
from storage import read_models
from storage.errors import PairlabError
from storage.jobs import get_job, recent_jobs
from storage.model_versions import latest_version_number
from storage.store import Store
from storage.users import UserInfo


def render() -> None:
    user = runtime.require_page("operate")
    store = runtime.get_store()
    st.title("Rounds")
    runtime.show_flash()
    launch, train = st.columns(2, gap="large")
    with launch:
        _launch_form(store, user)
    with train:
        _training(store, user)
    job_id = st.session_state.get(state.ROUNDS_JOB)
    if job_id is not None:
        widgets.job_panel(store, job_id)
        _cancel_button(store, user, job_id)
    st.subheader("Round history")
    history = runtime.read(read_models.round_history)
    if history:
        st.dataframe(history, hide_index=True, width="stretch")
        _round_controls(store, user, history)
    else:
        st.info("No rounds yet. Launch the first one above.")
    _progress()
    _charts(store)
    with st.expander("Recent jobs"):
        st.dataframe([{"job": j.id, "kind": j.kind, "status": j.status, "progress": f"{j.progress:.0%}",
                       "message": j.message, "created (UTC)": j.created_at.strftime("%Y-%m-%d %H:%M:%S")}
                      for j in runtime.read(recent_jobs)], hide_index=True, width="stretch")


def _launch_form(store: Store, user: UserInfo) -> None:
    st.subheader("New round")
    with st.form("launch_round"):
        strategy = st.selectbox("Strategy", STRATEGY_NAMES, index=STRATEGY_NAMES.index("random"),
                                key=state.ROUNDS_STRATEGY)
        budget = st.number_input("Budget (pairs)", min_value=1, value=10, step=1, key=state.ROUNDS_BUDGET)
        assign = st.multiselect("Assign to annotators (empty: anyone may take a pair)",
                                runtime.read(read_models.annotator_names), key=state.ROUNDS_ASSIGN)
        overlap = st.number_input("Annotators per pair (overlap)", min_value=1,
                                  value=settings(store).annotation.overlap, step=1, key=state.ROUNDS_OVERLAP)
        seed = st.number_input("Seed", min_value=0, value=0, step=1, key=state.ROUNDS_SEED)
        submitted = st.form_submit_button("Launch round", type="primary")
    if submitted:
        try:
            job = launch.launch_selection(store, user, strategy=strategy, budget=int(budget), assign=assign,
                                        overlap=int(overlap), seed=int(seed))
        except PairlabError as exc:
            st.error(str(exc))
            return
        st.session_state[state.ROUNDS_JOB] = job.id
        runtime.flash(f"Selection queued as job {job.id}.", "info")
        st.rerun()


def _training(store: Store, user: UserInfo) -> None:
    st.subheader("Model")
    version = runtime.read(latest_version_number)
    st.text(f"Latest model version: {version}" if version is not None else "No model trained yet.")
    warm_start = st.checkbox("Warm-start from the latest version", key=state.ROUNDS_WARM_START,
                             value=settings(store).train.warm_start, disabled=version is None,
                             help="Off: retrain from scratch (the default; see docs/benchmarks.md)")
    retrain, encode = st.columns(2)
    if retrain.button("Retrain"):
        _launch(lambda: launch.launch_training(store, user, warm_start=warm_start))
    if encode.button("Encode", help="Compute image and text features for all pairs (needed after an import)"):
        _launch(lambda: launch.launch_encode(store, user))


def _launch(start) -> None:
    """Start a job, remember it for the progress panel, or show why it could not start."""
    try:
        job = start()
    except PairlabError as exc:
        st.error(str(exc))
        return
    st.session_state[state.ROUNDS_JOB] = job.id
    st.rerun()


def _cancel_button(store: Store, user: UserInfo, job_id: int) -> None:
    """Cancel the watched job while it is queued or running (a running one stops at its next progress report)."""
    job = runtime.read(get_job, job_id)
    if job.finished or job.cancel_requested or not st.button("Cancel job"):
        return
    try:
        launch.cancel_job(store, user, job_id)
    except PairlabError as exc:
        st.error(str(exc))
        return
    st.rerun()


def _round_controls(store: Store, user: UserInfo, history: list[dict]) -> None:
    """Order the open rounds (claims take the highest priority first) or close one."""
    open_rounds = {row["round"]: row for row in history if not row["closed"]}
    if not open_rounds:
        return
    number = st.selectbox("Order or close a round", list(open_rounds), key=state.ROUNDS_CONTROL,
                          format_func=lambda n: f"round {n} (priority {open_rounds[n]['priority']})")
    if number not in open_rounds:
        return
    with st.form("round_controls"):
        # no key: the box starts from the chosen round's priority whenever another round is chosen
        priority = st.number_input("Priority (claims take the highest first)", step=1,
                                   value=int(open_rounds[number]["priority"]))
        set_it, close_it = st.columns(2)
        set_clicked = set_it.form_submit_button("Set priority")
        close_clicked = close_it.form_submit_button("Close round", help="Releases its leases; nobody is given "
                                                    "its pairs again")
    if not (set_clicked or close_clicked):
        return
    try:
        if close_clicked:
            released = rounds_service.close_round(store, user, int(number))
            runtime.flash(f"Round {number} closed; {released} lease(s) released.")
        else:
            rounds_service.set_priority(store, user, int(number), int(priority))
            runtime.flash(f"Round {number} now has priority {int(priority)}.")
    except PairlabError as exc:
        st.error(str(exc))
        return
    st.rerun()


def _progress() -> None:
    """Done / assigned, time per pair and agreement with the consensus, per annotator and per round."""
    st.subheader("Progress")
    people, rounds = st.columns(2, gap="large")
    with people:
        rows = runtime.read(read_models.annotator_progress_table)
        _progress_table(rows, "annotator", "No annotator has slots or answers yet.")
    with rounds:
        _progress_table(runtime.read(read_models.round_progress_table), "round", "No rounds yet.")


def _progress_table(rows: list[read_models.Progress], what: str, empty: str) -> None:
    if not rows:
        st.info(empty)
        return
    st.dataframe([{what: r.name, "done / assigned": f"{r.done} / {r.assigned}",
                   "s per pair": None if r.seconds_per_pair is None else round(r.seconds_per_pair, 1),
                   "agreement": None if r.agreement is None else f"{r.agreement:.0%} of {r.compared}"}
                  for r in rows], hide_index=True, width="stretch")


def _charts(store: Store) -> None:
    curve, labels, activity = st.tabs(["Learning curve", "Label distribution", "Annotator throughput"])
    with curve:
        points = runtime.read(read_models.learning_curve)
        metrics = sorted({k for p in points for k in p} - {"version", "labelled", "measured_on"})
        if not points or not metrics:
            st.info("No learning curve yet: it appears once a trained model has been evaluated.")
        else:
            frame = pd.DataFrame(points).set_index("labelled")[metrics]
            # a line through one point draws nothing: the first model version shows as dots
            chart = st.line_chart if len(frame) > 1 else st.scatter_chart
            chart(frame, x_label="labelled pairs", y_label="metric")
    with labels:
        counts = runtime.read(read_models.label_distribution)
        if not any(counts.values()):
            st.info("No labelled pairs yet.")
        else:
            frame = pd.DataFrame({"label": list(counts), "pairs": list(counts.values())})
            st.bar_chart(frame[frame.pairs > 0], x="label", y="pairs", sort="-pairs")
    with activity:
        rows = runtime.read(read_models.annotator_activity)
        if not rows:
            st.info("No annotation activity in the last 14 days.")
        else:
            st.bar_chart(pd.DataFrame(rows), x="day", y="events", color="annotator", stack=True)
