"""Sign-in sessions in a real headless Chromium against ``pairlab serve``: a reload, a new tab and a deep link
keep the person signed in on the page they asked for; sign-out ends the session everywhere."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app.web.session_cookie import COOKIE
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser

REFUSED = "You do not have access to this page."


def _cookie(page) -> str | None:
    found = [c for c in page.context.cookies() if c["name"] == COOKIE]
    return found[0]["value"] if found else None


def test_reload_new_tab_and_deep_link_keep_the_operator_signed_in(served, page):
    base_url, _ = served
    sign_in(page, base_url, "op")
    page.get_by_role("heading", name="Rounds").wait_for()
    page.wait_for_function(f"document.cookie.includes('{COOKIE}=')")
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    page.get_by_role("link", name="Export").click()
    page.get_by_role("heading", name="Export", exact=True).wait_for()
    page.reload()  # a new Streamlit session: resumed from the cookie, on the same page
    page.get_by_role("heading", name="Export", exact=True).wait_for()
    assert page.url.endswith("/export")
    assert page.get_by_text("Signed in as op (operator)").count() == 1
    assert page.get_by_label("User name").count() == 0

    tab = page.context.new_page()  # a typed deep link in a new tab
    tab.goto(f"{base_url}/rounds")
    tab.get_by_role("heading", name="Rounds").wait_for()
    assert tab.get_by_role("button", name="Launch round").count() == 1
    assert tab.get_by_text("Page not found").count() == 0
    assert tab.get_by_label("User name").count() == 0

    # Sign-out in one tab revokes the session: the other tab is signed out at its next rerun, and the old
    # token signs nobody in again (even when a copy of it is sent back).
    token = _cookie(page)
    tab.get_by_role("button", name="Sign out").click()
    tab.get_by_label("User name").wait_for()
    tab.wait_for_function(f"!document.cookie.includes('{COOKIE}=')")
    page.get_by_role("link", name="Rounds").click()
    page.get_by_label("User name").wait_for()
    page.context.add_cookies([{"name": COOKIE, "value": token, "url": base_url}])
    page.goto(f"{base_url}/rounds")
    page.get_by_label("User name").wait_for()
    assert page.get_by_role("button", name="Launch round").count() == 0


def test_a_deep_link_to_an_operator_page_is_refused_for_an_annotator(served, page):
    base_url, _ = served
    sign_in(page, base_url, "bob")
    page.get_by_role("heading", name="Annotate").wait_for()
    page.wait_for_function(f"document.cookie.includes('{COOKIE}=')")
    page.goto(f"{base_url}/rounds")
    page.get_by_text(REFUSED).wait_for()
    assert page.get_by_text("Signed in as bob (annotator)").count() == 1
    assert page.get_by_role("heading", name="Rounds").count() == 0
    assert page.get_by_role("button", name="Launch round").count() == 0
    nav = page.get_by_test_id("stSidebarNav")
    assert nav.get_by_role("link", name="Rounds").count() == 0  # the refusal is routed, not listed


def test_reload_mid_pair_keeps_the_annotator_on_the_same_pair(served, page):
    base_url, _ = served
    sign_in(page, base_url, "ann")
    page.get_by_role("heading", name="Annotate").wait_for()
    page.wait_for_function(f"document.cookie.includes('{COOKIE}=')")
    page.get_by_role("button", name="Start annotating").click()
    caption = page.get_by_text(re.compile(r"^Photo \d+:")).first
    shown = caption.inner_text()
    page.reload()  # the pair ann holds is shown again, without "Start annotating"
    page.get_by_role("heading", name="Annotate").wait_for()
    expect(page.get_by_text(re.compile(r"^Photo \d+:")).first).to_have_text(shown)
    assert page.get_by_label("User name").count() == 0
