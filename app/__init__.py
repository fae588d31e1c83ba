"""pairlab's application layer, in rooms by concern:

- ``app.cli``: the ``pairlab`` command line, ``serve`` and ``demo``;
- ``app.web``: the Streamlit workbench (entrypoint, router, runtime, state keys, widgets, ``pages/``);
- ``app.jobs``: background job kinds, their handlers, and the worker;
- ``app.services``: one module per use case (settings, data, encode, train, select, retrieval,
  annotate, users), wiring ``storage`` to ``learner``;
- ``app.bench``: ``pairlab simulate`` and its reports.

Imports go downwards only: ``cli`` -> ``web``/``jobs`` -> ``services`` -> ``learner``/``storage``;
``bench`` uses ``services`` and ``learner``. SQL lives in ``storage``. The package names ``app``,
``learner`` and ``storage`` are this project's internals: code outside pairlab should drive it
through the ``pairlab`` command, not import these packages.
"""
