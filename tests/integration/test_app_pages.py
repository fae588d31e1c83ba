"""The workbench pages through Streamlit's AppTest, on a real SQLite workspace with real images."""
from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy
from PIL import Image
from sqlalchemy import select
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

import app
from app.jobs import launch as jobs
from app.services import annotate as actions
from app.services.annotate import Suggestion
from app.services.select import PREMARK_THRESHOLD_KEY, SUGGESTION_PROBABILITIES_KEY
from app.web.annotator import Action, Answer, parse_action
from app.web import state, widgets
from app.web.router import pages_for
from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
from app.jobs.worker import run_worker
from storage.annotations import current_label
from storage.errors import PairlabError, PermissionDenied
from storage.jobs import enqueue, get_job, recent_jobs
from storage.model_versions import add_model_version
from storage.models import Event, Pair, QueueItem, Round, utcnow
from storage.queue import SelectedPair, claim_next, create_round, submit
from tests.integration.workbench_fixtures import BOLD, PASSWORD, XSS, build_workspace, user

APP = str(Path(app.__file__).parent / "web" / "entrypoint" / "streamlit_app.py")
TIMEOUT = 30


@pytest.fixture()
def store(tmp_path, monkeypatch):
    store = build_workspace(tmp_path / "ws")
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    yield store
    store.close()


def _render_page(module_name: str) -> None:
    import importlib

    importlib.import_module(module_name).render()


def page(name: str, signed_in) -> AppTest:
    """One page's render function as an app, with ``signed_in`` (a UserInfo) in session state."""
    at = AppTest.from_function(_render_page, args=(f"app.web.pages.{name}",), default_timeout=TIMEOUT)
    at.session_state[state.USER] = signed_in  # as runtime.sign_in does
    at.session_state[state.SESSION_STARTED] = utcnow()
    return at.run()


