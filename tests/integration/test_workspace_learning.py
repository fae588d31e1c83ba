"""The learner wired to a workspace (encode, train, evaluate, select, retrieval), on the COCO sample
bundled for the demo: real images through EfficientNet-Lite0 and real captions through TF-IDF."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest
import numpy as np
from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest

from app.services import encode, models, retrieval, train
from app.services import select as selection
from app.web import state
from app.cli.demo import DEMO_FIRST_BUDGET, DEMO_OPERATOR, build_demo_workspace
from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
from app.services.data import feature_matrices, label_matrix, pair_table
from app.services.settings import encoder_choice
from learner.encoders.tfidf import TfidfEncoder
from learner.selection.strategies import QueryStrategy
from storage.errors import PairlabError
from storage.read_models import pairs_by_id
from storage.jobs import recent_jobs
from storage.model_versions import latest_validation_pairs
from storage.models import Job, ModelVersion, Pair, Round, Selection, utcnow
from storage.store import open_store
from storage.users import get_user
from storage.workspace import CONFIG_NAME, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = build_demo_workspace(tmp_path_factory.mktemp("learning") / "ws")
    yield store
    store.close()


def read(store, query, *args):
    with store.db.read() as s:
        return query(s, *args)


def operator(store):
    with store.db.read() as s:
        return get_user(s, DEMO_OPERATOR)


def test_demo_build_encodes_trains_and_selects_a_first_ascmr_round(store):
    info = models.latest_model(store)
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
        assert "index" not in why and len(why["suggested_labels"]) <= selection.MAX_SUGGESTIONS
        likeliest = why[selection.SUGGESTION_PROBABILITIES_KEY]  # shown on Annotate with each probability
        assert len(likeliest) == selection.MAX_SUGGESTIONS and all(0.0 <= p <= 1.0 for p in likeliest.values())
        assert list(likeliest.values()) == sorted(likeliest.values(), reverse=True)
        assert set(why["suggested_labels"]) <= set(likeliest)
        threshold = why[selection.PREMARK_THRESHOLD_KEY]  # calibrated on the validation pairs, or None
        assert threshold is None or 0.0 <= threshold <= 1.0


def test_streamed_ascmr_scoring_chooses_what_the_in_memory_path_chooses(store):
    """``pairlab select`` scores the pool batch by batch (features memory-mapped, outputs dropped per
    batch); with batches of 7 rows it picks the same pairs, in the same order, as scoring all at once."""
    from app.services.progress import quiet
    from app.services.settings import settings
    from learner.inference import InferenceConfig

    table = pair_table(store)
    pool = selection.selectable_rows(store, table)
    query = settings(store).strategy("ascmr")
    small_batches = InferenceConfig(mc_samples=3, batch_size=7)
    streamed = selection._scored_choice(store, table, pool, query, 6, 3, small_batches, quiet, streamed=True)
    in_memory = selection._scored_choice(store, table, pool, query, 6, 3, small_batches, quiet, streamed=False)
    assert len(pool) > 7 * 3 and list(streamed.rows) == list(in_memory.rows)
    np.testing.assert_allclose(streamed.scores, in_memory.scores, rtol=1e-5)
    assert [e["suggested_labels"] for e in streamed.explanation] == \
        [e["suggested_labels"] for e in in_memory.explanation]


def test_text_search_reuses_the_embeddings_and_reads_only_candidate_digests(store, monkeypatch):
    """Per query: no reload of the embeddings file, no read of every pair's sha256."""
    retrieval.images_for_text(store, "a giraffe", k=3)
    before = retrieval._load_embeddings.cache_info()
    asked = []
    real = retrieval.image_digests
    monkeypatch.setattr(retrieval, "image_digests", lambda s, ids=None: asked.append(ids) or real(s, ids))
    hits = retrieval.images_for_text(store, "a dog on a couch", k=3)
    after = retrieval._load_embeddings.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 1)
    assert len(hits) == 3 and asked and all(ids is not None and len(ids) <= 24 for ids in asked)
    assert len(pair_table(store).ids) > 24
    first = retrieval.texts_for_pair(store, hits[0].pair_id, k=4)
    computed = retrieval._texts_for_image.cache_info().misses
    assert retrieval.texts_for_pair(store, hits[0].pair_id, k=4) == first  # a rerun with the same pair
    assert retrieval._texts_for_image.cache_info().misses == computed


