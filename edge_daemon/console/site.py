"""Serves the console's files: the page at `/` and its assets under content-hashed names.

Assets are read once at start-up and named after their sha256 (`console.3f2a9c1b7d4e.js`), so they are
cached as immutable and a new release can never be mixed with an old cached file; the page itself is
revalidated on every load (ETag, 304). The files hold no data, so they load without an access key: exactly
these paths, no prefix, are exempted (`public_paths`), and everything the page shows comes from API calls
that carry the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import falcon

from edge_daemon.api.openapi import OpenApiRegistry, Operation, error_responses

STATIC = Path(__file__).resolve().parent / "static"
ASSET_PREFIX = "/console/static/"
_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}
_ASSETS = ("console.css", "console.js", "favicon.svg")
# The page may talk to its own origin only: a second line of defence for "nothing leaves the box".
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
        "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_IMMUTABLE = ["public", "max-age=31536000", "immutable"]


@dataclass(frozen=True)
class Asset:
    data: bytes
    content_type: str
    etag: str


def _asset(data: bytes, content_type: str) -> Asset:
    return Asset(data, content_type, hashlib.sha256(data).hexdigest()[:16])


class ConsoleSite:
    """The console's files, read once: the page and its assets under their hashed names."""

    def __init__(self, auth_required: bool, static: Path = STATIC):
        self.assets: dict[str, Asset] = {}
        page = (static / "index.html").read_text(encoding="utf-8")
        for name in _ASSETS:
            data = (static / name).read_bytes()
            stem, _, extension = name.rpartition(".")
            hashed = f"{stem}.{hashlib.sha256(data).hexdigest()[:12]}.{extension}"
            self.assets[hashed] = _asset(data, _TYPES[extension])
            page = page.replace("{{" + name + "}}", ASSET_PREFIX + hashed)
        # Tells the page to ask for a key before its first call (rather than learn it from a 401).
        page = page.replace("{{auth}}", "required" if auth_required else "open")
        self.page = _asset(page.encode("utf-8"), falcon.MEDIA_HTML)

    def public_paths(self) -> list[str]:
        """The exact paths that load without an access key: the page and each asset, nothing else."""
        return ["/", *(ASSET_PREFIX + name for name in self.assets)]


def _not_modified(req: falcon.Request, etag: str) -> bool:
    return any(tag == etag or tag == "*" for tag in (req.if_none_match or []))


def _send(req: falcon.Request, resp: falcon.Response, asset: Asset, cache_control: list[str]) -> None:
    resp.etag = asset.etag
    resp.cache_control = cache_control
    resp.set_header("X-Content-Type-Options", "nosniff")
    if _not_modified(req, asset.etag):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = asset.content_type
    resp.data = asset.data


class PageResource:
    def __init__(self, site: ConsoleSite):
        self.site = site

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.set_header("Content-Security-Policy", _CSP)
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("X-Frame-Options", "DENY")
        _send(req, resp, self.site.page, ["no-cache"])


class AssetResource:
    def __init__(self, site: ConsoleSite):
        self.site = site

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        asset = self.site.assets.get(name)
        if asset is None:
            raise falcon.HTTPNotFound(description=f"no console file named {name[:100]!r}")
        _send(req, resp, asset, _IMMUTABLE)


def register(app: falcon.App, registry: OpenApiRegistry, site: ConsoleSite) -> None:
    app.add_route("/", PageResource(site))
    app.add_route(ASSET_PREFIX + "{name}", AssetResource(site))
    not_modified = {"304": {"description": "Not modified (If-None-Match matched the ETag)"}}
    registry.add(Operation("/", "get", "The web console (HTML; turn it off with --console false)", tags=["console"],
                           operation_id="get_console",
                           responses={"200": {"description": "The console page", "content": {"text/html": {}}},
                                      **not_modified}))
    registry.add(Operation(
        ASSET_PREFIX + "{name}", "get", "A console file (content-hashed name, cached as immutable)", tags=["console"],
        operation_id="get_console_file",
        parameters=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "file name with its content hash, as the page links it"}],
        responses={"200": {"description": "The file", "content": {kind.split(";")[0]: {} for kind in
                                                                  sorted(set(_TYPES.values()))}},
                   **not_modified, "404": error_responses(404)["404"]}))
