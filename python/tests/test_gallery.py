"""proxima.Gallery: enrolment, search against brute force, calibration, the file format (read and
written independently here), errors, and the round trip with the `proxima` CLI when one is given."""

import json
import os
import pathlib
import struct
import subprocess
import zlib

import numpy as np
import pytest

import proxima
from conftest import clustered

MAGIC = b"\x89PXGAL\r\n"


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brand_data(seed=0, n=60, classes=4, dim=8):
    x, y = clustered(n, classes, dim, seed=seed, spread=0.3)
    names = np.array(["acme", "globex", "initech", "umbrella", "hooli", "stark"])[y]
    return x, names


@pytest.fixture
def gallery():
    x, names = brand_data()
    return proxima.Gallery.build(x, names, model="fp-test-0001"), x, names


def test_build_lists_brands_in_first_appearance_order(gallery):
    g, x, names = gallery
    first = list(dict.fromkeys(names.tolist()))
    assert g.brands == first
    assert g.list() == {b: int((names == b).sum()) for b in first}
    assert len(g) == 60 and g.dim == 8 and g.metric == "cosine" and g.model_fingerprint == "fp-test-0001"
    assert g.threshold is None and g.calibration is None
    # Rows are stored unit-norm (cosine), grouped by brand, paths default to brand/index.
    assert np.allclose(np.linalg.norm(g.embeddings, axis=1), 1.0, atol=1e-6)
    assert [g.brands[l] for l in g.labels] == [p.split("/")[0] for p in g.paths]
    assert g.paths[:2] == [f"{first[0]}/0", f"{first[0]}/1"]


