"""Trainers, one per model (``frames``, ``clips``, ``predictor``, ``text_image``), on the
shared loop (``loop``: config, epochs, checkpoints, resume) and cell-level pairs (``cells``)."""
