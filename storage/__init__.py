"""pairlab's store: workspace configuration, the SQLAlchemy schema, importers and exporters.

Free of torch and Streamlit; returns plain dataclasses to ``app`` and ``learner``.
"""
