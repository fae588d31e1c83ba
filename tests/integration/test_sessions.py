"""Sign-in sessions and throttling (``storage.sessions``, ``app.services.users``) on SQLite and PostgreSQL."""
from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.services import users as service
from storage.models import LoginAttempt, UserSession
from storage.sessions import SECRET_FILE, create_session, resolve_session, revoke_session, session_secret
from storage.store import init_workspace, open_store
from storage.users import add_user
from storage.workspace import AuthConfig, load_workspace, write_config

PASSWORD = "correct-horse-7"


@pytest.fixture()
def store(tmp_path, database_url):
    store = init_workspace(tmp_path / "ws", database_url=database_url)
    with store.db.write() as s:
        add_user(s, "ann", "annotator", PASSWORD)
        add_user(s, "op", "operator", PASSWORD)
    yield store
    store.close()


def throttled_store(store, **auth):
    """``store``'s workspace reopened with ``[auth]`` set to ``auth``."""
    root = store.root
    write_config(root, replace(load_workspace(root).config, auth=AuthConfig(**auth)))
    store.close()
    return open_store(root)


def test_the_secret_is_created_once_private_and_kept(store):
    first = session_secret(store.root)
    path = store.root / SECRET_FILE
    assert len(first) == 32 and path.read_bytes() == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert session_secret(store.root) == first
    assert [p.name for p in store.root.iterdir() if p.name.startswith(SECRET_FILE)] == [SECRET_FILE]  # no temporaries


def test_a_session_resumes_until_it_is_revoked(store):
    signed_in = service.sign_in(store, "ann", PASSWORD, address="10.0.0.7")
    assert signed_in is not None and signed_in.user.name == "ann"
    resumed = service.resume_session(store, signed_in.token)
    assert resumed is not None and (resumed.user, resumed.started_at) == (signed_in.user, signed_in.started_at)
    with store.db.read() as s:
        row = s.scalar(select(UserSession))
    assert row.address == "10.0.0.7" and row.token_id in signed_in.token and row.token_id != signed_in.token

    service.sign_out(store, signed_in.token)
    assert service.resume_session(store, signed_in.token) is None
    with store.db.write() as s:  # revoking twice does nothing
        assert revoke_session(s, session_secret(store.root), signed_in.token) is False


def test_an_expired_session_signs_nobody_in(store):
    secret = session_secret(store.root)
    ann = service.sign_in(store, "ann", PASSWORD, address=None).user
    with store.db.write() as s:
        past = create_session(s, secret, ann, hours=-1, address=None)  # the token's own expiry is past
        live = create_session(s, secret, ann, hours=1, address=None)
    with store.db.read() as s:
        assert resolve_session(s, secret, past.token) is None
        assert resolve_session(s, secret, live.token) is not None
    with store.db.write() as s:  # the server-side expiry counts too
        s.execute(update(UserSession).values(expires_at=past.expires_at))
    with store.db.read() as s:
        assert resolve_session(s, secret, live.token) is None


def test_a_tampered_token_signs_nobody_in(store):
    secret = session_secret(store.root)
    signed_in = service.sign_in(store, "ann", PASSWORD, address=None)
    token_id, expiry, signature = signed_in.token.split(".")
    changed = ("B" if signature[0] == "A" else "A") + signature[1:]
    forged = [
        f"{token_id}.{int(expiry) + 3600}.{signature}",  # a later expiry under the old signature
        f"{token_id}.{expiry}.{changed}",  # a changed signature
        f"{token_id}.{expiry}",  # no signature
        "", "...", "x" * 500,
    ]
    with store.db.read() as s:
        for token in forged:
            assert resolve_session(s, secret, token) is None, token
        assert resolve_session(s, os.urandom(32), signed_in.token) is None  # another workspace's secret
        assert resolve_session(s, secret, signed_in.token) is not None


def test_failed_sign_ins_are_throttled_per_user(store):
    store = throttled_store(store, max_failures_per_user=3, max_failures_per_address=100)
    try:
        for _ in range(3):
            assert service.sign_in(store, "ann", "wrong-password", address="10.0.0.1") is None
        with pytest.raises(service.TooManyAttempts, match=r"Too many failed sign-ins for user 'ann': try again in "
                                                          r"1[56] minutes \(at \d\d:\d\d UTC\)"):
            service.sign_in(store, "ann", PASSWORD, address="10.0.0.2")  # even the right password, elsewhere
        assert service.sign_in(store, "op", PASSWORD, address="10.0.0.1") is not None  # another user is not held
        with store.db.write() as s:  # the window passes
            s.execute(update(LoginAttempt).values(created_at=LoginAttempt.created_at - timedelta(minutes=16)))
        assert service.sign_in(store, "ann", PASSWORD, address="10.0.0.1") is not None
    finally:
        store.close()


def test_a_successful_sign_in_restarts_the_users_count(store):
    store = throttled_store(store, max_failures_per_user=3, max_failures_per_address=100)
    try:
        for _ in range(2):
            service.sign_in(store, "ann", "wrong-password", address=None)
        assert service.sign_in(store, "ann", PASSWORD, address=None) is not None
        for _ in range(2):
            service.sign_in(store, "ann", "wrong-password", address=None)
        assert service.sign_in(store, "ann", PASSWORD, address=None) is not None
    finally:
        store.close()


def test_failed_sign_ins_are_throttled_per_address(store):
    store = throttled_store(store, max_failures_per_user=100, max_failures_per_address=4)
    try:
        for name in ("a", "b", "c", "ann"):  # guessing names from one address
            assert service.sign_in(store, name, "wrong-password", address="10.0.0.9") is None
        with pytest.raises(service.TooManyAttempts, match="Too many failed sign-ins from your address"):
            service.sign_in(store, "op", PASSWORD, address="10.0.0.9")
        assert service.sign_in(store, "op", PASSWORD, address="10.0.0.10") is not None
    finally:
        store.close()

