"""proxima.AccuracyCalculator and proxima.knn: parity with pytorch-metric-learning's recorded outputs,
agreement with a brute-force NumPy implementation of its definitions, and input validation."""

import json
from collections import Counter

import numpy as np
import pytest

import proxima
from conftest import clustered

KNN_METRICS = [
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
]


def close(have, want):
    return abs(have - want) <= 1e-5 + 1e-4 * abs(want)


# ---------------------------------------------------------------- parity with pytorch-metric-learning


def _cases(parity_dir):
    doc = json.loads((parity_dir / "accuracy.json").read_text())
    assert doc["cases"], "accuracy.json has no cases"
    return doc["cases"]


def _run_case(case, as_strings=False, dtype=np.float32):
    params, inputs = case["params"], case["inputs"]
    calc = proxima.AccuracyCalculator(include=tuple(case["expected"]), k=params["k"],
                                      avg_of_avgs=params.get("avg_of_avgs", False))
    q = np.array(inputs["query"], dtype=dtype)
    ql = np.array(inputs["query_labels"])
    if as_strings:
        ql = np.array([f"class-{v}" for v in ql])
    if params["reference_is_query"]:
        return calc.get_accuracy(q, ql)
    r = np.array(inputs["reference"], dtype=dtype)
    rl = np.array(inputs["reference_labels"])
    if as_strings:
        rl = np.array([f"class-{v}" for v in rl])
    return calc.get_accuracy(q, ql, r, rl)


def test_parity_accuracy_json_every_case(parity_dir):
    failures = []
    for case in _cases(parity_dir):
        got = _run_case(case)
        assert set(got) == set(case["expected"]), case["id"]
        for name, want in case["expected"].items():
            if not close(got[name], want):
                failures.append(f"{case['id']} {name}: got {got[name]}, expected {want}")
    assert not failures, "\n".join(failures)


def test_parity_with_float64_and_string_labels(parity_dir):
    for case in _cases(parity_dir):
        got = _run_case(case, as_strings=True, dtype=np.float64)
        for name, want in case["expected"].items():
            assert close(got[name], want), f"{case['id']} {name}: got {got[name]}, expected {want}"


def test_array_protocol_objects_are_accepted_without_torch(parity_dir):
    """A tensor-like object exposing only __array__ (what torch tensors do) is read through it."""

    class FakeTensor:
        def __init__(self, a):
            self._a = np.asarray(a)

        def __array__(self, dtype=None, copy=None):
            return self._a if dtype is None else self._a.astype(dtype)

    case = next(c for c in _cases(parity_dir) if not c["params"]["reference_is_query"])
    i = case["inputs"]
    calc = proxima.AccuracyCalculator(include=tuple(case["expected"]), k=case["params"]["k"])
    got = calc.get_accuracy(FakeTensor(i["query"]), FakeTensor(i["query_labels"]),
                            FakeTensor(i["reference"]), FakeTensor(i["reference_labels"]))
    for name, want in case["expected"].items():
        assert close(got[name], want), name


# ---------------------------------------------------------------- brute-force reference


def brute_knn(q, r, k, metric="euclidean", exclude_self=False):
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    if metric == "euclidean":
        key = np.sqrt(((q64[:, None, :] - r64[None, :, :]) ** 2).sum(-1))
        score = key
    elif metric == "cosine":
        qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
        rn = r64 / np.linalg.norm(r64, axis=1, keepdims=True)
        score = qn @ rn.T
        key = -score
    else:  # dot
        score = q64 @ r64.T
        key = -score
    if exclude_self:
        np.fill_diagonal(key, np.inf)
    idx = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(score, idx, 1), idx


