"""The one factory that builds the falcon WSGI application from settings."""

from __future__ import annotations

import falcon

from edge_daemon.api import docs, errors, infer, legacy, model_management
from edge_daemon.api.access_log import AccessLogMiddleware
from edge_daemon.api.openapi import OpenApiRegistry
from edge_daemon.config import Settings
from edge_daemon.service import InferenceService


class DaemonApp(falcon.App):
    """The falcon app plus handles on what it serves (for start-up work, the CLI and tests)."""

    def __init__(self, service: InferenceService, openapi: OpenApiRegistry):
        super().__init__(middleware=[AccessLogMiddleware()], cors_enable=False)
        self.service = service
        self.openapi = openapi


def create_app(settings: Settings, service: InferenceService | None = None) -> DaemonApp:
    """Wire the service, routes, OpenAPI registry and error handlers into a WSGI app."""
    service = service or InferenceService(settings)
    registry = OpenApiRegistry()
    app = DaemonApp(service, registry)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    docs.register(app, registry)
    infer.register(app, registry, service)
    model_management.register(app, registry, service)
    legacy.register(app, registry, service)
    return app
