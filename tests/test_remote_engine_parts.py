"""The remote engine's pure parts, which need no server: the circuit breaker's states over time, server model
names, the URL and model-map options, and the metadata comparison's messages. (The engine itself is tested
against a real KServe v2 server in test_remote_engine.py.)"""

from __future__ import annotations

import pytest

from edge_daemon.engines.base import TensorSpec
from edge_daemon.engines.circuit_breaker import CircuitBreaker
from edge_daemon.engines.kserve_v2 import RemoteModel, RemoteTensor, parse_url
from edge_daemon.engines.remote_engine import metadata_mismatches, parse_model_map, server_model_name
from edge_daemon.errors import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_and_probes_once_after_the_wait() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 5.0, clock=clock)
    breaker.failure("refused")
    breaker.success()  # a success in between resets the count
    for _ in range(2):
        breaker.failure("refused")
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure("refused")
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.seconds_until_retry() == 5.0 and breaker.last_error == "refused"
    clock.now += 5.0
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure("still refused")  # a failed probe waits a full period again
    assert breaker.state == "open" and breaker.seconds_until_retry() == 5.0
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.last_error is None


def test_server_model_names_and_the_map_option() -> None:
    assert server_model_name("shapes/1", {}) == "shapes_1"
    mapped = parse_model_map(["shapes/1=detector", " pets/3 = pets "])
    assert mapped == {"shapes/1": "detector", "pets/3": "pets"}
    assert server_model_name("shapes/1", mapped) == "detector"
    with pytest.raises(ValueError, match="project/1=server_name"):
        parse_model_map(["shapes/1"])


def test_remote_urls() -> None:
    assert parse_url("grpc://triton.lan").display == "grpc://triton.lan:8001"
    assert parse_url("http://10.0.0.5:8000").display == "http://10.0.0.5:8000"
    assert parse_url("grpcs://user:secret@triton.lan:9001").display == "grpcs://triton.lan:9001"  # no credentials
    for bad in ("triton.lan:8001", "ftp://triton.lan", "grpc://"):
        with pytest.raises(ApiError, match="remote_url must look like"):
            parse_url(bad)


def test_metadata_comparison_names_each_difference() -> None:
    inputs = [TensorSpec("images", (None, 3, 384, 384), "float32")]
    outputs = [TensorSpec("output0", (None, 8, 3024), "float32")]
    same = RemoteModel("shapes_1", "", (RemoteTensor("images", "FP32", (-1, 3, 384, 384)),),
                       (RemoteTensor("output0", "FP32", (-1, 8, 3024)),))
    assert metadata_mismatches(inputs, outputs, same) == []
    other = RemoteModel("shapes_1", "", (RemoteTensor("images", "FP16", (-1, 3, 640, 640)),
                                         RemoteTensor("mask", "FP32", (-1, 1))),
                        (RemoteTensor("scores", "FP32", (-1, 8, 3024)),))
    problems = metadata_mismatches(inputs, outputs, other)
    assert problems == ["input 'images' is FP16 on the server, FP32 here",
                        "input 'images' has shape [-1, 3, 640, 640] on the server, [-1, 3, 384, 384] here",
                        "the server's model wants inputs this model lacks: ['mask']",
                        "output 'output0' is not on the server (it has ['scores'])"]
    empty = RemoteModel("shapes_1", "", (), ())
    assert metadata_mismatches(inputs, outputs, empty) == ["the server lists no inputs", "the server lists no outputs"]
