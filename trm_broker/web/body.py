"""Reading request bodies with a size limit enforced before any parsing work."""

from __future__ import annotations

from fastapi import Request

from trm_broker.web.problems import TooLarge


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
