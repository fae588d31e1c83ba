"""The annotation widget in a real headless Chromium against ``pairlab serve`` (issue 12): keyboard-only
and mouse-only answers land in the store exactly, undo brings an answer back, a stale tab is refused,
visiting Annotate reserves nothing, and a closed tab's lease expires."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from storage.models import Event, Pair, QueueItem, utcnow
from tests.e2e.conftest import require_chromium, save_screenshot, serving, sign_in
from tests.integration.workbench_fixtures import BOLD, XSS, build_workspace, user

pytestmark = pytest.mark.browser

LEASE_MINUTES = 0.1  # 6 s, so a closed tab's lease runs out within the test; the heartbeat renews every 2 s
LEASE_SECONDS = LEASE_MINUTES * 60


@pytest.fixture(scope="module")
def annotating(tmp_path_factory):
    """``(base_url, store)``: 24 queued pairs and a short lease, served by ``pairlab serve``."""
    require_chromium()
    root = tmp_path_factory.mktemp("widget") / "ws"
    store = build_workspace(root, pairs=24, budget=24)
    config = root / "pairlab.toml"
    config.write_text(re.sub(r"lease_minutes = [0-9.]+", f"lease_minutes = {LEASE_MINUTES}", config.read_text()))
    try:
        with serving(["serve", str(root)], root, root.parent / "serve.log") as url:
            yield url, store
    finally:
        store.close()


def widget(page):
    return page.get_by_test_id("plAnnotator")


def start(page) -> None:
    page.get_by_role("link", name="Annotate").click()
    page.get_by_role("button", name="Start annotating").click()
    widget(page).wait_for()


def shown_pair(page) -> str:
    """The external id of the pair on screen, from its caption ("Photo N: ...")."""
    caption = page.get_by_test_id("stText").filter(has_text=re.compile(r"^Photo \d+:")).first
    return "p" + re.match(r"Photo (\d+):", caption.inner_text()).group(1)


def wait_for_next(page, previous: str) -> str:
    """Wait until another pair than ``previous`` is on screen and the widget has started over for it."""
    expect(page.get_by_test_id("stText").filter(has_text=re.compile(r"^Photo \d+:")).first) \
        .not_to_have_text(re.compile(rf"^Photo {previous[1:]}:"))
    expect(widget(page)).not_to_have_class(re.compile("pl-busy"))
    return shown_pair(page)


def pill(page, label: str):
    return widget(page).locator(".pl-pills").get_by_role("button", name=label, exact=True)


def answers(store, name: str) -> list[tuple]:
    """(pair external id, kind, labels, verdict, comment) of every event ``name`` wrote, in order."""
    uid = user(store, name).id
    with store.db.read() as s:
        rows = s.execute(select(Pair.external_id, Event.kind, Event.labels, Event.verdict, Event.comment)
                         .join(Pair, Pair.id == Event.pair_id).where(Event.user_id == uid).order_by(Event.id))
        return [tuple(r) for r in rows]


def test_keyboard_and_mouse_answers_are_stored_exactly_and_undo_brings_one_back(annotating, page, dialogs):
    base_url, store = annotating
    sign_in(page, base_url, "ann")
    start(page)
    # The caption is shown literally: no script ran, no Markdown bold was rendered.
    caption = page.get_by_test_id("stText").filter(has_text=XSS).first
    assert BOLD in caption.inner_text() and page.locator("strong", has_text="bold").count() == 0
    expected = []

    # Five pairs with the keyboard only: digits, a verdict letter, the comment, Enter.
    current = shown_pair(page)
    for i in range(5):
        keys = {0: "1", 1: "12", 2: "3", 3: "", 4: "56"}[i]  # 1 cat 2 dog 3 person 5 bicycle 6 pizza
        for key in keys:
            page.keyboard.press(key)
        labels = sorted({"1": "cat", "2": "dog", "3": "person", "5": "bicycle", "6": "pizza"}[k] for k in keys)
        verdict_key = "mnu"[i % 3]
        page.keyboard.press(verdict_key)
        if i == 0:  # the filter narrows as you type; Enter in it toggles the first match, Esc leaves it
            page.keyboard.press("/")
            page.keyboard.type("piz")
            expect(widget(page).locator(".pl-pills button")).to_have_count(1)
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            labels = sorted([*labels, "pizza"])
        expect(widget(page).locator(".pl-marked")).to_have_text(
            "Marked: " + (", ".join(n for n in ["cat", "dog", "person", "car", "bicycle", "pizza"] if n in labels)
                          or "none (submitting means no label applies)"))
        page.keyboard.press("c")
        page.keyboard.type(f"typed {i} <b>x</b>")
        page.keyboard.press("Enter")  # straight from the comment field: nothing typed is lost
        expected.append((current, "submit", labels, {"m": "match", "n": "mismatch", "u": "unsure"}[verdict_key],
                         f"typed {i} <b>x</b>"))
        current = wait_for_next(page, current)
    save_screenshot(page, "annotate")

    # Five pairs with the mouse only (the comment is typed, as there is no other way to write one).
    for i in range(5):
        labels = ["car", "dog"] if i % 2 else ["cat"]
        for label in labels:
            pill(page, label).click()
        verdict = ["mismatch", "unsure", "match"][i % 3]
        widget(page).get_by_role("button", name=verdict, exact=True).click()
        comment = widget(page).get_by_label("Comment (optional)")
        comment.click()
        comment.fill(f"clicked {i}")
        widget(page).get_by_role("button", name="Submit", exact=True).click()
        expected.append((current, "submit", sorted(labels), verdict, f"clicked {i}"))
        current = wait_for_next(page, current)

    assert answers(store, "ann") == expected
    assert dialogs == []

    # Ctrl+Z brings the last pair back with its answer on screen; Enter records it again.
    page.keyboard.press("Control+z")
    page.get_by_text(re.compile("Undid your submit of pair")).wait_for()
    assert wait_for_next(page, current) == expected[-1][0]
    expect(widget(page).locator(".pl-marked")).to_have_text("Marked: " + ", ".join(expected[-1][2]))
    expect(widget(page).get_by_label("Comment (optional)")).to_have_value(expected[-1][4])
    expect(widget(page).get_by_role("button", name=expected[-1][3], exact=True)).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("Enter")
    wait_for_next(page, expected[-1][0])
    events = answers(store, "ann")
    assert events[:10] == expected and events[10][1] == "undo" and events[11] == expected[-1]


def test_a_stale_tab_is_refused_with_a_message_and_records_nothing_for_the_other_pair(annotating, page):
    base_url, store = annotating
    tab_a, tab_b = page, page.context.new_page()
    sign_in(tab_a, base_url, "bob")
    start(tab_a)
    first = shown_pair(tab_a)
    tab_b.goto(base_url)  # the same browser: signed in by the session cookie
    tab_b.get_by_text("Signed in as bob").wait_for()
    tab_b.get_by_role("link", name="Annotate").click()
    widget(tab_b).wait_for()  # no Start needed: bob holds a pair, which tab B shows too
    assert shown_pair(tab_b) == first

    tab_a.keyboard.press("1")
    tab_a.keyboard.press("Enter")
    tab_a.get_by_text("Submitted.").wait_for()
    second = wait_for_next(tab_a, first)

    tab_b.bring_to_front()
    tab_b.keyboard.press("2")
    tab_b.keyboard.press("c")
    tab_b.keyboard.type("from tab B")
    tab_b.keyboard.press("Enter")
    refusal = tab_b.get_by_text(re.compile(r"^Not recorded: this pair was already answered by you"))
    refusal.wait_for()
    assert "labels dog" in refusal.inner_text() and "from tab B" in refusal.inner_text()  # the answer is kept
    assert wait_for_next(tab_b, first) == second  # B now shows the pair bob holds, and starts it afresh
    expect(widget(tab_b).locator(".pl-marked")).to_have_text("Marked: none (submitting means no label applies)")
    assert answers(store, "bob") == [(first, "submit", ["cat"], "match", None)]
    tab_b.close()


def test_a_reload_brings_back_the_same_pair_with_the_unsent_marks_and_comment(annotating, page):
    base_url, store = annotating
    sign_in(page, base_url, "rev")
    start(page)
    shown = shown_pair(page)
    page.keyboard.press("2")
    page.keyboard.press("u")
    page.keyboard.press("c")
    page.keyboard.type("before the reload")
    page.reload()
    page.get_by_text("Signed in as rev").wait_for()  # the session cookie keeps rev signed in
    page.get_by_role("link", name="Annotate").click()  # (the link keeps the focus: keys must still work)
    start_button = page.get_by_role("button", name="Start annotating")
    start_button.or_(widget(page)).wait_for()
    if start_button.count():  # the 6 s lease ran out during the reload: the same slot is the first free one
        start_button.click()
    widget(page).wait_for()
    assert shown_pair(page) == shown
    expect(widget(page).locator(".pl-marked")).to_have_text("Marked: dog")
    expect(widget(page).get_by_label("Comment (optional)")).to_have_value("before the reload")
    page.keyboard.press("Enter")
    wait_for_next(page, shown)
    assert answers(store, "rev") == [(shown, "submit", ["dog"], "unsure", "before the reload")]


def _lease_of(store, name: str):
    uid = user(store, name).id
    with store.db.read() as s:
        return s.scalar(select(QueueItem.lease_expires_at).where(QueueItem.leased_by == uid,
                                                                 QueueItem.done_at.is_(None)))


def test_visiting_annotate_reserves_nothing_and_a_closed_tab_lets_its_lease_expire(annotating, browser):
    base_url, store = annotating
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    sign_in(tab, base_url, "op")
    tab.get_by_role("link", name="Annotate").click()
    tab.get_by_role("button", name="Start annotating").wait_for()
    tab.wait_for_timeout(500)
    assert _lease_of(store, "op") is None  # an operator looking at Annotate holds no pair
    tab.get_by_role("button", name="Start annotating").click()
    widget(tab).wait_for()
    claimed = _lease_of(store, "op")
    assert claimed is not None
    tab.wait_for_timeout(1500 * LEASE_SECONDS)  # longer than the lease: the open screen's heartbeat keeps it
    held = _lease_of(store, "op")
    assert held is not None and held > claimed and held > utcnow()
    context.close()
    deadline = time.monotonic() + 3 * LEASE_SECONDS
    while time.monotonic() < deadline and _lease_of(store, "op") > utcnow():
        time.sleep(0.5)
    assert _lease_of(store, "op") < utcnow()  # nobody renews a closed tab's lease