def test_evaluate_reports_both_directions_on_the_test_split(store):
    metrics = train.evaluate_workspace(store, split="test")
    assert metrics["model_version"] == 1 and metrics["pairs"] > 10
    for key in ("i2t", "t2i", "avg", "i2t@50", "t2i@50"):
        assert 0.0 < metrics[key] <= 1.0
    assert metrics["avg"] == pytest.approx((metrics["i2t"] + metrics["t2i"]) / 2)


def test_text_search_finds_the_images_it_describes(store):
    hits = retrieval.images_for_text(store, "two giraffes standing in a field", k=3)
    texts = read(store, pairs_by_id, [h.pair_id for h in hits])
    assert "giraffe" in texts[hits[0].pair_id].text.lower()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with pytest.raises(PairlabError, match="empty text"):
        retrieval.images_for_text(store, "   ")


def test_top_texts_of_an_image_rank_its_own_captions_high(store):
    hit = retrieval.images_for_text(store, "two giraffes standing in a field", k=1)[0]
    top = retrieval.texts_for_pair(store, hit.pair_id, k=10)
    texts = read(store, pairs_by_id, [h.pair_id for h in top])
    assert sum("giraffe" in texts[h.pair_id].text.lower() for h in top[:5]) >= 3


def test_retraining_starts_from_scratch_unless_asked_to_warm_start(store):
    scratch = train.train_workspace(store, epochs=6)
    warm = train.train_workspace(store, warm_start=True, epochs=6)
    with store.db.read() as s:
        parents = dict(s.execute(select(ModelVersion.version, ModelVersion.parent_id)).all())
        ids = dict(s.execute(select(ModelVersion.version, ModelVersion.id)).all())
    assert parents[scratch.version] is None
    assert parents[warm.version] == ids[scratch.version]
    with store.db.read() as s:
        metrics = s.scalar(select(ModelVersion.metrics).where(ModelVersion.version == warm.version))
    assert set(metrics["phases"]) == {"read", "train", "test"} and min(metrics["phases"].values()) >= 0
    assert metrics["phases"]["train"] >= metrics["seconds"]   # train_model's own clock runs inside its phase


def test_validation_pairs_are_fixed_once_recorded_and_reported(store):
    """Every version holds out the same validation pairs, chosen at the first training; labels that
    arrive later (a strategy's picks) never join them."""
    with store.db.read() as s:
        configs = [row.config for row in s.scalars(select(ModelVersion).order_by(ModelVersion.version))]
        recorded = latest_validation_pairs(s)
        metrics = s.scalar(select(ModelVersion.metrics).order_by(ModelVersion.version.desc()).limit(1))
    assert len(configs) >= 3 and len(recorded) >= 2
    assert all(c["validation_pairs"] == recorded for c in configs)
    assert metrics["validation_pairs"] == len(recorded)
    table = pair_table(store)
    rows = np.flatnonzero(np.isin(table.splits, ("pool", "train")))
    labelled = label_matrix(store, table.ids).labelled[rows]
    more = labelled | (np.arange(len(rows)) % 2 == 0)                               # many new labels
    assert train.validation_pairs(store, table.ids[rows], more, 0.2, 0).tolist() == recorded
    fresh = train._id_uniform(table.ids[rows][more], 0) < 0.2                       # the rule before any version
    assert set(recorded) <= set(table.ids[rows][more][fresh].tolist())


