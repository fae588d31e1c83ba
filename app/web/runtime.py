"""Per-process and per-session plumbing of the Streamlit app: the cached store, sign-in, page guards."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import streamlit as st

from app.services import users
from app.services.settings import open_workspace
from app.web import session_cookie, state
from storage.errors import NotFoundError, WorkspaceError
from storage.sessions import SignedIn
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


def client_address() -> str | None:
    """The browser's address as Streamlit saw the connection (None on the loopback address); a proxy in
    front of the server makes every browser share the proxy's address, and throttling then counts them
    together."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None  # Streamlit's AppTest answers with a mock


def sign_in(signed_in: SignedIn) -> None:
    st.session_state[state.USER] = signed_in.user
    st.session_state[state.SESSION_STARTED] = signed_in.started_at
    st.session_state[state.SESSION_TOKEN] = signed_in.token
    st.session_state[state.SESSION_EXPIRES] = signed_in.expires_at


def sign_out(store: Store) -> None:
    """Revoke this session's token (every tab holding it is signed out) and forget the session state."""
    users.sign_out(store, st.session_state.get(state.SESSION_TOKEN))
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def restore_session(store: Store) -> None:
    """Check the session on every run: a signed-in session whose token was revoked (signed out in another
    tab) or expired ends; a signed-out one resumes from the browser's cookie (a reload, a new tab, a deep
    link). Then the cookie is written to match. One indexed lookup per run."""
    token = st.session_state.get(state.SESSION_TOKEN)
    if current_user() is not None and token is None:
        return  # signed in by a test harness without a token: nothing to check
    found = users.resume_session(store, token or session_cookie.token_from_browser())
    if found is None:
        for key in (state.USER, state.SESSION_STARTED, state.SESSION_TOKEN, state.SESSION_EXPIRES):
            st.session_state.pop(key, None)
    elif found.token != token or found.user != current_user():
        sign_in(found)


def sync_cookie() -> None:
    """Write the browser's session cookie (the token while signed in, cleared otherwise)."""
    session_cookie.write(st.session_state.get(state.SESSION_TOKEN), st.session_state.get(state.SESSION_EXPIRES))


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
            user = get_user(s, name)
    except NotFoundError:
        log.warning("ignoring %s: no user %r", AUTO_LOGIN_ENV, name)
        return
    sign_in(users.start_session(store, user, address=client_address()))


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
