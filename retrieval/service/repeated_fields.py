"""Multipart form fields sent more than once where the form takes one value: refused (422).

FastAPI builds a form model from the last value of a repeated single-valued field, so a
second ``frame`` part or ``k=3&k=50`` was dropped without a word (a query frame lost). Fields
that take several values (``months``, ``image``, ``frames``) may repeat.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel


def sent_once(
    form: type[BaseModel], single_files: frozenset[str]
) -> Callable[..., Awaitable[None]]:
    """A route dependency refusing a repeated single-valued field of ``form`` or one of the
    file parts named in ``single_files``."""
    single = {name for name, f in form.model_fields.items() if not _many(f.annotation)}
    single |= single_files

    async def check(request: Request) -> None:
        parts = await request.form()  # parsed once per request (Starlette keeps it)
        for name in sorted(single & set(parts.keys())):
            given = len(parts.getlist(name))
            if given > 1:
                raise RequestValidationError(
                    [
                        {
                            "loc": ("body", name),
                            "msg": f"given {given} times; send it once",
                            "type": "value_error",
                        }
                    ]
                )

    return check


def _many(annotation: object) -> bool:
    """Whether a field's type takes several values (a list or tuple, optional or annotated:
    ``bbox`` is four repeated fields)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _many(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_many(arg) for arg in typing.get_args(annotation))
    return False
