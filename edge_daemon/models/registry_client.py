"""Client for a model registry speaking Roboflow's classic artifact protocol.

`GET {api}/ort/{project}/{version}?api_key=...` answers `{"ort": {"model": <weights URL>, "environment":
<environment.json URL>, "type", "modelType", "classes", "colors"}}`; both URLs are then downloaded.
Registry failures map onto the statuses Roboflow's server uses (401/403/404, 502 bad answer, 503
unreachable). The API key travels only in the query string and is never part of a message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from edge_daemon.errors import ApiError, BadGateway, NotFound, ServiceUnavailable, Unauthorized
from edge_daemon.models.store import ModelId

log = logging.getLogger(__name__)

MAX_ARTIFACT_BYTES = 2 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class ArtifactInfo:
    weights_url: str
    environment_url: str
    task: str
    model_type: str
    classes: tuple[str, ...]
    colors: dict[str, str]


def _describe(url: str) -> str:
    """A URL safe for messages and logs: scheme, host and path only (no query, so no key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _map_http_error(status: int, model_id: ModelId) -> ApiError:
    if status == 401:
        return Unauthorized(f"the model registry rejected the API key for {model_id}; check the api_key")
    if status == 403:
        return ApiError(f"the API key has no access to {model_id}", status=403)
    if status == 402:
        return ApiError("the model registry reports no credits left for this key", status=402)
    if status == 404:
        return NotFound(f"model {model_id} was not found in the model registry")
    return BadGateway(f"the model registry answered HTTP {status} for {model_id}")


class RegistryClient:
    def __init__(self, api_url: str, timeout: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout

    def _open(self, url: str, model_id: ModelId) -> Any:
        request = urllib.request.Request(url, headers={"User-Agent": "edge-daemon"})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            raise _map_http_error(error.code, model_id) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            log.warning("model registry unreachable at %s: %s", _describe(url), reason.__class__.__name__)
            raise ServiceUnavailable("could not connect to the model registry") from None

    def artifact_info(self, model_id: ModelId, api_key: str | None) -> ArtifactInfo:
        query: dict[str, str] = {"nocache": "true", "device": socket.gethostname(), "dynamic": "true"}
        if api_key and api_key != "local":
            query["api_key"] = api_key
        url = (f"{self.api_url}/ort/{quote(model_id.project, safe='')}/{quote(model_id.version, safe='')}"
               f"?{urlencode(query)}")
        with self._open(url, model_id) as response:
            body = response.read(8 * 1024 * 1024)
        try:
            ort = json.loads(body)["ort"]
            return ArtifactInfo(
                weights_url=str(ort["model"]),
                environment_url=str(ort["environment"]),
                task=str(ort.get("type", "object-detection")),
                model_type=str(ort.get("modelType", "")),
                classes=tuple(str(name) for name in ort.get("classes") or ()),
                colors=dict(ort.get("colors") or {}),
            )
        except (ValueError, KeyError, TypeError):
            raise BadGateway(f"the model registry sent an unexpected answer for {model_id}") from None

    def download(self, url: str, destination: Path, model_id: ModelId,
                 progress: Callable[[int, int | None], None] | None = None) -> int:
        """Stream `url` into `destination`; check the length against Content-Length. Returns bytes written.

        `progress(done, total)` is called after every block (total None when the server sends no length).
        """
        if urlsplit(url).scheme not in ("http", "https"):
            raise BadGateway(f"the model registry sent a non-http artifact URL for {model_id}")
        digest = hashlib.sha256()
        written = 0
        with self._open(url, model_id) as response, open(destination, "wb") as handle:
            declared = response.headers.get("Content-Length")
            total = int(declared) if declared and declared.isdigit() else None
            while True:
                try:
                    block = response.read(1 << 20)
                except (TimeoutError, OSError):  # the network failed, not the disk
                    raise ServiceUnavailable(f"download of {model_id} was interrupted") from None
                if not block:
                    break
                written += len(block)
                if written > MAX_ARTIFACT_BYTES:
                    raise BadGateway(f"artifact for {model_id} is larger than {MAX_ARTIFACT_BYTES} bytes")
                digest.update(block)
                handle.write(block)  # a full disk raises OSError here: the manager answers 507
                if progress:
                    progress(written, total)
        if declared is not None and declared.isdigit() and int(declared) != written:
            raise ServiceUnavailable(f"download of {model_id} was truncated ({written} of {declared} bytes)")
        if written == 0:
            raise BadGateway(f"the model registry sent an empty artifact for {model_id}")
        log.info("downloaded %s for %s: %d bytes sha256=%s", _describe(url), model_id, written,
                 digest.hexdigest()[:12])
        return written
