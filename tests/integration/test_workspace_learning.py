"""The learner wired to a workspace (encode, train, evaluate, select, retrieval), on the COCO sample
bundled for the demo: real images through EfficientNet-Lite0 and real captions through TF-IDF."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from app import jobs, queries, runtime, services, state
from app.demo import DEMO_FIRST_BUDGET, DEMO_OPERATOR, build_demo_workspace
from app.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
from storage.errors import InputError, PairlabError
from storage.jobs import recent_jobs
from storage.models import Job, ModelVersion, Round, utcnow
from storage.store import open_store
from storage.users import get_user
from storage.workspace import CONFIG_NAME, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = build_demo_workspace(tmp_path_factory.mktemp("learning") / "ws")
    yield store
    store.close()


def operator(store):
    with store.db.read() as s:
        return get_user(s, DEMO_OPERATOR)


def test_demo_build_encodes_trains_and_selects_a_first_ascmr_round(store):
    info = services.latest_model(store)
    assert info.version == 1 and info.labelled_count > 0
    assert set(info.metrics["test"]) >= {"i2t", "t2i", "avg"}
    with store.db.read() as s:
        rnd = s.scalar(select(Round))
        assert rnd.strategy == "ascmr" and rnd.params["selected_by"] == "ascmr"
        explanations = [sel.explanation for sel in rnd.selections]
    assert len(explanations) == DEMO_FIRST_BUDGET
    for why in explanations:  # the "why selected" breakdown of DESIGN §5 step 5
        assert {"informativeness", "density", "cluster", "rank", "score", "match_probability",
                "disagreement", "entropy_image", "entropy_text"} <= set(why)
        assert "index" not in why and len(why["suggested_labels"]) <= services.MAX_SUGGESTIONS


def test_evaluate_reports_both_directions_on_the_test_split(store):
    metrics = services.evaluate_workspace(store, split="test")
    assert metrics["model_version"] == 1 and metrics["pairs"] > 10
    for key in ("i2t", "t2i", "avg", "i2t@50", "t2i@50"):
        assert 0.0 < metrics[key] <= 1.0
    assert metrics["avg"] == pytest.approx((metrics["i2t"] + metrics["t2i"]) / 2)


def test_text_search_finds_the_images_it_describes(store):
    hits = services.images_for_text(store, "two giraffes standing in a field", k=3)
    texts = queries.pairs_by_id(store, [h.pair_id for h in hits])
    assert "giraffe" in texts[hits[0].pair_id].text.lower()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with pytest.raises(PairlabError, match="empty text"):
        services.images_for_text(store, "   ")


def test_top_texts_of_an_image_rank_its_own_captions_high(store):
    hit = services.images_for_text(store, "two giraffes standing in a field", k=1)[0]
    top = services.texts_for_pair(store, hit.pair_id, k=10)
    texts = queries.pairs_by_id(store, [h.pair_id for h in top])
    assert sum("giraffe" in texts[h.pair_id].text.lower() for h in top[:5]) >= 3


def test_retraining_starts_from_scratch_unless_asked_to_warm_start(store):
    scratch = services.train_workspace(store, epochs=6)
    warm = services.train_workspace(store, warm_start=True, epochs=6)
    with store.db.read() as s:
        parents = dict(s.execute(select(ModelVersion.version, ModelVersion.parent_id)).all())
        ids = dict(s.execute(select(ModelVersion.version, ModelVersion.id)).all())
    assert parents[scratch.version] is None
    assert parents[warm.version] == ids[scratch.version]


def test_select_with_a_model_refuses_budget_beyond_the_pool(store):
    pool = len(services.selectable_pair_ids(store))
    with pytest.raises(PairlabError, match=f"exceeds the {pool} selectable pairs"):
        services.run_selection(store, strategy="entropy", budget=pool + 1, actor=operator(store))
    report = services.run_selection(store, strategy="bald", budget=5, actor=operator(store), seed=1)
    assert report.selected == 5 and report.model_version is not None


def _explore() -> None:
    from app.views import explore

    explore.render()


def test_explore_page_searches_images_by_text(store, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    at = AppTest.from_function(_explore, default_timeout=60)
    at.session_state[state.USER] = operator(store)
    at.session_state[state.SESSION_STARTED] = utcnow()
    at.run()
    assert not at.exception
    at.text_input(key=state.EXPLORE_QUERY).set_value("a giraffe").run()
    assert not at.exception
    assert len(at.image) >= 4
    shown = [t.value.split(" · ")[0] for t in at.text if t.value.startswith("pair ") and " · " in t.value]
    expected = [f"pair {h.pair_id}" for h in services.images_for_text(store, "a giraffe", k=len(shown))]
    assert shown and shown == expected  # the page shows the service's ranking, best first


@contextmanager
def configured(store, **tables):
    """The workspace reopened with these learner tables in ``pairlab.toml``; the file is restored afterwards."""
    path = store.root / CONFIG_NAME
    before = path.read_text(encoding="utf-8")
    config = store.workspace.config
    write_config(store.root, replace(config, learner={**config.learner, **tables}))
    reopened = open_store(store.root)
    try:
        yield reopened
    finally:
        reopened.close()
        path.write_text(before, encoding="utf-8")


def test_workspace_config_sets_warm_start_and_strategy_options(store):
    with configured(store, train={"warm_start": True, "epochs": 6},
                    selection={"ascmr": {"lam": 2.0, "gamma": 1.0, "weights": {"mismatch": 1.0}}}) as ws:
        previous = services.latest_model(ws)
        info = services.train_workspace(ws)
        with ws.db.read() as s:
            parent = s.scalar(select(ModelVersion.parent_id).where(ModelVersion.version == info.version))
            assert parent == s.scalar(select(ModelVersion.id).where(ModelVersion.version == previous.version))
        report = services.run_selection(ws, strategy="ascmr", budget=3, actor=operator(ws), seed=2)
        with ws.db.read() as s:
            params = s.scalar(select(Round.params).where(Round.number == report.round_number))
        assert (params["lam"], params["gamma"], params["weights"]["mismatch"]) == (2.0, 1.0, 1.0)
    with configured(store, selection={"ascmr": {"lamda": 1.0}}) as ws:
        rounds, queued = queries.round_numbers(ws), job_ids(ws)
        for select_ascmr in (services.run_selection, jobs.launch_selection):
            with pytest.raises(InputError, match=r"pairlab.toml: \[selection.ascmr\]: .*unknown options \['lamda'\]"):
                select_ascmr(ws, strategy="ascmr", budget=3, actor=operator(ws))
        assert queries.round_numbers(ws) == rounds and job_ids(ws) == queued  # nothing recorded or queued
    with configured(store, train={"warm_start": "yes"}) as ws:
        queued = job_ids(ws)
        with pytest.raises(InputError, match=r"\[train\].warm_start: expected true or false"):
            services.train_workspace(ws)
        with pytest.raises(InputError, match=r"\[train\].warm_start: expected true or false"):
            jobs.launch_training(ws, operator(ws))
        assert job_ids(ws) == queued


def job_ids(store) -> list[int]:
    with store.db.read() as s:
        return [j.id for j in recent_jobs(s)]


def _rounds() -> None:
    from app.views import rounds

    rounds.render()


def rounds_page(store, monkeypatch) -> AppTest:
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    at = AppTest.from_function(_rounds, default_timeout=60)
    at.session_state[state.USER] = operator(store)
    at.session_state[state.SESSION_STARTED] = utcnow()
    return at.run()


def test_rounds_page_queues_a_warm_started_retrain_once_a_model_exists(store, monkeypatch):
    at = rounds_page(store, monkeypatch)
    assert not at.exception
    warm = at.checkbox(key=state.ROUNDS_WARM_START)
    assert warm.value is False and not warm.disabled  # from scratch by default; a model exists to start from
    warm.check()
    next(b for b in at.button if b.label == "Retrain").click().run()
    assert not at.exception
    with store.db.read() as s:
        train = next(j for j in recent_jobs(s) if j.kind == "train")  # newest first
    assert train.status == "queued" and train.params == {"actor": DEMO_OPERATOR, "warm_start": True}
    with store.db.write() as s:  # leave no queued job behind for the other tests
        s.delete(s.get(Job, train.id))


def test_rounds_page_shows_a_bad_warm_start_setting_instead_of_failing(store, monkeypatch):
    with configured(store, train={"warm_start": "yes"}):
        runtime._open_store.clear()  # the server reads pairlab.toml when it opens the workspace
        try:
            at = rounds_page(store, monkeypatch)
        finally:
            runtime._open_store.clear()
    assert not at.exception
    assert any("[train].warm_start: expected true or false" in e.value for e in at.error)
    assert at.checkbox(key=state.ROUNDS_WARM_START).value is False


def test_a_model_is_refused_once_its_features_were_re_encoded(store):
    """Re-encoding refits TF-IDF: a new feature space of the same size. The old model must not be used on it."""
    services.encode_workspace(store)
    with pytest.raises(PairlabError, match="features changed since model v"):
        services.evaluate_workspace(store)
    with pytest.raises(PairlabError, match="features changed since model v"):
        services.run_selection(store, strategy="entropy", budget=2, actor=operator(store))
    info = services.train_workspace(store, warm_start=True, epochs=6)  # the old weights do not fit: from scratch
    with store.db.read() as s:
        assert s.scalar(select(ModelVersion.parent_id).where(ModelVersion.version == info.version)) is None
    assert services.evaluate_workspace(store)["model_version"] == info.version
