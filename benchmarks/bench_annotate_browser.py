"""Benchmark the Annotate screen in a real browser (Playwright + Debian Chromium), 80-label vocabulary.

    .venv/bin/python benchmarks/bench_annotate_browser.py --pairs 20 --toggles 40 --switches 8
    .venv/bin/python benchmarks/bench_annotate_browser.py --baseline-repo /path/to/older/checkout

Serves a fresh workspace (the bundled COCO sample, its 80 categories as the vocabulary, one random
round) with ``pairlab serve`` and measures, as one annotator:

- label toggle: a click on a label pill until the pill shows it is marked and a frame is painted,
  timed inside the page (``performance.now``), so no Playwright round trip is counted;
- submit -> next image: Enter (Alt+A for the baseline) until the next pair's caption is shown and
  its image is decoded (and, for the widget, until it has the new pair and takes keys: submit_ready);
- page switch: a sidebar click, Annotate -> Explore and back, until the page's heading (and on
  Annotate the widget) is shown.

With ``--baseline-repo`` the same is measured, in the same process, against another checkout's
server (e.g. the commit before the widget, whose pills were a server round trip) and the ratios
are printed. Prints medians and p90 in milliseconds and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "app" / "sample" / "coco"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PASSWORD = "bench-password-7"
CAPTION = re.compile(r"^Photo \d+:")

# Times a click on the pill named `label` inside the page: synchronous handlers, then two frames (painted).
TOGGLE_JS = """async (label) => {
  const find = () => {
    for (const host of [document, ...[...document.querySelectorAll('*')].filter(e => e.shadowRoot).map(e => e.shadowRoot)]) {
      const b = host.querySelector(`.pl-pills button[aria-label="${label}"]`);
      if (b) return b;
    }
    return null;
  };
  const button = find();
  const before = button.getAttribute('aria-pressed');
  const t0 = performance.now();
  button.click();
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const changed = find().getAttribute('aria-pressed') !== before;
  return changed ? performance.now() - t0 : null;
}"""

# Times a click on a (server-side) st.pills option until the "Marked:" line names it: the old design.
BASELINE_TOGGLE_JS = """async (label) => {
  const button = [...document.querySelectorAll('[data-testid="stButtonGroup"] button')].find(b => b.innerText.trim() === label);
  const marked = () => [...document.querySelectorAll('[data-testid="stText"]')].some(t => t.innerText.startsWith('Marked:') && t.innerText.includes(label));
  const wanted = !marked();
  const t0 = performance.now();
  button.click();
  while (marked() !== wanted) {
    if (performance.now() - t0 > 10000) return null; // the click landed on a pill being redrawn: a miss
    await new Promise(r => requestAnimationFrame(r));
  }
  return performance.now() - t0;
}"""

NEXT_IMAGE_JS = """(previous) => {
  const caption = [...document.querySelectorAll('[data-testid="stText"]')].map(t => t.innerText).find(t => /^Photo \\d+:/.test(t));
  const img = document.querySelector('[data-testid="stImage"] img, [data-testid="stImageContainer"] img');
  return caption !== undefined && caption !== previous && img !== null && img.complete && img.naturalWidth > 0;
}"""


WIDGET_READY_JS = """() => {
  for (const host of [document, ...[...document.querySelectorAll('*')].filter(e => e.shadowRoot).map(e => e.shadowRoot)]) {
    const root = host.querySelector('[data-testid="plAnnotator"]');
    if (root) return !root.classList.contains('pl-busy');
  }
  return false;
}"""


def build_workspace(root: Path, pairs: int) -> None:
    """The bundled COCO sample's first ``pairs`` images with their first caption, the 80 COCO categories
    as the vocabulary, users ``ann`` (annotator) and ``op`` (operator) and one random round of all pairs."""
    from app.services.select import run_selection
    from storage.importers import import_source
    from storage.store import init_workspace
    from storage.users import add_user, get_user

    instances = json.loads((SAMPLE / "annotations" / "instances_val2017.json").read_text())
    labels = [c["name"] for c in instances["categories"]]
    store = init_workspace(root, labels=labels)
    images = sorted((SAMPLE / "val2017").glob("*.jpg"))[:pairs]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "image": str(img), "text": f"Photo {i}: a sample picture"})
                                + "\n" for i, img in enumerate(images)), encoding="utf-8")
    import_source(store, manifest, "manifest", allow_absolute=True)
    with store.db.write() as s:
        add_user(s, "ann", "annotator", PASSWORD)
        add_user(s, "op", "operator", PASSWORD)
    with store.db.read() as s:
        operator = get_user(s, "op")
    run_selection(store, strategy="random", budget=len(images), actor=operator)
    store.close()


@contextmanager
def serve(repo: Path, workspace: Path, log: Path):
    from tests.support.servers import free_port, wait_healthy

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", str(workspace), "--port", str(port)],
                                cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, 90)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def caption(page) -> str:
    return page.get_by_test_id("stText").filter(has_text=CAPTION).first.inner_text()


def measure(browser, url: str, *, widget: bool, pairs: int, toggles: int, switches: int) -> dict[str, list[float]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(url)
    page.get_by_label("User name").fill("ann")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Annotate").wait_for()
    if widget:
        page.get_by_role("button", name="Start annotating").click()
        page.get_by_test_id("plAnnotator").wait_for()
    else:
        page.get_by_test_id("stButtonGroup").first.wait_for()
    page.get_by_test_id("stText").filter(has_text=CAPTION).first.wait_for()
    page.wait_for_timeout(500)
    names = ["person", "dog", "cat", "car", "pizza", "umbrella", "toothbrush", "zebra"]
    toggle_ms, misses = [], 0
    for i in range(toggles):
        value = page.evaluate(TOGGLE_JS if widget else BASELINE_TOGGLE_JS, names[i % len(names)])
        if value is None:
            misses += 1
        else:
            toggle_ms.append(value)
        page.wait_for_timeout(100 if widget else 400)  # let a server-side redraw settle before the next click
    if misses:
        print(f"{'widget' if widget else 'baseline'}: {misses} of {toggles} toggles not seen", file=sys.stderr)
    submit_ms, ready_ms = [], []
    for _ in range(pairs - 1):
        shown = caption(page)
        started = time.perf_counter()
        page.keyboard.press("Enter" if widget else "Alt+A")
        page.wait_for_function(NEXT_IMAGE_JS, arg=shown, polling="raf")
        submit_ms.append((time.perf_counter() - started) * 1000)
        if widget:  # the widget has the new pair and takes keys again
            page.wait_for_function(WIDGET_READY_JS, polling="raf")
            ready_ms.append((time.perf_counter() - started) * 1000)
        page.wait_for_timeout(200)  # a person looks at the pair before the next key
    switch_ms = []
    for _ in range(switches):
        for target in ("Explore", "Annotate"):
            started = time.perf_counter()
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=target).click()
            page.get_by_role("heading", name=target, exact=True).wait_for()
            if target == "Annotate" and widget:
                page.get_by_test_id("plAnnotator").wait_for()
            switch_ms.append((time.perf_counter() - started) * 1000)
            page.wait_for_timeout(200)
    context.close()
    figures = {"toggle": toggle_ms, "submit_next": submit_ms, "page_switch": switch_ms}
    return figures | ({"submit_ready": ready_ms} if widget else {})


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values):.1f} ms, p90 {p90:.1f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs to submit (one round of this many)")
    parser.add_argument("--toggles", type=int, default=40)
    parser.add_argument("--switches", type=int, default=8, help="round trips Annotate -> Explore -> Annotate")
    parser.add_argument("--baseline-repo", type=Path, help="another checkout to measure the same way (old design)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    runs = [("widget", REPO, True)] + ([("baseline", args.baseline_repo.resolve(), False)] if args.baseline_repo else [])
    results = {}
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, repo, widget in runs:
            workspace = Path(folder) / name / "ws"
            build_workspace(workspace, args.pairs)
            if not widget:  # an older checkout does not know the [annotation] keys added with the widget
                config = workspace / "pairlab.toml"
                config.write_text(re.sub(r"(?m)^(suggest_min_map|premark_probability) = .*\n", "", config.read_text()))
            with serve(repo, workspace, Path(folder) / f"{name}.log") as url:
                results[name] = measure(browser, url, widget=widget, pairs=args.pairs, toggles=args.toggles,
                                        switches=args.switches)
        browser.close()
    print(f"load average {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores; 80 labels, {args.pairs} pairs")
    for name, figures in results.items():
        for metric, values in figures.items():
            print(f"{name:8s} {metric:12s} {summary(values)}")
    if "baseline" in results:
        for metric in results["baseline"]:
            new, old = results["widget"][metric], results["baseline"][metric]
            if new and old:
                print(f"ratio    {metric:12s} baseline / widget = {statistics.median(old) / statistics.median(new):.1f}x")


if __name__ == "__main__":
    main()
