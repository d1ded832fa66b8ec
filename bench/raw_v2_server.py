"""A minimal KServe v2 gRPC server for the remote-engine bench: ONNX Runtime behind the protocol's raw tensor
contents, which is how Triton handles them (bytes straight into the tensor), so the bench can tell the cost of
the protocol hop from MLServer's own (it unpacks raw tensors into Python lists: tens of ms for one 384 px image).

    python bench/raw_v2_server.py --port 8001 --model shapes_1=edge_daemon/default_models/shapes/1/weights.onnx

Bench-only: serves ServerLive/Ready, ServerMetadata, ModelReady, ModelMetadata and ModelInfer on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from concurrent import futures

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import grpc
import numpy as np
import onnxruntime as ort
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

DATATYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(int64)": "INT64", "tensor(uint8)": "UINT8"}
NUMPY = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "UINT8": np.uint8}


def _shape(arg: ort.NodeArg) -> list[int]:
    return [dim if isinstance(dim, int) and dim > 0 else -1 for dim in arg.shape]


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, sessions: dict[str, ort.InferenceSession]):
        self.sessions = sessions

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="raw-v2-bench", version="0")

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name in self.sessions)

    def _session(self, name: str, context) -> ort.InferenceSession:
        session = self.sessions.get(name)
        if session is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name}")
        return session

    def ModelMetadata(self, request, context):
        session = self._session(request.name, context)

        def tensors(args):
            return [pb.ModelMetadataResponse.TensorMetadata(name=a.name, datatype=DATATYPES[a.type], shape=_shape(a))
                    for a in args]

        return pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="onnxruntime_onnx",
                                        inputs=tensors(session.get_inputs()), outputs=tensors(session.get_outputs()))

    def ModelInfer(self, request, context):
        session = self._session(request.model_name, context)
        feeds = {tensor.name: np.frombuffer(raw, NUMPY[tensor.datatype]).reshape(tuple(tensor.shape))
                 for tensor, raw in zip(request.inputs, request.raw_input_contents)}
        names = [output.name for output in request.outputs] or [arg.name for arg in session.get_outputs()]
        results = session.run(names, feeds)
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
        for name, value in zip(names, results):
            value = np.ascontiguousarray(value, dtype=np.float32)
            response.outputs.append(pb.ModelInferResponse.InferOutputTensor(name=name, datatype="FP32",
                                                                            shape=list(value.shape)))
            response.raw_output_contents.append(value.tobytes())
        return response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", action="append", required=True, help="name=path/to/model.onnx")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
                for name, path in (item.split("=", 1) for item in args.model)}
    limit = 256 * 1024 * 1024
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", limit)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(sessions), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
