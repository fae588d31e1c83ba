"""Polling for a condition that another process makes true (workers, servers), with a bounded wait."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 120.0, what: str = "the condition"):
    """The first truthy value of ``predicate()``, polled every 0.1 s; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
