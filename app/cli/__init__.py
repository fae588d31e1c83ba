"""The ``pairlab`` command line (DESIGN §8): the parser and ``main`` (``parser``), one function per
verb (``verbs``), progress bars (``progress``), ``pairlab serve`` (``serve``) and ``pairlab demo`` (``demo``).

May import every other room of ``app`` plus ``learner`` and ``storage``; verbs import what they
need inside their function so ``pairlab --help`` and the storage-only verbs start fast.
"""
from app.cli.parser import main

__all__ = ["main"]
