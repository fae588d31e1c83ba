"""pairlab's learner: encoders, the probabilistic cross-modal model, training, metrics and selection.

- ``encoders/`` (image and text feature extractors, content-hash cache), ``model`` (Gaussian
  embeddings + classifier), ``losses``, ``train_config`` (``TrainConfig``, torch-free),
  ``training`` (``train_model`` as named steps), ``train_steps`` (the per-step loss terms),
  ``early_stopping`` (the epoch-end callback), ``inference`` (``infer``, ``InferenceConfig``),
  ``outputs`` (the arrays selection consumes), ``metrics``, ``checkpoint``;
- ``selection/``: scoring, density and the query strategies, pure functions of arrays.

Works on arrays and paths only; it never imports ``storage``, ``app`` or Streamlit.
"""
