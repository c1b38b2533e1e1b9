"""Proxima from Python: fast retrieval metrics, exact k-NN and brand galleries on NumPy arrays.

Why this package: pytorch-metric-learning's ``AccuracyCalculator`` is the standard way to report
P@1, R-Precision and MAP@R, but on large sets it is slow or runs out of memory, and metric-learning
code has no k-NN index that can be saved, reopened and served. Proxima's pure-Rust evaluation
(blocked-GEMM exact k-NN with bounded memory, metrics equal to the reference's) and its galleries
(the checksummed file format of the ``proxima`` CLI and server) solve both; this package exposes
them to NumPy without importing torch. Torch tensors are accepted through ``__array__``.

* :class:`AccuracyCalculator` — pytorch-metric-learning 2.9's constructor arguments and
  ``get_accuracy`` with the same keys and values.
* :func:`knn` — exact k nearest neighbours: ``(distances, indices)``.
* :class:`Gallery` — enrol / remove / search / identify / calibrate / save / load brand galleries
  that ``proxima gallery`` and ``proxima serve`` open unchanged.
* :class:`Embedder` — embed images with a model exported by ``proxima export --format onnx``
  (onnxruntime, imported only here), preprocessed by the same Rust code as ``proxima embed``, so a
  gallery can be built and searched from Python with no Rust tools and no torch installed.

Bad input raises ``ValueError`` naming the argument; file problems raise ``OSError`` naming the path.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _proxima

__version__ = _proxima.__version__
__all__ = ["AccuracyCalculator", "Embedder", "Gallery", "knn", "model_fingerprint"]

# pytorch-metric-learning's metric names, in its (alphabetical) order.
_KNN_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
_CLUSTERING_METRICS = ("AMI", "NMI")
_ALL_METRICS = _CLUSTERING_METRICS + _KNN_METRICS
# Names the Rust side accepts for the k-NN closeness (faiss / scipy spellings included).
_METRIC_NAMES = {"euclidean", "l2", "squared_euclidean", "l2_squared", "sqeuclidean", "cosine", "dot", "inner_product", "ip"}


def _as_array(name: str, x: Any) -> np.ndarray:
    """``np.asarray`` with the argument's name in every error (tensors go through ``__array__``)."""
    if x is None:
        raise ValueError(f"{name}: expected an array, got None")
    try:
        return np.asarray(x)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(
            f"{name}: cannot be read as a NumPy array ({e}); rows must all have the same length, "
            "and torch tensors must be detached CPU tensors"
        ) from None


def _as_matrix(name: str, x: Any) -> np.ndarray:
    """A C-contiguous float32 ``rows × dim`` matrix, or ValueError."""
    a = _as_array(name, x)
    if a.dtype == object:
        raise ValueError(f"{name}: ragged or non-numeric rows (dtype object); every row must have the same length")
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x dim), got shape {a.shape}")
    if a.dtype.kind != "f" or a.dtype.itemsize > 8:
        raise ValueError(f"{name}: expected float32 or float64 embeddings, got dtype {a.dtype}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {a.shape}")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype != np.float32 and np.isfinite(a).all() and not np.isfinite(out).all():
        raise ValueError(f"{name}: values overflow float32 (largest magnitude {np.abs(a).max():g})")
    return out


def _as_rows(name: str, x: Any) -> Tuple[np.ndarray, bool]:
    """Like :func:`_as_matrix` but a 1-D vector is one row; also says whether it was 1-D."""
    a = _as_array(name, x)
    if a.ndim == 1 and a.dtype != object:
        return _as_matrix(name, a[None, :]), True
    return _as_matrix(name, a), False


def _label_kind(name: str, a: np.ndarray) -> str:
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: no labels")
    if a.dtype.kind in "iub":
        return "int"
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: labels must be finite (found NaN or inf)")
        if not (a == np.round(a)).all():
            raise ValueError(f"{name}: float labels must be whole numbers")
        return "int"
    if a.dtype.kind in "US":
        return "str"
    if a.dtype == object and all(isinstance(v, str) for v in a):
        return "str"
    raise ValueError(f"{name}: labels must be integers or strings, got dtype {a.dtype}")


