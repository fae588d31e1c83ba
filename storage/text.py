"""The one rule for text that enters the store, and the one way text files are read.

Every string that reaches the database passes ``text_problem``: imported texts, ids, label names,
image references, user names and annotators' comments. The rule, the same on SQLite and PostgreSQL
(which refuses U+0000 outright):

- the string is valid UTF-8: no lone surrogates (what ``read_text`` turns bytes that are not UTF-8
  into, or what a JSON ``\\ud800`` escape gives);
- it holds no C0 control character (U+0000-U+001F) other than tab, newline and carriage return;
- ``single_line`` strings (ids, labels, paths, names) hold no tab, newline or carriage return either.

DEL (U+007F), C1 controls (U+0080-U+009F) and every other code point are accepted.
"""
from __future__ import annotations

import re
import stat
from pathlib import Path

from storage.errors import InputError

ALLOWED_CONTROLS = "\t\n\r"
_MULTI_LINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_SINGLE_LINE = re.compile("[\x00-\x1f\ud800-\udfff]")
_NAMES = {0: "NUL", 9: "tab", 10: "newline", 13: "carriage return"}


def text_problem(value: str, *, single_line: bool = False) -> str | None:
    """Why ``value`` breaks the rule above (one line, naming the character and its position), or None."""
    found = (_SINGLE_LINE if single_line else _MULTI_LINE).search(value)
    if found is None:
        return None
    code, at = ord(found.group()), found.start() + 1
    if 0xDC80 <= code <= 0xDCFF:
        return f"not valid UTF-8 (byte 0x{code - 0xDC00:02x} at character {at})"
    if 0xD800 <= code <= 0xDFFF:
        return f"not valid UTF-8 (lone surrogate U+{code:04X} at character {at})"
    name = f"U+{code:04X}" + (f" ({_NAMES[code]})" if code in _NAMES else "")
    allowed = "no control characters are allowed here" if single_line else \
        "control characters other than tab, newline and carriage return are refused"
    return f"control character {name} at character {at}; {allowed}"


def check_text_chars(value: str, path: str, line: int | None, field_name: str, *, single_line: bool = False) -> None:
    """Raise ``InputError(path, line, field_name, ...)`` when ``value`` breaks the text rule."""
    problem = text_problem(value, single_line=single_line)
    if problem is not None:
        raise InputError(path, line, field_name, problem)


def read_text(source: Path, field_name: str = "file") -> str:
    """A regular file as text: a UTF-8 BOM dropped, bytes that are not UTF-8 kept as lone surrogates
    (``surrogateescape``), so the field that holds them is reported by ``text_problem`` with its line.

    Refuses (``InputError``) what is not a regular file (a folder, a FIFO that would block, a device)
    and files the OS cannot read.
    """
    try:
        if not stat.S_ISREG(source.stat().st_mode):
            raise InputError(str(source), None, field_name, "not a regular file")
        data = source.read_bytes()
    except FileNotFoundError:
        raise InputError(str(source), None, field_name, "no such file") from None
    except OSError as exc:
        raise InputError(str(source), None, field_name, f"cannot read ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")
