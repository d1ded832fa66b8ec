"""Error rendering: every failure leaves as JSON `{"message": ...}` with its status; never a traceback.

An unexpected exception is logged with its traceback and answered 500; the worker thread keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from edge_daemon.errors import ApiError

log = logging.getLogger("edge_daemon.api")


def _render(resp: falcon.Response, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"message": message}
    for name, value in (headers or {}).items():
        resp.set_header(name, value)


def handle_api_error(req: falcon.Request, resp: falcon.Response, error: ApiError, params: Any) -> None:
    _render(resp, error.status, error.message, error.headers)


def handle_http_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError, params: Any) -> None:
    message = error.description or error.title or "request failed"
    if isinstance(error, falcon.HTTPNotFound) and not error.description:
        message = f"no route for {req.method} {req.path}"
    if isinstance(error, falcon.HTTPMethodNotAllowed):
        message = f"method {req.method} is not allowed on {req.path}"
    _render(resp, error.status_code, message, dict(error.headers or {}))


def handle_unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
    log.error("unhandled error on %s %s", req.method, req.path, exc_info=error)
    _render(resp, 500, f"internal server error ({error.__class__.__name__}); the server logged the details")


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
