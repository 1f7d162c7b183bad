"""A form that carries a file (``multipart/form-data``, RFC 7578), read with the standard
library's MIME parser, and checked for its session's CSRF token as every form is.

The body is in memory already, bounded by the node's body limits (``trm_broker/web/limits``:
an upload route's own, wider limit); the route bounds the file itself and says so in words.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from trm_broker.node.web.visitor import Visitor, signed_in
from trm_broker.web.page_app import CSRF_FIELD, PageRefused, tokens_match

#: At most this many parts in an upload form (its fields and its one file).
_MAX_PARTS = 200


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    #: The browser's name for the file: never stored, never shown (it may name the person).
    given_name: str


@dataclass(frozen=True)
class Upload:
    visitor: Visitor
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def one(self, name: str) -> str:
        return (self.fields.get(name) or [""])[0].strip()


def read_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], dict[str, UploadedFile]]:
    """The form's text fields (values by name) and files (the first by name; an empty file
    input sends a part without a file name, which is left out)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise PageRefused(400, "not-an-upload")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not parsed.is_multipart():
        raise PageRefused(400, "not-an-upload")
    fields: dict[str, list[str]] = {}
    files: dict[str, UploadedFile] = {}
    for count, part in enumerate(parsed.iter_parts()):
        if count >= _MAX_PARTS:
            raise PageRefused(413, "form-too-large")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields.setdefault(name, []).append(data.decode("utf-8", "replace"))
        elif filename and name not in files:
            files[name] = UploadedFile(data, filename)
    return fields, files


async def checked_upload(
    request: Request, visitor: Annotated[Visitor, Depends(signed_in)]
) -> Upload:
    """An upload form of the visitor's session: refused (403) without its CSRF token."""
    body = await request.body()
    fields, files = read_multipart(request.headers.get("content-type", ""), body)
    given = fields.get(CSRF_FIELD)
    token = given[0] if given else None
    if not tokens_match(visitor.csrf_token, token):
        raise PageRefused(403, "csrf")
    return Upload(visitor, fields, files)


UploadForm = Annotated[Upload, Depends(checked_upload)]
