"""Review: adjudicate pairs where annotators disagree, or that were flagged or marked mismatched; agreement."""
from __future__ import annotations

import math

import streamlit as st

from app.services import annotate as actions
from app.web import runtime, state, widgets
from storage import read_models
from storage.errors import PairlabError
from storage.models import VERDICTS
from storage.store import Store
from storage.users import UserInfo
from storage.vocabulary import label_names


def render() -> None:
    user = runtime.require_page("review")
    store = runtime.get_store()
    st.title("Review")
    runtime.show_flash()
    _agreement(store)
    items = runtime.read(read_models.review_queue)
    st.subheader(f"Waiting for review: {len(items)}")
    if not items:
        st.success("Nothing needs review.")
        return
    by_id = {item.pair_id: item for item in items}
    pair_id = st.selectbox("Pair", list(by_id), key=state.REVIEW_PAIR,
                           format_func=lambda pid: f"pair {pid}: {', '.join(by_id[pid].reasons)}")
    item = by_id.get(pair_id) or items[0]
    picture, decision = st.columns([3, 2], gap="large")
    with picture:
        widgets.pair_image(item.image_path, key=state.item_key("review.zoom", item.pair_id))
        st.subheader("Caption")
        st.text(item.text)
        st.subheader("Annotations")
        votes = runtime.read(read_models.pair_votes, item.pair_id)
        st.dataframe([{"annotator": v.user, "kind": v.kind, "labels": ", ".join(v.labels or ()),
                       "verdict": v.verdict or "", "comment": v.comment or "",
                       "when (UTC)": v.created_at.strftime("%Y-%m-%d %H:%M")} for v in votes],
                     hide_index=True, width="stretch")
    with decision:
        _adjudicate_form(store, user, item)


def _adjudicate_form(store: Store, user: UserInfo, item: read_models.ReviewItem) -> None:
    vocabulary = runtime.read(label_names)
    with st.form(state.item_key("review.form", item.pair_id)):
        consensus = [name for name in (item.label.labels or ()) if name in vocabulary]
        labels = st.multiselect("Final labels", vocabulary, default=consensus,
                                key=state.item_key(state.REVIEW_LABELS, item.pair_id))
        verdict = st.segmented_control("Caption verdict", VERDICTS, default=item.label.verdict or "match",
                                       key=state.item_key(state.REVIEW_VERDICT, item.pair_id))
        comment = st.text_input("Comment (optional)", key=state.item_key(state.REVIEW_COMMENT, item.pair_id))
        submitted = st.form_submit_button("Adjudicate", type="primary")
    if submitted:
        try:
            actions.adjudicate(store, user, item.pair_id, labels=labels, verdict=verdict, comment=comment)
        except PairlabError as exc:
            st.error(str(exc))
            return
        runtime.flash(f"Pair {item.pair_id} adjudicated.")
        st.rerun()


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _agreement(store: Store) -> None:
    summary = runtime.read(read_models.agreement_summary)
    cols = st.columns(3)
    cols[0].metric("Pairs with overlapping annotators", summary.pairs)
    cols[1].metric("Mean label alpha", _fmt(summary.mean_label_alpha),
                   help="Krippendorff's alpha per label (present/absent), averaged over labels with variation")
    cols[2].metric("Caption verdict alpha", _fmt(summary.verdict_alpha))
    scored = [a for a in summary.labels if not math.isnan(a.alpha)]
    if scored:
        with st.expander("Agreement per label"):
            st.dataframe([{"label": a.label, "alpha": round(a.alpha, 3), "pairs": a.units, "marked": a.positives}
                          for a in scored], hide_index=True, width="stretch")
