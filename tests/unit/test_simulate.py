"""``app.bench``'s configuration: strategy variants from TOML and the splits it carves."""
from __future__ import annotations

import numpy as np
import pytest

from app.bench.data import carve_by_group
from app.bench.simulate import SimulationConfig, run_simulation
from app.bench.variants import Variant, load_variants
from learner.selection.strategies import AscmrStrategy, get_strategy
from learner.training import TrainConfig
from storage.errors import InputError, PairlabError
from tests.support.simulation import synthetic


def write(tmp_path, text: str):
    path = tmp_path / "variants.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_variants_name_a_strategy_and_its_options(tmp_path):
    variants = load_variants(write(tmp_path, """
[ascmr-intra]
strategy = "ascmr"
lam = 1.0
weights = { match = 0.0, disagreement = 0.0 }

[plain-random]
strategy = "random"
"""))
    assert variants == {"ascmr-intra": Variant("ascmr", {"lam": 1.0, "weights": {"match": 0.0, "disagreement": 0.0}}),
                        "plain-random": Variant("random", {})}
    config = SimulationConfig(strategies=("ascmr", "ascmr-intra"), variants=variants)
    assert config.variant("ascmr") == Variant("ascmr")
    assert config.variant("ascmr-intra").options["lam"] == 1.0


@pytest.mark.parametrize(("text", "field", "message"), [
    ("[v]\nlam = 1.0\n", "[v].strategy", "naming its strategy"),
    ("[v]\nstrategy = \"nope\"\n", "[v].strategy", "unknown strategy 'nope'"),
    ("[v]\nstrategy = \"ascmr\"\nlamda = 1.0\n", "[v].lamda", "unknown key; allowed: weights, k"),
    ("[v]\nstrategy = \"ascmr\"\nweights = { mass = 1.0 }\n", "[v.weights].mass", "unknown key; allowed: spread"),
    ("[v]\nstrategy = \"ascmr\"\nk = \"ten\"\n", "[v].k", "expected an integer, got 'ten'"),
    ("[v]\nstrategy = \"ascmr\"\nlam = -1.0\n", "[v]", "lam=-1.0"),
    ("[v]\nstrategy = \"random\"\nseed = 3\n", "[v]", "takes no options"),
    ("[ascmr]\nstrategy = \"ascmr\"\n", "[ascmr]", "registry strategy's name"),
    ("[v\nstrategy = 1\n", "--variants", "not valid TOML"),
])
def test_bad_variants_name_the_file_and_table(tmp_path, text, field, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_variants(path)
    assert (err.value.path, err.value.field) == (str(path), field)
    assert message in err.value.message


def test_missing_variants_file(tmp_path):
    with pytest.raises(InputError, match="variants.toml: --variants: file not found"):
        load_variants(tmp_path / "variants.toml")


def test_config_refuses_unknown_or_repeated_names_and_bad_settings():
    with pytest.raises(PairlabError, match="unknown 'ascmr-intra'"):
        SimulationConfig(strategies=("ascmr-intra",))
    with pytest.raises(PairlabError, match="repeated"):
        SimulationConfig(strategies=("random", "random"))
    with pytest.raises(PairlabError, match="--evaluate-on"):
        SimulationConfig(evaluate_on="train")
    with pytest.raises(PairlabError, match="--jobs"):
        SimulationConfig(jobs=0)


def test_variant_builds_the_configured_strategy(tmp_path):
    variant = load_variants(write(tmp_path, '[v]\nstrategy = "ascmr"\ngamma = 1.0\n'))["v"]
    strategy = get_strategy(variant.strategy, **variant.options)
    assert isinstance(strategy, AscmrStrategy) and strategy.config.gamma == 1.0


def test_carving_keeps_every_group_on_one_side_and_depends_only_on_the_seed():
    groups = np.array([f"img{i // 3}" for i in range(90)], dtype=object)  # 30 images, 3 captions each
    rows = np.arange(90)
    kept, carved = carve_by_group(rows, groups, 0.2, seed=4)
    assert len(carved) == 18 and len(kept) == 72
    assert not set(groups[kept]) & set(groups[carved])
    again = carve_by_group(rows, groups, 0.2, seed=4)
    assert np.array_equal(again[1], carved)
    assert not np.array_equal(carve_by_group(rows, groups, 0.2, seed=5)[1], carved)


def test_every_strategy_and_round_of_a_run_holds_out_the_same_validation_rows():
    """One fixed validation set per seed: drawn from the initial set, used by every strategy in every
    round and by full supervision, and recorded in the protocol."""
    strategies = ("random", "ascmr", "probcover")
    config = SimulationConfig(strategies=strategies, initial=20, budget=6, rounds=1, seeds=(0, 1),
                              train=TrainConfig(dim=16, hidden=32, epochs=2, max_steps=8, min_epochs=1, batch_size=32,
                                                labelled_batch_size=8, min_steps_per_epoch=2))
    results = run_simulation(synthetic(n=140), config)
    validation = results["protocol"]["validation"]
    assert validation["size"] == 4 and "every strategy in every round" in validation["rule"]
    per_seed = validation["rows_per_seed"]
    assert per_seed["0"] != per_seed["1"]
    for seed, rows in per_seed.items():
        initial = np.random.default_rng(int(seed)).choice(110, size=20, replace=False)
        assert set(rows) <= set(initial.tolist())
        full = next(f for f, s in zip(results["protocol"]["full_supervision_per_seed"], results["seeds"])
                    if s == int(seed))
        assert full["validation_rows"] == [rows] and full["trained_on"] == 110 - 4
        for name in strategies:
            run = next(r for r in results["strategies"][name] if r["seed"] == int(seed))
            assert run["validation_rows"] == [rows], name          # one set, in both rounds
