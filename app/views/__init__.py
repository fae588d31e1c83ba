"""The workbench pages: one module per page, each with one ``render()`` function, routed by ``app.streamlit_app``.

Not named ``pages``: Streamlit treats a ``pages/`` folder beside the entrypoint as its legacy multipage
directory and would bypass the role-based router.
"""
