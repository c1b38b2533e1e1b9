"""TorchScript -> ONNX for `proxima export --format onnx` (run by the command, not by hand).

Why a Python step: PyTorch's own exporter converts the TorchScript module that `proxima export`
traces from Rust, so the ONNX graph comes from the same trace as the TorchScript file; writing ONNX
from Rust would mean a second definition of every backbone. Needs torch, onnx and onnxruntime
(`scripts/setup-export-venv.sh` makes `.export-venv/` with the pinned versions).

The file is checked before it is handed back: onnx.checker, then onnxruntime against the
TorchScript module at batch 1 and 3 (max abs difference <= --tolerance). Exit codes: 0 written,
2 failed (message on stderr), 3 a Python package is missing.
"""
import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torchscript", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, required=True, help="the square input side")
    ap.add_argument("--output-name", default="embeddings")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args()
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch
    except ImportError as e:
        print(f"export_onnx: {e}; run scripts/setup-export-venv.sh and pass --python .export-venv/bin/python", file=sys.stderr)
        return 3
    extra = {"proxima.json": ""}
    module = torch.jit.load(a.torchscript, map_location="cpu", _extra_files=extra)
    module.eval()
    card = json.loads(extra["proxima.json"])
    size = a.size
    out_name = a.output_name
    example = torch.rand(2, 3, size, size)
    # The TorchScript-based exporter: the module is already a TorchScript graph (torch.export,
    # the dynamo path, cannot take one).
    torch.onnx.export(
        module,
        (example,),
        a.out,
        dynamo=False,
        opset_version=a.opset,
        input_names=["images"],
        output_names=[out_name],
        dynamic_axes={"images": {0: "batch"}, out_name: {0: "batch"}},
        do_constant_folding=True,
    )
    model = onnx.load(a.out)
    del model.metadata_props[:]
    for key, value in (("proxima.json", json.dumps(card, sort_keys=True)), ("model_fingerprint", card.get("model_fingerprint", ""))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "proxima"
    model.producer_version = card["proxima_version"]
    model.doc_string = card.get("summary", "")
    onnx.checker.check_model(model)
    onnx.save(model, a.out)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(a.out, opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 3):
        x = torch.rand(n, 3, size, size)
        with torch.no_grad():
            want = module(x).numpy()
        got = session.run([out_name], {"images": x.numpy()})[0]
        if got.shape != want.shape:
            print(f"export_onnx: onnxruntime gives shape {got.shape} at batch {n}, TorchScript {want.shape}", file=sys.stderr)
            return 2
        worst = max(worst, float(np.abs(got - want).max()))
    if not worst <= a.tolerance:
        print(f"export_onnx: onnxruntime differs from TorchScript by {worst:.3g} (> {a.tolerance})", file=sys.stderr)
        return 2
    print(json.dumps({"opset": a.opset, "max_abs_diff_vs_torchscript": worst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
