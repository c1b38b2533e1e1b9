"""proxima.Embedder: a model exported by `proxima export --format onnx`, run by onnxruntime from Python.

End to end as a user would do it: a small model trained by `proxima train`, exported to ONNX,
then embedded from Python and compared with `proxima embed`; galleries are matched by fingerprint.
Needs PROXIMA_CLI (the built `proxima`) and PROXIMA_PYTHON (the Python of
scripts/setup-export-venv.sh, for the export step); scripts/test-python.sh sets both.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import proxima

TOML = """
seed = 0
device = "cpu"
[data]
root = "{root}"
image_size = 32
[split]
type = "ratio"
train = 0.5
val = 0.0
test = 0.5
[sampler]
m = 4
batch_size = 16
[model]
embedding_size = 16
backbone = {{ type = "small_cnn", widths = [8, 16] }}
[loss]
type = "multi_similarity"
[optimizer]
type = "adam"
lr = 0.001
[train]
epochs = 1
eval_every = 0
"""


def _tools():
    cli, py = os.environ.get("PROXIMA_CLI"), os.environ.get("PROXIMA_PYTHON")
    if not cli or not py:
        pytest.skip("PROXIMA_CLI and PROXIMA_PYTHON are not set (scripts/test-python.sh sets them)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (scripts/test-python.sh installs it)")
    return cli, py


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cli, py = _tools()
    tmp = tmp_path_factory.mktemp("export")
    run = lambda *a: subprocess.run([cli, *map(str, a)], check=True, capture_output=True, text=True)
    run("data", "synth", "--brands", "8", "--per-brand", "6", "--size", "32", "--out", tmp / "synth")
    (tmp / "exp.toml").write_text(TOML.format(root=tmp / "synth"))
    run("train", "--config", tmp / "exp.toml", "--out", tmp / "run", "--quiet")
    run("export", "--model", tmp / "run", "--format", "onnx", "--out", tmp / "model.onnx", "--python", py)
    run("gallery", "build", "--model", tmp / "run", "--data", tmp / "synth", "--out", tmp / "brands.gallery")
    return cli, tmp


def test_embedder_matches_proxima_embed(exported):
    cli, tmp = exported
    files = sorted(str(p) for p in (tmp / "synth").rglob("*.png"))[:10]
    subprocess.run([cli, "embed", "--model", str(tmp / "run"), "--out", str(tmp / "e.npy"), *files], check=True, capture_output=True)
    want = np.load(tmp / "e.npy")
    e = proxima.Embedder(tmp / "model.onnx")
    with open(tmp / "run" / "model" / "model.json") as f:
        assert e.fingerprint == json.load(f)["fingerprint"]
    assert (e.image_size, e.dim) == (32, 16)
    got = e.embed(files)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Preprocessed arrays give the same rows, in batches of any size.
    x = e.preprocess(files)
    assert x.shape == (10, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(e.embed(x, batch_size=3), want, rtol=1e-4, atol=1e-5)


def test_gallery_of_the_original_model_accepts_the_export_and_others_are_refused(exported):
    _, tmp = exported
    e = proxima.Embedder(tmp / "model.onnx")
    g = proxima.Gallery.load(tmp / "brands.gallery", model=e)
    files = sorted((tmp / "synth").rglob("*.png"))
    brand = files[0].parent.name
    hits = g.search(e.embed([files[0]])[0], k=1)
    assert hits[0]["brand"] == brand and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    other = proxima.Gallery(e.dim, "0123456789abcdef")
    other.save(tmp / "other.gallery")
    with pytest.raises(ValueError, match="0123456789abcdef"):
        proxima.Gallery.load(tmp / "other.gallery", model=e)
    mine = proxima.Gallery(e.dim, e)
    assert mine.model_fingerprint == e.fingerprint


def test_embedder_bad_input(exported, tmp_path):
    _, tmp = exported
    with pytest.raises(OSError, match="no such file"):
        proxima.Embedder(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        proxima.Embedder(tmp_path / "junk.onnx")
    e = proxima.Embedder(tmp / "model.onnx")
    with pytest.raises(ValueError, match=r"expected shape \[N, 3, 32, 32\]"):
        e.embed(np.zeros((2, 3, 16, 16), np.float32))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="bad.png"):
        e.embed([tmp_path / "bad.png"])
    with pytest.raises(ValueError, match="a single path"):
        e.preprocess(str(tmp / "model.onnx"))
