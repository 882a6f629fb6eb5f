"""The spectral estimator with scikit-learn's conventions (docs/selection.md, docs/peers.md)."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ._validation import check_bool, check_center, check_dense, check_dtype, check_estimator_Xy, not_fitted
from .accumulator import SpectralAccumulator
from .eigen import topk_eigh
from .engine import accumulate
from .selection import select_components

RULES = ("gap", "edge")
#: eigenvalues of the covariance below this fraction of the largest make whitening refuse (rank deficient X).
WHITEN_RCOND = 1e-10


class SpectralEstimator(TransformerMixin, BaseEstimator):
    """Estimate the hidden subspace from the top (and bottom) eigenvectors of T.

    ``fit`` builds ``T = (1/n) Σ τ(y_i) x_i x_iᵀ`` in streaming blocks, finds
    ``max_components`` eigenpairs at each wanted end with the block Lanczos
    solver, and keeps the informative ones with the selection rule. With
    ``preprocess="identity"`` and ``whiten=True`` this is principal Hessian
    directions (Li 1992) as statsmodels computes it; ``resid=True`` gives
    residual pHd.

    Parameters
    ----------
    preprocess : str, tuple or callable, default "saturating"
        The label transform τ.
    n_components : "gap", "edge" or int, default "gap"
        Selection rule (docs/selection.md) or a fixed number of components (the
        eigenvalues farthest from the bulk centre).
    max_components : int or None, default 50
        Eigenpairs computed per end of the spectrum (capped at d/2 for "BE");
        ``None``: the full spectrum (dense solver).
    which : {"BE", "LA", "SA"}, default "BE"
        Spectrum ends to search: both (spikes of T may be negative), largest, smallest.
    dtype : np.float32, np.float64 or None
        Precision of the block products (default: the data's).
    block_size : int or None
        Rows per streaming block.
    center : bool or float, default False
        Center the weights τ(y) (docs/theory.md): ``True`` by their exact mean.
    whiten : bool, default False
        Work in ``Σ̂^{-1/2}(x − x̄)`` (x centered and whitened by its sample
        covariance, accumulated in the same pass at the cost of one more
        rank-k update per block); the components are then reported in x-space
        (see ``components_``). For generated isotropic data it is not needed;
        for real data it makes the result invariant to linear maps of x.
    resid : bool, default False
        Replace y by its least-squares residual on ``[1, x]`` before τ
        (residual pHd). Two passes over the data: refused for one-shot iterators.
    random_state : int or None
        Seed of the eigensolver's start block.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features)
        Orthonormal rows spanning the estimated subspace of x. With
        ``whiten=True``: row k is the Gram–Schmidt orthonormalisation, in the
        order of the eigenvalues, of the x-space directions ``Σ̂^{-1/2} v_k``,
        so the first k rows span the first k directions.
    directions_ : ndarray of shape (n_components_, n_features)
        The x-space directions themselves, each of unit norm (equal to
        ``components_`` without whitening); ``directions_ @ (x − x̄)`` are the
        sufficient predictors up to scale.
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
    mean_ : ndarray of shape (n_features,) or None
        x̄ when ``whiten=True``.

    Examples
    --------
    >>> from hmi_fast import HMIModel, SpectralEstimator
    >>> model = HMIModel(d=60, m_star=2, gamma=1.0, link="he2", seed=0)
    >>> est = SpectralEstimator(max_components=5).fit_stream(model, n=60_000)
    >>> est.components_.shape[1]
    60
    """

    def __init__(self, preprocess="saturating", n_components="gap", max_components=50, which="BE",
                 dtype=None, block_size=None, center=False, whiten=False, resid=False, random_state=None):
        self.preprocess = preprocess
        self.n_components = n_components
        self.max_components = max_components
        self.which = which
        self.dtype = dtype
        self.block_size = block_size
        self.center = center
        self.whiten = whiten
        self.resid = resid
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
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
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, numbers.Integral) or mc < 1):
            raise ValueError(f"max_components: must be an integer >= 1 or None (the full spectrum), got {mc!r}")
        if self.which not in ("BE", "LA", "SA"):
            raise ValueError(f"which: must be 'BE', 'LA' or 'SA', got {self.which!r}")
        if self.dtype is not None:
            check_dtype(self.dtype, "dtype")
        check_center(self.center)
        check_bool(self.whiten, "whiten")
        check_bool(self.resid, "resid")

    def _options(self) -> dict:
        """The parameters an accumulator is built from (fixed across partial_fit calls)."""
        return {"preprocess": self.preprocess, "center": self.center, "dtype": self.dtype,
                "block_size": self.block_size, "whiten": self.whiten}

    def _new_accumulator(self, d, X_dtype):
        dt = self.dtype if self.dtype is not None else (np.float32 if X_dtype == np.float32 else np.float64)
        return SpectralAccumulator(d, preprocess=self.preprocess, dtype=dt, center=self.center,
                                   block_size=self.block_size, moments=bool(self.whiten))

    # ------------------------------------------------------------------- fit
    def fit(self, X, y) -> "SpectralEstimator":
        """Fit on in-memory data (X of shape (n, d), y of shape (n,))."""
        self._check_params()
        X, y = _check_Xy(X, y)
        if self.resid:
            y = _residuals(X, y)
        acc = accumulate(X, y, preprocess=self.preprocess, center=self.center, moments=bool(self.whiten),
                         block_size=self.block_size, dtype=self.dtype)
        return self._finish(acc, partial=False)

    def partial_fit(self, X, y) -> "SpectralEstimator":
        """Add one block of rows and refresh the estimate (T is kept, so blocks may come one at a time).

        The parameters that define T (preprocess, center, dtype, block_size,
        whiten) must not change between calls: call ``fit`` to start again.
        """
        self._check_params()
        if self.resid:
            raise ValueError("resid: residual pHd needs two passes over the data; use fit or fit_stream, not partial_fit")
        X, y = _check_Xy(X, y)
        acc = getattr(self, "_acc", None)
        if acc is None:
            acc = self._new_accumulator(X.shape[1], X.dtype)
        else:
            changed = [k for k, v in self._options().items() if not _same(v, self._fitted_options[k])]
            if changed:
                k = changed[0]
                raise ValueError(
                    f"partial_fit: {k} changed since the data seen so far was added (was {self._fitted_options[k]!r}, "
                    f"now {getattr(self, k)!r}); call fit to start again with the new value"
                )
            if X.shape[1] != acc.d:
                raise ValueError(
                    f"X has {X.shape[1]} features, but SpectralEstimator is expecting {acc.d} features as input"
                )
            acc = acc.copy()  # a failed refresh below leaves the estimator as it was
        acc.update(X, y)
        return self._finish(acc, partial=True)

    def fit_stream(self, source, y=None, n=None) -> "SpectralEstimator":
        """Fit from any source the engine accepts: a model (with n), a .npy path, a memmap, an iterable."""
        self._check_params()
        if self.resid:
            source, y = _residual_source(source, y, n, self.block_size)
        acc = accumulate(source, y, n=n, preprocess=self.preprocess, center=self.center, moments=bool(self.whiten),
                         block_size=self.block_size, dtype=self.dtype)
        return self._finish(acc, partial=False)

    def fit_accumulator(self, accumulator: SpectralAccumulator) -> "SpectralEstimator":
        """Fit from the sums of an accumulator built elsewhere (another process, a cluster).

        The accumulator must have been built with this estimator's
        ``preprocess`` and ``center`` (and ``moments=True`` when
        ``whiten=True``); it is copied, so later updates to it do not
        change the estimator.
        """
        from .preprocess import resolve_preprocess

        self._check_params()
        if self.resid:
            raise ValueError("resid: residual pHd needs the raw data (two passes); use fit or fit_stream")
        if not isinstance(accumulator, SpectralAccumulator):
            raise TypeError(f"accumulator: expected a SpectralAccumulator, got {type(accumulator).__name__}")
        if accumulator.preprocess != resolve_preprocess(self.preprocess):
            raise ValueError(
                f"accumulator: built with preprocess {accumulator.preprocess.name!r}, but this estimator has "
                f"{self.preprocess!r}; build it with the estimator's preprocess"
            )
        if not _same(check_center(self.center), accumulator.center):
            raise ValueError(f"accumulator: built with center={accumulator.center!r}, but this estimator has {self.center!r}")
        if self.whiten and not accumulator.moments_kept:
            raise ValueError("accumulator: whiten=True needs an accumulator built with moments=True")
        if accumulator.n == 0:
            raise ValueError("accumulator: holds no rows yet; update it with at least one row first")
        return self._finish(accumulator.copy(), partial=False)

    def _finish(self, acc: SpectralAccumulator, partial: bool) -> "SpectralEstimator":
        d = acc.d
        T = acc.finalize()
        mean = W_inv = None
        if self.whiten:
            T, mean, W_inv = _whitened(acc, T)
        which = self.which if d >= 2 else "LA"
        if self.max_components is None:
            values, vectors = np.linalg.eigh(T)
            res = None
        else:
            per_end = min(int(self.max_components), d if which != "BE" else d // 2)
            k = 2 * per_end if which == "BE" else per_end
            res = topk_eigh(T, k, which=which, seed=self.random_state)
            values, vectors = res.values, res.vectors
        rule = self.n_components if isinstance(self.n_components, str) else "gap"
        sel = select_components(values, d=d, n=acc.n, rule=rule, which=which, weights=acc.weight_sketch)
        if isinstance(self.n_components, str):
            index = np.asarray(sel.index, dtype=int)
        else:
            far = np.argsort(-np.abs(values - acc.weight_mean), kind="stable")[: int(self.n_components)]
            index = np.sort(far)
        directions = np.ascontiguousarray(vectors[:, index].T)
        components = directions
        if W_inv is not None and len(index):
            raw = directions @ W_inv  # rows Σ̂^{-1/2} v_k (W_inv symmetric)
            directions = raw / np.linalg.norm(raw, axis=1, keepdims=True)
            q, r = np.linalg.qr(directions.T)
            components = np.ascontiguousarray((q * np.sign(np.diag(r))).T)
        # everything computed: now change the estimator
        self._acc = acc
        self._fitted_options = self._options()
        self.components_ = components
        self.directions_ = directions
        self.eigenvalues_ = values[index]
        self.n_components_ = int(len(index))
        self.n_samples_seen_ = acc.n
        self.n_features_in_ = d
        self.spectrum_ = values
        self.selection_ = sel
        self.eig_result_ = res
        self.weight_mean_ = acc.weight_mean
        self.weight_sq_mean_ = acc.weight_sq_mean
        self.mean_ = mean
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

    def projector(self) -> np.ndarray:
        """``P̂ = Ŵᵀ Ŵ`` (d × d) for the orthonormal rows Ŵ = ``components_``."""
        if not hasattr(self, "components_"):
            raise _not_fitted()
        return self.components_.T @ self.components_


# ------------------------------------------------------------------ helpers
def _not_fitted():
    return not_fitted("SpectralEstimator", "fit, partial_fit or fit_stream")


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # arrays or odd objects
        return a is b


def _whitened(acc, T):
    """T of Σ̂^{-1/2}(x − x̄): (T_c, x̄, Σ̂^{-1/2}) with T_c the x-centered T whitened on both sides."""
    m = acc.moments()
    xbar, s, wbar = m["mean"], m["weighted_sum"], m["weight_mean"]
    cov = m["gram"] - np.outer(xbar, xbar)
    ev, U = np.linalg.eigh(0.5 * (cov + cov.T))
    top = max(float(ev[-1]), 0.0)
    if top == 0.0 or ev[0] <= WHITEN_RCOND * top:
        rank = int(np.sum(ev > WHITEN_RCOND * top))
        raise ValueError(
            f"X: its sample covariance has rank {rank} < d = {acc.d}, so it cannot be whitened; drop constant or "
            "collinear columns (or reduce them, e.g. with PCA), or use whiten=False"
        )
    W_inv = (U / np.sqrt(ev)) @ U.T  # Σ̂^{-1/2}
    Tc = T - np.outer(s, xbar) - np.outer(xbar, s) + wbar * np.outer(xbar, xbar)
    Tw = W_inv @ Tc @ W_inv
    return 0.5 * (Tw + Tw.T), xbar, W_inv


def _ols_coefficients(acc) -> tuple[float, np.ndarray]:
    """Intercept and slopes of y on [1, x] from an identity-τ accumulator with moments."""
    m = acc.moments()
    xbar = m["mean"]
    cov = m["gram"] - np.outer(xbar, xbar)
    cross = m["weighted_sum"] - m["weight_mean"] * xbar  # Σ (y − ȳ) x / n
    beta, *_ = np.linalg.lstsq(cov, cross, rcond=None)
    return float(m["weight_mean"] - xbar @ beta), beta


def _residuals(X, y):
    acc = SpectralAccumulator(X.shape[1], preprocess="identity", moments=True).update(X, y)
    b0, beta = _ols_coefficients(acc)
    return y - b0 - X @ beta


def _residual_source(source, y, n, block_size):
    """First pass: least squares of y on [1, x]; returns a re-iterable source of (X_block, residual_block)."""
    from .sources import open_source

    if hasattr(source, "__next__") or (hasattr(source, "__iter__") and iter(source) is source):
        raise ValueError(
            "source: resid=True needs two passes over the data, but a one-shot iterator was given; pass an array, "
            "a .npy path, a model, or a re-iterable such as a list of (X_block, y_block) pairs"
        )
    first = accumulate(source, y, n=n, preprocess="identity", moments=True, block_size=block_size)
    b0, beta = _ols_coefficients(first)

    class _Residuals:
        d = first.d

        def __iter__(self):
            src = open_source(source, y, n=n, block_size=block_size, latent=False)
            for Xb, yb, _ in src.blocks:
                Xb = np.asarray(Xb)
                yield Xb, np.asarray(yb, dtype=np.float64) - b0 - Xb @ beta.astype(Xb.dtype, copy=False)

    return _Residuals(), None


def _check_X(X):
    """2-D real float array; sparse, masked, complex and 1-D input get scikit-learn's wording."""
    return check_dense(X, "X", 2)


def _check_Xy(X, y):
    return check_estimator_Xy(X, y, "SpectralEstimator")
