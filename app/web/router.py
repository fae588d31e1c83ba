"""Which pages each role sees: the single source for the router in ``streamlit_app``."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import streamlit as st

from app.web.pages import annotate, cleanup, explore, export, login, review, rounds, users
from storage.users import PERMISSIONS, UserInfo


@dataclass(frozen=True)
class PageSpec:
    title: str
    url_path: str
    render: Callable[[], None]
    action: str  # the storage.users.PERMISSIONS action the page needs
    icon: str
    visible: bool = True  # listed in the menu (a refused page is routed but hidden)


PAGES = (
    PageSpec("Annotate", "annotate", annotate.render, "annotate", ":material/label:"),
    PageSpec("Review", "review", review.render, "review", ":material/rule:"),
    PageSpec("Clean-up", "cleanup", cleanup.render, "review", ":material/cleaning_services:"),
    PageSpec("Explore", "explore", explore.render, "annotate", ":material/search:"),
    PageSpec("Rounds", "rounds", rounds.render, "operate", ":material/model_training:"),
    PageSpec("Export", "export", export.render, "operate", ":material/download:"),
    PageSpec("Users", "users", users.render, "operate", ":material/group:"),
)
LOGIN = PageSpec("Sign in", "login", login.render, "", ":material/login:")


LANDING = {"annotator": "annotate", "reviewer": "review", "operator": "rounds", "system": "rounds"}
HOME = "home"  # the url_path of the default page, which Streamlit serves at "/" (and never at its own path)


def landing_page(user: UserInfo | None) -> str:
    """The ``url_path`` of the page a user starts on: annotators Annotate, reviewers Review, operators Rounds
    (so nobody who did not come to label holds a lease by visiting the landing page)."""
    return "login" if user is None else LANDING[user.role]


def home(user: UserInfo | None) -> PageSpec:
    """The default page, served at "/": the user's landing page under a path of its own, unlisted.

    Streamlit serves the default page only at "/", so were the landing page itself the default, a deep
    link to it (``/rounds`` for an operator) would say "Page not found"."""
    spec = LOGIN if user is None else next(p for p in PAGES if p.url_path == landing_page(user))
    return replace(spec, url_path=HOME, visible=False)


def pages_for(user: UserInfo | None) -> list[PageSpec]:
    """The sign-in page when nobody is signed in, else the pages the user's role allows."""
    if user is None:
        return [LOGIN]
    return [p for p in PAGES if user.role in PERMISSIONS[p.action]]


def refuse() -> None:
    """What a signed-in user sees at the URL of a page their role does not allow."""
    st.error("You do not have access to this page.")


def routes(user: UserInfo | None) -> list[PageSpec]:
    """What the router registers besides ``home``: signed out, the sign-in form at every page's URL (and
    no menu), so a deep link such as ``/rounds`` survives signing in instead of "Page not found"; signed
    in, the user's pages, and at the URL of every other page a refusal that the menu does not list."""
    if user is None:
        return [LOGIN, *(replace(p, render=LOGIN.render) for p in PAGES)]
    allowed = pages_for(user)
    return allowed + [replace(p, render=refuse, visible=False) for p in PAGES if p not in allowed]
