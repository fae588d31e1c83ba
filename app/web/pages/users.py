"""Users (operator): list the workbench's users and add one."""
from __future__ import annotations

import streamlit as st

from app.services.users import create_user
from app.web import runtime, state
from storage.errors import PairlabError
from storage.users import HUMAN_ROLES, MIN_PASSWORD_LENGTH, list_users


def render() -> None:
    actor = runtime.require_page("operate")
    store = runtime.get_store()
    st.title("Users")
    runtime.show_flash()
    st.dataframe([{"user": u.name, "role": u.role} for u in runtime.read(list_users)], hide_index=True, width="stretch")
    st.subheader("Add a user")
    with st.form("add_user", clear_on_submit=True):
        name = st.text_input("User name", key=state.USERS_NAME)
        role = st.selectbox("Role", HUMAN_ROLES, key=state.USERS_ROLE)
        password = st.text_input(f"Password (at least {MIN_PASSWORD_LENGTH} characters)", type="password",
                                 key=state.USERS_PASSWORD)
        again = st.text_input("Password again", type="password", key=state.USERS_PASSWORD_AGAIN)
        submitted = st.form_submit_button("Add user", type="primary")
    if submitted:
        try:
            user = create_user(store, actor, name=name, role=role, password=password, password_again=again)
        except PairlabError as exc:
            st.error(str(exc))
            return
        runtime.flash(f"Added user {user.id} ({user.role}).")
        st.rerun()