def test_queued_and_imported_pairs_count_as_covered_when_a_strategy_selects(store, monkeypatch):
    """The strategy's labelled (covered) set holds every training pair outside the pool: pairs
    labelled at import and pairs an earlier round queued that nobody annotated yet."""
    seen = {}
    real = QueryStrategy.query

    def spy(self, outputs, pool, labelled, n, **kwargs):
        seen.update(pool=np.asarray(pool), labelled=np.asarray(labelled), competence=outputs.competence)
        return real(self, outputs, pool, labelled, n, **kwargs)

    monkeypatch.setattr(QueryStrategy, "query", spy)
    with store.db.read() as s:
        queued = set(s.scalars(select(Selection.pair_id)))
    table = pair_table(store)
    training = table.ids[np.isin(table.splits, ("pool", "train"))]
    imported = set(training[label_matrix(store, training).labelled].tolist())
    assert queued and imported
    pool_ids = set(table.ids[selection.selectable_rows(store, pair_table(store))].tolist())
    report = selection.run_selection(store, strategy="probcover", budget=3, actor=operator(store))
    scored = np.sort(training)                                                    # the rows the strategy saw
    covered = set(scored[seen["labelled"]].tolist())
    assert covered == set(training.tolist()) - pool_ids and queued | imported <= covered
    assert set(scored[seen["pool"]].tolist()) == pool_ids
    assert seen["competence"] is not None and 0.0 <= seen["competence"] <= 1.0     # on the fixed validation pairs
    with store.db.read() as s:
        rnd = s.scalar(select(Round).where(Round.number == report.round_number))
        assert all({"newly_covered", "delta", "ball_purity"} <= set(sel.explanation) for sel in rnd.selections)


def test_select_with_a_model_refuses_budget_beyond_the_pool(store):
    pool = len(selection.selectable_rows(store, pair_table(store)))
    with pytest.raises(PairlabError, match=f"exceeds the {pool} selectable pairs"):
        selection.run_selection(store, strategy="entropy", budget=pool + 1, actor=operator(store))
    report = selection.run_selection(store, strategy="bald", budget=5, actor=operator(store), seed=1)
    assert report.selected == 5 and report.model_version is not None


def _explore() -> None:
    from app.web.pages import explore

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
    expected = [f"pair {h.pair_id}" for h in retrieval.images_for_text(store, "a giraffe", k=len(shown))]
    assert shown and shown == expected  # the page shows the service's ranking, best first


def test_explore_page_shows_the_top_texts_of_the_shown_pair_only_once_asked(store, monkeypatch):
    """The first render makes no pass over the text embeddings; the toggle shows the service's ranking."""
    from app.web.pages import explore

    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    asked = []
    monkeypatch.setattr(explore, "texts_for_pair", lambda s, pid, k: asked.append(pid) or retrieval.texts_for_pair(s, pid, k=k))
    at = AppTest.from_function(_explore, default_timeout=60)
    at.session_state[state.USER] = operator(store)
    at.session_state[state.SESSION_STARTED] = utcnow()
    at.run()
    assert not at.exception and not asked
    assert at.toggle(key=state.EXPLORE_TOP_TEXTS).value is False and len(at.dataframe) == 1  # the browse table
    at.toggle(key=state.EXPLORE_TOP_TEXTS).set_value(True).run()
    shown = at.selectbox(key=state.EXPLORE_PAIR).value
    expected = retrieval.texts_for_pair(store, shown, k=explore.SEARCH_HITS)
    assert not at.exception and asked == [shown]
    assert list(at.dataframe[1].value["pair"]) == [h.pair_id for h in expected]


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
        previous = models.latest_model(ws)
        info = train.train_workspace(ws)
        with ws.db.read() as s:
            parent = s.scalar(select(ModelVersion.parent_id).where(ModelVersion.version == info.version))
            assert parent == s.scalar(select(ModelVersion.id).where(ModelVersion.version == previous.version))
        report = selection.run_selection(ws, strategy="ascmr", budget=3, actor=operator(ws), seed=2)
        with ws.db.read() as s:
            params = s.scalar(select(Round.params).where(Round.number == report.round_number))
        assert (params["lam"], params["gamma"], params["weights"]["mismatch"]) == (2.0, 1.0, 1.0)


def job_ids(store) -> list[int]:
    with store.db.read() as s:
        return [j.id for j in recent_jobs(s)]


def _rounds() -> None:
    from app.web.pages import rounds

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


