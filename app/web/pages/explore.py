"""Explore: a retrieval playground (text -> top images, pair -> top texts) with the latest model, and
browsing of pairs by label, status, round and split."""
from __future__ import annotations

import streamlit as st

from app.services.retrieval import images_for_text, texts_for_pair
from app.web import runtime, state, widgets
from storage import read_models
from storage.model_versions import latest_version_number
from storage.errors import PairlabError
from storage.models import SPLITS
from storage.vocabulary import label_names

PAGE_ROWS = 200
SEARCH_HITS = 8
SEARCH_COLUMNS = 4


def render() -> None:
    runtime.require_page("annotate")
    store = runtime.get_store()
    st.title("Explore")
    _search_images(store, runtime.read(latest_version_number))
    st.subheader("Browse pairs")
    cols = st.columns(4)
    labels = cols[0].multiselect("Any of these labels", runtime.read(label_names), key=state.EXPLORE_LABELS)
    statuses = cols[1].multiselect("Status", read_models.STATUSES, key=state.EXPLORE_STATUS)
    round_number = cols[2].selectbox("Round", [None, *runtime.read(read_models.round_numbers)], key=state.EXPLORE_ROUND,
                                     format_func=lambda n: "any" if n is None else f"round {n}")
    split = cols[3].selectbox("Split", [None, *SPLITS], key=state.EXPLORE_SPLIT,
                              format_func=lambda s: "any" if s is None else s)
    def browse(page: int):
        return runtime.read(read_models.browse_pairs, labels=labels, statuses=statuses, round_number=round_number,
                            split=split, limit=PAGE_ROWS, offset=(page - 1) * PAGE_ROWS)

    page = int(st.session_state.get(state.EXPLORE_PAGE, 1))
    rows, total = browse(page)
    pages = max(1, -(-total // PAGE_ROWS))
    if page > pages:  # the filters changed under a later page
        page = st.session_state[state.EXPLORE_PAGE] = pages
        rows, total = browse(page)
    if pages > 1:
        st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=state.EXPLORE_PAGE)
    first = (page - 1) * PAGE_ROWS
    st.text(f"{total} pairs match" + (f"; showing {first + 1}-{first + len(rows)}" if total > PAGE_ROWS else ""))
    if not rows:
        return
    st.dataframe([{"pair": r.pair_id, "id": r.external_id, "caption": r.text, "split": r.split,
                   "status": r.status, "labels": ", ".join(r.labels) if r.labels is not None else "",
                   "verdict": r.verdict or "", "rounds": ", ".join(map(str, r.rounds))} for r in rows],
                 hide_index=True, width="stretch")
    by_id = {r.pair_id: r for r in rows}
    chosen = st.selectbox("Show pair", list(by_id), key=state.EXPLORE_PAIR, format_func=lambda pid: f"pair {pid}")
    if chosen in by_id:
        row = by_id[chosen]
        picture, text = st.columns([3, 2], gap="large")
        with picture:
            widgets.pair_image(row.image_path, key=state.item_key("explore.zoom", row.pair_id))
        with text:
            st.text(row.text)
            st.text(f"Status: {row.status}; labels: {', '.join(row.labels) if row.labels else 'none'}")
        _top_texts(store, row.pair_id)


def _search_images(store, model_version: int | None) -> None:
    if model_version is None:
        st.info("Retrieval (type text to see the top images; pick a pair and turn on its top texts) appears "
                "after the first trained model.")
        return
    st.subheader(f"Search images by text (model v{model_version})")
    query = st.text_input("Describe the image", key=state.EXPLORE_QUERY)
    if not query.strip():
        return
    found = _search(images_for_text, store, query)
    if found is None:
        return
    hits, pairs = found
    for start in range(0, len(hits), SEARCH_COLUMNS):
        for column, hit in zip(st.columns(SEARCH_COLUMNS), hits[start:start + SEARCH_COLUMNS]):
            with column:
                widgets.thumbnail(pairs[hit.pair_id].image_path)
                st.text(f"pair {hit.pair_id} · {hit.score:.3f}")


def _top_texts(store, pair_id: int) -> None:
    """The shown pair's top texts, once asked for: each new pair is a pass over every pair's text
    embedding (about a second at 1M pairs), which a page that only browses should not wait for."""
    if runtime.read(latest_version_number) is None:
        return
    if not st.toggle("Top texts for this image", key=state.EXPLORE_TOP_TEXTS,
                     help="The workspace's texts nearest to this image under the latest model, best first."):
        return
    found = _search(texts_for_pair, store, pair_id)
    if found is None:
        return
    hits, pairs = found
    st.dataframe([{"pair": h.pair_id, "score": round(h.score, 4), "text": pairs[h.pair_id].text,
                   "own caption": h.pair_id == pair_id} for h in hits], hide_index=True, width="stretch")


def _search(service, store, query):
    """``service(store, query, k=SEARCH_HITS)`` and the hit pairs' captions and images, or None after
    showing the service's one-line error (e.g. features changed since the model)."""
    try:
        hits = service(store, query, k=SEARCH_HITS)
    except PairlabError as exc:
        st.warning(str(exc))
        return None
    return hits, runtime.read(read_models.pairs_by_id, [h.pair_id for h in hits])
