"""Annotate: label the next pair of this annotator's queue (DESIGN §7)."""
from __future__ import annotations

import streamlit as st

from app.services import annotate as actions
from app.services.select import SUGGESTIONS_KEY
from app.web import runtime, state, widgets
from storage.errors import PairlabError
from storage.models import VERDICTS
from storage.queue import Claim
from storage.read_models import annotator_progress
from storage.store import Store
from storage.users import UserInfo
from storage.vocabulary import label_names

# Letter keys with Alt: a focused pill (a button) swallows Enter and Space, so Ctrl+Enter would not
# reach the Submit button right after a label was clicked.
SHORTCUT_SUBMIT = "Alt+A"
SHORTCUT_SKIP = "Alt+S"
SHORTCUT_UNDO = "Alt+U"


def render() -> None:
    user = runtime.require_page("annotate")
    store = runtime.get_store()
    st.title("Annotate")
    runtime.show_flash()
    _progress(store, user)
    try:
        current = actions.claim(store, user)
    except PairlabError as exc:  # e.g. the database stayed busy: one line, and the page can be reloaded
        st.error(str(exc))
        return
    if current is None:
        st.info("No pairs are waiting for you. An operator can launch a new round.")
        _undo_button(store, user)
        return
    vocabulary = runtime.read(label_names)
    picture, form = st.columns([3, 2], gap="large")
    with picture:
        st.text(current.text)
        widgets.pair_image(current.image_path, key=state.item_key("annotate.zoom", current.queue_item_id))
        with st.expander("Why selected", expanded=False):
            st.caption(f"Round {current.round_number}, rank {current.rank + 1}")
            if current.explanation:
                widgets.key_value_table(current.explanation)
            else:
                st.text("No score breakdown was stored for this pair.")
    with form:
        st.segmented_control("Does the caption match the image?", VERDICTS, default="match",
                             key=state.item_key(state.ANN_VERDICT, current.queue_item_id))
        st.text_input("Comment (optional)", key=state.item_key(state.ANN_COMMENT, current.queue_item_id))
        with st.container(horizontal=True):
            st.button("Submit", type="primary", shortcut=SHORTCUT_SUBMIT, on_click=_record,
                      args=(store, user, current, "submit"))
            st.button("Skip", shortcut=SHORTCUT_SKIP, on_click=_record, args=(store, user, current, "skip"))
            st.button("Flag", help="Send this pair to a reviewer", on_click=_record,
                      args=(store, user, current, "flag"))
            _undo_button(store, user)
        st.caption(f"Shortcuts: {SHORTCUT_SUBMIT} submit, {SHORTCUT_SKIP} skip, {SHORTCUT_UNDO} undo.")
        marked = st.empty()  # above the (possibly long) label list, filled once the marks are known
        selected = _labels(current, vocabulary)
        marked.text("Marked: " + (", ".join(selected) if selected else "none (submitting means no label applies)"))


def _progress(store: Store, user: UserInfo) -> None:
    progress = runtime.read(annotator_progress, user, st.session_state.get(state.SESSION_STARTED))
    cols = st.columns(4)
    cols[0].metric("Waiting for you", progress.waiting)
    cols[1].metric("Done in queue", progress.done_total)
    cols[2].metric("Yours, last hour", progress.mine_last_hour)
    cols[3].metric("Yours, this session", progress.mine_this_session)


def suggestions(current: Claim, vocabulary: list[str]) -> list[str]:
    """The model's suggested labels stored with the selection, restricted to the vocabulary."""
    value = current.explanation.get(SUGGESTIONS_KEY)
    if not isinstance(value, list):
        return []
    known = set(vocabulary)
    return list(dict.fromkeys(name for name in value if isinstance(name, str) and name in known))


def _labels(current: Claim, vocabulary: list[str]) -> list[str]:
    """The suggestions toggle, the label filter and the pills; returns the labels marked now."""
    item = current.queue_item_id
    selected_key = state.item_key(state.ANN_SELECTED, item)
    suggested = suggestions(current, vocabulary)
    use_suggestions = st.toggle("Pre-mark the model's suggestions", value=True, key=state.ANN_SUGGEST,
                                disabled=not suggested, on_change=_toggle_suggestions, args=(item, suggested),
                                help=None if suggested else "No model suggestions for this pair yet.")
    if selected_key not in st.session_state:
        st.session_state[selected_key] = list(suggested) if use_suggestions else []
    selected: list[str] = st.session_state[selected_key]
    query = st.text_input("Find a label", key=state.item_key(state.ANN_FILTER, item), placeholder="type to filter")
    visible = [name for name in vocabulary if query.strip().lower() in name.lower()]
    pills_key = state.item_key(state.ANN_PILLS, item, query.strip().lower())
    st.pills(f"Labels ({len(visible)} of {len(vocabulary)} shown)", visible, selection_mode="multi",
             default=[name for name in visible if name in selected], key=pills_key, format_func=widgets.literal,
             width="stretch", wrap=True,
             on_change=_sync_pills, args=(pills_key, selected_key, visible))
    return selected


def _sync_pills(pills_key: str, selected_key: str, visible: list[str]) -> None:
    shown = set(visible)
    chosen = set(st.session_state[pills_key] or ())
    # .get: after an undo the browser may resend a pills value for a pair whose marks were cleared
    kept = [name for name in st.session_state.get(selected_key, []) if name not in shown]
    st.session_state[selected_key] = kept + [name for name in visible if name in chosen]


def _toggle_suggestions(item: int, suggested: list[str]) -> None:
    selected_key = state.item_key(state.ANN_SELECTED, item)
    current = [name for name in st.session_state.get(selected_key, []) if name not in suggested]
    st.session_state[selected_key] = current + (suggested if st.session_state[state.ANN_SUGGEST] else [])
    pills_prefix = state.item_key(state.ANN_PILLS, item) + "."
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(pills_prefix)]:
        del st.session_state[key]  # redraw the pills from the new selection


def _record(store: Store, user: UserInfo, current: Claim, kind: str) -> None:
    item = current.queue_item_id
    labels = st.session_state.get(state.item_key(state.ANN_SELECTED, item), [])
    verdict = st.session_state.get(state.item_key(state.ANN_VERDICT, item))
    try:
        actions.annotate(store, user, item, kind=kind, labels=None if kind == "skip" else labels,
                         verdict=None if kind == "skip" else verdict,
                         comment=st.session_state.get(state.item_key(state.ANN_COMMENT, item)))
    except PairlabError as exc:
        runtime.flash(str(exc), "error")
        return
    st.session_state.pop(state.item_key(state.ANN_SELECTED, item), None)
    runtime.flash({"submit": "Submitted.", "skip": "Skipped.", "flag": "Flagged for review."}[kind])


def _undo_button(store: Store, user: UserInfo) -> None:
    st.button("Undo last", shortcut=SHORTCUT_UNDO, icon=":material/undo:", on_click=_undo, args=(store, user))


def _undo(store: Store, user: UserInfo) -> None:
    undone = actions.undo(store, user)
    if undone is None:
        runtime.flash("Nothing to undo.", "warning")
    else:
        kind, pair_id = undone
        runtime.flash(f"Undid your {kind} of pair {pair_id}; it is back in front of you.")
