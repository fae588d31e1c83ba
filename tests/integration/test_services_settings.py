"""``app.services.settings``: ``pairlab.toml`` parsed and validated once, with errors naming file, table and key."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import app
from app.services.settings import EncoderSettings, open_workspace, settings
from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
from learner.inference import InferenceConfig
from learner.selection.strategies import AscmrConfig
from learner.training import TrainConfig
from storage.errors import InputError
from storage.store import open_store
from storage.workspace import CONFIG_NAME

APP = str(Path(app.__file__).parent / "web" / "entrypoint" / "streamlit_app.py")


def write_tables(store, text: str) -> Path:
    """Replace the workspace's ``pairlab.toml`` by its database URL plus these TOML tables."""
    path = store.root / CONFIG_NAME
    path.write_text(f'{text}\n[database]\nurl = "{store.workspace.config.database_url}"\n', encoding="utf-8")
    return path


def test_defaults_when_the_learner_tables_are_absent(make_workspace):
    store = make_workspace()
    config = settings(open_workspace(store.root))
    assert config.train == TrainConfig() and config.inference == InferenceConfig()
    assert config.encoders == EncoderSettings() and dict(config.selection) == {}
    assert config.annotation.overlap == 1 and config.train.warm_start is False


def test_every_table_becomes_its_frozen_config(make_workspace):
    store = make_workspace()
    write_tables(store, '[encoders]\nimage = "precomputed"\n'
                        '[train]\nwarm_start = true\nepochs = 7\nlr = 1\ncorrespondence_weighting = "audit"\n'
                        '[inference]\nmc_samples = 3\n'
                        '[selection.ascmr]\nlam = 2.0\nweights = {mismatch = 1.0}\n'
                        '[annotation]\noverlap = 2\n')
    config = settings(open_workspace(store.root))
    assert config.encoders.image == "precomputed" and config.encoders.text is None
    assert (config.train.warm_start, config.train.epochs, config.train.lr) == (True, 7, 1)
    assert config.train.correspondence_weighting == "audit"
    assert config.inference.mc_samples == 3 and config.inference.dropout_samples == InferenceConfig().dropout_samples
    ascmr = config.selection["ascmr"]
    assert isinstance(ascmr, AscmrConfig) and ascmr.lam == 2.0 and ascmr.weights.mismatch == 1.0
    assert config.strategy("ascmr").params()["lam"] == 2.0
    assert config.annotation.overlap == 2


@pytest.mark.parametrize("tables, where, message", [
    ("[trian]\nepochs = 3\n", r"\[trian\]", "unknown table; allowed: database, annotation"),
    ("[train]\nepoch = 3\n", r"\[train\]\.epoch", "unknown key; allowed: dim, hidden"),
    ("[train]\nwarm_start = \"yes\"\n", r"\[train\]\.warm_start", "expected true or false, got 'yes'"),
    ("[train]\nepochs = 2.5\n", r"\[train\]\.epochs", "expected an integer, got 2.5"),
    ("[train]\nlr = -1.0\n", r"\[train\]", "TrainConfig.lr: expected > 0"),
    ("[train]\ncorrespondence_weighting = \"soft\"\n", r"\[train\]",
     "TrainConfig.correspondence_weighting: expected one of off, audit, audit\\+model, got 'soft'"),
    ("[inference]\nmc_samples = -1\n", r"\[inference\]", "mc_samples"),
    ("[inference]\nsamples = 4\n", r"\[inference\]\.samples", "unknown key"),
    ("[selection.ascmr]\nlamda = 1.0\n", r"\[selection\.ascmr\]\.lamda", "unknown key; allowed: weights, k"),
    ("[selection.ascmr]\nweights = {entropyy = 1.0}\n", r"\[selection\.ascmr\.weights\]\.entropyy", "unknown key"),
    ("[selection.ascmr]\nweights = 3\n", r"\[selection\.ascmr\]\.weights", "expected a table"),
    ("[selection.nope]\nk = 1\n", r"\[selection\.nope\]", "unknown strategy; allowed: ascmr"),
    ("[selection.random]\nk = 1\n", r"\[selection\.random\]", "takes no options"),
    ("[encoders]\nimage = \"resnet\"\n", r"\[encoders\]", "unknown encoder 'resnet'"),
    ("[encoders]\nimage_options = 3\n", r"\[encoders\]\.image_options", "expected a table"),
    ("[annotation]\noverlap = 0\n", r"\[annotation\]", "overlap: must be >= 1"),
    ("[import]\nmax_pixels = 3\n", r"\[import\]\.max_pixels", "unknown key"),
    ("train = 3\n", r"\[train\]", "must be a table"),
])
def test_a_bad_setting_fails_when_the_workspace_loads(make_workspace, tables, where, message):
    store = make_workspace()
    path = write_tables(store, tables)
    with pytest.raises(InputError, match=rf"^{path}: {where}: .*{message}"):
        store = open_workspace(store.root)


def test_services_refuse_a_store_whose_settings_are_bad(make_workspace):
    """A store opened by ``storage`` alone still never runs with bad learner settings."""
    store = make_workspace()
    write_tables(store, "[train]\nwarm_start = 1\n")
    with pytest.raises(InputError, match=r"\[train\]\.warm_start: expected true or false, got 1"):
        settings(open_store(store.root))


def test_the_workbench_shows_a_bad_setting_in_one_line(make_workspace, monkeypatch):
    store = make_workspace()
    write_tables(store, "[train]\nwarm_start = \"yes\"\n")
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"The workspace cannot be opened: {store.root / CONFIG_NAME}: [train].warm_start: "
        "expected true or false, got 'yes'"]
