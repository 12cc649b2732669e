"""Serves the model from train.py with KServe's ModelServer, the Open
Inference Protocol server of KServe, which (unlike MLServer) implements the
binary tensor extension (`Inference-Header-Content-Length`).

    python kserve_server.py MODEL_JOBLIB HTTP_PORT

A custom predictor, the documented KServe way to serve a Python model:
`predict` returns `predict` (INT64 class) and `predict_proba` (FP64), the
same outputs MLServer's scikit-learn runtime gives. gRPC is off. KServe binds
0.0.0.0 unconditionally; the tests talk only to loopback, so the listen
address is pinned to 127.0.0.1 before the server starts.
"""

import sys

import joblib
import kserve
import kserve.protocol.rest.server as rest_server
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class _LoopbackConfig(uvicorn.Config):
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


rest_server.uvicorn.Config = _LoopbackConfig


class Iris(Model):
    """The scikit-learn model from a joblib file."""

    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.model = None
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        outputs = []
        for name, value in (("predict", self.model.predict(x)), ("predict_proba", self.model.predict_proba(x))):
            if value.ndim == 1:
                value = value.reshape(-1, 1)
            value = value.astype("int64" if name == "predict" else "float64")
            out = InferOutput(name=name, shape=list(value.shape), datatype="INT64" if name == "predict" else "FP64")
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        # KServe requires a response id; echo the caller's (tritonclient's request_id).
        # The requested outputs carry each output's `binary_data` choice.
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id or "",
            requested_outputs=payload.request_outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )


def main() -> None:
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit(f"usage: {sys.argv[0]} MODEL_JOBLIB HTTP_PORT (got {sys.argv[1:]!r})")
    server = ModelServer(http_port=int(sys.argv[2]), enable_grpc=False, workers=1, enable_latency_logging=False)
    server.start([Iris("iris", sys.argv[1])])


if __name__ == "__main__":
    main()
