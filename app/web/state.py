"""Every ``st.session_state`` key the workbench uses, in one place.

Keys that belong to one claimed pair are built with ``item_key`` so a new pair starts with fresh widgets.
"""
from __future__ import annotations

# Sign-in
USER = "pairlab.user"  # storage.users.UserInfo of the signed-in user
SESSION_STARTED = "pairlab.session_started"  # naive UTC datetime of sign-in, for "this session" throughput
SESSION_TOKEN = "pairlab.session_token"  # the signed session token (storage.sessions), also in the browser cookie
SESSION_EXPIRES = "pairlab.session_expires"  # naive UTC datetime the session ends
FLASH = "pairlab.flash"  # (level, message) shown once after the next rerun
LOGIN_NAME = "login.name"
LOGIN_PASSWORD = "login.password"

# Annotate: the screen is held in session state, so a rerun without an action touches no database row
ANN_ACTIVE = "annotate.active"  # True once the person asked to annotate (visiting the page claims nothing)
ANN_CLAIM = "annotate.claim"  # storage.queue.Claim on screen, or None when the queue was empty
ANN_ANSWER = "annotate.answer"  # app.web.annotator.Answer the widget starts from (pre-marks, a refused or undone answer)
ANN_SUGGESTIONS = "annotate.suggestions"  # app.services.annotate.Suggestion list of the claim on screen
ANN_REVISION = "annotate.revision"  # int, bumped whenever the widget must start over (see screen_token)
ANN_RENEWED_AT = "annotate.renewed_at"  # time.monotonic() of the last claim or lease renewal
ANN_WIDGET = "annotate.widget"  # key of the annotation widget (its "action" trigger)

# Review
REVIEW_PAIR = "review.pair"
REVIEW_LABELS = "review.labels"
REVIEW_VERDICT = "review.verdict"
REVIEW_COMMENT = "review.comment"

# Rounds
ROUNDS_STRATEGY = "rounds.strategy"
ROUNDS_BUDGET = "rounds.budget"
ROUNDS_ASSIGN = "rounds.assign"
ROUNDS_OVERLAP = "rounds.overlap"
ROUNDS_SEED = "rounds.seed"
ROUNDS_JOB = "rounds.job_id"  # the job this session launched last and is watching
ROUNDS_WARM_START = "rounds.warm_start"
ROUNDS_CONTROL = "rounds.control"  # the round whose priority is set or that is closed

# Clean-up
CLEANUP_VERDICT = "cleanup.verdict"  # the verdict filter: "all" or one of storage.audit.VERDICT_FILTERS
CLEANUP_PAGE = "cleanup.page"  # 0-based page of the ranked list
CLEANUP_PICK = "cleanup.pick"  # item_key(CLEANUP_PICK, run, pair): the row's "send" checkbox
CLEANUP_ASSIGN = "cleanup.assign"
CLEANUP_OVERLAP = "cleanup.overlap"
CLEANUP_JOB = "cleanup.job_id"  # the audit job this session launched and is watching

# Export
EXPORT_FORMAT = "export.format"
EXPORT_JOB = "export.job_id"
EXPORT_EARLIER = "export.earlier"  # per job: the download button of an earlier export

# Explore
EXPLORE_LABELS = "explore.labels"
EXPLORE_STATUS = "explore.status"
EXPLORE_ROUND = "explore.round"
EXPLORE_SPLIT = "explore.split"
EXPLORE_PAIR = "explore.pair"
EXPLORE_PAGE = "explore.page"
EXPLORE_QUERY = "explore.query"
EXPLORE_TOP_TEXTS = "explore.top_texts"  # the toggle that asks for the shown pair's top texts

# Users
USERS_NAME = "users.name"
USERS_ROLE = "users.role"
USERS_PASSWORD = "users.password"
USERS_PASSWORD_AGAIN = "users.password_again"


def item_key(prefix: str, *parts: object) -> str:
    """A widget key scoped to one item, e.g. ``item_key(ANN_VERDICT, queue_item_id)``."""
    return ".".join([prefix, *(str(p) for p in parts)])
