"""The client-side annotation widget: one Streamlit custom component (v2, ``st.components.v2.component``;
inline JS and CSS from ``assets/``, no iframe).

Labels, the label filter, the verdict and the comment live in the browser, so a toggle never waits
for the server. Each action sends one ``action`` trigger with the whole answer and the slot, pair and
screen token it was shown (``parse_action`` checks its shape); Python records it and mounts the widget
again with the next pair. ``data["token"]`` names one screen: the widget keeps what is typed while it
stays the same and starts over from ``data["answer"]`` when it changes. ``data["verification"]``: the slot
is in a verification round, so the verdict is asked first and a submit without one is refused in the
browser (and by ``storage.queue.submit``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app.services.annotate import Suggestion
from storage.models import VERDICTS
from storage.queue import Claim

ASSETS = Path(__file__).parent / "assets"
ACTIONS = ("submit", "skip", "flag", "undo")
DEFAULT_VERDICT = "match"  # pre-set in active rounds; a verification round starts with none chosen

_mount = st.components.v2.component(
    "pairlab_annotator",
    css=(ASSETS / "annotator.css").read_text(encoding="utf-8"),
    js=(ASSETS / "annotator.js").read_text(encoding="utf-8"),
)


@dataclass(frozen=True)
class Answer:
    """What a person marked for one pair. fresh: only the defaults (pre-marks), which an unsent draft
    the browser kept for this pair (``sessionStorage``, e.g. across a reload) replaces."""

    labels: tuple[str, ...] = ()
    verdict: str | None = DEFAULT_VERDICT
    comment: str = ""
    fresh: bool = False


@dataclass(frozen=True)
class Action:
    """One action from the widget: ``kind`` (submit, skip, flag, undo), the screen it came from
    (``token``, ``queue_item_id``, ``pair_id``) and the answer on screen at that moment."""

    kind: str
    token: str
    queue_item_id: int
    pair_id: int
    answer: Answer


def parse_action(payload: Any) -> Action | None:
    """The widget's trigger payload as an ``Action``, or None when it is not one (the browser is
    outside our control, so nothing malformed reaches the store)."""
    if not isinstance(payload, dict):
        return None
    kind, labels, verdict, comment = (payload.get(k) for k in ("kind", "labels", "verdict", "comment"))
    ids = payload.get("queue_item_id"), payload.get("pair_id")
    if (kind not in ACTIONS or not isinstance(payload.get("token"), str)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            or not isinstance(labels, list) or not all(isinstance(name, str) for name in labels)
            or (verdict is not None and verdict not in VERDICTS) or not isinstance(comment, str)):
        return None
    return Action(kind, payload["token"], ids[0], ids[1], Answer(tuple(labels), verdict, comment))


def screen_token(claim: Claim, revision: int) -> str:
    """Names one screen: the slot shown and how many times this session redrew the widget."""
    return f"{claim.queue_item_id}:{revision}"


def annotator(*, key: str, claim: Claim, revision: int, vocabulary: Sequence[str],
              suggestions: Sequence[Suggestion], answer: Answer, on_action: Callable[[], None]) -> None:
    """Mount the widget for ``claim``; ``on_action`` runs (as a callback, before the next script run)
    when the person acts; it reads the payload from ``st.session_state[key]["action"]``."""
    _mount(key=key, on_action_change=on_action, data={
        "token": screen_token(claim, revision),
        "queue_item_id": claim.queue_item_id,
        "pair_id": claim.pair_id,
        "verification": claim.verification,
        "labels": list(vocabulary),
        "suggestions": [asdict(s) for s in suggestions],
        "answer": {"labels": list(answer.labels), "verdict": answer.verdict, "comment": answer.comment,
                   "fresh": answer.fresh},
    })


def action_payload(key: str) -> Any:
    """The payload of the action that triggered this callback (None outside one)."""
    value = st.session_state.get(key)
    return value.get("action") if isinstance(value, dict) else None
