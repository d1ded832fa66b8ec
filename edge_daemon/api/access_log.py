"""One access-log line per request: method, path, status, model, duration. Never the query string (it may
hold an api_key) and never image bytes."""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon

log = logging.getLogger("edge_daemon.access")


class AccessLogMiddleware:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        elapsed_ms = (time.perf_counter() - req.context.get("started", time.perf_counter())) * 1000
        log.info("%s %s %s model=%s %.1fms", req.method, req.path, resp.status[:3] if isinstance(resp.status, str)
                 else resp.status, req.context.get("model_id", "-"), elapsed_ms)
