"""Sliced inverse regression and SAVE: one call from any source, and scikit-learn estimators (docs/sliced.md).

The names are statsmodels' (``SlicedInverseReg``, ``SlicedAverageVarianceEstimation``,
alias ``SAVE``; ``bias_correction`` is its ``bc``), with scikit-learn's conventions:
``fit``/``partial_fit``/``transform``, rows orientation (``components_`` is
``(k, d)``), ``random_state``, ``max_components=None`` for the full spectrum.

Passes over the data
--------------------
Slices need their edges before the first row is added. They are, in order:

* ``edges=`` given: one pass (nothing is read twice; the way to stream a
  one-shot iterator, and to share edges between machines);
* labels at hand (arrays, memmaps, ``.npy`` paths with ``y``): quantiles of ``y``
  (:func:`~hmi_fast.slice_edges`), then one pass over X;
* otherwise (a model, an iterable): a first pass reads the labels only
  (O(n) floats, X is discarded), then the pass over X. A one-shot iterator
  cannot be read twice: pass ``edges=`` or a re-iterable source.

Bias-corrected SAVE reads X once more (its fourth moment about the slice
means, in the whitened metric, is known only after the first pass).
``partial_fit`` takes the edges from ``edges=`` or from the first batch's labels.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import scipy.linalg as sla
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.metaestimators import available_if

from ._validation import check_dense, check_dtype, check_estimator_Xy, not_fitted
from .eigen import topk_eigh
from .model import HMIModel
from .sliced import SlicedAccumulator, check_edges, slice_edges
from .sliced_selection import select_sliced
from .whitened import WhitenedMatrix

__all__ = ["SAVE", "SlicedAverageVarianceEstimation", "SlicedInverseReg", "sliced_matrix"]


# ------------------------------------------------------------------ sources


class _Source:
    """A data source read in passes: ``blocks()`` yields ``(X_block, y_block)``; ``labels`` if known."""

    def __init__(self, source, y, n, block_size, dtype):
        from .sources import open_source

        self.reads = 0
        self.one_shot = not isinstance(source, (HMIModel, np.ndarray, str, bytes, os.PathLike)) and (
            hasattr(source, "__next__")
            or (hasattr(source, "__iter__") and not hasattr(source, "__array__") and iter(source) is source)
        )
        # rows of x, also from a model (its latent frame is for T; slices need x itself)
        first = open_source(source, y, n=n, block_size=block_size, dtype=dtype, latent=False)
        self.d, self.labels = first.d, first.labels
        self.dtype = np.dtype(dtype) if dtype is not None else first.dtype
        pending = [first]

        def again():
            if pending:
                return pending.pop().blocks
            return open_source(source, y, n=n, block_size=block_size, dtype=dtype, latent=False).blocks

        self._open = again

    def blocks(self, why: str):
        if self.reads and self.one_shot:
            raise ValueError(
                f"source: a one-shot iterator cannot be read twice ({why}); pass edges= (the interior slice "
                "edges) or a re-iterable source (a list, an array, a .npy path, a model)"
            )
        self.reads += 1
        for item in self._open():
            yield item[0], item[1]


def _edges_for(labels, n_slices, edges):
    if edges is not None:
        return check_edges(edges)
    e = slice_edges(labels, n_slices)
    if e.size == 0:
        raise ValueError("y: all labels are equal; slicing needs at least two distinct values")
    return e


def _accumulate(src: _Source, *, method, n_slices, edges, block_size):
    """Read ``src`` in as many passes as ``method`` needs; returns ``(acc, correction or None)``."""
    if edges is None:
        labels = src.labels
        if labels is None:
            parts = [np.array(yb, dtype=np.float64) for _, yb in src.blocks("the first pass reads the labels")]
            labels = np.concatenate(parts) if parts else np.empty(0)
        if labels.size == 0:
            raise ValueError("X: has no rows; slicing needs at least 2 samples")
        n_slices = min(int(n_slices), labels.size)
    edges = _edges_for(labels if edges is None else None, n_slices, edges)
    acc = None
    for Xb, yb in src.blocks("slice edges from a first pass over y"):
        if acc is None:
            d = src.d if src.d is not None else np.shape(Xb)[1]
            dt = src.dtype if src.dtype is not None else np.asarray(Xb).dtype
            dt = dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else np.float64
            acc = SlicedAccumulator(d, edges, per_slice=method != "sir", dtype=dt, block_size=block_size)
        acc.update(Xb, yb)
    if acc is None or acc.n == 0:
        raise ValueError("X: has no rows; slicing needs at least 2 samples")
    acc.release()
    if method != "save_bc":
        return acc, None
    res = acc.residual_accumulator()
    for Xb, yb in src.blocks("bias-corrected SAVE reads the rows twice"):
        res.update(Xb, yb)
    res.release()
    return acc, res


def sliced_matrix(source, y=None, *, method="sir", n_slices=10, edges=None, ddof=None, dtype=None,
                  block_size=None, n=None) -> WhitenedMatrix:
    """SIR, SAVE or bias-corrected SAVE matrix of a data source, in streaming passes.

    Parameters
    ----------
    source : array, np.memmap, path, iterable or HMIModel
        As for :func:`~hmi_fast.spectral_matrix`.
    y : array or path, optional
        Labels, required for array and file sources.
    method : {"sir", "save", "save_bc"}
    n_slices : int
        Slices from the quantiles of y (:func:`~hmi_fast.slice_edges`; at most one per row).
    edges : array_like, optional
        Interior slice edges (overrides ``n_slices``; one pass, also for one-shot iterators).
    ddof : int, optional
        SAVE only: slice covariances divided by ``n_h − ddof`` (0 by default, 1 is statsmodels').
    dtype, block_size, n
        As for :func:`~hmi_fast.spectral_matrix`.

    Returns
    -------
    WhitenedMatrix
        ``.matrix`` in the whitened frame; ``.directions(v)`` maps eigenvectors to x.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import sliced_matrix
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4000, 5)); y = X[:, 0] ** 2 + 0.1 * rng.standard_normal(4000)
    >>> wm = sliced_matrix(X, y, method="save")
    >>> vals = np.linalg.eigvalsh(wm.matrix)
    >>> bool(vals[-1] > 1.0 > 10 * vals[-2])
    True
    """
    if method not in ("sir", "save", "save_bc"):
        raise ValueError(f"method: must be 'sir', 'save' or 'save_bc', got {method!r}")
    _check_n_slices(n_slices)
    src = _Source(source, y, n, block_size, None if dtype is None else check_dtype(dtype))
    acc, res = _accumulate(src, method=method, n_slices=n_slices, edges=edges, block_size=block_size)
    return acc.finalize(method, ddof=ddof, correction=res)


def _check_n_slices(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"n_slices: must be an integer >= 2, got {value!r}")


# ------------------------------------------------------------------ estimators


class _SlicedEstimator(TransformerMixin, BaseEstimator):
    """Common code of the sliced estimators (not public)."""

    _method = "sir"
    _default_max = None

    # ------------------------------------------------------------ validation
    def _check_params(self):
        _check_n_slices(self.n_slices)
        if self.edges is not None:
            check_edges(self.edges)
        nc = self.n_components
        if isinstance(nc, str):
            if nc != "auto":
                raise ValueError(f"n_components: must be 'auto' or an integer >= 0, got {nc!r}")
        elif isinstance(nc, bool) or not isinstance(nc, numbers.Integral) or nc < 0:
            raise ValueError(f"n_components: must be 'auto' or an integer >= 0, got {nc!r}")
        mc = self.max_components
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, numbers.Integral) or mc < 1):
            raise ValueError(f"max_components: must be None (full spectrum) or an integer >= 1, got {mc!r}")
        if self.dtype is not None:
            check_dtype(self.dtype, "dtype")

    @property
    def _full_method(self):
        return self._method

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------- fit
    def fit(self, X, y):
        """Fit on in-memory data: ``X`` (n, d), ``y`` (n,)."""
        self._check_params()
        X, y = _check_Xy(X, y, type(self).__name__)
        src = _Source(X, y, None, self.block_size, self.dtype)
        acc, res = _accumulate(src, method=self._full_method, n_slices=self.n_slices, edges=self.edges,
                               block_size=self.block_size)
        return self._finish(acc, res)

    def fit_stream(self, source, y=None, n=None):
        """Fit from any source: a model (with n), a ``.npy`` path, a memmap, an iterable (see the module docstring)."""
        self._check_params()
        src = _Source(source, y, n, self.block_size, None if self.dtype is None else check_dtype(self.dtype))
        acc, res = _accumulate(src, method=self._full_method, n_slices=self.n_slices, edges=self.edges,
                               block_size=self.block_size)
        return self._finish(acc, res)

    @available_if(lambda self: self._full_method != "save_bc")
    def partial_fit(self, X, y):
        """Add one batch of rows and refresh the estimate; edges from ``edges=`` or the first batch's labels.

        Not available with ``bias_correction=True``, which reads the rows twice.
        """
        self._check_params()
        X, y = _check_Xy(X, y, type(self).__name__)
        acc = getattr(self, "_acc", None)
        if acc is None:
            n_slices = min(int(self.n_slices), len(y))
            edges = _edges_for(y, n_slices, self.edges)
            dt = self.dtype if self.dtype is not None else (np.float32 if X.dtype == np.float32 else np.float64)
            acc = SlicedAccumulator(X.shape[1], edges, per_slice=self._method != "sir", dtype=dt,
                                    block_size=self.block_size)
        elif X.shape[1] != acc.d:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {acc.d} features as input"
            )
        acc.update(X, y)
        acc.release()
        return self._finish(acc, None)

    def _finish(self, acc, res):
        if np.count_nonzero(acc.counts) < 2:
            raise ValueError(
                f"y: all {acc.n} rows fall in one slice; give edges inside the range of y (got {acc.edges.tolist()})"
            )
        wm = acc.finalize(self._full_method, correction=res)
        d = acc.d
        mc = self.max_components if self.max_components is not None else None
        values, vectors = _top_eigenpairs(wm, mc, self.random_state)
        sel = select_sliced(values, method=self._full_method, d=d, slice_counts=acc.counts,
                            trace=float(np.trace(wm.matrix)))
        if self.n_components == "auto":
            k = sel.n_components
        else:
            k = int(self.n_components)
            if k > vectors.shape[1]:
                raise ValueError(
                    f"n_components: {k} components asked for, but only {vectors.shape[1]} eigenvectors were "
                    "computed; raise max_components (or set it to None)"
                )
        B = wm.directions(vectors[:, :k])  # (k, d), Σ̂-orthonormal
        B /= np.linalg.norm(B, axis=1, keepdims=True)  # unit rows, as SpectralEstimator(whiten=True)'s
        signs = np.sign(B[np.arange(k), np.argmax(np.abs(B), axis=1)]) if k else np.ones(0)
        signs[signs == 0] = 1.0
        B *= signs[:, None]
        if k:
            Q, R = np.linalg.qr(B.T)
            Q *= np.where(np.diag(R) < 0, -1.0, 1.0)
        else:
            Q = np.zeros((d, 0))
        self._acc = acc
        self.directions_ = np.ascontiguousarray(B)
        self.components_ = np.ascontiguousarray(Q.T)
        self.eigenvalues_ = values[:k].copy()
        self.n_components_ = k
        self.spectrum_ = values
        self.selection_ = sel
        self.mean_ = wm.mean
        self.edges_ = acc.edges.copy()
        self.slice_counts_ = acc.counts.copy()
        self.n_slices_ = wm.n_slices
        self.n_samples_seen_ = acc.n
        self.n_features_in_ = d
        return self

    # ------------------------------------------------------------- transform
    def transform(self, X):
        """Sufficient predictors ``(X − mean_) @ directions_.T`` (uncorrelated over the fitted rows)."""
        if not hasattr(self, "directions_"):
            raise not_fitted(type(self).__name__, "fit, partial_fit or fit_stream")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                "features as input"
            )
        if not np.all(np.isfinite(X)):
            raise ValueError("X: contains NaN or inf; remove or impute them before transform")
        out = (X - self.mean_.astype(X.dtype)) @ self.directions_.T.astype(X.dtype)
        return out.astype(X.dtype, copy=False)

    def projector(self) -> np.ndarray:
        """Orthogonal projector onto the estimated x-space subspace, ``components_ᵀ components_`` (d × d)."""
        if not hasattr(self, "components_"):
            raise not_fitted(type(self).__name__, "fit, partial_fit or fit_stream")
        return self.components_.T @ self.components_


def _top_eigenpairs(wm: WhitenedMatrix, max_components, seed):
    """Eigenvalues (descending) and whitened-frame eigenvectors (columns); full spectrum for ``None``."""
    d = wm.matrix.shape[0]
    if wm.factor is not None and wm.factor.shape[0] <= d:  # SIR: M = Bᵀ B of rank < H'; SVD of the H' × d factor
        _, s, Vt = np.linalg.svd(wm.factor, full_matrices=False)
        r = len(s)
        k = r if max_components is None else min(max_components, r)
        values = s[:k] ** 2
        if max_components is None:
            values = np.concatenate([s**2, np.zeros(d - r)])
        return values, Vt[:k].T
    if wm.factor is not None and max_components is not None:  # SIR with more slices than features
        max_components = min(max_components, wm.factor.shape[0] - 1)
    if max_components is None or max_components >= d:
        values, vectors = sla.eigh(wm.matrix)
        return values[::-1].copy(), vectors[:, ::-1].copy()
    res = topk_eigh(wm.matrix, int(max_components), which="LA", seed=seed)
    return res.values, res.vectors


class SlicedInverseReg(_SlicedEstimator):
    """Sliced inverse regression (Li 1991), streamed.

    The directions along which the mean of whitened x changes with y:
    eigenvectors of ``M = Σ_h p_h m_h m_hᵀ`` (see :mod:`hmi_fast.whitened`).
    Blind to even links (``E[x | y] = 0``); the tool for monotone or odd ones.

    Parameters
    ----------
    n_slices : int, default 10
        Slices from the quantiles of y (at most one per row).
    edges : array_like or None
        Interior slice edges; overrides ``n_slices`` (see the module docstring).
    n_components : "auto" or int, default "auto"
        ``"auto"``: the Marchenko–Pastur edge rule (:func:`~hmi_fast.select_sliced`);
        an integer: that many leading directions.
    max_components : int or None, default None
        Eigenpairs computed; ``None``: all (SIR has at most ``H − 1`` non-zero ones,
        from the SVD of an ``H × d`` factor in ``O(H² d)`` when ``H <= d``).
    dtype : np.float32, np.float64 or None
        Precision of the block products (default: the data's).
    block_size : int or None
        Rows per streaming block.
    random_state : int or None
        Seed of the eigensolver (unused by SIR; kept for a common interface).

    Attributes
    ----------
    components_ : ndarray (n_components_, n_features)
        Orthonormal rows spanning the estimated subspace of x-space (nested:
        the first j rows span the first j directions).
    directions_ : ndarray (n_components_, n_features)
        The x-space directions ``β = L⁻ᵀ v`` of the eigenvectors ``v``, each of
        unit norm (statsmodels' ``params`` columns, which are Σ̂-orthonormal,
        are these rows up to scale); ``(x − x̄) @ directions_.T`` are the
        sufficient predictors, uncorrelated over the fitted rows.
    eigenvalues_ : ndarray (n_components_,)
    spectrum_ : ndarray
        Eigenvalues computed, descending (``n_features`` of them with ``max_components=None``).
    selection_ : SlicedSelection
    mean_, edges_, slice_counts_, n_slices_, n_samples_seen_, n_features_in_, n_components_

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import SlicedInverseReg
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((5000, 8)); y = np.tanh(X[:, 0] + X[:, 1]) + 0.1 * rng.standard_normal(5000)
    >>> sir = SlicedInverseReg().fit(X, y)
    >>> sir.n_components_, np.round(np.abs(sir.components_[0, :2]), 2)
    (1, array([0.71, 0.71]))
    """

    _method = "sir"

    def __init__(self, n_slices=10, edges=None, n_components="auto", max_components=None, dtype=None,
                 block_size=None, random_state=None):
        self.n_slices = n_slices
        self.edges = edges
        self.n_components = n_components
        self.max_components = max_components
        self.dtype = dtype
        self.block_size = block_size
        self.random_state = random_state


class SlicedAverageVarianceEstimation(_SlicedEstimator):
    """Sliced average variance estimation (Cook & Weisberg 1991), streamed; ``SAVE`` is an alias.

    The directions along which the covariance of whitened x changes with y:
    top eigenvectors of ``M = Σ_h p_h (I − V_h)²`` (see :mod:`hmi_fast.whitened`).
    Sees even links that SIR misses.

    Parameters
    ----------
    n_slices : int, default 10
        Slices from the quantiles of y (at most one per row). Memory is
        ``n_slices`` d×d float64 sums, whatever n.
    edges : array_like or None
        Interior slice edges; overrides ``n_slices``.
    bias_correction : bool, default False
        Li & Zhu's bias-corrected SAVE (statsmodels' ``bc=True``): reads the
        rows twice; matters for small slices (correction of order d / slice size).
    n_components : "auto" or int, default "auto"
        ``"auto"``: the Marchenko–Pastur edge rule (:func:`~hmi_fast.select_sliced`).
    max_components : int or None, default 20
        Top eigenpairs computed (:func:`~hmi_fast.topk_eigh`); ``None``: the full spectrum.
    dtype, block_size, random_state
        As for :class:`SlicedInverseReg`; ``random_state`` seeds the eigensolver.

    Attributes
    ----------
    components_, directions_, eigenvalues_, spectrum_, selection_, mean_, edges_, slice_counts_,
    n_slices_, n_samples_seen_, n_features_in_, n_components_
        As for :class:`SlicedInverseReg`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import SAVE
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((5000, 8)); y = X[:, 0] ** 2 - X[:, 1] ** 2 + 0.1 * rng.standard_normal(5000)
    >>> save = SAVE(max_components=4).fit(X, y)
    >>> save.n_components_, round(float((save.components_[:, :2] ** 2).sum()), 2)  # spans x_1, x_2
    (2, 2.0)
    """

    _method = "save"

    def __init__(self, n_slices=10, edges=None, bias_correction=False, n_components="auto", max_components=20,
                 dtype=None, block_size=None, random_state=None):
        self.n_slices = n_slices
        self.edges = edges
        self.bias_correction = bias_correction
        self.n_components = n_components
        self.max_components = max_components
        self.dtype = dtype
        self.block_size = block_size
        self.random_state = random_state

    @property
    def _full_method(self):
        return "save_bc" if self.bias_correction else "save"

    def _check_params(self):
        super()._check_params()
        if not isinstance(self.bias_correction, (bool, np.bool_)):
            raise ValueError(f"bias_correction: must be True or False, got {self.bias_correction!r}")


SAVE = SlicedAverageVarianceEstimation


# ------------------------------------------------------------------ input checks (scikit-learn's wording)


def _check_X(X):
    return check_dense(X, "X", 2)


def _check_Xy(X, y, name):
    X, y = check_estimator_Xy(X, y, name, min_samples=2)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"y: non-finite value at row {int(np.argmax(bad))}; remove or impute NaN/inf labels")
    return X, y
