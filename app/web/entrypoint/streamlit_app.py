"""The workbench entrypoint that ``pairlab serve`` hands to Streamlit: a router showing pages by role.

It sits in a folder of its own because Streamlit treats a ``pages/`` folder beside its main script
as a legacy multipage app, which would bypass the role-based router (``app.web.router``).
"""
from __future__ import annotations

import streamlit as st

from app.web import runtime
from app.web.router import home, routes
from storage.errors import PairlabError

st.set_page_config(page_title="pairlab", page_icon=":material/image_search:", layout="wide")

try:
    store = runtime.get_store()
except PairlabError as exc:  # e.g. a bad pairlab.toml: say so in one line, as the CLI does
    st.error(f"The workspace cannot be opened: {exc}")
    st.stop()
runtime.restore_session(store)
runtime.try_auto_login(store)
runtime.sync_cookie()
user = runtime.current_user()
start = home(user)
pages = [st.Page(spec.render, title=spec.title, url_path=spec.url_path, icon=spec.icon, default=spec is start,
                 visibility="visible" if spec.visible else "hidden")
         for spec in (start, *routes(user))]
page = st.navigation(pages, position="sidebar" if user is not None else "hidden")
if user is not None:
    with st.sidebar:
        st.text(f"Signed in as {user.name} ({user.role})")
        if st.button("Sign out", icon=":material/logout:"):
            runtime.sign_out(store)
            st.rerun()
page.run()
