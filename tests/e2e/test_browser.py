"""The workbench in a real headless Chromium against ``pairlab serve`` (DESIGN §7); the annotation widget's
own tests are in ``test_annotate_widget.py``."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.services.models import latest_model
from app.services.train import train_workspace
from storage.jobs import recent_jobs
from storage.models import Round
from tests.e2e.conftest import save_screenshot, serving, sign_in
from tests.integration.workbench_fixtures import FAST_TRAIN, PASSWORD, build_trainable, set_table

pytestmark = pytest.mark.browser


def test_operator_launches_a_round_and_watches_the_job_finish(served, page):
    base_url, store = served
    sign_in(page, base_url, "op")
    page.get_by_role("link", name="Rounds").click()
    page.get_by_role("heading", name="Rounds").wait_for()
    page.get_by_label("Budget (pairs)").fill("2")
    page.get_by_role("button", name="Launch round").click()
    page.get_by_text(re.compile(r"Job \d+ \(select\) finished\.")).wait_for(timeout=90_000)
    with store.db.read() as s:
        rounds = s.scalars(select(Round).order_by(Round.number)).all()
    assert [(r.number, r.budget) for r in rounds] == [(1, 4), (2, 2)]
    save_screenshot(page, "rounds")

    page.get_by_role("link", name="Export").click()
    page.get_by_role("heading", name="Export").wait_for()
    page.get_by_role("button", name="Export", exact=True).click()
    download = page.get_by_role("button", name=re.compile(r"Download pairlab-.*\.jsonl"))
    download.wait_for(timeout=30_000)
    save_screenshot(page, "export")
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename.endswith(".jsonl")
    assert len(list((store.root / "exports").glob("pairlab-*.jsonl"))) == 1


def test_annotator_cannot_open_operator_pages(served, page):
    base_url, _ = served
    # Straight to the page URL (a page load is a new, signed-out session): the sign-in form, nothing else.
    page.goto(f"{base_url}/rounds")
    page.get_by_label("User name").fill("bob")
    assert page.get_by_role("button", name="Launch round").count() == 0
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("You do not have access to this page.").wait_for()  # /rounds is not an annotator's page
    nav = page.get_by_test_id("stSidebarNav")
    assert nav.get_by_role("link", name="Annotate").count() == 1
    for name in ("Rounds", "Export", "Users", "Review"):
        assert nav.get_by_role("link", name=name).count() == 0
    # Signed in on the /rounds URL, the annotator still gets no operator page.
    assert page.get_by_role("heading", name="Rounds").count() == 0
    assert page.get_by_role("button", name="Launch round").count() == 0
    assert page.get_by_text("Signed in as bob (annotator)").count() == 1


def test_demo_serves_the_sample_signed_in_as_its_operator(demo, page):
    page.goto(demo)
    page.get_by_text("Signed in as demo (operator)").wait_for(timeout=30_000)
    page.get_by_role("heading", name="Rounds").wait_for()  # operators land on Rounds
    page.get_by_role("link", name="Annotate").click()
    page.get_by_role("heading", name="Annotate").wait_for()
    expect(page.get_by_test_id("stMetricValue").first).to_have_text("20")  # the demo's first round
    assert page.get_by_label("User name").count() == 0


def test_a_deep_link_survives_signing_in(served, page):
    base_url, _ = served
    page.goto(f"{base_url}/export")  # not the operator's landing page (Rounds)
    page.get_by_label("User name").fill("op")
    assert page.get_by_text("Page not found").count() == 0
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Export", exact=True).wait_for()
    assert page.get_by_text("Page not found").count() == 0
    assert page.url.endswith("/export")


def test_a_double_click_on_retrain_queues_one_job_and_cancel_stops_it_with_the_last_model_current(tmp_path, page):
    root = tmp_path / "ws"
    store = build_trainable(root)
    try:
        first = train_workspace(store)
        # a retrain that would run for many minutes: 2-step epochs, each one reporting progress
        set_table(root, "train", {**FAST_TRAIN, "epochs": 100_000, "max_steps": 10_000_000, "patience": 100_000})
        with serving(["serve", str(root)], root, tmp_path / "serve.log") as base_url:
            sign_in(page, base_url, "op", path="rounds")
            page.get_by_role("heading", name="Rounds").wait_for()
            page.get_by_role("button", name="Retrain").dblclick()
            page.get_by_text(re.compile(r"Job \d+ \(train\) running: ")).wait_for(timeout=60_000)
            page.get_by_role("button", name="Cancel job").click()
            page.get_by_text(re.compile(r"Job \d+ \(train\) cancelled\.")).wait_for(timeout=60_000)
        with store.db.read() as s:
            jobs = [(j.kind, j.status) for j in recent_jobs(s)]
        assert jobs == [("train", "cancelled")]                        # one job for the double click
        assert latest_model(store).version == first.version           # the last good model stays current
        assert latest_model(store).path == first.path
    finally:
        store.close()
