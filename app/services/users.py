"""Signing in and out and adding users from the workbench (passwords hashed with scrypt in ``storage.users``;
sessions and throttling in ``storage.sessions``)."""
from __future__ import annotations

from app.services.settings import settings
from storage.errors import PairlabError
from storage.sessions import (SignedIn, create_session, login_refusal, record_login_attempt, resolve_session,
                              revoke_session, session_secret)
from storage.store import Store
from storage.users import UserInfo, add_user, authenticate, require


class TooManyAttempts(PairlabError):
    """Sign-in refused for now: too many failures for that user name or from that address."""


def sign_in(store: Store, name: str, password: str, *, address: str | None) -> SignedIn | None:
    """A new session when the name and password match, else None (the attempt is recorded either way).
    Raises ``TooManyAttempts`` before checking the password while the name or the address is throttled."""
    name = (name or "").strip()
    if not name or not password:
        return None
    config = settings(store).auth
    with store.db.read() as s:
        refusal = login_refusal(s, name, address, config)
    if refusal is not None:
        raise TooManyAttempts(refusal)
    with store.db.read() as s:  # the scrypt run happens outside the write lock
        user = authenticate(s, name, password)
    with store.db.write() as s:
        record_login_attempt(s, name, address, succeeded=user is not None, config=config)
        if user is None:
            return None
        return create_session(s, session_secret(store.root), user, hours=config.session_hours, address=address)


def start_session(store: Store, user: UserInfo, *, address: str | None) -> SignedIn:
    """A session for a user signed in without a password (``pairlab demo``'s automatic sign-in)."""
    with store.db.write() as s:
        return create_session(s, session_secret(store.root), user, hours=settings(store).auth.session_hours,
                              address=address)


def resume_session(store: Store, token: str | None) -> SignedIn | None:
    """The live session of a token (from the browser's cookie), or None."""
    if not token:
        return None
    secret = session_secret(store.root)
    with store.db.read() as s:
        return resolve_session(s, secret, token)


def sign_out(store: Store, token: str | None) -> None:
    """Revoke the session of ``token``: it signs nobody in again, in any tab."""
    if token:
        with store.db.write() as s:
            revoke_session(s, session_secret(store.root), token)


def create_user(store: Store, actor: UserInfo, *, name: str, role: str, password: str, password_again: str) -> UserInfo:
    require(actor, "operate")
    if password != password_again:
        raise PairlabError("password: the two entries differ")
    with store.db.write() as s:
        return add_user(s, name, role, password)
