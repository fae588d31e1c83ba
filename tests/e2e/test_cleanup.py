"""Clean-up in a real headless Chromium against ``pairlab serve`` (issue 15): an operator sends the most
suspicious pairs of a real audit to verification, an annotator gives the caption verdict with the keyboard
(the widget refuses a submit without one), and the verdicts show on Clean-up."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.services.audit import run_audit
from app.services.train import train_workspace
from storage.audit import audit_page
from storage.models import Event, Pair, Round
from tests.e2e.conftest import require_chromium, save_screenshot, serving, sign_in
from storage.users import add_user
from tests.integration.workbench_fixtures import PASSWORD, build_trainable, user

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """``(base_url, store, top two pairs as (id, text))``: 8 real photos, encoded, trained and audited."""
    require_chromium()
    root = tmp_path_factory.mktemp("cleanup") / "ws"
    store = build_trainable(root, pool=8)
    with store.db.write() as s:
        add_user(s, "ann", "annotator", PASSWORD)
    train_workspace(store)
    run_id = run_audit(store, actor=user(store, "op"), show=0).run_id
    with store.db.read() as s:
        top = [(row.pair_id, row.text) for row in audit_page(s, run_id, limit=2)]
    try:
        with serving(["serve", str(root)], root, root.parent / "serve.log") as url:
            yield url, store, top
    finally:
        store.close()


def widget(page):
    return page.get_by_test_id("plAnnotator")


def test_operator_sends_pairs_to_verification_and_the_annotators_verdicts_show(audited, browser, page):
    base_url, store, top = audited
    page.goto(base_url)  # the server's first script run imports the learner: give it time on a loaded machine
    page.get_by_label("User name").wait_for(timeout=90_000)
    sign_in(page, base_url, "op")
    page.get_by_role("link", name="Clean-up").click()
    page.get_by_text("most likely mismatched first").wait_for()
    for rank in ("Rank 1", "Rank 2"):
        box = page.get_by_test_id("stCheckbox").filter(has_text=re.compile(rf"^{rank}$"))
        box.get_by_text(rank, exact=True).click()
        expect(box.get_by_role("checkbox")).to_be_checked()
    page.get_by_role("button", name="Send checked pairs to verification").click()
    page.get_by_text(re.compile(r"^Sent to verification: verification round 1: 2 pairs queued")).wait_for()
    with store.db.read() as s:
        assert s.scalar(select(Round.kind)) == "verification"

    annotator = browser.new_context(viewport={"width": 1400, "height": 1000})
    annotator.set_default_timeout(20_000)
    tab = annotator.new_page()
    try:
        sign_in(tab, base_url, "ann")
        tab.get_by_role("button", name="Start annotating").click()
        expect(widget(tab)).to_contain_text("Verification: does the caption match the image?")
        verdicts = {}
        for i, (verdict_key, verdict) in enumerate((("n", "mismatch"), ("m", "match"))):
            caption = tab.get_by_test_id("stText").filter(has_text=re.compile(r"^photo \d+$")).first
            text = caption.inner_text()
            expect(widget(tab)).not_to_have_class(re.compile("pl-busy"))  # started over for this pair
            expect(widget(tab).locator(".pl-status")).to_have_text("")
            tab.keyboard.press("Enter")  # no verdict chosen yet: refused in the browser, nothing sent
            expect(widget(tab).locator(".pl-status")).to_have_text(
                "Choose the verdict first: match (m), mismatch (n) or unsure (u).")
            tab.keyboard.press(verdict_key)
            tab.keyboard.press("Enter")
            verdicts[text] = verdict
            if i == 0:
                expect(caption).not_to_have_text(text)
        tab.get_by_text("No pairs are waiting for you").wait_for()
    finally:
        annotator.close()
    assert verdicts == {top[0][1]: "mismatch", top[1][1]: "match"}
    with store.db.read() as s:
        stored = s.execute(select(Pair.text, Event.kind, Event.labels, Event.verdict)
                           .join(Pair, Pair.id == Event.pair_id).where(Event.user_id == user(store, "ann").id)
                           .order_by(Event.id)).all()
    assert stored == [(top[0][1], "submit", None, "mismatch"), (top[1][1], "submit", None, "match")]

    page.reload()
    page.get_by_text("verdict: mismatch").wait_for()
    expect(page.get_by_text(re.compile(r"· verdict: match$"))).to_have_count(1)
    save_screenshot(page, "cleanup")
    page.get_by_role("radiogroup", name="Current verdict").get_by_role("radio", name="mismatch", exact=True).click()
    expect(page.get_by_test_id("stCheckbox")).to_have_count(1)
    expect(page.get_by_test_id("stCheckbox")).to_have_text("Rank 1")
