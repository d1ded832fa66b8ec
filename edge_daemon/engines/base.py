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
