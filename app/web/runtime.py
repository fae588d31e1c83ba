"""Per-process and per-session plumbing of the Streamlit app: the cached store, sign-in, page guards."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import streamlit as st

from app.services.settings import open_workspace
from app.web import state
from storage.errors import NotFoundError, WorkspaceError
from storage.models import utcnow
from storage.store import Store
from storage.users import PERMISSIONS, UserInfo, get_user

log = logging.getLogger(__name__)

WORKSPACE_ENV = "PAIRLAB_WORKSPACE"
AUTO_LOGIN_ENV = "PAIRLAB_AUTO_LOGIN"
LOOPBACK = "127.0.0.1"


def workspace_root() -> Path:
    root = os.environ.get(WORKSPACE_ENV)
    if not root:
        raise WorkspaceError(f"{WORKSPACE_ENV} is not set; start the app with 'pairlab serve WS'")
    return Path(root)


@st.cache_resource(show_spinner=False)
def _open_store(root: str) -> Store:
    return open_workspace(root)


def get_store() -> Store:
    """The one ``Store`` (and database engine) of this server process."""
    return _open_store(str(workspace_root().resolve()))


def read(query, *args, **kwargs):
    """``query(session, *args, **kwargs)`` in one short read transaction on this server's store:
    how pages call ``storage.read_models``."""
    with get_store().db.read() as s:
        return query(s, *args, **kwargs)


def current_user() -> UserInfo | None:
    return st.session_state.get(state.USER)


def sign_in(user: UserInfo) -> None:
    st.session_state[state.USER] = user
    st.session_state[state.SESSION_STARTED] = utcnow()


def sign_out() -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def auto_login_allowed(server_address: str | None) -> bool:
    """Automatic sign-in (``pairlab demo``) is only ever honoured on the loopback address."""
    return server_address == LOOPBACK


def try_auto_login(store: Store) -> None:
    """Sign in as ``$PAIRLAB_AUTO_LOGIN`` when the server is bound to 127.0.0.1 and nobody is signed in."""
    name = os.environ.get(AUTO_LOGIN_ENV)
    if not name or current_user() is not None:
        return
    address = st.get_option("server.address")
    if not auto_login_allowed(address):
        log.warning("ignoring %s: automatic sign-in needs --server.address %s, not %r",
                    AUTO_LOGIN_ENV, LOOPBACK, address)
        return
    try:
        with store.db.read() as s:
            sign_in(get_user(s, name))
    except NotFoundError:
        log.warning("ignoring %s: no user %r", AUTO_LOGIN_ENV, name)


def allowed(user: UserInfo | None, action: str) -> bool:
    return user is not None and user.role in PERMISSIONS[action]


def require_page(action: str) -> UserInfo:
    """The signed-in user if their role allows ``action``; otherwise say so and stop the page."""
    user = current_user()
    if not allowed(user, action):
        st.error("You do not have access to this page." if user else "Please sign in first.")
        st.stop()
    return user


def flash(message: str, level: str = "success") -> None:
    """Show ``message`` once, after the next rerun (for callbacks)."""
    st.session_state[state.FLASH] = (level, message)


def show_flash() -> None:
    level, message = st.session_state.pop(state.FLASH, (None, None))
    if message:
        {"success": st.success, "warning": st.warning, "error": st.error}.get(level, st.info)(message)
