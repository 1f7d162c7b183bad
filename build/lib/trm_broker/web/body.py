"""Reading request bodies with a size limit enforced before any parsing work."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from trm_broker.web.problems import TooLarge

Model = TypeVar("Model", bound=BaseModel)


async def read_limited(request: Request, limit: int) -> bytes:
    """Return the body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"The body is larger than {limit} bytes; large files travel by reference.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(
                f"The body is larger than {limit} bytes; large files travel by reference."
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(model: type[Model], body: bytes) -> Model:
    """Validate a body already read (and size-checked) against ``model``: 422-style errors
    in the same problem shape as FastAPI's own body validation."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error.get("loc", ()))} for error in exc.errors()]
        raise RequestValidationError(errors) from None
