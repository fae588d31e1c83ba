"""pairlab's store: the workspace, its SQLAlchemy schema and every query (SQL lives only here).

- ``workspace`` (``pairlab.toml``, its one table validator ``parse_table``), ``store`` (opening and
  creating workspaces), ``db`` (engine and sessions), ``models`` (the schema), ``errors``, ``text`` (the one
  rule for text entering the store, and how text files are read);
- writes and their rules: ``annotations`` (append-only events, current labels), ``queue`` (rounds,
  leases, submissions), ``jobs``, ``users``, ``vocabulary``, ``features`` (feature files), ``model_versions``;
- reads for the layers above: ``pairs`` (all pairs as columns), ``read_models`` (what the pages show),
  ``agreement`` (Krippendorff's alpha);
- ``importers/`` and ``exporters/`` (every format, all or nothing; ``exporters.targets`` keeps exports
  off the workspace's own files), ``progress`` (the ``(done, total)`` callback type).

May import SQLAlchemy, numpy and Pillow, never torch, ``learner``, ``app`` or Streamlit. Functions that
touch data take a ``session`` owned by the caller (``with store.db.write() as s:``) and return plain
dataclasses or values.
"""
