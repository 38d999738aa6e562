"""Errors name parameters by the library's names; each front end renders them in its words."""

from __future__ import annotations

from skysearch.cli.app import flag

from skysearch.errors import NotFoundError, UsageError


def test_params_render_as_plain_names_flags_or_fields():
    err = UsageError("{clip_id} or {model_id} is wrong, got {x}", params=["clip_id", "model_id"])
    assert str(err) == "clip_id or model_id is wrong, got {x}"  # only the named params change
    assert err.render(flag) == "--clip-id or --model is wrong, got {x}"
    hinted = NotFoundError("no clip model fits", hint="train one")
    assert str(hinted) == hinted.render(flag) == "no clip model fits: train one"
