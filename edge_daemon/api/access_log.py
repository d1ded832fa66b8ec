"""One access-log line per request: method, route path, status, model, stage timings. Never the query
string (it may hold an api_key) and never image bytes. Structured fields travel as `extra`, so the JSON log
format carries them as keys."""

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
        status = int(str(resp.status)[:3])
        model = req.context.get("model_id", "-")
        stages = req.context.get("stage_ms") or {}
        detail = " ".join(f"{name}={value:.1f}ms" for name, value in stages.items())
        if stages:  # the same timings for the client (the console shows them), in the standard header
            resp.set_header("Server-Timing", ", ".join(f"{name};dur={value:.2f}" for name, value in stages.items()))
        log.info("%s %s %d model=%s %.1fms %s", req.method, req.path, status, model, elapsed_ms, detail,
                 extra={"method": req.method, "path": req.path, "status": status, "model": model,
                        "duration_ms": round(elapsed_ms, 2), **{f"{k}_ms": round(v, 2) for k, v in stages.items()}})
