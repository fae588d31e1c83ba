"""A start line for test processes, kept in a folder: each process says it is ready and waits for ``go``,
so their work overlaps instead of the first one started doing it all; ``stop`` ends the open-ended ones."""
from __future__ import annotations

import os
import time
from pathlib import Path

POLL_SECONDS = 0.01


def wait_for_go(folder: Path, *, timeout: float = 120.0) -> None:
    (folder / f"ready-{os.getpid()}").touch()
    _wait_until(lambda: (folder / "go").exists(), timeout, f"{folder}: no go")


def release(folder: Path, processes: int, *, timeout: float = 120.0) -> None:
    """Wait until ``processes`` processes are ready, then let them all start at once."""
    _wait_until(lambda: len(list(folder.glob("ready-*"))) >= processes, timeout,
                f"{folder}: fewer than {processes} processes got ready")
    (folder / "go").touch()


def stop(folder: Path) -> None:
    (folder / "stop").touch()


def stopped(folder: Path) -> bool:
    return (folder / "stop").exists()


def _wait_until(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(POLL_SECONDS)