def _encode_labels(
    pairs: Sequence[Tuple[str, Any]],
) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
    """int64 codes for every label array (strings mapped through their sorted unique values)."""
    arrays = [(n, _as_array(n, y)) for n, y in pairs]
    kinds = {_label_kind(n, a) for n, a in arrays}
    if len(kinds) > 1:
        raise ValueError(f"{', '.join(n for n, _ in arrays)}: mix integer and string labels")
    if kinds == {"int"}:
        out = []
        for n, a in arrays:
            if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{n}: label {a.max()} does not fit in int64")
            out.append(np.ascontiguousarray(a, dtype=np.int64))
        return out, None
    strings = [a.astype(str) for _, a in arrays]
    uniques, codes = np.unique(np.concatenate(strings), return_inverse=True)
    out, start = [], 0
    for s in strings:
        out.append(np.ascontiguousarray(codes[start : start + len(s)], dtype=np.int64))
        start += len(s)
    return out, uniques


def _metric_set(include: Any, exclude: Any) -> List[str]:
    for arg, value in (("include", include), ("exclude", exclude)):
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{arg}: must be a tuple or list of metric names, not {type(value).__name__}")
        unknown = [m for m in value if m not in _ALL_METRICS]
        if unknown:
            raise ValueError(f"{arg}: unknown metrics {unknown}; primary metrics are {list(_ALL_METRICS)}")
    chosen = list(include) if include else list(_ALL_METRICS)
    return [m for m in _ALL_METRICS if m in chosen and m not in exclude]


