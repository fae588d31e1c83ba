"""Users and passwords. Passwords are stored only as scrypt hashes (RFC 7914), never in clear."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import NotFoundError, PairlabError, PermissionDenied
from storage.models import ROLES, User
from storage.text import text_problem

HUMAN_ROLES = tuple(r for r in ROLES if r != "system")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8
# Which roles may do what; checked inside each action, not only by hiding pages.
PERMISSIONS = {
    "annotate": ("annotator", "reviewer", "operator"),
    "review": ("reviewer", "operator"),
    "operate": ("operator", "system"),
    "verify": ("reviewer", "operator", "system"),  # send audited pairs to a verification round (Clean-up)
}


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str


def _format_hash(salt: bytes, digest: bytes) -> str:
    enc = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${enc(salt)}${enc(digest)}"


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` with a random 16-byte salt."""
    salt = secrets.token_bytes(16)
    return _format_hash(salt, hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P))


# Checked against when there is no user or no usable stored hash, so every sign-in runs scrypt once with the
# current parameters and its time does not tell whether the name exists; it never matches.
_DECOY_HASH = _format_hash(bytes(16), bytes(64))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; runs scrypt once whatever ``stored`` is (None or malformed
    never matches)."""
    usable = bool(stored) and stored.startswith("scrypt$") and stored.count("$") == 5
    _, n, r, p, salt, digest = (stored if usable else _DECOY_HASH).split("$")
    try:
        candidate = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                   p=int(p))
        return usable and hmac.compare_digest(candidate, base64.b64decode(digest))
    except ValueError:  # a malformed stored hash never matches
        return False


def add_user(session: Session, name: str, role: str, password: str | None = None) -> UserInfo:
    name = name.strip()
    if not name or len(name) > 100:
        raise PairlabError("user name: must be 1-100 characters")
    problem = text_problem(name, single_line=True)
    if problem is not None:
        raise PairlabError(f"user name: {problem}")
    if role not in HUMAN_ROLES:
        raise PairlabError(f"role {role!r}; allowed: {', '.join(HUMAN_ROLES)}")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise PairlabError(f"password: must be at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise PairlabError(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return UserInfo(user.id, user.name, user.role)


def authenticate(session: Session, name: str, password: str) -> UserInfo | None:
    """The user when name and password match, else None: the same answer, after the same scrypt work (one KDF
    run), for an unknown name, a user without a password and a wrong password."""
    user = session.scalar(select(User).where(User.name == name, User.role != "system"))
    matches = verify_password(password, None if user is None else user.password_hash)  # scrypt once either way
    return UserInfo(user.id, user.name, user.role) if matches and user is not None else None


def get_user(session: Session, name: str) -> UserInfo:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"user {name!r} does not exist (add it with 'pairlab user add')")
    return UserInfo(user.id, user.name, user.role)


def list_users(session: Session) -> list[UserInfo]:
    rows = session.scalars(select(User).where(User.role != "system").order_by(User.name))
    return [UserInfo(u.id, u.name, u.role) for u in rows]


def require(user: UserInfo, action: str) -> None:
    """Raise ``PermissionDenied`` unless the user's role allows ``action`` (see ``PERMISSIONS``)."""
    if user.role not in PERMISSIONS[action]:
        raise PermissionDenied(f"user {user.name!r} ({user.role}) may not {action}")
