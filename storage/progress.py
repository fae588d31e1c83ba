"""Progress callbacks of long storage operations (imports, exports)."""
from __future__ import annotations

from collections.abc import Callable

CountProgress = Callable[[int, int], None]
"""A ``(done, total)`` callback: called as ``progress(done, total)`` with the items done so far."""
