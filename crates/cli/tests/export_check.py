"""Runs files written by `proxima export` outside Proxima, for crates/cli/tests/integration.rs.

TorchScript with PyTorch (`torch.jit.load`, the card read as the extra file `proxima.json`) and
ONNX with onnxruntime, on the same preprocessed images (`--input`, float32 [N, 3, S, S] in [0, 1]).
Writes `<prefix>.torchscript.npy`, `<prefix>.onnx.npy` and `<prefix>.cards.json`; also prints the
onnxruntime latency per image (median of `--repeats` single-image runs) as JSON.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--torchscript", required=True)
ap.add_argument("--onnx", required=True)
ap.add_argument("--input", required=True)
ap.add_argument("--prefix", required=True)
ap.add_argument("--repeats", type=int, default=0)
a = ap.parse_args()

x = np.load(a.input)
extra = {"proxima.json": ""}
module = torch.jit.load(a.torchscript, map_location="cpu", _extra_files=extra)
with torch.no_grad():
    ts = module(torch.from_numpy(x)).numpy()
opts = ort.SessionOptions()
opts.log_severity_level = 3
session = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
ox = session.run(["embeddings"], {"images": x})[0]
np.save(a.prefix + ".torchscript.npy", ts.astype(np.float32))
np.save(a.prefix + ".onnx.npy", ox.astype(np.float32))
inputs = [i.name + str(i.shape) for i in session.get_inputs()]
with open(a.prefix + ".cards.json", "w") as f:
    json.dump({"torchscript": json.loads(extra["proxima.json"]), "onnx": json.loads(meta["proxima.json"]), "onnx_inputs": inputs}, f)
if a.repeats:
    times = []
    one = x[:1]
    session.run(["embeddings"], {"images": one})
    for _ in range(a.repeats):
        t = time.perf_counter()
        session.run(["embeddings"], {"images": one})
        times.append(time.perf_counter() - t)
    print(json.dumps({"onnxruntime_ms_per_image": 1000 * float(np.median(times))}))
