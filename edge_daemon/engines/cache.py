"""The engine cache: compile a model once per device, reuse it across restarts, never reuse a wrong one.

Layout: `<cache_dir>/engines/<model-slug>/<key>/` holds the artifact (`model.plan`, `optimized.onnx`) and
`metadata.json`. The key hashes everything a compiled engine depends on (the ONNX bytes, backend and its
version, device fingerprint, precision, input shape/profile, builder options), so a retrained model, an
upgraded TensorRT or a cache copied to another box simply misses. Entries appear atomically (a complete
staging folder is renamed into place), a per-key `flock` makes concurrent processes build once, and an
entry whose metadata or checksum does not match, or whose artifact fails to load, is discarded with a log
line saying why, then rebuilt.

A build that fails leaves `<model-slug>/.failed-<key>.json` (reason, time, attempts), so that a restart
does not repeat a long doomed TensorRT build; the factory decides when to try again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from edge_daemon.failures import FailureMemo
from edge_daemon.files import fsync_path, write_atomic
from edge_daemon.hashing import sha256_bytes, sha256_file

log = logging.getLogger(__name__)

ENGINES_DIR = "engines"
METADATA = "metadata.json"
FORMAT = 1
LOCKS_DIR = ".locks"
STAGING_PREFIX = ".staging-"
FAILED_PREFIX = ".failed-"
HEARTBEAT_SECONDS = 15.0

T = TypeVar("T")


# ----- keys -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyInputs:
    """Everything a compiled engine depends on; its canonical JSON hashes to the cache key."""

    model_sha256: str
    backend: str
    backend_version: str
    device: dict[str, str]
    precision: str
    input_profile: Any
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model_sha256": self.model_sha256, "backend": self.backend,
                "backend_version": self.backend_version, "device": dict(sorted(self.device.items())),
                "precision": self.precision, "input_profile": self.input_profile,
                "options": dict(sorted(self.options.items()))}

    def canonical(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        return sha256_bytes(self.canonical().encode())


def model_slug(model_id: str) -> str:
    """A folder name for a model id ('shapes/1' → 'shapes-1'); the key, not the slug, identifies an entry."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.")
    return slug[:120] or "model"


# ----- counters -------------------------------------------------------------------------------------------
class CacheCounters:
    """Process-wide counts, for metrics and for tests that must prove a load did not rebuild."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.builds = 0
        self.hits = 0
        self.discards = 0
        self.build_seconds = 0.0

    def count(self, name: str, seconds: float = 0.0) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            self.build_seconds += seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"builds": self.builds, "hits": self.hits, "discards": self.discards,
                    "build_seconds": round(self.build_seconds, 3)}


COUNTERS = CacheCounters()


# ----- entries --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheEntry:
    path: Path
    slug: str
    key: str
    artifact: Path
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What `get_or_build` produced: the loaded object and how (hit or fresh build)."""

    value: T
    entry: CacheEntry | None  # None when the cache could not be written (the engine still works)
    key: str
    cache_hit: bool
    build_seconds: float | None
    load_seconds: float


class _Heartbeat:
    """Logs 'still building' lines while a long compile runs, so a slow Jetson build is never silent."""

    def __init__(self, what: str, every: float | None = None):
        self.what, self.every = what, every or HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="engine-build-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            log.info("still building %s (%.0f s so far)", self.what, time.monotonic() - self._started)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


