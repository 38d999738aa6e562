"""The networks: frame encoder (``frame``), clip encoder over frame embeddings (``clip``),
the SimVP video predictor (``predictor``), the CLIP-style text-image towers (``text_image``).
Loading a saved model by id is :mod:`skysearch.encoders.factory`'s job."""
