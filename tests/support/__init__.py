"""Real parts for the tests: a daemon on a loopback port, a registry server, small ONNX models."""
