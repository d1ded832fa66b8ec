"""An MLServer runtime that serves an ONNX file with ONNX Runtime: a real KServe v2 server for the tests.

MLServer imports this module by name (`kserve_runtime.OnnxRuntime` in model-settings.json), so it must not
import anything from the edge-daemon test tree. The model metadata (input/output names, datatypes, shapes)
is read from the ONNX file unless model-settings.json declares it, which is how a test makes the server
describe a model wrongly.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import get_model_uri

_DATATYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
              "tensor(uint8)": "UINT8", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}


def _metadata(args: list[ort.NodeArg]) -> list[MetadataTensor]:
    return [MetadataTensor(name=arg.name, datatype=_DATATYPES[arg.type],
                           shape=[dim if isinstance(dim, int) and dim > 0 else -1 for dim in arg.shape])
            for arg in args]


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("KSERVE_RUNTIME_THREADS", "1"))
        self._session = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
        self._output_names = [arg.name for arg in self._session.get_outputs()]
        if not self._settings.inputs:
            self._settings.inputs = _metadata(self._session.get_inputs())
        if not self._settings.outputs:
            self._settings.outputs = _metadata(self._session.get_outputs())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        wanted = [item.name for item in payload.outputs] if payload.outputs else self._output_names
        results = self._session.run(wanted, feeds)
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(wanted, results)])