class AccuracyCalculator:
    """pytorch-metric-learning's ``AccuracyCalculator``, computed by Proxima's exact Rust k-NN.

    Same constructor arguments, ``get_accuracy`` signature, keys and values (checked against
    recorded pytorch-metric-learning 2.9 outputs). Neighbour lists are computed in chunks of
    queries when they would exceed 512 MiB, so ``k=None`` (every reference) works on large sets.
    Differences: ``metric`` chooses the k-NN
    closeness (default ``"euclidean"``, the reference's); ``knn_func``, ``kmeans_func`` and
    ``label_comparison_fn`` are not supported; ``device`` is ignored (CPU, all cores); a query
    set where no query has a same-class reference raises ValueError instead of returning 0;
    NMI/AMI come from Proxima's seeded k-means (the reference uses faiss k-means, so the
    clusters, and these two values, can differ slightly).
    """

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: Union[int, str, None] = None,
        label_comparison_fn: Any = None,
        device: Any = None,
        knn_func: Any = None,
        kmeans_func: Any = None,
        metric: str = "euclidean",
        seed: int = 0,
    ) -> None:
        for arg, value in (
            ("label_comparison_fn", label_comparison_fn),
            ("knn_func", knn_func),
            ("kmeans_func", kmeans_func),
        ):
            if value is not None:
                raise ValueError(f"{arg}: not supported by proxima (leave it None)")
        if not ((isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0) or k in (None, "max_bin_count")):
            raise ValueError("k: must be an integer greater than 0, or None, or 'max_bin_count'")
        if not isinstance(metric, str) or metric.lower() not in _METRIC_NAMES:
            raise ValueError(f"metric: unknown metric {metric!r}; expected one of 'euclidean', 'squared_euclidean', 'cosine', 'dot'")
        self.include, self.exclude = tuple(include), tuple(exclude)
        self.metrics = _metric_set(include, exclude)
        self.avg_of_avgs = bool(avg_of_avgs)
        self.return_per_class = bool(return_per_class)
        self.k = int(k) if isinstance(k, (int, np.integer)) else k
        self.metric = metric
        self.seed = int(seed)
        # Queries per k-NN chunk; None: as many as fit 512 MiB of neighbour lists (tests set it).
        self._chunk_rows: Optional[int] = None

    def get_curr_metrics(self) -> List[str]:
        """The metric names ``get_accuracy`` returns by default."""
        return list(self.metrics)

    def get_accuracy(
        self,
        query: Any,
        query_labels: Any,
        reference: Any = None,
        reference_labels: Any = None,
        ref_includes_query: bool = False,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> Dict[str, Union[float, List[float]]]:
        """Metric name -> value (or per-class list with ``return_per_class``)."""
        metrics = self.metrics
        if include or exclude:
            metrics = [m for m in _metric_set(include, exclude) if m in self.metrics]
        q = _as_matrix("query", query)
        if reference is None:
            if reference_labels is not None:
                raise ValueError("reference_labels: given without reference")
            (ql,), _ = _encode_labels([("query_labels", query_labels)])
            r = rl = None
            ref_includes_query = False  # the query set itself: each query's own row is excluded
        else:
            if reference_labels is None:
                raise ValueError("reference_labels: required when reference is given")
            r = _as_matrix("reference", reference)
            (ql, rl), _ = _encode_labels([("query_labels", query_labels), ("reference_labels", reference_labels)])
            if r.shape[1] != q.shape[1]:
                raise ValueError(f"reference: dimension {r.shape[1]} differs from the query's dimension {q.shape[1]}")
            if len(rl) != r.shape[0]:
                raise ValueError(f"reference_labels: {len(rl)} labels for {r.shape[0]} reference rows")
        if len(ql) != q.shape[0]:
            raise ValueError(f"query_labels: {len(ql)} labels for {q.shape[0]} query rows")
        want_knn = any(m in _KNN_METRICS for m in metrics)
        want_clustering = any(m in _CLUSTERING_METRICS for m in metrics)
        res = _proxima.accuracy(
            q, ql, r, rl, bool(ref_includes_query), self.k, self.avg_of_avgs and not self.return_per_class,
            self.metric, want_knn, want_clustering, self.seed, self._chunk_rows,
        )
        out: Dict[str, Union[float, List[float]]] = {}
        for m in metrics:
            if m in _KNN_METRICS and self.return_per_class:
                out[m] = [float(v) for v in res["per_class"][m]]
            else:
                out[m] = float(res[m])
        return out


def _available_memory() -> Optional[int]:
    """MemAvailable of /proc/meminfo in bytes, or None where there is none (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def knn(
    query: Any, reference: Any = None, k: int = 10, metric: str = "euclidean"
) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k nearest references per query: ``(scores float32, indices int64)``, both ``nq x k``, closest first.

    ``reference=None`` searches the query set itself without each query's own row. Scores are
    distances for ``"euclidean"`` (not squared) and ``"squared_euclidean"``, similarities for
    ``"cosine"`` and ``"dot"``. Ties go to the lower reference index (as faiss's flat index).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k: must be a positive integer, not {k!r}")
    q = _as_matrix("query", query)
    r = None if reference is None else _as_matrix("reference", reference)
    if k < 1:
        raise ValueError(f"k: must be a positive integer, not {k}")
    # Indices (8 bytes) and scores (4) per neighbour, plus the int64 copy handed to NumPy: refuse
    # up front what cannot fit rather than let the kernel's OOM killer pick a process.
    need, avail = 20 * q.shape[0] * int(k), _available_memory()
    if avail is not None and need > avail:
        raise MemoryError(
            f"knn: {q.shape[0]} queries x k={k} neighbours need about {need / 2**30:.1f} GiB, "
            f"more than the {avail / 2**30:.1f} GiB available; lower k or search fewer queries at a time"
        )
    return _proxima.knn(q, r, int(k), metric)


class Embedder:
    """Embeds images with a model exported by ``proxima export --format onnx``.

    ``Embedder("model.onnx")`` opens the file with onnxruntime (``pip install onnxruntime``) and reads
    the card ``proxima export`` stored in its metadata: input size, embedding width and the
    fingerprint of the model it was exported from. :meth:`embed` takes image paths (decoded and
    resized by ``proxima-data``, exactly as ``proxima embed`` does) or a float32 array
    ``[N, 3, S, S]`` of RGB values in [0, 1], and returns float32 ``[N, E]``.

    Pass an ``Embedder`` as the ``model`` of :class:`Gallery` or :meth:`Gallery.load`: a gallery
    built with the original model (or with this file) is accepted, one of another model refused.
    """

    def __init__(self, path: Union[str, os.PathLike], providers: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("proxima.Embedder needs onnxruntime: pip install onnxruntime") from None
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise OSError(f"{self.path}: no such file (an ONNX file written by `proxima export --format onnx`)")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        try:
            self._session = ort.InferenceSession(self.path, opts, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: not a readable ONNX model ({e})") from None
        meta = self._session.get_modelmeta().custom_metadata_map
        if "proxima.json" not in meta:
            raise ValueError(f"{self.path}: no proxima.json metadata; export the model with `proxima export --format onnx`")
        card = json.loads(meta["proxima.json"])
        if card.get("format") != "proxima-export" or card.get("version") != 1:
            raise ValueError(f"{self.path}: export card {card.get('format')!r} v{card.get('version')!r} is not supported (expected 'proxima-export' v1)")
        self.card: Dict[str, Any] = card
        self.fingerprint: str = card["model_fingerprint"]
        self.image_size: int = int(card["image_size"])
        self.dim: int = int(card["embedding_size"])

    def preprocess(self, paths: Sequence[Union[str, os.PathLike]]) -> np.ndarray:
        """Images decoded and resized as ``proxima embed`` does: float32 ``[N, 3, S, S]`` in [0, 1]."""
        if isinstance(paths, (str, os.PathLike)):
            raise ValueError("paths: expected a list of image paths, got a single path")
        return _proxima.load_images([os.fspath(p) for p in paths], self.image_size)

    def embed(self, images: Union[Sequence[Union[str, os.PathLike]], np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Embeddings float32 ``[N, E]`` of image paths or of preprocessed images ``[N, 3, S, S]``."""
        if isinstance(images, np.ndarray):
            x = images
        else:
            x = self.preprocess(list(images))
        s = self.image_size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"images: expected shape [N, 3, {s}, {s}], got {x.shape}")
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = [self._session.run(["embeddings"], {"images": x[i : i + batch_size]})[0] for i in range(0, x.shape[0], max(1, int(batch_size)))]
        return np.concatenate(out, axis=0)

    def __repr__(self) -> str:
        return f"Embedder({self.path!r}, {self.card.get('backbone')}, {self.dim} dims, {self.image_size}px, fingerprint {self.fingerprint})"