def brute_accuracy(q, ql, r, rl, k, same, avg_of_avgs=False, per_class=False):
    """pytorch-metric-learning 2.9's definitions, written out for each query."""
    counts = Counter(rl.tolist())
    s = int(same)
    if k is None:
        k = len(rl) - s
    elif k == "max_bin_count":
        k = max(counts.get(l, 0) for l in ql.tolist()) - s
    _, idx = brute_knn(q, r, k, exclude_self=same)
    rows = []
    for i, l in enumerate(ql.tolist()):
        R = counts.get(l, 0) - s
        if R <= 0:
            continue
        m = (rl[idx[i]] == l).astype(float)
        Rk = min(R, k)
        prec = np.cumsum(m) / np.arange(1, k + 1)
        first = np.flatnonzero(m)
        rows.append((l, {
            "precision_at_1": m[0],
            "r_precision": m[:Rk].sum() / Rk,
            "mean_average_precision_at_r": (prec[:Rk] * m[:Rk]).sum() / R,
            "mean_average_precision": (prec * m).sum() / R,
            "mean_reciprocal_rank": 1.0 / (first[0] + 1) if len(first) else 0.0,
        }))
    out = {}
    labels = sorted({l for l, _ in rows})
    for name in KNN_METRICS:
        by_class = [np.mean([v[name] for l, v in rows if l == c]) for c in labels]
        if per_class:
            out[name] = by_class
        elif avg_of_avgs:
            out[name] = float(np.mean(by_class))
        else:
            out[name] = float(np.mean([v[name] for _, v in rows]))
    return out


@pytest.mark.parametrize("k", [None, "max_bin_count", 3, 7])
@pytest.mark.parametrize("mode", ["mean", "avg_of_avgs", "per_class"])
def test_same_source_matches_brute_force(k, mode):
    x, y = clustered(90, 7, 6, seed=3, spread=1.2)
    y[0] = 99  # a singleton class: excluded as a query, still a distractor
    calc = proxima.AccuracyCalculator(include=tuple(KNN_METRICS), k=k,
                                      avg_of_avgs=mode == "avg_of_avgs", return_per_class=mode == "per_class")
    got = calc.get_accuracy(x, y)
    want = brute_accuracy(x, y, x, y, k, True, mode == "avg_of_avgs", mode == "per_class")
    for name in KNN_METRICS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("k", [None, "max_bin_count", 4])
def test_separate_reference_matches_brute_force(k):
    x, y = clustered(60, 5, 4, seed=5, spread=1.0)
    r, rl = clustered(110, 6, 4, seed=6, spread=1.0)
    y[:3] = 77  # query labels absent from the reference: lone, excluded
    got = proxima.AccuracyCalculator(k=k, include=tuple(KNN_METRICS)).get_accuracy(x, y, r, rl)
    want = brute_accuracy(x, y, r, rl, k, False)
    for name in KNN_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def test_ref_includes_query_equals_the_query_set_as_reference():
    x, y = clustered(80, 6, 5, seed=8, spread=1.1)
    calc = proxima.AccuracyCalculator(include=tuple(KNN_METRICS), k="max_bin_count")
    a = calc.get_accuracy(x, y)
    b = calc.get_accuracy(x, y, x.copy(), y.copy(), ref_includes_query=True)
    c = calc.get_accuracy(x, y, x.copy(), y.copy(), ref_includes_query=False)
    assert a == pytest.approx(b, rel=1e-12)
    # Without the flag each query finds itself first: P@1 is 1, and differs from the real value.
    assert c["precision_at_1"] == 1.0 and a["precision_at_1"] < 1.0


