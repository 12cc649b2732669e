"""The Open Inference Protocol caller of the inference-peer tests, built on
`tritonclient.http` (the Triton client from PyPI).

    python oip_client.py check URL MODEL json|binary
        Health (live, ready, model ready), model metadata and one inference
        on a fixed batch; prints one JSON object. The test runs it against the
        server directly and through the sidecars and compares the two.
        `binary` sends the input and asks for both outputs with the binary
        tensor extension (Inference-Header-Content-Length).
    python oip_client.py bench URL_A URL_B MODEL N
        N JSON inferences on each URL, interleaved; prints p50/p90 in ms.
    python oip_client.py traffic normal|extract-uniform|extract-box|extract-grid URL MODEL N SEED
        A client: `normal` sends rows near the iris training data with small
        noise at a steady pace (one every 20 ms). The extraction clients send
        as fast as answers come, with no knowledge of the data: uniformly
        random points over the box [0, 2 x the largest iris value] per
        feature, uniformly random points inside the data's own box (the hard
        case: every value is in range), or a grid over the large box walked
        one coordinate at a time (successive queries differ in one feature).
        Prints counts by status and the index of the first refused request.

Exit status 0 unless the client itself failed (connection errors included).
"""

import hashlib
import json
import sys
import time

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# A fixed batch: one row of each iris class plus two off-distribution rows.
BATCH = np.array(
    [
        [5.1, 3.5, 1.4, 0.2],
        [5.9, 3.0, 4.2, 1.5],
        [6.7, 3.0, 5.2, 2.3],
        [0.0, 0.0, 0.0, 0.0],
        [7.9, 4.4, 6.9, 2.5],
    ],
    dtype=np.float64,
)
OUTPUTS = ("predict", "predict_proba")
# The smallest and largest value of each iris feature. `extract-uniform` and
# `extract-grid` query [0, 2 x HIGH]; `extract-box` stays inside [LOW, HIGH].
LOW = np.array([4.3, 2.0, 1.0, 0.1])
HIGH = np.array([7.9, 4.4, 6.9, 2.5])
TIMEOUT_S = 10.0
# KServe decodes a JSON body only when it says so; MLServer does not care.
JSON_HEADERS = {"Content-Type": "application/json"}


def client(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)


def infer(c, model: str, x: np.ndarray, binary: bool, request_id: str):
    inp = httpclient.InferInput("input-0", list(x.shape), "FP64")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    headers = None if binary else JSON_HEADERS
    return c.infer(model, [inp], outputs=outs, request_id=request_id, headers=headers)


def check(url: str, model: str, mode: str) -> dict:
    if mode not in ("json", "binary"):
        sys.exit(f"mode {mode!r} is not json or binary")
    c = client(url)
    result = infer(c, model, BATCH, mode == "binary", "peers-check-1")
    outputs = {}
    for name in OUTPUTS:
        arr = result.as_numpy(name)
        if arr is None:
            sys.exit(f"{url}: output {name!r} missing from {result.get_response()!r}")
        outputs[name] = {
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
            "sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
            "values": arr.tolist(),
        }
    # In binary mode the JSON part names each output's byte size.
    binary_sizes = {
        o["name"]: (o.get("parameters") or {}).get("binary_data_size") for o in result.get_response()["outputs"]
    }
    return {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready(model),
        "model_metadata": c.get_model_metadata(model),
        "response": result.get_response(),
        "binary_data_size": binary_sizes,
        "outputs": outputs,
    }


def bench(url_a: str, url_b: str, model: str, n: int) -> dict:
    times = {url_a: [], url_b: []}
    clients = {url_a: client(url_a), url_b: client(url_b)}
    x = BATCH[:1]
    for url in (url_a, url_b):  # warm both connections
        infer(clients[url], model, x, False, "warm")
    for i in range(n):
        for url in (url_a, url_b) if i % 2 == 0 else (url_b, url_a):
            t = time.perf_counter()
            infer(clients[url], model, x, False, f"bench-{i}")
            times[url].append((time.perf_counter() - t) * 1000.0)
    out = {"n": n}
    for key, url in (("a", url_a), ("b", url_b)):
        arr = np.array(times[url])
        out[f"{key}_p50_ms"] = round(float(np.percentile(arr, 50)), 3)
        out[f"{key}_p90_ms"] = round(float(np.percentile(arr, 90)), 3)
    return out


def traffic(kind: str, url: str, model: str, n: int, seed: int) -> dict:
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(seed)
    rows = load_iris().data
    # 6 steps per feature, last feature fastest: a sweep, one coordinate at a time.
    axes = [np.linspace(0.0, 2.0 * h, 6) for h in HIGH]
    grid = np.array(np.meshgrid(*axes, indexing="ij")).reshape(4, -1).T
    c = client(url)
    statuses: dict = {}
    first_refused = None
    started = time.monotonic()
    for i in range(n):
        if kind == "normal":
            x = rows[rng.integers(len(rows))] + rng.normal(0.0, 0.05, 4)
        elif kind == "extract-uniform":
            x = rng.uniform(0.0, 2.0 * HIGH)
        elif kind == "extract-box":
            x = rng.uniform(LOW, HIGH)
        elif kind == "extract-grid":
            x = grid[i % len(grid)]
        else:
            sys.exit(f"traffic kind {kind!r} is not normal, extract-uniform, extract-box or extract-grid")
        try:
            infer(c, model, x.reshape(1, 4), False, f"{kind}-{i}")
            status = "200"
        except InferenceServerException as e:
            status = e.status() or "error"
            if first_refused is None:
                first_refused = i
        statuses[status] = statuses.get(status, 0) + 1
        if kind == "normal":
            time.sleep(0.02)
    return {
        "kind": kind,
        "requests": n,
        "statuses": statuses,
        "first_refused": first_refused,
        "seconds": round(time.monotonic() - started, 3),
    }


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 4 and args[0] == "check":
        out = check(args[1], args[2], args[3])
    elif len(args) == 5 and args[0] == "bench" and args[4].isdigit():
        out = bench(args[1], args[2], args[3], int(args[4]))
    elif len(args) == 6 and args[0] == "traffic" and args[4].isdigit() and args[5].isdigit():
        out = traffic(args[1], args[2], args[3], int(args[4]), int(args[5]))
    else:
        sys.exit(f"usage: see the module docstring (got {args!r})")
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
