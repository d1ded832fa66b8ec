"""Classification scores from a `[B, nc]` output: single-label (softmax unless the model already gives
probabilities) or multi-label (`MULTICLASS`: independent scores, sigmoid only for declared logits)."""

from __future__ import annotations

import numpy as np

from edge_daemon.errors import ModelArtifactError


def class_scores(output: np.ndarray, num_classes: int, multilabel: bool,
                 output_is_probability: bool | None) -> np.ndarray:
    """Per-class confidences in [0, 1] for one image's output."""
    scores = np.asarray(output, dtype=np.float64).reshape(-1)
    if scores.size != num_classes:
        raise ModelArtifactError(f"classification output has {scores.size} values for {num_classes} classes")
    if multilabel:
        return 1.0 / (1.0 + np.exp(-scores)) if output_is_probability is False else scores
    if output_is_probability:
        return scores
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def check_output_shape(shape: tuple[int, ...], num_classes: int) -> None:
    values = int(np.prod(shape[1:])) if len(shape) > 1 else 0
    if values != num_classes:
        raise ModelArtifactError(f"classification output shape {list(shape)} does not fit {num_classes} classes")
