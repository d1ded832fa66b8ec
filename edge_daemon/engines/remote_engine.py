"""Remote backend: the preprocessed batch runs on a KServe v2 server (Triton, MLServer), decoding stays here.

It implements the same `Engine` interface as ONNX Runtime and TensorRT, so the daemon's preprocessing, task
decoders and dynamic batching are unchanged: one batch is one remote call. The local model folder is still
resolved (class names, preprocessing) and its ONNX file describes the tensors; at load the server's model
metadata must agree with it (input and output names, datatypes, fixed dimensions), else the model fails to
load with a `ModelArtifactError` naming the difference, rather than at the first request.

Faults: each call has `remote_timeout`; a call refused as UNAVAILABLE is retried `remote_retries` times on a
fresh connection; after 3 failures in a row the circuit breaker opens and calls fail at once for
`remote_breaker_seconds`, then one probe call is let through. While the server is down a request gets 503
with the reason, or, with `remote_fallback`, runs on this box's own engine (reported in /info and /metrics).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_daemon.engines.base import Engine, EngineBuild, TensorSpec
from edge_daemon.engines.circuit_breaker import CircuitBreaker
from edge_daemon.engines.kserve_v2 import (
    V2_DATATYPES,
    Endpoint,
    Rejected,
    RemoteModel,
    Unreachable,
    V2Client,
    parse_url,
)
from edge_daemon.engines.onnxruntime_engine import OnnxRuntimeEngine
from edge_daemon.errors import BadGateway, ModelArtifactError, ServiceUnavailable

log = logging.getLogger(__name__)

FAILURES_TO_OPEN = 3
RETRY_BACKOFF_SECONDS = 0.05


def server_model_name(model_id: str, model_map: Mapping[str, str]) -> str:
    """The server's name for a model: mapped explicitly, else the id with '/' as '_' (shapes/1 -> shapes_1)."""
    return model_map.get(model_id) or model_id.replace("/", "_")


def parse_model_map(entries: Sequence[str]) -> dict[str, str]:
    """`["shapes/1=detector", ...]` (the remote_model_map option) as a dict; a malformed entry is an error."""
    mapped: dict[str, str] = {}
    for entry in entries:
        model_id, sep, name = entry.partition("=")
        if not sep or not model_id.strip() or not name.strip():
            raise ValueError(f"remote_model_map entries look like project/1=server_name, not {entry!r}")
        mapped[model_id.strip()] = name.strip()
    return mapped


@dataclass(frozen=True)
class RemoteConfig:
    url: str
    model_map: dict[str, str] = field(default_factory=dict)
    timeout: float = 5.0
    retries: int = 2
    breaker_seconds: float = 5.0


def metadata_mismatches(local_inputs: Sequence[TensorSpec], local_outputs: Sequence[TensorSpec],
                        remote: RemoteModel) -> list[str]:
    """Differences between the local ONNX file's tensors and the server's model metadata (empty: they agree)."""
    problems: list[str] = []
    for kind, mine, theirs in (("input", local_inputs, remote.inputs), ("output", local_outputs, remote.outputs)):
        served = {tensor.name: tensor for tensor in theirs}
        if not theirs:
            problems.append(f"the server lists no {kind}s")
            continue
        for spec in mine:
            tensor = served.pop(spec.name, None)
            if tensor is None:
                problems.append(f"{kind} {spec.name!r} is not on the server (it has {sorted(t.name for t in theirs)})")
                continue
            expected = V2_DATATYPES.get(spec.dtype, spec.dtype)
            if tensor.datatype != expected:
                problems.append(f"{kind} {spec.name!r} is {tensor.datatype} on the server, {expected} here")
            if len(tensor.shape) != len(spec.shape) or any(
                    dim is not None and remote_dim >= 0 and dim != remote_dim
                    for dim, remote_dim in zip(spec.shape, tensor.shape)):
                local_shape = [-1 if dim is None else dim for dim in spec.shape]
                problems.append(f"{kind} {spec.name!r} has shape {list(tensor.shape)} on the server, "
                                f"{local_shape} here")
        if kind == "input" and served:
            problems.append(f"the server's model wants inputs this model lacks: {sorted(served)}")
    return problems


