"""Users and sign-in on a real SQLite workspace."""
from __future__ import annotations

import hashlib

import pytest

from storage import users
from storage.users import add_user, authenticate

PASSWORD = "correct-horse-7"


@pytest.fixture()
def scrypt_calls(monkeypatch):
    """How many times ``hashlib.scrypt`` ran; reset it to 0 before the call under test."""
    calls = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(kwargs.get("n"))
        return real(*args, **kwargs)

    monkeypatch.setattr(users.hashlib, "scrypt", counting)
    return calls


@pytest.mark.parametrize("name, password", [
    ("ann", "wrong-password"),    # known user, wrong password
    ("nobody", "wrong-password"),  # unknown user
    ("nobody", PASSWORD),
    ("quiet", PASSWORD),           # a user without a password (e.g. the demo operator)
])
def test_every_failed_sign_in_runs_the_kdf_exactly_once(make_workspace, scrypt_calls, name, password):
    """The same scrypt work whether or not the name exists, so sign-in time does not reveal user names."""
    store = make_workspace()
    with store.db.write() as s:
        add_user(s, "ann", "annotator", PASSWORD)
        add_user(s, "quiet", "operator")
    scrypt_calls.clear()
    with store.db.read() as s:
        assert authenticate(s, name, password) is None
    assert scrypt_calls == [users.SCRYPT_N]


def test_the_right_password_signs_in_with_one_kdf_run(make_workspace, scrypt_calls):
    store = make_workspace()
    with store.db.write() as s:
        add_user(s, "ann", "annotator", PASSWORD)
    scrypt_calls.clear()
    with store.db.read() as s:
        assert authenticate(s, "ann", PASSWORD).name == "ann"
    assert scrypt_calls == [users.SCRYPT_N]
