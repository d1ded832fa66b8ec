"""The engine interface every backend implements: load once, describe tensors, run a batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output; symbolic dimensions are None."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


class Engine(Protocol):
    """A compiled model ready to run. Implementations must allow concurrent `run` calls."""

    backend: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one NCHW float32 batch through the model; returns the outputs in `outputs` order."""
        ...


@dataclass
class EngineBuild:
    """How an engine came to be: compiled now or loaded from the engine cache, and how long each took.

    The built-in engines carry it as `engine.build` (read it with `getattr`, engines handed in from
    elsewhere may lack it); metrics and tests read it to count builds and cache hits.
    """

    backend: str
    backend_version: str
    precision: str
    cache_hit: bool = False
    build_seconds: float | None = None
    load_seconds: float = 0.0
    cache_key: str | None = None
    cache_path: str | None = None
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "backend_version": self.backend_version, "precision": self.precision,
                "cache_hit": self.cache_hit, "build_seconds": self.build_seconds,
                "load_seconds": round(self.load_seconds, 4), "cache_key": self.cache_key,
                "cache_path": self.cache_path, "fallback_reason": self.fallback_reason}
