"""pairlab's learner: encoders, the probabilistic cross-modal model, training, metrics and selection.

Works on arrays and paths only; it never imports ``storage`` or Streamlit.
"""
