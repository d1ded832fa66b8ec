"""Turning what a request names (bytes, base64, URL, numpy) into a BGR uint8 image."""
