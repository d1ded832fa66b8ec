"""Errors that carry their HTTP status, so any layer can fail with a clear message and the API renders it.

Messages are shown to clients as they are: never put secrets, paths with secrets or tracebacks in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ApiError(Exception):
    """A failure the client should see as `{"message": ...}` with `status`."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class Unprocessable(ApiError):
    status = 422


class BadGateway(ApiError):
    status = 502


class ServiceUnavailable(ApiError):
    status = 503


class ModelArtifactError(ApiError):
    """The model's files exist but cannot be served (bad layout, class count mismatch, corrupt weights)."""

    status = 422


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag an exception raised inside with the step that failed (`metadata`, `engine`, `warmup`, ...), once:
    the innermost tag wins. Metrics count failed model loads by it."""
    try:
        yield
    except BaseException as error:
        if not hasattr(error, "failure_stage"):
            error.failure_stage = name  # type: ignore[attr-defined]
        raise


def failure_stage(error: BaseException) -> str:
    return str(getattr(error, "failure_stage", "internal" if not isinstance(error, ApiError) else "other"))
