"""Annotate: label the next pair of this annotator's queue (DESIGN §7) in the client-side widget.

Visiting the page claims nothing: "Start annotating" claims a pair, and after that only an action
(submit, skip, flag, undo) claims the next one; a reloaded page shows again the pair its person
holds. The pair on screen is held in session state, so a rerun without an action reads but never
writes; a heartbeat fragment renews the lease while the page is open. An answer for a lease the
person no longer holds is refused by the store and kept on screen.
"""
from __future__ import annotations

import time
from dataclasses import replace

import streamlit as st

from app.services import annotate as actions
from app.web import runtime, state, widgets
from app.web.annotator import DEFAULT_VERDICT, Action, Answer, action_payload, annotator, parse_action
from storage.errors import PairlabError, StaleLeaseError
from storage.models import utcnow
from storage.queue import Claim
from storage.read_models import annotator_progress
from storage.store import Store
from storage.users import UserInfo
from storage.vocabulary import label_names

SHORTCUT_UNDO = "Alt+U"  # the Undo button shown while no pair is on screen
DONE = {"submit": "Submitted.", "skip": "Skipped.", "flag": "Flagged for review."}


def render() -> None:
    user = runtime.require_page("annotate")
    store = runtime.get_store()
    st.title("Annotate")
    with st.container():  # always one element, so a message never shifts the widget (which would remount it)
        runtime.show_flash()
    _progress(user)
    if not st.session_state.get(state.ANN_ACTIVE):
        resumed = actions.held(store, user)  # a pair this person holds already (the page was reloaded): read only
        if resumed is None:
            st.info("Start annotating to take the next pair of your queue; opening this page reserves nothing.")
            st.button("Start annotating", type="primary", icon=":material/play_arrow:", on_click=_take_next,
                      args=(store, user))
            return
        _put_on_screen(store, resumed, None, renewed_at=time.monotonic() - actions.lease_age_seconds(store, resumed))
    current: Claim | None = st.session_state.get(state.ANN_CLAIM)
    if current is None:
        st.info("No pairs are waiting for you. An operator can launch a new round.")
        with st.container(horizontal=True):
            st.button("Look for new pairs", icon=":material/refresh:", on_click=_take_next, args=(store, user))
            st.button("Undo last", shortcut=SHORTCUT_UNDO, icon=":material/undo:", on_click=_undo, args=(store, user))
        return
    picture, form = st.columns([3, 2], gap="large")
    with picture:  # drawn before the widget: keys never reach a pair whose image is not on screen yet
        st.text(current.text)
        widgets.pair_image(current.image_path, key=state.item_key("annotate.zoom", current.queue_item_id))
        with st.expander("Why flagged (mismatch audit)" if current.verification else "Why selected", expanded=False):
            st.caption(f"{'Verification round' if current.verification else 'Round'} {current.round_number}, "
                       f"rank {current.rank + 1}")
            if current.explanation:
                widgets.key_value_table(current.explanation)
            else:
                st.text("No score breakdown was stored for this pair.")
    with form:
        annotator(key=state.ANN_WIDGET, claim=current, revision=st.session_state[state.ANN_REVISION],
                  vocabulary=runtime.read(label_names), suggestions=st.session_state[state.ANN_SUGGESTIONS],
                  answer=st.session_state[state.ANN_ANSWER], on_action=lambda: _on_action(store, user))
        st.fragment(run_every=actions.heartbeat_seconds(store))(_heartbeat)(store, user)


def _progress(user: UserInfo) -> None:
    progress = runtime.read(annotator_progress, user, st.session_state.get(state.SESSION_STARTED))
    cols = st.columns(4)
    cols[0].metric("Waiting for you", progress.waiting)
    cols[1].metric("Done in queue", progress.done_total)
    cols[2].metric("Yours, last hour", progress.mine_last_hour)
    cols[3].metric("Yours, this session", progress.mine_this_session)


def _take_next(store: Store, user: UserInfo, restore: tuple[int, Answer] | None = None) -> Claim | None:
    """Claim (or get back) the user's pair and put it on screen (see ``_put_on_screen``)."""
    st.session_state[state.ANN_ACTIVE] = True
    try:
        current = actions.claim(store, user)
    except PairlabError as exc:  # e.g. the database stayed busy: one line, and the next action tries again
        runtime.flash(str(exc), "error")
        return st.session_state.get(state.ANN_CLAIM)
    _put_on_screen(store, current, restore, renewed_at=time.monotonic())
    return current


