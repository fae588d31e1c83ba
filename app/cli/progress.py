"""Progress bars on standard error for the long verbs, one per kind of progress callback."""
from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm


def count_bar(description: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A bar fed by ``storage.progress.CountProgress`` ``(done, total)`` calls, and its close function."""
    bar = tqdm(desc=description, unit="item", disable=None, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def step_bar(description: str) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """A percentage bar fed by ``app.services.progress.StepProgress`` ``(fraction, message)`` calls,
    and its close function."""
    bar = tqdm(desc=description, total=100, unit="%", disable=None, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message[:60], refresh=True)

    return update, bar.close
