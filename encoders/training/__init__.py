"""Trainers, one per model, on one skeleton (``loop``: shared config, epochs, progress,
checkpoints, resume): ``frames`` and ``clips`` (objectives in ``objectives``, cell pairs in
``cells``), ``predictor`` (data in ``predictor_data``), ``text_image`` (recipe in
``text_image_recipe``, data in ``text_image_data``)."""
