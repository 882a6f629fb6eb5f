"""The spectral estimator with scikit-learn's conventions (docs/selection.md)."""

from __future__ import annotations

import numbers

import numpy as np

from ._validation import check_dtype, check_float_array, check_lengths, not_fitted
from .accumulator import SpectralAccumulator
from .eigen import topk_eigh
from .selection import select_components
from .engine import accumulate

RULES = ("gap", "edge")


class SpectralEstimator:
    """Estimate the hidden subspace from the top (and bottom) eigenvectors of T.

    ``fit`` builds ``T = (1/n) Σ τ(y_i) x_i x_iᵀ`` in streaming blocks, finds
    ``max_components`` eigenpairs at each wanted end with the block Lanczos
    solver, and keeps the informative ones with the selection rule.

    Parameters
    ----------
    preprocess : str, tuple or callable, default "saturating"
        The label transform τ.
    n_components : "gap", "edge" or int, default "gap"
        Selection rule (docs/selection.md) or a fixed number of components (the
        eigenvalues farthest from the bulk centre).
    max_components : int, default 50
        Eigenpairs computed per end of the spectrum (capped at d/2 for "BE").
    which : {"BE", "LA", "SA"}, default "BE"
        Spectrum ends to search: both (spikes of T may be negative), largest, smallest.
    dtype : np.float32, np.float64 or None
        Precision of the block products (default: the data's).
    block_size : int or None
        Rows per streaming block.
    center : bool or float, default False
        Centre the weights (docs/theory.md).
    random_state : int or None
        Seed of the eigensolver's start block.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features)
        Orthonormal rows spanning the estimated subspace.
    eigenvalues_ : ndarray of shape (n_components_,)
    n_components_ : int
    n_samples_seen_ : int
    n_features_in_ : int
    spectrum_ : ndarray
        All computed eigenvalues (as returned by :func:`~hmi_fast.topk_eigh`).
    selection_ : Selection
        Diagnostics of the selection rule (gaps, threshold, bulk edges, both rules' counts).
    weight_mean_, weight_sq_mean_ : float
        Moments of the weights τ(y), used for the bulk estimate.

    Examples
    --------
    >>> from hmi_fast import HMIModel, SpectralEstimator
    >>> model = HMIModel(d=60, m_star=2, gamma=1.0, link="he2", seed=0)
    >>> est = SpectralEstimator(max_components=5).fit_stream(model, n=60_000)
    >>> est.components_.shape[1]
    60
    """

    def __init__(self, preprocess="saturating", n_components="gap", max_components=50, which="BE",
                 dtype=None, block_size=None, center=False, random_state=None):
        self.preprocess = preprocess
        self.n_components = n_components
        self.max_components = max_components
        self.which = which
        self.dtype = dtype
        self.block_size = block_size
        self.center = center
        self.random_state = random_state

    # ------------------------------------------------------- sklearn plumbing
    def get_params(self, deep=True) -> dict:
        return {k: getattr(self, k) for k in (
            "preprocess", "n_components", "max_components", "which", "dtype", "block_size", "center",
            "random_state")}

    def set_params(self, **params) -> "SpectralEstimator":
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"set_params: invalid parameter {k!r} for SpectralEstimator; valid: {sorted(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = SpectralEstimator().get_params()
        changed = {k: v for k, v in self.get_params().items() if not _same(v, defaults[k])}
        return "SpectralEstimator(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        from sklearn.utils import Tags, TargetTags, TransformerTags

        tags = Tags(estimator_type=None, target_tags=TargetTags(required=True),
                    transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]))
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------ validation
    def _check_params(self):
        nc = self.n_components
        if isinstance(nc, str):
            if nc not in RULES:
                raise ValueError(f"n_components: unknown rule {nc!r}; use 'gap', 'edge' or an integer >= 0")
        elif isinstance(nc, bool) or not isinstance(nc, numbers.Integral) or nc < 0:
            raise ValueError(f"n_components: must be 'gap', 'edge' or an integer >= 0, got {nc!r}")
        mc = self.max_components
        if isinstance(mc, bool) or not isinstance(mc, numbers.Integral) or mc < 1:
            raise ValueError(f"max_components: must be an integer >= 1, got {mc!r}")
        if self.which not in ("BE", "LA", "SA"):
            raise ValueError(f"which: must be 'BE', 'LA' or 'SA', got {self.which!r}")
        if self.dtype is not None:
            check_dtype(self.dtype, "dtype")

    def _new_accumulator(self, d, X_dtype):
        dt = self.dtype if self.dtype is not None else (np.float32 if X_dtype == np.float32 else np.float64)
        return SpectralAccumulator(d, preprocess=self.preprocess, dtype=dt, center=self.center,
                                   block_size=self.block_size)

    # ------------------------------------------------------------------- fit
    def fit(self, X, y) -> "SpectralEstimator":
        """Fit on in-memory data (X of shape (n, d), y of shape (n,))."""
        self._check_params()
        X, y = _check_Xy(X, y)
        acc = self._new_accumulator(X.shape[1], X.dtype)
        acc.update(X, y)
        return self._finish(acc, _identity)

    def partial_fit(self, X, y) -> "SpectralEstimator":
        """Add one block of rows and refresh the estimate (T is kept, so blocks may come one at a time)."""
        self._check_params()
        X, y = _check_Xy(X, y)
        acc = getattr(self, "_acc", None)
        if acc is None:
            acc = self._new_accumulator(X.shape[1], X.dtype)
        elif X.shape[1] != acc.d:
            raise ValueError(f"X has {X.shape[1]} features, but SpectralEstimator is expecting {acc.d} features as input")
        acc.update(X, y)
        return self._finish(acc, _identity)

    def fit_stream(self, source, y=None, n=None) -> "SpectralEstimator":
        """Fit from any source the engine accepts: a model (with n), a .npy path, a memmap, an iterable."""
        self._check_params()
        acc, post = accumulate(source, y, n=n, preprocess=self.preprocess, center=self.center,
                               block_size=self.block_size, dtype=self.dtype)
        return self._finish(acc, post)

    def _finish(self, acc: SpectralAccumulator, post) -> "SpectralEstimator":
        d = acc.d
        T = post(acc.finalize())
        which = self.which if d >= 2 else "LA"
        per_end = min(int(self.max_components), d if which != "BE" else d // 2)
        k = 2 * per_end if which == "BE" else per_end
        res = topk_eigh(T, k, which=which, seed=self.random_state)
        values, vectors = res.values, res.vectors
        rule = self.n_components if isinstance(self.n_components, str) else "gap"
        sel = select_components(values, d=d, n=acc.n, rule=rule, which=which,
                                tau_mean=acc.weight_mean, tau_sq_mean=acc.weight_sq_mean)
        if isinstance(self.n_components, str):
            index = np.asarray(sel.index, dtype=int)
        else:
            far = np.argsort(-np.abs(values - acc.weight_mean), kind="stable")[: int(self.n_components)]
            index = np.sort(far)
        self._acc = acc
        self.components_ = np.ascontiguousarray(vectors[:, index].T)
        self.eigenvalues_ = values[index]
        self.n_components_ = int(len(index))
        self.n_samples_seen_ = acc.n
        self.n_features_in_ = d
        self.spectrum_ = values
        self.selection_ = sel
        self.eig_result_ = res
        self.weight_mean_ = acc.weight_mean
        self.weight_sq_mean_ = acc.weight_sq_mean
        return self

    # ------------------------------------------------------------- transform
    def transform(self, X) -> np.ndarray:
        """Project X on the estimated subspace: ``X @ components_.T``."""
        if not hasattr(self, "components_"):
            raise _not_fitted()
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but SpectralEstimator is expecting {self.n_features_in_} features as input"
            )
        if not np.all(np.isfinite(X)):
            raise ValueError("X: contains NaN or inf; remove or impute them before transform")
        return X @ self.components_.T.astype(X.dtype, copy=False)

    def fit_transform(self, X, y) -> np.ndarray:
        return self.fit(X, y).transform(X)

    def projector(self) -> np.ndarray:
        """``P̂ = Ŵ Ŵᵀ`` (d × d)."""
        if not hasattr(self, "components_"):
            raise _not_fitted()
        return self.components_.T @ self.components_