def test_search_matches_brute_force_cosine(gallery):
    g, _, _ = gallery
    q, _ = clustered(15, 4, 8, seed=9, spread=0.5)
    sims, rows = g.search_arrays(q, k=7)
    want = unit(q) @ unit(g.embeddings).T
    order = np.argsort(-want, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(sims, np.take_along_axis(want, order, 1), atol=1e-5)
    hits = g.search(q[0], k=3)
    assert [h["row"] for h in hits] == order[0, :3].tolist()
    assert hits[0]["brand"] == g.brands[g.labels[hits[0]["row"]]]
    assert hits[0]["path"] == g.paths[hits[0]["row"]]
    assert len(g.search(q[:2], k=500)[1]) == 60  # min(k, rows)


def test_identify_rank_and_calibrate():
    x, names = brand_data(seed=1)
    g = proxima.Gallery.build(x[:40], names[:40], model="fp")
    with pytest.raises(ValueError, match="no calibrated threshold"):
        g.identify(x[40])
    cal = g.calibrate(x[40:], names[40:], target_fmr=0.1)
    assert set(cal) == {"threshold", "target_fmr", "achieved_fmr", "fnmr", "num_genuine", "num_impostor"}
    assert cal["achieved_fmr"] <= 0.1 and cal["num_impostor"] == 20 and g.threshold == cal["threshold"]
    res = g.identify(x[40:], k=2)
    for r in res:
        best = r["candidates"][0]
        assert len(r["candidates"]) == 2 and r["candidates"][0]["similarity"] >= r["candidates"][1]["similarity"]
        assert r["decision"] == ("known" if best["similarity"] >= cal["threshold"] else "unknown")
        assert r["brand"] == (best["brand"] if r["decision"] == "known" else None)
    one = g.identify(x[40], k=1, threshold=2.0)
    assert one["decision"] == "unknown" and one["threshold"] == 2.0
    ranked = g.rank_brands(x[41], k=10)
    s = unit(x[41]) @ unit(g.embeddings).T
    want = sorted(((max(s[g.labels == i]), b) for i, b in enumerate(g.brands)), reverse=True)
    assert [r["brand"] for r in ranked] == [b for _, b in want]
    np.testing.assert_allclose([r["similarity"] for r in ranked], [v for v, _ in want], atol=1e-5)
    c2 = g.calibrate_from_scores([0.9, 0.8], [0.1, 0.2, 0.3, 0.4], target_fmr=0.25)
    assert 0.3 < c2["threshold"] <= 0.3 + 1e-6 and c2["fnmr"] == 0.0
    g.clear_calibration()
    assert g.calibration is None


def test_add_and_remove_keep_rows_aligned(gallery):
    g, x, names = gallery
    before, before_labels = g.embeddings, g.labels
    assert g.add("newco", x[:3] * 2, paths=["n0.png", "n1.png", "n2.png"]) == 3
    assert g.add("newco", x[3]) == 1  # one 1-D row
    assert g.list()["newco"] == 4 and g.paths[-1] == "newco/3"
    removed_brand = g.brands[0]
    keep = before_labels != 0
    n_removed = g.list()[removed_brand]
    assert g.remove(removed_brand) == n_removed
    assert removed_brand not in g.brands and len(g) == 64 - n_removed
    np.testing.assert_array_equal(g.embeddings[: keep.sum()], before[keep])
    with pytest.raises(ValueError, match="not in the gallery"):
        g.remove("nope")


def parse_gallery_file(path):
    """An independent reader of the format documented in crates/index/src/format.rs."""
    b = pathlib.Path(path).read_bytes()
    assert b[:8] == MAGIC
    (version,) = struct.unpack_from("<I", b, 8)
    (hlen,) = struct.unpack_from("<Q", b, 12)
    header = json.loads(b[20 : 20 + hlen])
    body = b[20 + hlen : -4]
    (crc,) = struct.unpack("<I", b[-4:])
    assert crc == zlib.crc32(b[:-4]) & 0xFFFFFFFF
    rows = np.frombuffer(body, "<f4").reshape(header["rows"], header["dim"])
    return version, header, rows


def write_gallery_file(path, header, rows):
    """An independent writer of the same format."""
    h = json.dumps(header).encode()
    b = MAGIC + struct.pack("<I", 1) + struct.pack("<Q", len(h)) + h + np.asarray(rows, "<f4").tobytes()
    pathlib.Path(path).write_bytes(b + struct.pack("<I", zlib.crc32(b) & 0xFFFFFFFF))


def test_save_load_round_trip_and_file_format(gallery, tmp_path):
    g, x, names = gallery
    g.calibrate_from_scores([0.9], [0.1, 0.5], target_fmr=0.5)
    g.use_hnsw(m=8, ef_search=32, exact_below=1000)
    p = tmp_path / "brands.gallery"
    g.save(p)
    h = proxima.Gallery.load(p)
    assert (h.brands, h.paths, h.model_fingerprint, h.metric, h.dim) == (g.brands, g.paths, g.model_fingerprint, g.metric, g.dim)
    np.testing.assert_array_equal(h.labels, g.labels)
    np.testing.assert_array_equal(h.embeddings, g.embeddings)  # bit-exact
    assert h.calibration == g.calibration and h.backend == g.backend == {
        "kind": "hnsw", "m": 8, "ef_construction": 100, "ef_search": 32, "exact_below": 1000}
    q, _ = clustered(5, 4, 8, seed=4)
    assert h.search(q, k=4) == g.search(q, k=4)

    version, header, rows = parse_gallery_file(p)
    assert version == 1
    assert header["model_fingerprint"] == "fp-test-0001" and header["brands"] == g.brands
    assert header["labels"] == g.labels.tolist() and header["paths"] == g.paths
    assert header["calibration"]["threshold"] == pytest.approx(g.threshold)
    np.testing.assert_array_equal(rows, g.embeddings)

    # A file written by the independent writer opens, and searches like the original.
    header["model_fingerprint"] = "other-model"
    write_gallery_file(tmp_path / "py.gallery", header, rows)
    w = proxima.Gallery.load(tmp_path / "py.gallery")
    assert w.model_fingerprint == "other-model" and w.search(q, k=3) == g.search(q, k=3)


def test_file_errors_name_the_path(gallery, tmp_path):
    g, _, _ = gallery
    missing = tmp_path / "absent" / "g.gallery"
    with pytest.raises(FileNotFoundError, match="g.gallery"):
        proxima.Gallery.load(missing)
    with pytest.raises(OSError, match="absent"):
        g.save(missing)
    p = tmp_path / "g.gallery"
    g.save(p)
    with pytest.raises(ValueError, match="other-model"):
        proxima.Gallery.load(p, model="other-model")
    assert proxima.Gallery.load(p, model="fp-test-0001").model_fingerprint == "fp-test-0001"
    b = bytearray(p.read_bytes())
    b[-40] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(ValueError, match="checksum") as e:
        proxima.Gallery.load(p)
    assert str(p) in str(e.value)
    (tmp_path / "junk").write_bytes(b"hello world, not a gallery")
    with pytest.raises(ValueError, match="not a Proxima gallery"):
        proxima.Gallery.load(tmp_path / "junk")


def test_model_directory_gives_its_fingerprint(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"format": 1, "fingerprint": "0123456789abcdef"}))
    g = proxima.Gallery(4, tmp_path)
    assert g.model_fingerprint == "0123456789abcdef"
    assert proxima.model_fingerprint(tmp_path / "model.json") == "0123456789abcdef"
    with pytest.raises(OSError, match="without model.json"):
        proxima.Gallery(4, tmp_path / "..")