def labelled(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def button(at: AppTest, label: str):
    return labelled(at.button, label)


def events(store, kind=None):
    with store.db.read() as s:
        query = select(Event).order_by(Event.id)
        return [e for e in s.scalars(query) if kind is None or e.kind == kind]


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


# --- sign-in and routing -------------------------------------------------------------------------

def test_login_refuses_a_bad_password_and_accepts_a_good_one(store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    at.text_input(key=state.LOGIN_NAME).input("ann")
    at.text_input(key=state.LOGIN_PASSWORD).input("wrong-password")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert "wrong password" in at.error[0].value
    assert state.USER not in at.session_state

    at.text_input(key=state.LOGIN_PASSWORD).input(PASSWORD)
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert at.session_state[state.USER].name == "ann"
    assert at.title[0].value == "Annotate"


def test_images_are_shown_upright_as_the_encoder_sees_them(tmp_path):
    """A photo stored sideways with an EXIF Orientation tag is shown upright, fitted and at full size."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    photo = tmp_path / "phone.jpg"
    Image.new("RGB", (1600, 900), (200, 30, 30)).save(photo, exif=exif)  # stored 1600 x 900, upright 900 x 1600
    fitted = Image.open(io.BytesIO(widgets.upright_jpeg(str(photo), widgets.FIT_BOX)))
    full = Image.open(io.BytesIO(widgets.upright_jpeg(str(photo))))
    assert fitted.size == (270, 480) and full.size == (900, 1600)


def test_router_shows_pages_by_role(store):
    assert [p.title for p in pages_for(None)] == ["Sign in"]
    assert [p.title for p in pages_for(user(store, "ann"))] == ["Annotate", "Explore"]
    assert [p.title for p in pages_for(user(store, "rev"))] == ["Annotate", "Review", "Clean-up", "Explore"]
    assert [p.title for p in pages_for(user(store, "op"))] == ["Annotate", "Review", "Clean-up", "Explore", "Rounds",
                                                               "Export", "Users"]


@pytest.mark.parametrize("name, landing", [("ann", "Annotate"), ("rev", "Review"), ("op", "Rounds")])
def test_each_role_lands_on_its_own_page_and_visitors_take_no_lease(store, name, landing):
    """Each role lands on its own page, and landing reserves no pair (not even an annotator's)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.USER] = user(store, name)
    at.session_state[state.SESSION_STARTED] = utcnow()
    at.run()
    assert not at.exception and at.title[0].value == landing
    with store.db.read() as s:
        leased = s.scalars(select(QueueItem.leased_by).where(QueueItem.leased_by.is_not(None))).all()
    assert leased == []


def test_a_double_click_on_retrain_or_encode_queues_one_job(store):
    op = user(store, "op")
    for launch in (jobs.launch_training, jobs.launch_encode):
        first, second = launch(store, op), launch(store, op)
        assert first.id == second.id
    assert jobs.launch_training(store, op, warm_start=True).id != first.id  # another request is another job
    with store.db.read() as s:
        assert sorted(j.kind for j in recent_jobs(s)) == ["encode", "train", "train"]


def test_rounds_cancels_the_job_it_watches(store):
    op = user(store, "op")
    job = jobs.launch_training(store, op)
    at = page("rounds", op)
    at.session_state[state.ROUNDS_JOB] = job.id
    at.run()
    button(at, "Cancel job").click().run()
    assert not at.exception
    with store.db.read() as s:
        assert get_job(s, job.id).status == "cancelled"
    assert "Cancel job" not in [b.label for b in at.button]
    assert at.warning[0].value == f"Job {job.id} (train) cancelled."
    with pytest.raises(PermissionDenied):
        jobs.cancel_job(store, user(store, "ann"), job.id)


@pytest.mark.parametrize("name", ["rounds", "export", "users", "review", "cleanup"])
def test_operator_pages_refuse_an_annotator_even_when_reached(store, name):
    at = page(name, user(store, "ann"))
    assert not at.exception
    assert "do not have access" in at.error[0].value
    assert not at.form_submit_button


def test_launch_checks_its_input(store):
    with pytest.raises(PairlabError, match="needs at least 2 assigned"):
        jobs.launch_selection(store, user(store, "op"), strategy="random", budget=1, assign=["ann"], overlap=2)
    with pytest.raises(PairlabError, match="strategy 'magic'"):
        jobs.launch_selection(store, user(store, "op"), strategy="magic", budget=1)


def test_operator_actions_refuse_a_non_operator_server_side(store):
    ann = user(store, "ann")
    with pytest.raises(PermissionDenied):
        jobs.launch_selection(store, ann, strategy="random", budget=1)
    with pytest.raises(PermissionDenied):
        jobs.launch_export(store, ann, fmt="jsonl")
    # A job row written behind the pages' back is refused by the handler itself.
    with store.db.write() as s:
        job = enqueue(s, "select", {"actor": "ann", "strategy": "random", "budget": 1})
    run_worker(store.root, once=True)
    with store.db.read() as s:
        done = get_job(s, job.id)
        rounds = s.scalars(select(Round)).all()
    assert done.status == "failed" and "may not operate" in done.message
    assert len(rounds) == 1


def test_auto_login_only_on_loopback(store, monkeypatch):
    from streamlit import config

    monkeypatch.setenv(AUTO_LOGIN_ENV, "op")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert state.USER not in at.session_state  # AppTest's server.address is unset: refused
    previous = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    finally:
        config.set_option("server.address", previous)
    assert not at.exception
    assert at.session_state[state.USER].name == "op"


# --- annotate ------------------------------------------------------------------------------------

@contextmanager
def counting_writes():
    """The statements that change the database (or take SQLite's write lock), on every engine, while inside."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"} or "IMMEDIATE" in statement:
            seen.append(statement)

    sqlalchemy.event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(Engine, "before_cursor_execute", record)


def leases(store) -> list[tuple[int, object]]:
    with store.db.read() as s:
        return list(s.execute(select(QueueItem.leased_by, QueueItem.lease_expires_at)
                              .where(QueueItem.leased_by.is_not(None), QueueItem.done_at.is_(None))))


@pytest.mark.parametrize("name", ["ann", "op"])
def test_annotate_claims_only_when_asked_and_a_rerun_writes_nothing(store, name):
    """Opening Annotate reserves nothing; "Start annotating" claims one pair, held in session state, so
    reruns without an action (and within the heartbeat period) make no database write."""
    at = page("annotate", user(store, name))
    assert not at.exception
    assert leases(store) == []
    assert at.metric[0].value == "4"  # waiting for them
    button(at, "Start annotating").click().run()
    assert not at.exception
    [(holder, _)] = leases(store)
    assert holder == user(store, name).id
    captions = [t for t in texts(at) if XSS in t]
    assert captions and BOLD in captions[0]
    assert not any(XSS in m.value or "alert(1)" in m.value for m in at.markdown)
    assert list(at.expander[0].dataframe[0].value["component"]) == ["strategy", "rank"]
    claim = at.session_state[state.ANN_CLAIM]
    with counting_writes() as writes:
        at.run()
        at.run()
    assert not at.exception and writes == []
    assert at.session_state[state.ANN_CLAIM].queue_item_id == claim.queue_item_id
    with counting_writes() as writes:  # a new session of the same person (a reload) shows that pair again
        again = page("annotate", user(store, name))
    assert not again.exception and writes == []
    assert again.session_state[state.ANN_CLAIM].queue_item_id == claim.queue_item_id


def test_the_heartbeat_renews_the_lease_once_its_period_has_passed(store):
    at = page("annotate", user(store, "ann"))
    button(at, "Start annotating").click().run()
    [(_, before)] = leases(store)
    at.session_state[state.ANN_RENEWED_AT] = time.monotonic() - 3600  # the last renewal is a period ago
    with counting_writes() as writes:
        at.run()
    assert not at.exception
    [(_, after)] = leases(store)
    assert after > before and [w.split()[0] for w in writes if not w.startswith("BEGIN")] == ["UPDATE"]


def test_empty_queue_says_so(tmp_path, monkeypatch):
    store = build_workspace(tmp_path / "ws", budget=0)
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    at = page("annotate", user(store, "ann"))
    button(at, "Start annotating").click().run()
    assert not at.exception
    assert "No pairs are waiting" in at.info[0].value
    assert button(at, "Look for new pairs") and button(at, "Undo last")


def test_suggestions_wait_for_a_good_enough_model_and_are_pre_marked_only_when_likely(tmp_path, monkeypatch):
    store = build_workspace(tmp_path / "ws", budget=0)
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    with store.db.write() as s:
        first, second = s.scalars(select(Pair.id).order_by(Pair.id)).all()[:2]
        create_round(s, strategy="ascmr", params={}, selected=[
            SelectedPair(first, 0.9, {SUGGESTION_PROBABILITIES_KEY: {"dog": 0.95, "not-a-label": 0.99, "cat": 0.6},
                                      PREMARK_THRESHOLD_KEY: 0.5}),
            SelectedPair(second, 0.8, {"suggested_labels": ["pizza"]})])  # a round from before probabilities
    with store.db.write() as s:
        held = claim_next(s, user(store, "ann").id, lease_minutes=5)
    vocabulary = ["cat", "dog", "person", "car", "bicycle", "pizza"]
    assert actions.suggestions(store, held, vocabulary) == []  # no model yet
    for version, validation_map in ((None, 0.49), (1, 0.5)):  # the default suggest_min_map is 0.5
        with store.db.write() as s:
            add_model_version(s, path="unused.pt", parent_version=version, labelled_count=5, config={},
                              metrics={"validation": {"i2t": validation_map, "t2i": validation_map, "avg": validation_map}})
        shown = actions.suggestions(store, held, vocabulary)
        assert shown == ([] if version is None else
                         [Suggestion("dog", 0.95, True), Suggestion("cat", 0.6, False)])  # premark_probability 0.9
    stricter = replace(held, explanation={**held.explanation, PREMARK_THRESHOLD_KEY: 0.96})  # calibrated above 0.9
    uncalibrated = replace(held, explanation={**held.explanation, PREMARK_THRESHOLD_KEY: None})  # too few validation labels
    for current in (stricter, uncalibrated):
        assert actions.suggestions(store, current, vocabulary) == [Suggestion("dog", 0.95, False),
                                                                   Suggestion("cat", 0.6, False)]
    old = replace(held, explanation={"suggested_labels": ["pizza", "zebra"]})
    assert actions.suggestions(store, old, vocabulary) == [Suggestion("pizza", None, False)]

    at = page("annotate", user(store, "ann"))  # ann holds the first pair: the page shows it again
    assert not at.exception
    assert at.session_state[state.ANN_CLAIM].queue_item_id == held.queue_item_id
    assert at.session_state[state.ANN_ANSWER].labels == ("dog",)  # what the widget starts from


def test_the_widget_payload_is_checked_before_it_reaches_the_store():
    good = {"kind": "submit", "token": "3:1", "queue_item_id": 3, "pair_id": 7, "labels": ["cat"],
            "verdict": "mismatch", "comment": "blurry"}
    assert parse_action(good) == Action("submit", "3:1", 3, 7, Answer(("cat",), "mismatch", "blurry"))
    for bad in ({**good, "kind": "delete"}, {**good, "pair_id": "7"}, {**good, "queue_item_id": True},
                {**good, "labels": "cat"}, {**good, "labels": [1]}, {**good, "verdict": "maybe"},
                {**good, "comment": None}, {k: v for k, v in good.items() if k != "token"}, ["submit"], None):
        assert parse_action(bad) is None


# --- review --------------------------------------------------------------------------------------

def test_reviewer_adjudicates_a_conflict(tmp_path, monkeypatch):
    store = build_workspace(tmp_path / "ws", budget=1, overlap=2)
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    for name, labels in (("ann", ["cat"]), ("bob", ["dog"])):
        uid = user(store, name).id
        with store.db.write() as s:
            claim = claim_next(s, uid, lease_minutes=5)
            submit(s, uid, claim.queue_item_id, labels=labels, verdict="match")
    at = page("review", user(store, "rev"))
    assert not at.exception
    assert at.subheader[0].value == "Waiting for review: 1"
    assert any(XSS in t for t in texts(at))
    at.multiselect[0].set_value(["dog"])
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert "adjudicated" in at.success[0].value
    [event] = events(store, "adjudicate")
    with store.db.read() as s:
        label = current_label(s, event.pair_id)
    assert label.status == "adjudicated" and label.labels == ("dog",)
    assert at.success[-1].value == "Nothing needs review."


# --- rounds, export, users -----------------------------------------------------------------------

def test_rounds_page_launches_selection_as_a_job(store):
    at = page("rounds", user(store, "op"))
    assert not at.exception
    at.number_input(key=state.ROUNDS_BUDGET).set_value(2)
    at.multiselect(key=state.ROUNDS_ASSIGN).set_value(["bob"])
    button(at, "Launch round").click().run()
    assert not at.exception
    with store.db.read() as s:
        [job] = [j for j in recent_jobs(s) if j.kind == "select"]
    assert job.status == "queued"
    assert job.params == {"actor": "op", "strategy": "random", "budget": 2, "assign": ["bob"], "overlap": 1, "seed": 0}
    assert at.session_state[state.ROUNDS_JOB] == job.id

    assert run_worker(store.root, once=True) == 1
    at.run()
    assert not at.exception
    assert f"Job {job.id} (select) finished." in [s.value for s in at.success]
    assert [row for row in at.dataframe[0].value["round"]] == [2, 1]

    warm = at.checkbox(key=state.ROUNDS_WARM_START)
    assert warm.value is False  # retraining from scratch is the workspace default
    assert warm.disabled  # no model version yet: nothing to warm-start from
    button(at, "Retrain").click().run()
    assert not at.exception
    with store.db.read() as s:
        [train] = [j for j in recent_jobs(s) if j.kind == "train"]
    assert train.status == "queued" and train.params == {"actor": "op", "warm_start": False}


def test_export_page_runs_an_export_job_and_offers_the_file(store):
    at = page("export", user(store, "op"))
    at.selectbox(key=state.EXPORT_FORMAT).set_value("jsonl")
    button(at, "Export").click().run()
    assert not at.exception
    assert not list((store.root / "exports").glob("*.jsonl"))
    assert run_worker(store.root, once=True) == 1
    at.run()
    assert not at.exception
    [download] = at.download_button
    assert download.label.startswith("Download pairlab-") and download.label.endswith(".jsonl")
    assert len(list((store.root / "exports").glob("*.jsonl"))) == 1
    assert not list((store.root / "exports").glob(".partial-*"))


def test_users_page_adds_a_user(store):
    at = page("users", user(store, "op"))
    at.text_input(key=state.USERS_NAME).input("cid")
    at.selectbox(key=state.USERS_ROLE).set_value("reviewer")
    at.text_input(key=state.USERS_PASSWORD).input("another-pass-9")
    at.text_input(key=state.USERS_PASSWORD_AGAIN).input("another-pass-9")
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert user(store, "cid").role == "reviewer"
    assert "cid" in list(at.dataframe[0].value["user"])


def test_explore_filters_by_status_and_round(store):
    uid = user(store, "ann").id
    with store.db.write() as s:
        claim = claim_next(s, uid, lease_minutes=5)
        submit(s, uid, claim.queue_item_id, labels=["pizza"], verdict="match")
    at = page("explore", user(store, "ann"))
    assert not at.exception
    assert "appears after the first trained model" in at.info[0].value
    assert "8 pairs match" in texts(at)[0]
    at.multiselect(key=state.EXPLORE_STATUS).set_value(["labelled"]).run()
    assert "1 pairs match" in texts(at)[0]
    assert list(at.dataframe[0].value["labels"]) == ["pizza"]
    at.multiselect(key=state.EXPLORE_STATUS).set_value([]).run()
    at.selectbox(key=state.EXPLORE_ROUND).set_value(1).run()
    assert "4 pairs match" in texts(at)[0]


def test_explore_pages_through_the_matches_in_sql(store, monkeypatch):
    from app.web.pages import explore

    monkeypatch.setattr(explore, "PAGE_ROWS", 3)
    at = page("explore", user(store, "ann"))
    assert "8 pairs match; showing 1-3" in texts(at)[0]
    first = list(at.dataframe[0].value["pair"])
    at.number_input(key=state.EXPLORE_PAGE).set_value(3).run()
    assert not at.exception
    assert "8 pairs match; showing 7-8" in texts(at)[0]
    last = list(at.dataframe[0].value["pair"])
    assert len(first) == 3 and len(last) == 2 and max(first) < min(last)
    at.selectbox(key=state.EXPLORE_ROUND).set_value(1).run()  # 4 matches: page 3 no longer exists
    assert not at.exception
    assert "4 pairs match; showing 4-4" in texts(at)[0]


def test_the_learning_curve_shows_its_first_point(store):
    """A line through one point draws nothing; the first model version is drawn as a dot, later ones as a line."""
    def chart_mark():
        at = page("rounds", user(store, "op"))
        assert not at.exception
        (chart,) = at.get("vega_lite_chart")
        spec = json.loads(chart.proto.spec)
        return (spec["layer"][0] if "layer" in spec else spec)["mark"]["type"]

    for version, labelled in ((None, 5), (1, 9)):
        with store.db.write() as s:
            add_model_version(s, path="unused.pt", parent_version=version, labelled_count=labelled, config={},
                              metrics={"validation": {"i2t": 0.3, "t2i": 0.4, "avg": 0.35}})
        assert chart_mark() == ("circle" if version is None else "line")