def test_a_model_is_refused_once_its_features_were_re_encoded(store):
    """Re-encoding refits TF-IDF: a new feature space of the same size. The old model must not be used on it."""
    encode.encode_workspace(store)
    with pytest.raises(PairlabError, match="features changed since model v"):
        train.evaluate_workspace(store)
    with pytest.raises(PairlabError, match="features changed since model v"):
        selection.run_selection(store, strategy="entropy", budget=2, actor=operator(store))
    info = train.train_workspace(store, warm_start=True, epochs=6)  # the old weights do not fit: from scratch
    with store.db.read() as s:
        assert s.scalar(select(ModelVersion.parent_id).where(ModelVersion.version == info.version)) is None
    assert train.evaluate_workspace(store)["model_version"] == info.version


def test_training_sees_only_pool_and_train_pairs(store, monkeypatch):
    """``pairlab train`` never trains on ``val`` or ``test`` pairs: the rows handed to the learner are exactly
    the pool/train pairs (checked on their text features, which differ for every caption)."""
    with store.db.write() as s:  # a few labelled test pairs become validation pairs for this test
        val_ids = list(s.scalars(select(Pair.id).where(Pair.split == "test").order_by(Pair.id).limit(6)))
        s.execute(update(Pair).where(Pair.id.in_(val_ids)).values(split="val"))
    seen = {}
    real = train.train_model

    def spy(image, text, labels, labelled, config, **kwargs):
        seen.update(text=text.copy(), labelled=labelled.copy())
        return real(image, text, labels, labelled, replace(config, epochs=1), **kwargs)

    monkeypatch.setattr(train, "train_model", spy)
    try:
        train.train_workspace(store)
        table = pair_table(store)
        _, text = feature_matrices(store, table.ids, encoder_choice(store))
    finally:
        with store.db.write() as s:
            s.execute(update(Pair).where(Pair.id.in_(val_ids)).values(split="test"))
    training = np.isin(table.splits, ("pool", "train"))
    assert not training[np.isin(table.ids, val_ids)].any() and (table.splits == "test").any()
    np.testing.assert_array_equal(seen["text"], text[training])
    trained_on = {row.tobytes() for row in seen["text"]}
    assert not any(row.tobytes() in trained_on for row in text[~training])


def test_tfidf_is_fitted_on_pool_and_train_texts_only(store, monkeypatch):
    fitted = []
    real = TfidfEncoder.fit
    monkeypatch.setattr(TfidfEncoder, "fit", lambda self, texts: (fitted.append(list(texts)), real(self, texts))[1])
    encode.encode_workspace(store)
    table = pair_table(store)
    expected = [t for t, split in zip(table.texts, table.splits) if split in ("pool", "train")]
    assert fitted == [expected] and len(expected) < len(table.texts)
    train.train_workspace(store, epochs=6)  # the re-encoded features need a new model for the tests after this one


def test_select_records_the_premark_threshold_its_model_shows_on_the_validation_pairs(store, monkeypatch):
    """The threshold stored with each selected pair is ``premark_threshold`` of the scoring model's
    predictions on the fixed validation pairs, recomputed here from the public pieces."""
    from app.services.settings import _PARSED, settings
    from learner.inference import infer
    from learner.metrics import premark_threshold

    lenient = replace(settings(store).annotation, premark_precision=0.3)  # the demo's few validation labels can show 30 %
    monkeypatch.setitem(_PARSED, store.workspace, replace(settings(store), annotation=lenient))
    report = selection.run_selection(store, strategy="entropy", budget=3, actor=operator(store), seed=2)
    table = pair_table(store)
    labels = label_matrix(store, table.ids)
    val = np.flatnonzero(np.isin(table.ids, read(store, latest_validation_pairs)) & labels.labelled)
    image, text = feature_matrices(store, table.ids[val], encoder_choice(store))
    out = infer(models.cached_model(models.current_model(store).path), image, text, mc_samples=0)
    expected = premark_threshold((out.probs_image + out.probs_text) / 2, labels.labels[val], 0.3)
    assert expected is not None
    with store.db.read() as s:
        rnd = s.scalar(select(Round).where(Round.number == report.round_number))
        stored = [sel.explanation[selection.PREMARK_THRESHOLD_KEY] for sel in rnd.selections]
    assert stored == pytest.approx([expected] * 3)
