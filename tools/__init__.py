"""Offline tooling for the bundled default models (training, evaluation, metrics)."""
