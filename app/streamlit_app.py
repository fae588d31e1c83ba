"""The workbench entrypoint: a router that shows pages by role after sign-in (``pairlab serve`` runs it)."""
from __future__ import annotations

import streamlit as st

from app import runtime
from app.navigation import pages_for

st.set_page_config(page_title="pairlab", page_icon=":material/image_search:", layout="wide")

store = runtime.get_store()
runtime.try_auto_login(store)
user = runtime.current_user()
pages = [st.Page(spec.render, title=spec.title, url_path=spec.url_path, icon=spec.icon, default=i == 0)
         for i, spec in enumerate(pages_for(user))]
page = st.navigation(pages)
if user is not None:
    with st.sidebar:
        st.text(f"Signed in as {user.name} ({user.role})")
        if st.button("Sign out", icon=":material/logout:"):
            runtime.sign_out()
            st.rerun()
page.run()
