"""Reading a request's body once, within its size limit: access control (an api_key in a JSON body) and the
route may both need it."""

from __future__ import annotations

import falcon

from edge_daemon.errors import PayloadTooLarge


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over `limit` bytes before reading it where possible (once: access
    control may have read it already, to find an api_key in it)."""
    if "raw_body" in req.context:
        return req.context.raw_body
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than the {limit}-byte limit")
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is larger than the {limit}-byte limit")
    return body