def model_fingerprint(model: Union[str, os.PathLike, "Embedder"]) -> str:
    """The fingerprint a gallery records: an :class:`Embedder`'s, a model directory's ``model.json``'s, else the string itself."""
    if isinstance(model, Embedder):
        return model.fingerprint
    s = os.fspath(model) if isinstance(model, os.PathLike) else model
    if not isinstance(s, str) or not s:
        raise ValueError(f"model: expected a fingerprint string or a model directory, got {model!r}")
    card = os.path.join(s, "model.json") if os.path.isdir(s) else s
    if os.path.basename(card) == "model.json" and os.path.isfile(card):
        try:
            with open(card, encoding="utf-8") as f:
                fp = json.load(f).get("fingerprint")
        except (OSError, ValueError) as e:
            raise OSError(f"{card}: cannot read the model card: {e}") from None
        if not isinstance(fp, str) or not fp:
            raise ValueError(f"{card}: the model card has no fingerprint")
        return fp
    if os.path.isdir(s):
        raise OSError(f"{s}: a directory without model.json; pass a model directory or a fingerprint string")
    return s


def _hit(t: Tuple[str, float, int, str]) -> Dict[str, Any]:
    brand, sim, row, path = t
    return {"brand": brand, "similarity": float(sim), "row": int(row), "path": path}


