"""Use cases that wire ``storage`` to ``learner``: what a CLI verb, a worker job and a page all call.

One module per use case: ``settings`` (the validated ``pairlab.toml``), ``data`` (rows as arrays),
``encode``, ``train`` (and evaluate), ``models`` (model versions and cached checkpoints), ``select``,
``retrieval`` (Explore's search), ``annotate`` (claim, submit, undo, adjudicate) and ``users``;
``progress`` names the progress callback they share.

May import ``learner`` and ``storage``; never ``app.web``, ``app.jobs``, ``app.cli`` or Streamlit.
SQL stays in ``storage``: functions here open a short session and call storage functions with it.
"""