def _put_on_screen(store: Store, current: Claim | None, restore: tuple[int, Answer] | None, *,
                   renewed_at: float) -> None:
    """Hold ``current`` in session state and have the widget start over from ``restore`` = (pair id,
    answer) when that is this pair (a refused or undone answer), else from the pre-marked suggestions
    (which the browser replaces with its own unsent draft of this pair, if it kept one)."""
    suggestions = actions.suggestions(store, current, runtime.read(label_names)) if current else []
    if restore is not None and current is not None and restore[0] == current.pair_id:
        answer = restore[1]
    else:
        answer = Answer(labels=tuple(s.label for s in suggestions if s.premarked), fresh=True,
                        verdict=None if current is not None and current.verification else DEFAULT_VERDICT)
    st.session_state.update({state.ANN_ACTIVE: True, state.ANN_CLAIM: current, state.ANN_SUGGESTIONS: suggestions,
                             state.ANN_ANSWER: answer, state.ANN_REVISION: st.session_state.get(state.ANN_REVISION, 0) + 1,
                             state.ANN_RENEWED_AT: renewed_at})


def _on_action(store: Store, user: UserInfo) -> None:
    action = parse_action(action_payload(state.ANN_WIDGET))
    if action is None:
        runtime.flash("The annotation widget sent something unreadable; nothing was recorded.", "error")
        st.session_state[state.ANN_REVISION] = st.session_state.get(state.ANN_REVISION, 0) + 1
        return
    if action.kind == "undo":
        _undo(store, user, action)
        return
    answer = action.answer
    try:
        actions.annotate(store, user, action.queue_item_id, pair_id=action.pair_id, kind=action.kind,
                         labels=None if action.kind == "skip" else answer.labels,
                         verdict=None if action.kind == "skip" else answer.verdict, comment=answer.comment)
    except StaleLeaseError as exc:
        current = _take_next(store, user, restore=(action.pair_id, answer))
        same = current is not None and current.pair_id == action.pair_id
        kept = "it is back on screen to submit again" if same else f"this was your answer: {_describe(answer)}"
        runtime.flash(f"Not recorded: {exc}; {kept}.", "error")
        return
    except PairlabError as exc:  # e.g. a comment with a control character: fix it and submit again
        runtime.flash(f"Not recorded: {exc}", "error")
        _restore(action)
        return
    runtime.flash(DONE[action.kind])
    _take_next(store, user)


def _restore(action: Action) -> None:
    """Redraw the same pair with the answer the person sent."""
    st.session_state[state.ANN_ANSWER] = action.answer
    st.session_state[state.ANN_REVISION] = st.session_state.get(state.ANN_REVISION, 0) + 1


def _undo(store: Store, user: UserInfo, action: Action | None = None) -> None:
    try:
        undone = actions.undo(store, user)
    except PairlabError as exc:
        runtime.flash(str(exc), "error")
        undone = None
    else:
        if undone is None:
            runtime.flash("Nothing to undo.", "warning")
    if undone is None:
        if action is not None:
            _restore(action)
        return
    runtime.flash(f"Undid your {undone.kind} of pair {undone.pair_id}; it is back in front of you.")
    previous = Answer(undone.labels or (), undone.verdict, undone.comment or "") if undone.kind != "skip" else Answer()
    _take_next(store, user, restore=(undone.pair_id, previous))


def _heartbeat(store: Store, user: UserInfo) -> None:
    """Renew the lease of the pair on screen once per heartbeat period (so not on every rerun)."""
    current: Claim | None = st.session_state.get(state.ANN_CLAIM)
    if current is None:
        return
    renewed = True
    if time.monotonic() - st.session_state.get(state.ANN_RENEWED_AT, 0.0) >= actions.heartbeat_seconds(store):
        expires = actions.heartbeat(store, user, current.queue_item_id)
        st.session_state[state.ANN_RENEWED_AT] = time.monotonic()
        renewed = expires is not None
        if renewed:
            current = replace(current, lease_expires_at=expires)
            st.session_state[state.ANN_CLAIM] = current
    if not renewed or current.lease_expires_at < utcnow():
        st.warning("Your lease on this pair ran out (or it was answered in another tab): submitting will be "
                   "refused, with your answer kept on screen.")
    else:
        st.caption(f"Pair {current.external_id} is reserved for you until {current.lease_expires_at:%H:%M:%S} UTC "
                   "while this page is open.")


def _describe(answer: Answer) -> str:
    labels = ", ".join(answer.labels) or "no label"
    comment = f"; comment {answer.comment!r}" if answer.comment.strip() else ""
    return f"labels {labels}; verdict {answer.verdict or 'none'}{comment}"
