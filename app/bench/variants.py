"""Named strategy variants for tuning runs (``pairlab simulate --variants FILE.toml``)."""
from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.services.settings import parse_strategy_options
from learner.selection.strategies import STRATEGY_NAMES
from storage.errors import InputError


@dataclass(frozen=True)
class Variant:
    """A named configuration of a registry strategy: ``get_strategy(strategy, **options)``."""

    strategy: str
    options: Mapping[str, Any] = field(default_factory=dict)


def load_variants(path: Path) -> dict[str, Variant]:
    """Named strategy variants from a TOML file, one table each::

        [ascmr-intra]                   # the name to pass to --strategies
        strategy = "ascmr"              # a registry strategy
        weights = {match = 0.0, disagreement = 0.0}   # its options (AscmrConfig fields)

    Every variant's options are validated here (``app.services.settings.parse_strategy_options``), so a bad name or
    option fails before any training.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(str(path), None, "--variants", "file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(str(path), None, "--variants", f"not valid TOML: {exc}") from None
    variants = {}
    for name, table in raw.items():
        if not isinstance(table, dict) or not isinstance(table.get("strategy"), str):
            raise InputError(str(path), None, f"[{name}].strategy", "each variant is a table naming its strategy")
        if name in STRATEGY_NAMES:
            raise InputError(str(path), None, f"[{name}]", "a variant cannot take a registry strategy's name")
        if table["strategy"] not in STRATEGY_NAMES:
            raise InputError(str(path), None, f"[{name}].strategy",
                             f"unknown strategy {table['strategy']!r}; allowed: {', '.join(STRATEGY_NAMES)}")
        options = {k: v for k, v in table.items() if k != "strategy"}
        parse_strategy_options(table["strategy"], options, path=path, name=name)
        variants[name] = Variant(table["strategy"], options)
    return variants
