"""``pairlab serve``: the Streamlit server and a background worker, started and stopped together.

Ctrl-C or SIGTERM stops both children in order. If ``serve`` itself dies without that chance (``kill -9``,
a crash), Linux sends each child SIGTERM (``prctl(PR_SET_PDEATHSIG)``), so neither is left holding the
port or the workspace's worker lock.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from app.services.settings import open_workspace
from app.web.runtime import AUTO_LOGIN_ENV, LOOPBACK, WORKSPACE_ENV, auto_login_allowed
from storage.errors import PairlabError

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def app_script() -> Path:
    return Path(__file__).resolve().parents[1] / "web" / "entrypoint" / "streamlit_app.py"


def streamlit_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(app_script()),
            "--server.headless", "true",
            "--server.address", host,
            "--server.port", str(port),
            "--server.fileWatcherType", "none",
            "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",
            "--client.showErrorDetails", "none",  # an uncaught error shows a generic message, never a traceback
            "--global.developmentMode", "false"]


def worker_command(root: Path) -> list[str]:
    return [sys.executable, "-m", "app.cli", "worker", str(root)]


def serve(root: str | Path, *, host: str = LOOPBACK, port: int = 8501, auto_login: str | None = None) -> int:
    """Run the web server and the worker until either exits or we get SIGINT/SIGTERM; return the exit code.

    auto_login: sign every browser session in as this user (``pairlab demo``); refused unless ``host``
    is 127.0.0.1.
    """
    if auto_login and not auto_login_allowed(host):
        raise PairlabError(f"--host {host}: automatic sign-in is only allowed on {LOOPBACK}")
    if not 0 < port < 65536:
        raise PairlabError(f"--port {port}: must be 1-65535")
    store = open_workspace(root)  # fail here, with one line, on a missing or foreign workspace
    root = store.root
    store.close()
    env = {k: v for k, v in os.environ.items() if k != AUTO_LOGIN_ENV}
    env[WORKSPACE_ENV] = str(root)
    if auto_login:
        env[AUTO_LOGIN_ENV] = auto_login

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[tuple[str, subprocess.Popen]] = []
    code = 0
    try:
        # Own sessions, so a terminal's Ctrl-C reaches only us and we stop the children in order; and
        # a parent-death signal, so they stop when we die without stopping them.
        die_with_us = _die_with_parent()
        children.append(("worker", subprocess.Popen(worker_command(root), env=env, start_new_session=True,
                                                    preexec_fn=die_with_us)))
        children.append(("web server", subprocess.Popen(streamlit_command(host, port), env=env,
                                                         start_new_session=True, preexec_fn=die_with_us)))
        log.info("serving %s at http://%s:%d (worker pid %d); Ctrl-C stops both", root, host, port,
                 children[0][1].pid)
        while not stop.wait(0.5):
            for name, proc in children:
                if proc.poll() is not None:
                    log.error("the %s exited with code %d; stopping", name, proc.returncode)
                    code = proc.returncode or 1
                    stop.set()
    finally:
        _stop_children(children)
        for sig, old in previous.items():
            signal.signal(sig, old)
    return code


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send the child SIGTERM when this process dies, however it
    dies (Linux ``PR_SET_PDEATHSIG``); None on other systems."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # died between the fork and the prctl, so no signal will come: don't start
            raise ChildProcessError("pairlab serve exited before its child started")

    return set_parent_death_signal


def _stop_children(children: list[tuple[str, subprocess.Popen]]) -> None:
    for _, proc in children:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    for name, proc in children:
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("the %s did not stop in %.0f s; killing it", name, STOP_TIMEOUT_SECONDS)
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
