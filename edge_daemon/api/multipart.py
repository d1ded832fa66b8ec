"""Reading a multipart/form-data upload with a size limit: one file part plus small text fields."""

from __future__ import annotations

import falcon

from edge_daemon.errors import BadRequest, PayloadTooLarge


def read_form(req: falcon.Request, limit: int, file_field: str) -> tuple[bytes | None, dict[str, str]]:
    """The bytes of the part named `file_field` (None if absent) and the other fields as text (1 KiB each)."""
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than the {limit}-byte limit")
    data: bytes | None = None
    fields: dict[str, str] = {}
    try:
        for part in req.get_media():
            if part.name == file_field:
                data = part.stream.read(limit + 1)
                if len(data) > limit:
                    raise PayloadTooLarge(f"uploaded {file_field} is larger than the {limit}-byte limit")
            elif part.name:
                fields[part.name] = part.stream.read(1024).decode("utf-8", "replace")
    except falcon.MediaMalformedError:
        raise BadRequest("multipart body is malformed") from None
    return data, fields
