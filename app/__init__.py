"""pairlab's application layer: the CLI, the services that wire ``storage`` to ``learner``, and the Streamlit workbench."""
