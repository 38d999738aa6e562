"""Encoders: frame and clip encoders, video predictor, CLIP-style text-image model,
training, checkpoints and the model registry."""