class EngineCache:
    def __init__(self, cache_dir: Path, counters: CacheCounters = COUNTERS):
        self.root = Path(cache_dir) / ENGINES_DIR
        self.counters = counters
        self.failures = FailureMemo(self.root)

    def entry_path(self, slug: str, key: str) -> Path:
        return self.root / slug / key

    def blob_path(self, name: str) -> Path:
        """Device-wide files shared by all models (e.g. TensorRT timing caches) live in `engines/.shared/`."""
        return self.root / ".shared" / name

    # ----- failed builds (edge_daemon.failures: the same memo that remembers failed model loads) ----------
    def _failure_name(self, model_id: str, inputs: KeyInputs) -> str:
        return f"{model_slug(model_id)}/{FAILED_PREFIX}{inputs.key}"

    def failure_path(self, model_id: str, inputs: KeyInputs) -> Path:
        return self.failures.path(self._failure_name(model_id, inputs))

    def last_failure(self, model_id: str, inputs: KeyInputs) -> dict[str, Any] | None:
        """The recorded failed build for these inputs, or None."""
        return self.failures.get(self._failure_name(model_id, inputs))

    def record_failure(self, model_id: str, inputs: KeyInputs, reason: str) -> None:
        """Remember that building these inputs failed; a cache that cannot be written only costs the memo."""
        try:
            self.failures.record(self._failure_name(model_id, inputs), reason, model_id=model_id, key=inputs.key,
                                 backend=inputs.backend, backend_version=inputs.backend_version)
        except OSError as error:
            log.warning("could not record the failed build of %s (%s)", model_id, error)

    def clear_failure(self, model_id: str, inputs: KeyInputs) -> None:
        self.failures.clear(self._failure_name(model_id, inputs))

    @contextlib.contextmanager
    def lock(self, slug: str, key: str, what: str = "") -> Iterator[None]:
        """Exclusive per-key lock across processes; says so in the log when another process holds it."""
        lock_dir = self.root / slug / LOCKS_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                log.info("waiting for another process that is building %s", what or f"{slug}/{key[:12]}")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ----- lookup -------------------------------------------------------------------------------------
    def lookup(self, slug: str, inputs: KeyInputs, artifact_name: str) -> CacheEntry | None:
        """The valid entry for these inputs, or None; an invalid one is discarded (with the reason logged)."""
        path = self.entry_path(slug, inputs.key)
        if not path.exists():
            return None
        problem, metadata = self._check(path, inputs, artifact_name)
        if problem:
            self.discard(path, problem)
            return None
        return CacheEntry(path, slug, inputs.key, path / artifact_name, metadata)

    def _check(self, path: Path, inputs: KeyInputs, artifact_name: str) -> tuple[str | None, dict[str, Any]]:
        try:
            metadata = json.loads((path / METADATA).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return f"metadata.json is unreadable ({type(error).__name__})", {}
        if not isinstance(metadata, dict):
            return "metadata.json is not an object", {}
        expected = inputs.to_dict()
        recorded = metadata.get("key_inputs")
        if metadata.get("key") != inputs.key or recorded != expected:
            differing = sorted(name for name in expected if not isinstance(recorded, dict)
                               or recorded.get(name) != expected[name])
            return f"metadata does not match the expected key inputs ({', '.join(differing) or 'key'})", metadata
        artifact = path / artifact_name
        if metadata.get("artifact") != artifact_name or not artifact.is_file():
            return f"artifact {artifact_name} is missing", metadata
        size = artifact.stat().st_size
        if size != metadata.get("artifact_bytes"):
            return f"artifact size {size} differs from the recorded {metadata.get('artifact_bytes')}", metadata
        if sha256_file(artifact) != metadata.get("artifact_sha256"):
            return "artifact checksum differs from metadata.json (corrupted file)", metadata
        return None, metadata

    def discard(self, path: Path, why: str) -> None:
        log.warning("discarding cached engine %s: %s; it will be rebuilt", path, why)
        self.counters.count("discards")
        shutil.rmtree(path, ignore_errors=True)

    # ----- build --------------------------------------------------------------------------------------
    def get_or_build(self, model_id: str, inputs: KeyInputs, artifact_name: str,
                     build: Callable[[Path], T], load: Callable[[Path], T],
                     extra_metadata: dict[str, Any] | None = None) -> Outcome[T]:
        """Load the cached artifact, or build it once (across processes) and store it atomically.

        `build(artifact_path)` writes the artifact and returns the ready object; `load(artifact_path)`
        turns a cached artifact into the object and raises (any exception) if it cannot.
        """
        slug = model_slug(model_id)
        what = f"{model_id} ({inputs.backend}, {inputs.precision})"
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.lock(slug, inputs.key, what))
            except OSError as error:  # read-only or full cache folder: still serve, but say so
                log.warning("engine cache %s is not usable (%s); building %s without caching it: it will be "
                            "rebuilt at every start", self.root, error, what)
                return self._build_uncached(inputs, artifact_name, build, what)
            entry = self.lookup(slug, inputs, artifact_name)
            if entry is not None:
                started = time.perf_counter()
                try:
                    value = load(entry.artifact)
                except Exception as error:  # noqa: BLE001 (backends fail in their own types)
                    self.discard(entry.path, f"artifact failed to load ({str(error)[:200]})")
                else:
                    seconds = time.perf_counter() - started
                    self.counters.count("hits")
                    _touch(entry.path)
                    log.info("loaded cached engine for %s in %.2f s", what, seconds)
                    return Outcome(value, entry, inputs.key, True, None, seconds)
            return self._build(model_id, slug, inputs, artifact_name, build, extra_metadata or {}, what)

    def _build_uncached(self, inputs: KeyInputs, artifact_name: str, build: Callable[[Path], T],
                        what: str) -> Outcome[T]:
        with tempfile.TemporaryDirectory(prefix="edge-daemon-engine-") as folder:
            started = time.perf_counter()
            with _Heartbeat(what):
                value = build(Path(folder) / artifact_name)
        seconds = time.perf_counter() - started
        self.counters.count("builds", seconds)
        return Outcome(value, None, inputs.key, False, seconds, seconds)

    def _build(self, model_id: str, slug: str, inputs: KeyInputs, artifact_name: str,
               build: Callable[[Path], T], extra: dict[str, Any], what: str) -> Outcome[T]:
        staging = self.root / slug / f"{STAGING_PREFIX}{inputs.key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        staging.mkdir(parents=True)
        log.info("building engine for %s; this runs once per model and device", what)
        started = time.perf_counter()
        try:
            with _Heartbeat(what):
                value = build(staging / artifact_name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        seconds = time.perf_counter() - started
        self.counters.count("builds", seconds)
        try:
            entry = self._store(model_id, slug, inputs, artifact_name, staging, seconds, extra)
        except OSError as error:  # disk full, read-only cache: serve anyway, say loudly that it is not kept
            shutil.rmtree(staging, ignore_errors=True)
            log.warning("built %s in %.1f s but could not store it in the engine cache (%s); it will be rebuilt "
                        "at the next start", what, seconds, error)
            return Outcome(value, None, inputs.key, False, seconds, seconds)
        log.info("built engine for %s in %.1f s (cached as %s)", what, seconds, entry.path)
        return Outcome(value, entry, inputs.key, False, seconds, seconds)

    def _store(self, model_id: str, slug: str, inputs: KeyInputs, artifact_name: str, staging: Path,
               seconds: float, extra: dict[str, Any]) -> CacheEntry:
        """Metadata next to the artifact, everything fsynced, then one rename makes the entry appear."""
        try:
            artifact = staging / artifact_name
            fsync_path(artifact)
            metadata = {
                "format": FORMAT, "model_id": model_id, "key": inputs.key, "key_inputs": inputs.to_dict(),
                "artifact": artifact_name, "artifact_bytes": artifact.stat().st_size,
                "artifact_sha256": sha256_file(artifact),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "created_unix": time.time(), "build_seconds": round(seconds, 3), **extra,
            }
            write_atomic(staging / METADATA, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())
            final = self.entry_path(slug, inputs.key)
            if final.exists():  # an entry discarded by another path or left half-removed
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_path(final.parent, directory=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return CacheEntry(final, slug, inputs.key, final / artifact_name, metadata)


def _touch(path: Path) -> None:
    """Mark an entry as used now (its folder mtime), so `prune(older_than=…)` keeps engines in use."""
    with contextlib.suppress(OSError):
        os.utime(path)
