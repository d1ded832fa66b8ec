"""Attach camera streams to a daemon app: routes, OpenAPI, metrics, readiness details, and start-up/shut-down."""

from __future__ import annotations

from typing import Any

from edge_daemon.errors import ApiError
from edge_daemon.streams import http, pipelines
from edge_daemon.streams.manager import StreamManager


def attach(app: Any, registry: Any, service: Any, metrics: Any) -> StreamManager:
    """Start the streams file's and the persisted streams; a bad streams file stops start-up with its message."""
    manager = StreamManager(service.settings, service, metrics.registry)
    http.register(app, registry, manager)
    roboflow_pipelines = pipelines.register(app, registry, manager)
    try:
        manager.start()
    except ApiError as error:
        manager.close()
        raise SystemExit(error.message) from None
    app.readiness_details.append(lambda: {"streams": manager.readiness()})
    app.closers.append(manager.close)
    app.closers.append(roboflow_pipelines.close)  # closers run last-first: pipelines, then streams
    return manager
