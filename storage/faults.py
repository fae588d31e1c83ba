"""Named crash points for the fault tests (``tests/integration/test_faults.py``).

With ``PAIRLAB_CRASH_AT=<name>`` in its environment, a process kills itself with SIGKILL when it reaches
``crash_point(name)``: no handler, ``finally`` or ``atexit`` runs, exactly as with ``kill -9`` at that
line. Without the variable (always, outside those tests) a point costs one environment lookup.

The points: ``import.before_commit`` / ``import.after_commit`` (``storage.importers.commit``),
``export.streaming`` (after the first row) / ``export.before_rename`` (``storage.exporters``),
``encode.before_register`` (``app.services.encode``), ``train.before_version`` (checkpoint written, its
row not) (``app.services.train``).
"""
from __future__ import annotations

import os
import signal

CRASH_ENV = "PAIRLAB_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process here when ``PAIRLAB_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
