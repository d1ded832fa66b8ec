"""Optional inbound access control: with access keys configured, every request (except the exempt health
and metrics paths) must carry one, as `api_key` in the query or `Authorization: Bearer`. Keys are compared
in constant time and never logged. A key used to get in is never forwarded to the model registry."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import falcon
import orjson

from edge_daemon.api.body import read_body
from edge_daemon.config import Settings
from edge_daemon.errors import Unauthorized

log = logging.getLogger(__name__)


def load_access_keys(settings: Settings) -> list[str]:
    keys = [key for key in settings.access_keys if key]
    if settings.access_keys_file:
        try:
            lines = Path(settings.access_keys_file).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise SystemExit(f"cannot read access keys file {settings.access_keys_file}: {error.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return keys


class AccessKeyMiddleware:
    def __init__(self, keys: list[str], exempt: list[str], max_body_bytes: int):
        self._keys = [key.encode() for key in keys]
        self._exempt = set(exempt)
        self._max_body = max_body_bytes

    def _matches(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        given = candidate.encode()
        found = False
        for key in self._keys:  # no early exit: the time taken does not depend on which key matched
            found |= hmac.compare_digest(given, key)
        return found

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method == "OPTIONS" or req.path in self._exempt:
            return
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        query_key = req.get_param("api_key")
        for candidate in (bearer, query_key, self._body_key(req) if bearer is None and query_key is None else None):
            if self._matches(candidate):
                req.context.inbound_key = candidate
                return
        raise Unauthorized("this server requires an access key: send api_key=<key> or Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": 'Bearer realm="edge-daemon"'})


    def _body_key(self, req: falcon.Request) -> str | None:
        """`api_key` in a JSON body, where Roboflow's clients (inference-sdk v1) put it. The body is read once,
        within the size limit, and kept for the route (`body.read_body`)."""
        if req.method != "POST" or not (req.content_type or "").startswith("application/json"):
            return None
        req.context.raw_body = read_body(req, self._max_body)
        try:
            document = orjson.loads(req.context.raw_body)
        except (orjson.JSONDecodeError, RecursionError):
            return None
        key = document.get("api_key") if isinstance(document, dict) else None
        return key if isinstance(key, str) else None


def registry_key(req: falcon.Request, candidate: str | None) -> str | None:
    """The key to forward to the registry: never the one that opened the door."""
    if candidate and candidate == req.context.get("inbound_key"):
        return None
    return candidate


def middleware(settings: Settings, public_paths: Sequence[str] = ()) -> list[Any]:
    """`public_paths`: exact paths of files that hold no data (the console's page and assets), exempted too."""
    result: list[Any] = []
    if settings.cors_origins:
        result.append(falcon.CORSMiddleware(allow_origins=settings.cors_origins,
                                            expose_headers=["X-Model-Id", "X-Processing-Time"]))
    keys = load_access_keys(settings)
    if keys:
        log.info("inbound access control on (%d keys); exempt: %s", len(keys), ", ".join(settings.auth_exempt))
        result.append(AccessKeyMiddleware(keys, [*settings.auth_exempt, *public_paths], settings.max_body_bytes))
    return result
