"""What a running job reports its progress through (``JobProgress``), and how it learns to stop."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WorkerStopping(Exception):
    """Raised inside a handler's progress call when the worker was asked to stop."""


class JobProgress:
    """Callable as ``storage.progress.CountProgress`` ``(done, total)``; ``update`` is an
    ``app.services.progress.StepProgress`` ``(fraction, message)``.

    Writes are throttled to one short write transaction per ``min_interval`` seconds (the first and the
    final ``done == total`` call always go through). Raises ``WorkerStopping`` once the worker is stopping.
    """

    def __init__(self, report: Callable[[float, str], None], *, stop: threading.Event | None = None,
                 min_interval: float = 0.5):
        self._report = report
        self._stop = stop
        self._min_interval = min_interval
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 0.0
        self.update(fraction, f"{done:,} / {total:,}", force=total > 0 and done >= total)

    def update(self, fraction: float, message: str, *, force: bool = False) -> None:
        if self._stop is not None and self._stop.is_set():
            raise WorkerStopping("the worker was stopped while the job ran")
        now = time.monotonic()
        if force or now - self._last >= self._min_interval:
            self._last = now
            self._report(fraction, message)
