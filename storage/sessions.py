"""Signed, expiring, revocable sign-in sessions and sign-in throttling (standard library ``hmac``/``secrets``).

A session token is ``<token id>.<expiry, Unix seconds>.<signature>``: the signature is HMAC-SHA256 of the
first two parts under the workspace's secret (``session_secret``: 32 random bytes in ``WS/.session-secret``,
mode 0600, created once). ``create_session`` records the token id in ``user_sessions``; ``resolve_session``
accepts a token only when its signature matches (``hmac.compare_digest``), it has not expired, and its row
exists, is not revoked and belongs to a user who may sign in. ``revoke_session`` ends it (sign-out). The
database never holds a whole token, so reading it does not let anyone sign in.

Throttling: every attempt is recorded in ``login_attempts``; ``login_refusal`` refuses a user name after
``max_failures_per_user`` failures, and an address after ``max_failures_per_address``, within the last
``throttle_minutes`` (a user's count restarts after one of their successful sign-ins). Two attempts racing
past the check can each be recorded, so the bound holds to within the concurrent attempts.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.models import LoginAttempt, User, UserSession, utcnow
from storage.users import UserInfo
from storage.workspace import AuthConfig

SECRET_FILE = ".session-secret"
SECRET_BYTES = 32
LOCAL_ADDRESS = "local"  # a connection from the loopback address (Streamlit reports no address for it)
MAX_NAME_CHARS = 100
MAX_ADDRESS_CHARS = 64


def session_secret(root: Path) -> bytes:
    """The workspace's session-signing secret, created on first use (written to a temporary file, then
    linked into place, so two processes starting at once agree on one secret)."""
    path = Path(root) / SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f"{SECRET_FILE}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(SECRET_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails when another process won the race: then its secret is the one
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"{path}: a session secret is {SECRET_BYTES} bytes, found {len(secret)}; remove the "
                         "file to make a new one (everyone signs in again)")
    return secret


def _sign(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SignedIn:
    """A live session: who, its token, when it began (for "this session" counts) and when it ends (naive UTC)."""

    user: UserInfo
    token: str
    started_at: datetime
    expires_at: datetime


def create_session(session: Session, secret: bytes, user: UserInfo, *, hours: float,
                   address: str | None) -> SignedIn:
    """Start a session for ``user`` lasting ``hours``; also deletes sessions that ended over a day ago."""
    now = utcnow().replace(microsecond=0)
    expires = now + timedelta(hours=hours)
    token_id = secrets.token_urlsafe(18)
    payload = f"{token_id}.{int(expires.replace(tzinfo=timezone.utc).timestamp())}"
    session.execute(delete(UserSession).where(UserSession.expires_at < now - timedelta(days=1)))
    session.add(UserSession(token_id=token_id, user_id=user.id, address=_address(address), created_at=now,
                            expires_at=expires))
    session.flush()
    return SignedIn(user, f"{payload}.{_sign(secret, payload)}", now, expires)


def _token_id(secret: bytes, token: str, now: datetime) -> str | None:
    """The token's id when its signature matches and its expiry is in the future, else None."""
    parts = token.split(".") if isinstance(token, str) and len(token) <= 200 else []
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    token_id, expiry, signature = parts
    if not hmac.compare_digest(_sign(secret, f"{token_id}.{expiry}"), signature):
        return None
    if datetime.fromtimestamp(int(expiry), timezone.utc).replace(tzinfo=None) <= now:
        return None
    return token_id


def resolve_session(session: Session, secret: bytes, token: str | None) -> SignedIn | None:
    """The live session of ``token``, or None when it is missing, tampered with, expired or revoked, or its
    user can no longer sign in (one indexed lookup)."""
    now = utcnow()
    token_id = _token_id(secret, token, now) if token else None
    if token_id is None:
        return None
    row = session.execute(select(UserSession, User).join(User, User.id == UserSession.user_id)
                          .where(UserSession.token_id == token_id)).first()
    if row is None:
        return None
    live, user = row
    if live.revoked_at is not None or live.expires_at <= now or user.role == "system":
        return None
    return SignedIn(UserInfo(user.id, user.name, user.role), token, live.created_at, live.expires_at)


def revoke_session(session: Session, secret: bytes, token: str | None) -> bool:
    """End the session of ``token`` (sign-out); whether a live session was ended."""
    now = utcnow()
    token_id = _token_id(secret, token, now) if token else None
    if token_id is None:
        return False
    live = session.scalar(select(UserSession).where(UserSession.token_id == token_id,
                                                    UserSession.revoked_at.is_(None)))
    if live is None:
        return False
    live.revoked_at = now
    session.flush()
    return True


def _address(address: str | None) -> str:
    return (address or LOCAL_ADDRESS)[:MAX_ADDRESS_CHARS]


def _retry_at(session: Session, condition, limit: int, since: datetime, window: timedelta) -> datetime | None:
    """When failures matching ``condition`` since ``since`` drop below ``limit`` again, or None when they
    are below it now: the ``limit``-th latest failure leaves the window then."""
    failures = (select(LoginAttempt.created_at)
                .where(condition, LoginAttempt.succeeded.is_(False), LoginAttempt.created_at >= since)
                .order_by(LoginAttempt.created_at.desc()).offset(limit - 1).limit(1))
    oldest_counted = session.scalar(failures)
    return None if oldest_counted is None else oldest_counted + window


def login_refusal(session: Session, name: str, address: str | None, config: AuthConfig) -> str | None:
    """Why a sign-in as ``name`` from ``address`` is refused right now (too many failures), or None."""
    now = utcnow()
    window = timedelta(minutes=config.throttle_minutes)
    name = name[:MAX_NAME_CHARS]
    last_success = session.scalar(select(func.max(LoginAttempt.created_at))
                                  .where(LoginAttempt.name == name, LoginAttempt.succeeded.is_(True)))
    user_since = max(now - window, last_success) if last_success else now - window
    checks = ((LoginAttempt.name == name, config.max_failures_per_user, user_since, f"for user {name!r}"),
              (LoginAttempt.address == _address(address), config.max_failures_per_address, now - window,
               "from your address"))
    for condition, limit, since, whom in checks:
        retry_at = _retry_at(session, condition, limit, since, window)
        if retry_at is not None and retry_at > now:
            minutes = max(1, int((retry_at - now).total_seconds() // 60) + 1)
            return (f"Too many failed sign-ins {whom}: try again in {minutes} minute{'s' if minutes > 1 else ''} "
                    f"(at {retry_at:%H:%M} UTC).")
    return None


def record_login_attempt(session: Session, name: str, address: str | None, *, succeeded: bool,
                         config: AuthConfig) -> None:
    """Record one attempt; attempts older than the throttle window are deleted (the table stays small)."""
    now = utcnow()
    session.execute(delete(LoginAttempt).where(
        LoginAttempt.created_at < now - timedelta(minutes=config.throttle_minutes)))
    session.add(LoginAttempt(name=name[:MAX_NAME_CHARS], address=_address(address), succeeded=succeeded,
                             created_at=now))
    session.flush()