class Gallery:
    """A brand gallery: enrolled embeddings with brands, source paths, model fingerprint and threshold.

    The file written by :meth:`save` is the ``proxima gallery`` format (checksummed, written
    atomically); ``proxima gallery list/add/remove`` and ``proxima serve`` open it, and galleries
    they write open here. Similarities are "higher is closer" (cosine and dot as is, Euclidean
    distances negated); a query is a known brand when its best similarity is >= the threshold.
    """

    def __init__(self, dim: int, model: Union[str, os.PathLike], metric: str = "cosine") -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: must be a positive integer, not {dim!r}")
        self._g = _proxima.Gallery(int(dim), model_fingerprint(model), metric)

    @classmethod
    def _wrap(cls, g: Any) -> "Gallery":
        self = cls.__new__(cls)
        self._g = g
        return self

    @classmethod
    def build(
        cls,
        embeddings: Any,
        brands: Any,
        model: Union[str, os.PathLike],
        paths: Optional[Sequence[str]] = None,
        metric: str = "cosine",
    ) -> "Gallery":
        """A gallery of ``embeddings`` (rows) labelled by ``brands`` (one per row), brands in order of first appearance."""
        e = _as_matrix("embeddings", embeddings)
        b = _as_array("brands", brands)
        if b.ndim != 1:
            raise ValueError(f"brands: expected one brand per row (1-D), got shape {b.shape}")
        if len(b) != e.shape[0]:
            raise ValueError(f"brands: {len(b)} brands for {e.shape[0]} embedding rows")
        if paths is not None and len(paths) != e.shape[0]:
            raise ValueError(f"paths: {len(paths)} paths for {e.shape[0]} embedding rows")
        names = [str(x) for x in b.tolist()]
        g = cls(e.shape[1], model, metric)
        order: Dict[str, List[int]] = {}
        for i, n in enumerate(names):
            order.setdefault(n, []).append(i)
        for n, idx in order.items():
            g.add(n, e[idx], None if paths is None else [paths[i] for i in idx])
        return g

    @classmethod
    def load(cls, path: Union[str, os.PathLike], model: Union[str, os.PathLike, None] = None) -> "Gallery":
        """Open a gallery file; with ``model``, refuse a gallery built with another model."""
        fp = None if model is None else model_fingerprint(model)
        return cls._wrap(_proxima.Gallery.load(os.fspath(path), fp))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the gallery to ``path`` atomically."""
        self._g.save(os.fspath(path))

    def add(self, brand: str, embeddings: Any, paths: Optional[Sequence[str]] = None) -> int:
        """Enrol rows under ``brand`` (a new brand or more rows of a known one); returns the rows added."""
        if not isinstance(brand, str):
            raise ValueError(f"brand: expected a string, got {type(brand).__name__}")
        e, _ = _as_rows("embeddings", embeddings)
        if paths is None:
            have = dict(self._g.list()).get(brand, 0)
            paths = [f"{brand}/{have + i}" for i in range(e.shape[0])]
        else:
            paths = [os.fspath(p) for p in paths]
        return self._g.add(brand, e, paths)

    def remove(self, brand: str) -> int:
        """Remove a brand and its rows; returns the rows removed."""
        return self._g.remove(brand)

    def set_domains(self, brand: str, domains: Sequence[str]) -> List[str]:
        """Replace an enrolled brand's legitimate domains; returns them as stored.

        Domains are stored as registrable domains (``www.paypal.com`` -> ``paypal.com``,
        ``bücher.de`` -> ``xn--bcher-kva.de``); a public suffix or an IP address raises ValueError
        and changes nothing. An empty list removes the brand's domains.
        """
        if isinstance(domains, str):
            raise ValueError("domains: expected a list of domain names, not one string")
        return self._g.set_domains(brand, [str(d) for d in domains])

    def add_domains(self, brand: str, domains: Sequence[str]) -> List[str]:
        """Add legitimate domains to an enrolled brand's; returns them all as stored."""
        if isinstance(domains, str):
            raise ValueError("domains: expected a list of domain names, not one string")
        return self._g.set_domains(brand, self._g.domains(brand) + [str(d) for d in domains])

    def domains(self, brand: Optional[str] = None) -> Union[List[str], Dict[str, List[str]]]:
        """A brand's legitimate domains; without ``brand``, every brand that has some."""
        if brand is None:
            return dict(self._g.all_domains())
        return self._g.domains(brand)

    def import_catalogue(self, path: Union[str, os.PathLike], replace: bool = False) -> Dict[str, List[str]]:
        """Give each gallery brand a brand catalogue names (by name or alias) its domains.

        The catalogue is the JSON or TOML file of ``proxima data catalogue``; matched brands gain
        its domains (``replace=True``: get only them). Returns ``{"matched": [...], "unmatched": [...]}``.
        """
        matched, unmatched = self._g.import_catalogue(os.fspath(path), bool(replace))
        return {"matched": matched, "unmatched": unmatched}

    def check(self, url: str, brands: Union[str, Sequence[str]]) -> Dict[str, Any]:
        """The phishing verdict for a page at ``url`` that shows ``brands`` (most confident first).

        ``verdict`` is ``"impersonation"`` (a brand shown on a domain that is none of its own),
        ``"consistent"`` (the page's registrable domain belongs to a brand it shows),
        ``"unknown_domain"`` (brands shown, none with domains on record) or ``"no_brand"``; the
        rule is the one of ``proxima check`` and ``POST /v1/check``.
        """
        if isinstance(brands, str):
            brands = [brands]
        return self._g.check(str(url), [str(b) for b in brands])

    def search(self, query: Any, k: int = 10) -> Union[List[Dict[str, Any]], List[List[Dict[str, Any]]]]:
        """The ``min(k, len)`` most similar rows: dicts of row, brand, path, similarity (a list per query for 2-D input)."""
        q, single = _as_rows("query", query)
        sims, rows = self._g.search(q, _positive("k", k))
        brands, labels, paths = self._g.brands, self._g.labels, self._g.paths
        out = [
            [
                {"row": int(r), "brand": brands[labels[r]], "path": paths[r], "similarity": float(s)}
                for s, r in zip(srow, rrow)
            ]
            for srow, rrow in zip(sims, rows)
        ]
        return out[0] if single else out

    def search_arrays(self, queries: Any, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """Row search as arrays: ``(similarities float32, rows int64)``, ``nq x min(k, len)``."""
        q, _ = _as_rows("queries", queries)
        return self._g.search(q, _positive("k", k))

    def rank_brands(self, query: Any, k: int = 5) -> Union[List[Dict[str, Any]], List[List[Dict[str, Any]]]]:
        """The ``min(k, brands)`` most similar brands (best row each), best first."""
        q, single = _as_rows("query", query)
        out = [[_hit(t) for t in r] for r in self._g.rank_brands(q, _positive("k", k))]
        return out[0] if single else out

    def identify(
        self, query: Any, k: int = 5, threshold: Optional[float] = None
    ) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Known brand or unknown, with the top-k brand candidates (threshold: the calibrated one unless given)."""
        q, single = _as_rows("query", query)
        if threshold is not None:
            threshold = float(threshold)
            if threshold != threshold:
                raise ValueError("threshold: must be a number, not NaN")
        res = self._g.identify(q, _positive("k", k), threshold)
        out = [
            {
                "decision": "known" if brand is not None else "unknown",
                "brand": brand,
                "similarity": float(sim),
                "threshold": float(t),
                "candidates": [_hit(c) for c in cands],
            }
            for brand, sim, t, cands in res
        ]
        return out[0] if single else out

    def calibrate(
        self, queries: Any, true_brands: Any, target_fmr: float = 0.01, impostors: str = "best_wrong_brand"
    ) -> Dict[str, Any]:
        """Set the threshold for ``target_fmr`` from labelled, non-enrolled queries (brands not enrolled are unknowns)."""
        q, _ = _as_rows("queries", queries)
        tb = _as_array("true_brands", true_brands)
        if tb.ndim != 1 or len(tb) != q.shape[0]:
            raise ValueError(f"true_brands: expected {q.shape[0]} brand names (one per query row), got shape {tb.shape}")
        return self._g.calibrate(q, [str(x) for x in tb.tolist()], float(target_fmr), impostors)

    def calibrate_from_scores(self, genuine: Any, impostor: Any, target_fmr: float = 0.01) -> Dict[str, Any]:
        """Set the threshold for ``target_fmr`` from precomputed genuine and impostor similarities."""
        g = _as_array("genuine", genuine).astype(np.float64, copy=False).ravel()
        i = _as_array("impostor", impostor).astype(np.float64, copy=False).ravel()
        return self._g.calibrate_from_scores(g.tolist(), i.tolist(), float(target_fmr))

    def clear_calibration(self) -> None:
        """Forget the threshold."""
        self._g.clear_calibration()

    def use_hnsw(self, m: int = 16, ef_construction: int = 100, ef_search: int = 64, exact_below: int = 10_000) -> None:
        """Search with an HNSW graph (saved in the file's backend setting) once the gallery has ``exact_below`` rows."""
        self._g.use_hnsw(m, ef_construction, ef_search, exact_below)

    def use_exact(self) -> None:
        """Search exactly (the default)."""
        self._g.use_exact()

    def list(self) -> Dict[str, int]:
        """Brand -> number of rows, in brand-id order."""
        return dict(self._g.list())

    @property
    def calibration(self) -> Optional[Dict[str, Any]]:
        """The threshold and the calibration it came from, or None."""
        return self._g.calibration

    @property
    def threshold(self) -> Optional[float]:
        """The calibrated threshold, or None."""
        c = self._g.calibration
        return None if c is None else float(c["threshold"])

    @property
    def backend(self) -> Dict[str, Any]:
        """The search backend setting."""
        return self._g.backend

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._g.dim

    @property
    def metric(self) -> str:
        """Similarity metric name."""
        return self._g.metric

    @property
    def model_fingerprint(self) -> str:
        """Fingerprint of the model the rows came from."""
        return self._g.model_fingerprint

    @property
    def brands(self) -> List[str]:
        """Brand names by brand id."""
        return self._g.brands

    @property
    def labels(self) -> np.ndarray:
        """Brand id of every row (int64)."""
        return self._g.labels

    @property
    def paths(self) -> List[str]:
        """Source path of every row."""
        return self._g.paths

    @property
    def embeddings(self) -> np.ndarray:
        """A copy of the stored rows (unit-norm for cosine galleries)."""
        return self._g.embeddings

    def __len__(self) -> int:
        return len(self._g)

    def __repr__(self) -> str:
        t = self.threshold
        return (
            f"Gallery(dim={self.dim}, metric={self.metric!r}, brands={len(self.brands)}, rows={len(self)}, "
            f"model={self.model_fingerprint!r}, threshold={'None' if t is None else f'{t:.4f}'})"
        )


def _positive(name: str, k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name}: must be a positive integer, not {k!r}")
    return int(k)
