"""The browser side of a sign-in session: a cookie holding the session token (``storage.sessions``).

Streamlit reads cookies only from the request that opens the page (``st.context.cookies``) and has no
API to set one, so a custom component (``st.components.v2``, script only, no iframe) writes it with
``document.cookie``: ``SameSite=Strict``, ``Path=/``, ``Max-Age`` until the session expires, ``Secure``
when the page is served over HTTPS. A reload, a new tab or a typed URL sends it back, and the
entrypoint resumes the session from it. Signed out, the component clears it. The token is signed and
revocable server-side, so a copied or stale cookie signs nobody in once its session is revoked or expired.
"""
from __future__ import annotations

from datetime import datetime

import streamlit as st

from storage.models import utcnow

COOKIE = "pairlab_session"

_JS = """
export default function ({ data }) {
  const { name, token, maxAge, secure } = data;
  const attributes = "; Path=/; SameSite=Strict" + (secure ? "; Secure" : "");
  if (token) {
    document.cookie = name + "=" + token + "; Max-Age=" + maxAge + attributes;
  } else if (document.cookie.split("; ").some((c) => c.startsWith(name + "="))) {
    document.cookie = name + "=; Max-Age=0" + attributes;
  }
}
"""
_cookie_writer = st.components.v2.component("pairlab_session_cookie", js=_JS)


def token_from_browser() -> str | None:
    """The session token the browser sent when it opened this page, if any."""
    token = st.context.cookies.get(COOKIE)
    return token if isinstance(token, str) else None


def write(token: str | None, expires_at: datetime | None) -> None:
    """Keep the browser's cookie in step with this session: set to ``token`` until ``expires_at``, or cleared."""
    max_age = max(0, int((expires_at - utcnow()).total_seconds())) if token and expires_at else 0
    url = st.context.url
    secure = isinstance(url, str) and url.startswith("https://")
    _cookie_writer(key="pairlab.session_cookie", height=0,
                   data={"name": COOKIE, "token": token if max_age else None, "maxAge": max_age, "secure": secure})
