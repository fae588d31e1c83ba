"""Typed errors raised at the edges of the store.

Every user-facing error names where the problem is, so the CLI can print one line:
``path:line: field: message``.
"""
from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f]")


class PairlabError(Exception):
    """Base class of errors a user can act on (the CLI prints them without a traceback)."""


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x00``), so a message stays on one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class InputError(PairlabError):
    """Bad input: a file, its line (1-based, or None) and the field at fault.

    The attributes keep the values as given; the message escapes control characters (a file name may
    hold a newline), so it is always one line.
    """

    def __init__(self, path: str, line: int | None, field: str, message: str):
        self.path, self.line, self.field, self.message = path, line, field, message
        where = path if line is None else f"{path}:{line}"
        super().__init__(one_line(f"{where}: {field}: {message}"))


class WorkspaceError(PairlabError):
    """A workspace that is missing, already exists, or is inconsistent."""


class NotFoundError(PairlabError):
    """A named object (user, pair, job, model version) does not exist."""


class ConflictError(PairlabError):
    """A concurrent writer changed the same rows first (e.g. selected the same pair); running again helps."""


class StaleLeaseError(ConflictError):
    """An answer for a slot whose lease the person no longer holds (answered in another tab, expired, taken):
    nothing was recorded; the workbench keeps the answer on screen."""


class DatabaseBusyError(PairlabError):
    """The database stayed locked by other writers longer than the busy-retry bound; trying again later helps."""


class PermissionDenied(PairlabError):
    """The acting user's role does not allow the action."""
