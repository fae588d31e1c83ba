"""Real-browser fixtures: ``pairlab serve`` on a free port and headless Debian Chromium through Playwright.

Without ``/usr/bin/chromium`` the browser tests are skipped, unless ``PAIRLAB_REQUIRE_BROWSER=1`` (CI),
which turns the skip into a failure. Playwright's own browser downloads are never used.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.workbench_fixtures import PASSWORD, build_workspace
from tests.support.servers import free_port, processes_mentioning, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
START_TIMEOUT = 60.0
# The demo's first run imports, encodes and trains before it serves.
DEMO_START_TIMEOUT = 300.0


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    if os.environ.get("PAIRLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PAIRLAB_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def serving(args: list[str], workspace: Path, log_path: Path, start_timeout: float = START_TIMEOUT):
    """Run ``python -m app.cli ARGS`` until the health endpoint answers; on exit SIGTERM it and check that
    nothing started for ``workspace`` (web server, worker) is left running."""
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args, "--port", str(port)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, start_timeout)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    leftovers = processes_mentioning(str(workspace)) + processes_mentioning(f"--server.port {port}")
    assert not leftovers, f"processes left running after pairlab stopped: {leftovers}"


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """``(base_url, store)``: a workspace with users and a queued round, served by ``pairlab serve``."""
    require_chromium()
    root = tmp_path_factory.mktemp("e2e") / "ws"
    store = build_workspace(root, pairs=10, budget=4)
    try:
        with serving(["serve", str(root)], root, root.parent / "serve.log") as url:
            yield url, store
    finally:
        store.close()


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The base URL of ``pairlab demo`` (bundled COCO sample, signed in automatically on 127.0.0.1)."""
    require_chromium()
    root = tmp_path_factory.mktemp("demo") / "ws"
    with serving(["demo", "--workspace", str(root)], root, root.parent / "demo.log", DEMO_START_TIMEOUT) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture()
def dialogs() -> list[str]:
    """Messages of any JavaScript dialog (``alert``) the page opened: data must never run as script."""
    return []


@pytest.fixture()
def page(browser, dialogs, request, tmp_path):
    """A fresh browser context (a new Streamlit session); a screenshot lands in the test's tmp folder on failure."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield tab
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        tab.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
    context.close()


def sign_in(page, base_url: str, name: str, *, path: str = "") -> None:
    page.goto(f"{base_url}/{path}")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()


def save_screenshot(page, name: str) -> None:
    """A good-path screenshot for the README walkthrough, refreshed only with ``PAIRLAB_SCREENSHOTS=1``
    (so a test run leaves the checkout clean)."""
    if os.environ.get("PAIRLAB_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let the last rerun paint
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