class RemoteEngine:
    """An `Engine` whose `run` is one KServe v2 inference call."""

    backend = "remote"

    def __init__(self, weights: Path, model_id: str, config: RemoteConfig, fallback: Engine | None = None,
                 client: V2Client | None = None):
        self.model_id = model_id
        self.endpoint: Endpoint = parse_url(config.url)
        self.server_model = server_model_name(model_id, config.model_map)
        self.fallback = fallback
        started = time.perf_counter()
        local = fallback or OnnxRuntimeEngine(weights, intra_op_threads=1, optimization="none")
        self.inputs: list[TensorSpec] = list(local.inputs)
        self.outputs: list[TensorSpec] = list(local.outputs)
        del local  # without a fallback the session was only read for its tensor descriptions
        self._input = self.inputs[0]
        self._input_dtype = np.dtype(self._input.dtype if self._input.dtype in V2_DATATYPES else "float32")
        self._output_names = [spec.name for spec in self.outputs]
        self._client = client or V2Client(self.endpoint, config.timeout)
        self._retries = max(0, config.retries)
        self.breaker = CircuitBreaker(FAILURES_TO_OPEN, config.breaker_seconds)
        self._counts_lock = threading.Lock()
        self.counts = {"ok": 0, "unreachable": 0, "rejected": 0, "fast_failed": 0, "fallback": 0}
        self.images = 0
        self.server = "unknown"
        self._verified = False
        self.fallback_active = False
        try:
            self._verify()
        except Unreachable as error:
            if fallback is None:
                raise ServiceUnavailable(self._down_message(str(error)), headers={"Retry-After": "5"}) from None
            # Serve locally now; the metadata is checked on the first call that reaches the server.
            self.breaker.failure(str(error))
            self._set_fallback(True, str(error))
        backend_version = self.server if self._verified else "unverified"
        self.build = EngineBuild(self.backend, backend_version, _precision(self._input.dtype),
                                 load_seconds=time.perf_counter() - started)

    # ----- load-time check --------------------------------------------------------------------------
    def _verify(self) -> None:
        """Compare the server's metadata with the local model; raises ModelArtifactError on a mismatch."""
        try:
            remote = self._client.model(self.server_model)
        except Rejected as error:
            raise ModelArtifactError(f"the inference server {self.endpoint.display} has no usable model "
                                     f"{self.server_model!r} for {self.model_id} ({error}); export it with "
                                     f"`edge-daemon models export-triton` or map the name with "
                                     f"EDGE_DAEMON_REMOTE_MODEL_MAP") from None
        problems = metadata_mismatches(self.inputs, self.outputs, remote)
        if problems:
            raise ModelArtifactError(f"the inference server's model {self.server_model!r} does not match "
                                     f"{self.model_id}: " + "; ".join(problems))
        try:
            self.server = self._client.server()
        except (Unreachable, Rejected):
            self.server = "unknown"
        input_datatype = {tensor.name: tensor.datatype for tensor in remote.inputs}[self._input.name]
        self._datatype = input_datatype
        self._verified = True
        log.info("model %s runs on %s (%s) as %r", self.model_id, self.endpoint.display, self.server,
                 self.server_model)

    # ----- Engine -----------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.breaker.allow():
            self._count("fast_failed")
            return self._unavailable(batch, self.breaker.last_error or "circuit open")
        try:
            if not self._verified:
                self._verify_later()
            outputs = self._call(batch)
        except Unreachable as error:
            self.breaker.failure(str(error))
            self._count("unreachable")
            log.warning("inference server %s: %s", self.endpoint.display, error)
            return self._unavailable(batch, str(error))
        except Rejected as error:
            self.breaker.success()  # it answered: the server is up
            self._count("rejected")
            raise BadGateway(f"the inference server {self.endpoint.display} refused {self.server_model!r}: "
                             f"{error}") from None
        self.breaker.success()
        self._count("ok")
        if self.fallback_active:
            self._set_fallback(False, None)
        with self._counts_lock:
            self.images += len(batch)
        return outputs

    def _verify_later(self) -> None:
        """First contact after a load that fell back: a mismatch now disables the remote path for good."""
        try:
            self._verify()
        except ModelArtifactError as error:
            log.error("%s; serving %s on the local engine only", error.message, self.model_id)
            self.breaker = CircuitBreaker(1, math.inf)
            self.breaker.failure(error.message)
            raise Unreachable(error.message) from None
        self.build.backend_version = self.server

    def _call(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.dtype != self._input_dtype:
            batch = batch.astype(self._input_dtype)
        attempt = 0
        while True:
            try:
                outputs = self._client.infer(self.server_model, self._input.name, self._datatype, batch,
                                             self._output_names)
                break
            except Unreachable as error:
                self._client.reset()
                if attempt >= self._retries or "DEADLINE_EXCEEDED" in str(error) or "timed out" in str(error):
                    raise  # a time-out is not retried: it would double the wait of every request
                time.sleep(RETRY_BACKOFF_SECONDS * 2 ** attempt)
                attempt += 1
        return [np.asarray(out, dtype=np.float32) if out.dtype == np.float16 else out for out in outputs]

    def _unavailable(self, batch: np.ndarray, reason: str) -> list[np.ndarray]:
        if self.fallback is not None:
            if not self.fallback_active:
                self._set_fallback(True, reason)
            self._count("fallback")
            return self.fallback.run(batch)
        retry = max(1, math.ceil(self.breaker.seconds_until_retry()))
        raise ServiceUnavailable(self._down_message(reason), headers={"Retry-After": str(retry)})

    def _down_message(self, reason: str) -> str:
        return (f"the inference server {self.endpoint.display} is unavailable for {self.model_id} "
                f"({reason[:200]}); retry shortly")

    def _set_fallback(self, active: bool, reason: str | None) -> None:
        self.fallback_active = active
        if active:
            log.warning("inference server %s is down (%s): serving %s on the local engine", self.endpoint.display,
                        reason, self.model_id)
        else:
            log.info("inference server %s is back: %s runs remotely again", self.endpoint.display, self.model_id)

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            self.counts[outcome] += 1

    # ----- reporting --------------------------------------------------------------------------------
    def remote_status(self) -> dict[str, Any]:
        """What /info and /metrics show: where the model runs and how the server is doing."""
        with self._counts_lock:
            counts = dict(self.counts)
        return {"url": self.endpoint.display, "server": self.server, "model": self.server_model,
                "circuit": self.breaker.state, "up": self.breaker.state == "closed",
                "fallback_enabled": self.fallback is not None, "fallback_active": self.fallback_active,
                "last_error": self.breaker.last_error, "calls": counts, "images": self.images}

    def close(self) -> None:
        close = getattr(self.fallback, "close", None)
        if close is not None:
            close()


def _precision(dtype: str) -> str:
    return {"float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
