"""``python -m app.cli``: the same as the ``pairlab`` command (``pairlab serve`` starts its worker this way)."""
import sys

from app.cli.parser import main

sys.exit(main())
