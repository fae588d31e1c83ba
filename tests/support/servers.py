"""Helpers for tests that start pairlab servers: free ports, the web server's health endpoint, /proc."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` again: nothing listens there, and it binds with
    ``SO_REUSEADDR`` as Streamlit's does (closed connections may linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until Streamlit's ``/_stcore/health`` at ``url`` answers ``ok``; raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pairlab serve exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode() == "ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url}/_stcore/health did not answer within {timeout:.0f} s")


def processes_mentioning(text: str) -> list[int]:
    """Pids of the live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    """Pids of the live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = _stat(int(entry.name))
            except OSError:
                continue
            if ppid == pid and state != "Z":
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) from ``/proc/PID/stat``; the command name in parentheses may hold spaces."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])