def test_bad_gallery_input_raises_value_error():
    g = proxima.Gallery(3, "m")
    with pytest.raises(ValueError, match="gallery is empty"):
        g.search([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="embeddings: dimension 2 differs from the gallery's dimension 3"):
        g.add("a", np.ones((2, 2)))
    with pytest.raises(ValueError, match="embeddings.*non-finite.*row 1"):
        g.add("a", [[1.0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(ValueError, match="zero vector"):
        g.add("a", [[0.0, 0, 0]])
    with pytest.raises(ValueError, match="embeddings.*dtype"):
        g.add("a", np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="brand"):
        g.add(" a", np.ones((1, 3)))
    with pytest.raises(ValueError, match="paths"):
        g.add("a", np.ones((2, 3)), paths=["only-one"])
    assert len(g) == 0  # nothing was enrolled by the failed calls
    g.add("a", np.eye(3))
    with pytest.raises(ValueError, match="k"):
        g.search(np.ones(3), k=0)
    with pytest.raises(ValueError, match="metric"):
        proxima.Gallery(3, "m", metric="hamming")
    with pytest.raises(ValueError, match="brands: 2 brands for 3"):
        proxima.Gallery.build(np.eye(3), ["a", "b"], "m")
    with pytest.raises(ValueError, match="dim"):
        proxima.Gallery(0, "m")


def _cli():
    cli = os.environ.get("PROXIMA_CLI")
    if not cli:
        pytest.skip("PROXIMA_CLI is not set (scripts/test.sh sets it to the built proxima binary)")
    return cli


def test_cli_opens_python_gallery_and_python_opens_cli_rewrite(gallery, tmp_path):
    cli = _cli()
    g, _, _ = gallery
    g.calibrate_from_scores([0.9], [0.1, 0.5], target_fmr=0.5)
    p = tmp_path / "brands.gallery"
    g.save(p)
    out = subprocess.run([cli, "gallery", "list", "--gallery", str(p), "--json"], check=True,
                         capture_output=True, text=True).stdout
    listed = json.loads(out)
    assert listed["model_fingerprint"] == g.model_fingerprint and listed["rows"] == len(g) and listed["dim"] == g.dim
    assert [(b["brand"], b["rows"]) for b in listed["brands"]] == list(g.list().items())
    assert listed["calibration"]["threshold"] == pytest.approx(g.threshold)
    gone = g.brands[1]
    subprocess.run([cli, "gallery", "remove", "--gallery", str(p), "--brand", gone], check=True, capture_output=True)
    h = proxima.Gallery.load(p)
    g.remove(gone)
    assert h.brands == g.brands and h.paths == g.paths and h.threshold == g.threshold
    np.testing.assert_array_equal(h.embeddings, g.embeddings)


def test_domains_are_stored_registrable_saved_and_checked(gallery, tmp_path):
    g, _, _ = gallery
    assert g.domains("acme") == [] and g.domains() == {}
    assert g.set_domains("acme", ["www.ACME.com", "acme.co.uk"]) == ["acme.co.uk", "acme.com"]
    assert g.add_domains("acme", ["bücher.de"]) == ["acme.co.uk", "acme.com", "xn--bcher-kva.de"]
    for bad in (["com"], ["https://acme.com/"], ["192.0.2.1"], "acme.com"):
        with pytest.raises(ValueError):
            g.set_domains("acme", bad)
    with pytest.raises(ValueError, match="not in the gallery"):
        g.set_domains("nobody", ["nobody.com"])
    assert g.domains("acme") == ["acme.co.uk", "acme.com", "xn--bcher-kva.de"], "refused calls change nothing"
    path = tmp_path / "g.pxg"
    g.save(path)
    back = proxima.Gallery.load(path)
    assert back.domains() == {"acme": ["acme.co.uk", "acme.com", "xn--bcher-kva.de"]}

    # The verdict: own domain, look-alikes, an IP, a brand without domains, nothing shown.
    assert back.check("https://login.acme.com/x", ["acme"])["verdict"] == "consistent"
    for url in ("https://acme.com.evil.io/", "https://acrne.com/", "http://192.0.2.9/acme"):
        v = back.check(url, ["acme"])
        assert v["verdict"] == "impersonation" and v["brand"] == "acme", (url, v)
    assert back.check("http://192.0.2.9/", "acme")["host_kind"] == "ip"
    assert back.check("https://example.org/", ["globex"])["verdict"] == "unknown_domain"
    assert back.check("https://example.org/", [])["verdict"] == "no_brand"
    two = back.check("https://acme.com/", ["globex", "acme"])
    assert (two["verdict"], two["brand"]) == ("consistent", "acme")
    with pytest.raises(ValueError, match="URL"):
        back.check("ftp://acme.com/", ["acme"])
    with pytest.raises(ValueError, match="not in the gallery"):
        back.check("https://acme.com/", ["nobody"])

    # A catalogue matches brands by alias; the gallery's other brands are reported unmatched.
    cat = tmp_path / "brands.toml"
    cat.write_text('[[brands]]\nname = "Globex Corporation"\ndomains = ["globex.com"]\naliases = ["globex"]\n')
    res = back.import_catalogue(cat)
    assert res["matched"] == ["globex"] and "acme" in res["unmatched"]
    assert back.domains("globex") == ["globex.com"]
    with pytest.raises(FileNotFoundError):
        back.import_catalogue(tmp_path / "missing.json")
    cat.write_text('[[brands]]\nname = "X"\ndomains = ["co.uk"]\n')
    with pytest.raises(ValueError, match="public suffix"):
        back.import_catalogue(cat)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "must not be empty"),
        ("x" * 129, "longer than 128 characters"),
        ("x" * 10_000, "longer than 128 characters"),
        (" padded", "whitespace"),
        ("a\nb", "control characters"),
        ("a\x00b", "control characters"),
        ("pay\u200bpal", "invisible formatting"),
        ("a\u202eb", "invisible formatting"),
        ("../../etc", "path separators"),
        ("a\\b", "path separators"),
        (".hidden", "start with a dot"),
        ("..", "start with a dot"),
    ],
)
def test_brand_names_follow_the_one_rule(name, reason):
    g = proxima.Gallery(2, "m")
    with pytest.raises(ValueError, match=reason):
        g.add(name, np.ones((1, 2), np.float32))
    assert len(g) == 0 and g.brands == []


def test_brand_names_are_stored_in_nfc_and_removed_by_either_spelling():
    g = proxima.Gallery(2, "m")
    g.add("Cafe\u0301", np.ones((1, 2), np.float32))
    assert g.brands == ["Caf\u00e9"]
    assert g.remove("Cafe\u0301") == 1 and g.brands == []
