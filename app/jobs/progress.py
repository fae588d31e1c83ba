"""What a running job reports its progress through (``JobProgress``), and how it learns to stop or that it
was cancelled."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WorkerStopping(Exception):
    """Raised inside a handler's progress call when the worker was asked to stop."""


class JobCancelled(Exception):
    """Raised inside a handler's progress call once a cancel of its job was requested (``storage.jobs``)."""


class JobProgress:
    """Callable as ``storage.progress.CountProgress`` ``(done, total)``; ``update`` is an
    ``app.services.progress.StepProgress`` ``(fraction, message)``.

    Writes are throttled to one short write transaction per ``min_interval`` seconds (the first and the
    final ``done == total`` call always go through). ``report`` returns True when the job's cancel was
    requested. Raises ``WorkerStopping`` once the worker is stopping, and ``JobCancelled`` once ``cancel``
    is set (by the worker's heartbeat) or a report answers True: a progress call is the handler's safe
    point to stop. The final report (``fraction >= 1``) comes after the work is recorded, so it never
    raises ``JobCancelled``.
    """

    def __init__(self, report: Callable[[float, str], bool | None], *, stop: threading.Event | None = None,
                 cancel: threading.Event | None = None, min_interval: float = 0.5):
        self._report = report
        self._stop = stop
        self._cancel = cancel or threading.Event()
        self._min_interval = min_interval
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 0.0
        self.update(fraction, f"{done:,} / {total:,}", force=total > 0 and done >= total)

    def update(self, fraction: float, message: str, *, force: bool = False) -> None:
        if self._stop is not None and self._stop.is_set():
            raise WorkerStopping("the worker was stopped while the job ran")
        finishing = fraction >= 1.0  # the work is complete (a round recorded, say): nothing left to cancel
        if self._cancel.is_set() and not finishing:
            raise JobCancelled("cancelled on request")
        now = time.monotonic()
        if force or now - self._last >= self._min_interval:
            self._last = now
            if self._report(fraction, message) and not finishing:
                self._cancel.set()
                raise JobCancelled("cancelled on request")
