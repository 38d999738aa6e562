"""One-shot text queries through a model's exported text side (torch and tokenizers only):
the full model's embeddings, and never another model's, an older checkpoint's or a damaged
file's."""

import os

import numpy as np
from skysearch.encoders.checkpoints import WEIGHTS_FILE
from skysearch.encoders.models.text_image import create_text_image_model, save_text_image_model
from skysearch.encoders.models.text_query import QUERY_FILE, export_text_query, load_text_query

TEXTS = [
    "an airport",
    "  boats   in a\tharbour ",  # whitespace cleaned as the tokenizer's wrapper does
    "Caf&eacute; &amp; a PARK",  # HTML entities, case
    "résumé ☃ 東京",
    "a dense residential area " * 40,  # past the context length: truncated alike
    "",
]


def test_exported_text_side_embeds_as_the_model(tmp_path):
    tim = create_text_image_model(seed=0)  # the default offline towers
    tim.model_id = "text-image-x"
    save_text_image_model(tim, tmp_path)
    assert export_text_query(tim, tmp_path)
    tim.traced_text = None  # compare with the eager tower
    light = load_text_query(tmp_path, "text-image-x")
    assert light is not None and light.model_id == "text-image-x"
    want = tim.encode_texts(TEXTS)
    np.testing.assert_allclose(light.encode_texts(TEXTS), want, atol=1e-5)
    for text, row in zip(TEXTS, want, strict=True):  # one at a time, as a CLI query
        np.testing.assert_allclose(light.encode_texts([text])[0], row, atol=1e-5)
    assert light.encode_texts([]).shape == (0, tim.embed_dim)
    assert not export_text_query(tim, tmp_path / "missing")  # cannot write: no file, no error

    assert load_text_query(tmp_path, "text-image-y") is None  # another model's file
    weights = tmp_path / WEIGHTS_FILE
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # the checkpoint rewritten
    assert load_text_query(tmp_path, "text-image-x") is None
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_text_query(tmp_path, "text-image-x") is not None
    (tmp_path / QUERY_FILE).write_bytes(b"damaged")
    assert load_text_query(tmp_path, "text-image-x") is None  # the full model answers then
