"""`/openapi.json` and `/docs`: Swagger UI served from files installed with the package (no CDN), so the
documentation works on a box with no internet."""

from __future__ import annotations

from importlib import resources

import falcon

from edge_daemon.api.openapi import OpenApiRegistry, Operation

# Swagger UI 5 assets shipped by the `offapi` package.
_ASSETS = {
    "swagger-ui-bundle.js": ("swagger_bundle.js", "application/javascript"),
    "swagger-ui-standalone-preset.js": ("swagger_preset.js", "application/javascript"),
    "swagger-ui.css": ("swagger_style.css", "text/css"),
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
  <title>edge-daemon API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = () => {
      window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
    };
  </script>
</body>
</html>
"""


class OpenApiResource:
    def __init__(self, registry: OpenApiRegistry):
        self.registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.registry.document()


class DocsPageResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = _PAGE


class DocsAssetResource:
    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in _ASSETS:
            raise falcon.HTTPNotFound(description=f"no documentation asset named {name!r}")
        filename, content_type = _ASSETS[name]
        if name not in self._cache:
            self._cache[name] = (resources.files("offapi") / filename).read_bytes()
        resp.content_type = content_type
        resp.cache_control = ["public", "max-age=86400"]
        resp.data = self._cache[name]


def register(app: falcon.App, registry: OpenApiRegistry) -> None:
    app.add_route("/openapi.json", OpenApiResource(registry))
    app.add_route("/docs", DocsPageResource())
    app.add_route("/docs/static/{name}", DocsAssetResource())
    for path, summary in (("/openapi.json", "This OpenAPI document"), ("/docs", "Swagger UI (served offline)")):
        content = "application/json" if path.endswith(".json") else "text/html"
        registry.add(Operation(path, "get", summary, tags=["documentation"], operation_id=f"get_{path.strip('/')}",
                               responses={"200": {"description": summary, "content": {content: {}}}}))
