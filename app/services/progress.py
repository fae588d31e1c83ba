"""How a long service reports progress: ``StepProgress(fraction in [0, 1], message)``.

Counts of items go through ``storage.progress.CountProgress(done, total)`` instead; the worker's
``app.jobs.progress.JobProgress`` accepts both.
"""
from __future__ import annotations

from collections.abc import Callable

StepProgress = Callable[[float, str], None]


def quiet(_fraction: float, _message: str) -> None:
    """The progress sink when the caller gives none."""
