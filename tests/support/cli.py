"""Running ``pairlab`` as a user does: a real process with the repository root as working directory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pairlab(*args, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, prefix: str) -> str:
    """Exit code 2, no traceback, and one ``pairlab: error: <prefix>...`` line (the last; progress bars
    may precede it). Returns that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("pairlab:")] == lines[-1:], result.stderr
    assert lines[-1].startswith(f"pairlab: error: {prefix}"), result.stderr
    return lines[-1]