@pytest.mark.parametrize("k", [None, "max_bin_count", 5])
@pytest.mark.parametrize("mode", ["mean", "avg_of_avgs", "per_class"])
def test_chunked_evaluation_equals_one_shot(k, mode):
    """Large query sets are evaluated in chunks of queries; forcing tiny chunks changes nothing."""
    x, y = clustered(97, 6, 5, seed=21, spread=1.3)
    y[:2] = [50, 51]  # lone queries, some chunks lose them
    r, rl = clustered(130, 8, 5, seed=22, spread=1.3)
    kw = dict(include=tuple(KNN_METRICS), k=k, avg_of_avgs=mode == "avg_of_avgs", return_per_class=mode == "per_class")
    whole, chunked = proxima.AccuracyCalculator(**kw), proxima.AccuracyCalculator(**kw)
    chunked._chunk_rows = 7
    for args, kwargs in [((x, y), {}), ((x, y, r, rl), {}),
                         ((x, y, np.r_[r, x], np.r_[rl, y]), {"ref_includes_query": True})]:
        a, b = whole.get_accuracy(*args, **kwargs), chunked.get_accuracy(*args, **kwargs)
        for name in KNN_METRICS:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-12, atol=1e-14, err_msg=f"{name} {kwargs}")
    with pytest.raises(ValueError, match="no query has a same-class reference"):
        chunked.get_accuracy(x[:6], np.arange(6))
    # A chunk made only of lone queries is skipped, not an error.
    lone_first = np.r_[np.arange(100, 107), y]
    xs = np.r_[x[:7] + 50, x]
    a, b = whole.get_accuracy(xs, lone_first), chunked.get_accuracy(xs, lone_first)
    for name in KNN_METRICS:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_hand_computed_values_of_the_rust_unit_test():
    """The 1-D example of crates/eval/src/retrieval.rs (hand-computed there)."""
    pts = np.array([[0.0], [1.0], [2.1], [3.3], [4.6], [10.0]], np.float32)
    labels = np.array([0, 0, 1, 0, 1, 2])
    m = proxima.AccuracyCalculator(k="max_bin_count", include=tuple(KNN_METRICS)).get_accuracy(pts, labels)
    assert m["precision_at_1"] == pytest.approx(0.4)
    assert m["r_precision"] == pytest.approx(0.2)
    assert m["mean_average_precision_at_r"] == pytest.approx(0.2)
    assert m["mean_average_precision"] == pytest.approx(1.5 / 5)
    assert m["mean_reciprocal_rank"] == pytest.approx(2.5 / 5)
    per = proxima.AccuracyCalculator(k="max_bin_count", return_per_class=True).get_accuracy(pts, labels)
    assert per["precision_at_1"] == pytest.approx([2 / 3, 0.0])  # class 2 (singleton) is excluded
    avg = proxima.AccuracyCalculator(k="max_bin_count", avg_of_avgs=True).get_accuracy(pts, labels)
    assert avg["precision_at_1"] == pytest.approx(1 / 3)


def test_default_keys_include_exclude_and_clustering():
    x, y = clustered(120, 4, 8, seed=1, spread=0.2)
    calc = proxima.AccuracyCalculator()
    got = calc.get_accuracy(x, y)
    assert list(got) == ["AMI", "NMI"] + KNN_METRICS
    # Tight, well separated clusters: k-means recovers the classes.
    assert got["NMI"] == pytest.approx(1.0) and got["AMI"] == pytest.approx(1.0)
    assert got["precision_at_1"] == 1.0
    only = proxima.AccuracyCalculator(exclude=("AMI", "NMI", "mean_reciprocal_rank")).get_accuracy(x, y)
    assert set(only) == set(KNN_METRICS) - {"mean_reciprocal_rank"}
    sub = calc.get_accuracy(x, y, include=("precision_at_1",))
    assert list(sub) == ["precision_at_1"]
    assert proxima.AccuracyCalculator(include=("NMI",)).get_accuracy(x, y) == {"NMI": pytest.approx(1.0)}


# ---------------------------------------------------------------- knn


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "dot"])
def test_knn_matches_brute_force(metric):
    q, _ = clustered(37, 3, 5, seed=11)
    r, _ = clustered(101, 4, 5, seed=12)
    s, i = proxima.knn(q, r, k=9, metric=metric)
    ws, wi = brute_knn(q, r, 9, metric)
    assert s.shape == (37, 9) and i.shape == (37, 9) and s.dtype == np.float32 and i.dtype == np.int64
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_allclose(s, ws, rtol=1e-4, atol=1e-4)


