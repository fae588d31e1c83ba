"""Sign-in page."""
from __future__ import annotations

import streamlit as st

from app.services.users import TooManyAttempts, sign_in
from app.web import runtime, state


def render() -> None:
    st.title("pairlab")
    st.caption("Active-learning annotation workbench for image-text pairs")
    with st.form("login"):
        name = st.text_input("User name", key=state.LOGIN_NAME)
        password = st.text_input("Password", type="password", key=state.LOGIN_PASSWORD)
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            signed_in = sign_in(runtime.get_store(), name, password, address=runtime.client_address())
        except TooManyAttempts as exc:
            st.error(str(exc))
            return
        if signed_in is None:
            st.error("Unknown user name or wrong password.")
            return
        runtime.sign_in(signed_in)
        st.rerun()
