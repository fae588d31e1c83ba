"""The Streamlit workbench: ``entrypoint/streamlit_app.py`` (what ``pairlab serve`` runs), ``router``
(which pages each role sees), ``runtime`` (the cached store, sign-in, page guards, read sessions),
``state`` (every session-state key), ``widgets`` (shared rendering), ``annotator`` (the client-side
annotation widget, a components-v2 custom component with its JS and CSS in ``assets/``) and ``pages/``
(one module per page, each with one ``render()``).

Pages are thin: read widgets, call ``app.services``/``app.jobs.launch`` or a ``storage.read_models``
query through ``runtime.read``, render. May import ``app.services``, ``app.jobs.launch``, ``learner``
names and ``storage``; nothing imports ``app.web`` except ``app.cli.serve``.
"""