def _not_fitted():
    return not_fitted("SpectralEstimator", "fit, partial_fit or fit_stream")


def _identity(T):
    return T


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # arrays or odd objects
        return a is b


def _check_X(X):
    """2-D real float array; sparse, complex and 1-D input get scikit-learn's wording."""
    import scipy.sparse as sp

    if sp.issparse(X):
        raise TypeError("X: sparse input is not supported; pass a dense array, e.g. X.toarray()")
    X = np.asarray(X)
    if np.iscomplexobj(X):
        raise ValueError("X: Complex data not supported; pass real float32 or float64 values")
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"X: object array that is not numeric ({exc}); convert to np.float32 or np.float64") from None
    if X.ndim != 2:
        raise ValueError(
            f"X: expected a 2-D array of shape (n_samples, n_features), got shape {X.shape}. Reshape your data "
            "with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample"
        )
    return check_float_array(X, "X", 2)


def _check_Xy(X, y):
    if y is None:
        raise ValueError("y: SpectralEstimator requires y to be passed, but the target y is None")
    X = _check_X(X)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dtype == object:
        y = y.astype(np.float64)
    y = check_float_array(y, "y", 1)
    check_lengths(X.shape[0], y.shape[0])
    if X.shape[0] == 0:
        raise ValueError(f"X: 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] == 0:
        raise ValueError(f"X: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    return X, y
