"""Signing in and adding users from the workbench (passwords hashed with scrypt in ``storage.users``)."""
from __future__ import annotations

from storage.errors import PairlabError
from storage.store import Store
from storage.users import UserInfo, add_user, authenticate, require


def sign_in(store: Store, name: str, password: str) -> UserInfo | None:
    """The user when the name and password match, else None."""
    if not name or not password:
        return None
    with store.db.read() as s:
        return authenticate(s, name.strip(), password)


def create_user(store: Store, actor: UserInfo, *, name: str, role: str, password: str, password_again: str) -> UserInfo:
    require(actor, "operate")
    if password != password_again:
        raise PairlabError("password: the two entries differ")
    with store.db.write() as s:
        return add_user(s, name, role, password)