def test_knn_of_a_set_against_itself_excludes_each_row():
    x, _ = clustered(50, 5, 3, seed=2)
    s, i = proxima.knn(x, None, k=4)
    assert not (i == np.arange(50)[:, None]).any()
    ws, wi = brute_knn(x, x, 4, exclude_self=True)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_allclose(s, ws, rtol=1e-4, atol=1e-4)


def test_knn_refuses_results_larger_than_available_memory(monkeypatch):
    monkeypatch.setattr(proxima, "_available_memory", lambda: 500_000)
    x, _ = clustered(200, 4, 3, seed=2)
    with pytest.raises(MemoryError, match=r"200 queries x k=199 .* GiB available"):
        proxima.knn(x, None, k=199)
    assert proxima.knn(x, None, k=100)[1].shape == (200, 100)  # 400 kB fits in 500 kB


# ---------------------------------------------------------------- bad input


def _raises(fn, *words):
    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_bad_input_raises_value_error_naming_the_argument():
    x, y = clustered(20, 2, 3, seed=0)
    calc = proxima.AccuracyCalculator(include=("precision_at_1",))
    _raises(lambda: calc.get_accuracy(x.astype(np.int32), y), "query", "dtype int32")
    _raises(lambda: calc.get_accuracy(np.array([["a", "b"], ["c", "d"]]), [0, 1]), "query", "dtype")
    _raises(lambda: calc.get_accuracy([[1.0, 2.0], [3.0]], [0, 1]), "query", "same length")
    bad = x.copy()
    bad[4, 2] = np.nan
    _raises(lambda: calc.get_accuracy(bad, y), "query", "non-finite", "row 4", "column 2")
    _raises(lambda: calc.get_accuracy(x, y, bad, y), "reference", "non-finite")
    _raises(lambda: calc.get_accuracy(x, y[:-1]), "query_labels", "19 labels for 20")
    _raises(lambda: calc.get_accuracy(x, y, x, y[:5]), "reference_labels", "5 labels for 20")
    _raises(lambda: calc.get_accuracy(x, y, x[:, :2], y), "reference", "dimension")
    _raises(lambda: calc.get_accuracy(x, y, x), "reference_labels")
    _raises(lambda: calc.get_accuracy(x, np.c_[y, y]), "query_labels", "1-D")
    _raises(lambda: calc.get_accuracy(x, y + 0.5), "query_labels", "whole numbers")
    _raises(lambda: calc.get_accuracy(x, y, x, y.astype(str)), "mix integer and string")
    _raises(lambda: calc.get_accuracy(x[0], y), "query", "2-D")
    _raises(lambda: calc.get_accuracy(x, np.zeros(20, int)), "only one class")
    _raises(lambda: calc.get_accuracy(x, np.arange(20)), "no query has a same-class reference")
    _raises(lambda: proxima.AccuracyCalculator(k=0), "k")
    _raises(lambda: proxima.AccuracyCalculator(k="all"), "k")
    _raises(lambda: proxima.AccuracyCalculator(include=("precision_at_2",)), "include", "precision_at_2")
    _raises(lambda: proxima.AccuracyCalculator(metric="manhattan"), "metric", "manhattan")
    _raises(lambda: proxima.AccuracyCalculator(knn_func=lambda *a: a), "knn_func")
    _raises(lambda: proxima.AccuracyCalculator(k=25, include=("precision_at_1",)).get_accuracy(x, y), "k = 25")
    _raises(lambda: proxima.knn(x, x, k=0), "k")
    _raises(lambda: proxima.knn(x, x.astype(np.complex64), k=1), "reference", "dtype complex64")
    _raises(lambda: proxima.knn(x, x, k=21), "k = 21")
    _raises(lambda: proxima.knn(np.zeros((3, 2)), None, k=1, metric="cosine"), "zero vector")
    _raises(lambda: proxima.knn(np.full((2, 2), 1e300), None, k=1), "overflow float32")
