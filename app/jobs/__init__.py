"""Background jobs: the kinds the workbench launches, their handlers, and the worker that runs them.

``launch`` queues a job from a page (checking the role first), ``handlers`` maps each job kind to
the service it runs (re-checking the role of whoever queued it), ``progress`` throttles the
progress a running job reports, ``worker`` claims and runs jobs (``pairlab worker``).

May import ``app.services``, ``learner`` and ``storage``; never ``app.web``, ``app.cli`` or Streamlit.
"""
