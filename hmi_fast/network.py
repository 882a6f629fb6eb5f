"""Two-stage network: spectral first layer, ridge readout (docs/network.md).

``f(x) = b + Σ_j v_j σ(<u_j, x>)``:

1. the first-layer directions ``u_j`` lie in the span of the spectral
   estimate Ŵ (its rows, or ``n_hidden`` random unit combinations of them),
   fitted on the first ``split`` fraction of the samples;
2. the readout ``v, b`` is a ridge regression on the later samples (sample
   splitting), with λ chosen by closed-form GCV from streamed normal
   equations (:mod:`hmi_fast.ridge`). ``readout="hermite"`` replaces σ by the
   normalised Hermite polynomials ``He_1 … He_deg`` of each ``<u_j, x>``:
   the efficient readout for additive targets ``Σ_k a_k g_k(<w_k, x>)``.

:func:`excess_risk` measures ``E (f(x) − f*(x))²`` on rows of the model's
stream far beyond any training row (``TEST_START = 2**40``).
:func:`gd_first_layer` (in :mod:`hmi_fast.gd`) is the gradient-descent view of the spectral stage.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import prange
from sklearn.base import BaseEstimator, RegressorMixin, clone

from . import _config
from ._config import jit
from ._validation import (check_dense, check_finite, check_int, check_lengths, check_number,
                          check_positive_int, first_nonfinite_row, not_fitted)
from .estimator import SpectralEstimator
from .gd import GDTrajectory, gd_first_layer, subspace_overlap  # noqa: F401  (the GD view lives in gd.py)
from .model import HMIModel
from .ridge import NormalEquations, check_ridge
from .sources import open_source

ACTIVATIONS = ("relu", "abs", "tanh", "quadratic", "linear")
READOUTS = ("hermite", "ridge")
HERMITE = -1

#: first row of the test window of :func:`excess_risk` (seed s uses rows TEST_START + s·2**32 ...).
TEST_START = 2**40
_SEED_STRIDE = 2**32


# ---------------------------------------------------------------- kernels
@jit(parallel=True)
def _features_kernel(Z, code, degree, inv_norm, out):
    """out = σ(Z) (code ≥ 0), or the Hermite features He_1..He_degree of each column of Z (code −1)."""
    n, k = Z.shape
    for i in prange(n):
        for j in range(k):
            z = float(Z[i, j])
            if code == -1:
                base = j * degree
                h_prev, h = 1.0, z
                out[i, base] = z
                for m in range(1, degree):
                    h_prev, h = h, z * h - m * h_prev  # He_{m+1} = z He_m − m He_{m−1}
                    out[i, base + m] = h * inv_norm[m + 1]
            elif code == 0:
                out[i, j] = z if z > 0.0 else 0.0
            elif code == 1:
                out[i, j] = abs(z)
            elif code == 2:
                out[i, j] = math.tanh(z)
            elif code == 3:
                out[i, j] = z * z
            else:
                out[i, j] = z


# ---------------------------------------------------------------- estimator
class SpectralTwoLayer(RegressorMixin, BaseEstimator):
    """Two-layer network with a spectral first layer and a ridge readout.

    The defaults learn every built-in link of :class:`~hmi_fast.HMIModel`
    (docs/network.md, "Defaults": measured on he2, he2_he4, abs and relu).

    Parameters
    ----------
    n_hidden : int or None, default None
        ``None``: one hidden unit per estimated direction (the rows of Ŵ).
        An integer: that many random unit combinations of Ŵ's rows (seeded).
    activation : {"relu", "abs", "tanh", "quadratic", "linear"} or callable, default "relu"
        σ for ``readout="ridge"`` (a callable is applied to blocks of
        pre-activations and must return an array of the same shape).
    readout : {"hermite", "ridge"}, default "hermite"
        Ridge on the normalised Hermite features ``He_m(<u_j, x>)/√m!``,
        ``m = 1..hermite_degree``, of each unit, or on ``σ(<u_j, x>)``.
    ridge : "gcv" or float, default "gcv"
        λ by generalised cross-validation over a log grid, or a fixed λ > 0
        (objective ``(1/n) Σ (y − b − fᵀv)² + λ||v||²``; see :mod:`hmi_fast.ridge`).
    hermite_degree : int, default 4
        Highest Hermite degree of ``readout="hermite"``.
    split : float in (0, 1), default 0.8
        Fraction of the samples (the first ``round(split·n)`` rows) that fit the spectral stage;
        the later rows fit the readout.
    spectral : SpectralEstimator, array or None, default None
        The first stage's estimator (cloned; default ``SpectralEstimator()``),
        or a fixed ``(k, d)`` array of directions, which skips the spectral
        stage (baselines: the oracle ``model.W``, random features). With fixed
        directions the first ``split`` rows are still set aside, so that every
        variant fits its readout on the same rows.
    random_state : int or None, default None
        Seeds the random combinations and (when it has none) the eigensolver;
        ``None`` is a fixed default, so fits are reproducible.

    Attributes
    ----------
    spectral_ : SpectralEstimator or None
        The fitted first stage (``None`` for fixed directions).
    hidden_weights_ : ndarray of shape (n_hidden_, n_features_in_)
        Unit-norm first-layer directions ``u_j``.
    coef_ : ndarray of shape (n_readout_features_,)
    intercept_ : float
    ridge_ : float
        The λ used.
    readout_ : RidgeFit
        The readout fit (GCV curve, effective degrees of freedom).
    n_hidden_, n_readout_features_, n_features_in_ : int
    n_samples_spectral_, n_samples_readout_ : int

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.network import SpectralTwoLayer, excess_risk
    >>> model = HMIModel(d=40, m_star=2, gamma=1.0, link="he2", seed=0)
    >>> net = SpectralTwoLayer(random_state=0).fit_stream(model, n=40_000)
    >>> net.n_hidden_, bool(excess_risk(model, net, n_test=20_000) < 0.05)
    (2, True)
    """

    def __init__(self, n_hidden=None, activation="relu", readout="hermite", ridge="gcv", hermite_degree=4,
                 split=0.8, spectral=None, random_state=None):
        self.n_hidden = n_hidden
        self.activation = activation
        self.readout = readout
        self.ridge = ridge
        self.hermite_degree = hermite_degree
        self.split = split
        self.spectral = spectral
        self.random_state = random_state

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])  # transform: the readout's features
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        # T sees only the even (He₂) part of a target: a linear target such as
        # scikit-learn's regression check data has no spike, so nothing is learned.
        tags.regressor_tags.poor_score = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"allow_nan": False, "requires_y": True, "poor_score": True}

    # ------------------------------------------------------------ validation
    def _check_params(self):
        nh = self.n_hidden
        if nh is not None:
            check_int(nh, "n_hidden", 1, low="1 (or None: one unit per direction)")
        if isinstance(self.activation, str):
            if self.activation not in ACTIVATIONS:
                raise ValueError(f"activation: unknown activation {self.activation!r}; "
                                 f"use one of {ACTIVATIONS} or a callable")
        elif not callable(self.activation):
            raise TypeError(f"activation: expected one of {ACTIVATIONS} or a callable, "
                            f"got {type(self.activation).__name__}")
        if not isinstance(self.readout, str):
            raise TypeError(f"readout: expected 'hermite' or 'ridge', got {type(self.readout).__name__}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout: unknown readout {self.readout!r}; use 'hermite' or 'ridge'")
        check_ridge(self.ridge, "ridge")
        check_int(self.hermite_degree, "hermite_degree", 1)
        s = check_number(self.split, "split")
        if not 0.0 < s < 1.0:
            raise ValueError(f"split: must be a number strictly between 0 and 1, got {self.split!r}")
        if self.random_state is not None:
            check_int(self.random_state, "random_state", 0, low="0 (or None)")
        sp = self.spectral
        if sp is None or isinstance(sp, SpectralEstimator):
            return None
        if isinstance(sp, (str, bytes)) or not hasattr(sp, "__len__") and not hasattr(sp, "__array__"):
            raise TypeError(f"spectral: expected a SpectralEstimator, a (k, d) array of directions or None, "
                            f"got {type(sp).__name__}")
        U = check_dense(sp, "spectral", 2).astype(np.float64)
        check_finite(U, "spectral", fix="pass finite directions")
        if U.shape[0] == 0:
            raise ValueError(f"spectral: has no rows (shape {U.shape}); pass at least one direction, shape (k, d)")
        norms = np.linalg.norm(U, axis=1)
        if (norms == 0).any():
            raise ValueError(f"spectral: row {int(np.argmin(norms))} is zero; every direction must be non-zero")
        return U

    def _counts(self, n: int) -> tuple[int, int]:
        n1 = int(math.floor(float(self.split) * n + 0.5))
        if n1 < 1 or n - n1 < 1:
            stage = "spectral stage" if n1 < 1 else "readout"
            raise ValueError(f"split: leaves no rows for the {stage} (n_samples={n}, split={self.split} gives {n1} "
                             f"spectral and {n - n1} readout rows); pass more rows or a split closer to 1/2")
        return n1, n - n1

    def _new_spectral(self):
        est = SpectralEstimator() if self.spectral is None else clone(self.spectral)
        if est.get_params().get("random_state") is None and self.random_state is not None:
            est.set_params(random_state=int(self.random_state))
        return est

    # ------------------------------------------------------------------- fit
    def fit(self, X, y) -> "SpectralTwoLayer":
        """Fit on in-memory data: the first ``round(split·n)`` rows for Ŵ, the rest for the readout.

        X must be finite; a NaN or inf is reported with its row, and a failed
        fit leaves the network as it was.
        """
        fixed = self._check_params()
        X, y = _check_Xy(X, y)
        n, d = X.shape
        bs = _config.block_rows(d, X.dtype)
        for lo in range(0, n, bs):
            check_finite(X[lo:lo + bs], "X", lo, _FIX)
        n1, n2 = self._counts(n)
        if fixed is not None:
            spectral, directions = None, self._fixed(fixed, d)
        else:
            spectral = self._new_spectral().fit(X[:n1], y[:n1])
            directions = spectral.components_
        blocks = ((X[lo:lo + bs], y[lo:lo + bs], lo) for lo in range(n1, n, bs))
        return self._fit_readout(spectral, directions, d, blocks, n1)

    def fit_stream(self, source, y=None, n=None) -> "SpectralTwoLayer":
        """Fit from a stream: an :class:`HMIModel` (with ``n``) or any source :func:`hmi_fast.spectral_matrix` accepts.

        The first ``round(split·n)`` rows fit the spectral stage and the later rows
        the readout, in one pass with memory bounded by the block.
        """
        fixed = self._check_params()
        if isinstance(source, HMIModel):
            if y is not None:
                raise ValueError("y: must be None when the source is an HMIModel (the model makes its own labels)")
            if n is None:
                raise ValueError("n: required when the source is an HMIModel (how many rows to stream)")
            n = check_positive_int(n, "n")
            n1, n2 = self._counts(n)
            d = source.d
            if fixed is not None:
                spectral, directions = None, self._fixed(fixed, d)
            else:
                spectral = self._new_spectral().fit_stream(source, n=n1)
                directions = spectral.components_
            bs = _config.block_rows(d)
            blocks = ((Xb, yb, n1 + i * bs) for i, (Xb, yb) in
                      enumerate(source.stream(n2, block_size=bs, start=n1, reuse_buffer=True)))
            return self._fit_readout(spectral, directions, d, blocks, n1)

        bs = _config.block_rows(getattr(source, "d", 1000))
        src = open_source(source, y, n=n, block_size=bs)
        blocks, d, total = src.blocks, src.d, src.n
        if total is None:
            raise ValueError("n: required for an iterable source of unknown length (the split needs the row count)")
        n1, n2 = self._counts(total)
        head = _Head(blocks, n1)
        if fixed is not None:
            spectral = None
            for Xb, yb in head:  # rows set aside unused are still data: refuse NaN/inf there too
                check_finite(check_dense(Xb, "X", 2), "X", head.rows - len(Xb), _FIX)
                check_finite(check_dense(yb, "y", 1), "y", head.rows - len(Xb), _FIX)
        else:
            spectral = self._new_spectral().fit_stream(head)
        if head.rows < n1:
            raise ValueError(f"n: the source ended after {head.rows} rows, fewer than n={total}")
        if d is None:
            d = spectral.n_features_in_ if spectral is not None else fixed.shape[1]
        directions = self._fixed(fixed, d) if fixed is not None else spectral.components_
        return self._fit_readout(spectral, directions, d, head.rest(), n1)

    def _fixed(self, U, d):
        if U.shape[1] != d:
            raise ValueError(f"spectral: the fixed directions have {U.shape[1]} columns, but X has {d} features")
        return U

    def _fit_readout(self, spectral, directions, d, blocks, n1) -> "SpectralTwoLayer":
        """Readout on ``blocks`` of ``(X, y, first row)``; every attribute is set at the end (atomic)."""
        W = np.asarray(directions, dtype=np.float64).reshape(-1, d)
        if W.shape[0] == 0:
            U = W.copy()
        elif self.n_hidden is None:
            U = W / np.linalg.norm(W, axis=1, keepdims=True)
        else:
            seed = 0 if self.random_state is None else int(self.random_state)
            U = np.random.default_rng([0x2F, seed]).standard_normal((int(self.n_hidden), W.shape[0])) @ W
            U /= np.linalg.norm(U, axis=1, keepdims=True)
        U = np.ascontiguousarray(U)
        p = U.shape[0] * (int(self.hermite_degree) if self.readout == "hermite" else 1)
        neq = NormalEquations(p)
        for Xb, yb, row0 in blocks:
            Xb = check_dense(Xb, "X", 2)
            if Xb.shape[1] != d:
                raise ValueError(f"X: has {Xb.shape[1]} features, but the first layer has {d}")
            yb = check_dense(yb, "y", 1)
            check_lengths(Xb.shape[0], yb.shape[0])
            check_finite(Xb, "X", row0, _FIX)
            check_finite(yb, "y", row0, _FIX)
            neq.update(self._features(Xb, U, row0), yb)
        if neq.n == 0:
            raise ValueError("split: leaves no rows for the readout; pass more rows or a smaller split")
        fit = neq.solve(self.ridge)
        if U.shape[0] == 0:
            warnings.warn("SpectralTwoLayer: the spectral stage selected no direction (k̂ = 0), so the network "
                          "predicts a constant; pass more rows, or n_components=<int> in spectral=SpectralEstimator(...)",
                          UserWarning, stacklevel=3)
        self.spectral_ = spectral
        self.hidden_weights_ = U
        self.n_hidden_ = U.shape[0]
        self.n_features_in_ = d
        self.n_readout_features_ = p
        self.readout_ = fit
        self.coef_ = fit.coef
        self.intercept_ = fit.intercept
        self.ridge_ = fit.lam
        self.n_samples_spectral_ = n1
        self.n_samples_readout_ = neq.n
        return self

    # ------------------------------------------------------------- predict
    def _features(self, X, U=None, row0=0) -> np.ndarray:
        """Readout features of finite rows ``X``; a row whose features overflow is reported."""
        U = self.hidden_weights_ if U is None else U
        Z = X @ U.T.astype(X.dtype, copy=False)
        if self.readout == "hermite":
            deg = int(self.hermite_degree)
            out = np.empty((X.shape[0], U.shape[0] * deg))
            inv = 1.0 / np.sqrt([math.factorial(m) for m in range(deg + 1)])
            _features_kernel(np.ascontiguousarray(Z), HERMITE, deg, inv, out)
        elif callable(self.activation):
            out = np.asarray(self.activation(Z), dtype=np.float64)
            if out.shape != Z.shape:
                raise ValueError(f"activation: returned shape {out.shape} for input of shape {Z.shape}; "
                                 "it must act elementwise")
            bad = first_nonfinite_row(out)
            if bad >= 0 and np.isfinite(Z[bad]).all():
                raise ValueError(f"activation: returned NaN or inf for the finite pre-activations of row {row0 + bad}")
        else:
            out = np.empty(Z.shape)
            _features_kernel(np.ascontiguousarray(Z), ACTIVATIONS.index(self.activation), 1, np.ones(2), out)
        bad = first_nonfinite_row(out)
        if bad >= 0:
            raise ValueError(f"X: row {row0 + bad} is too large: its features overflow "
                             f"(max |x| = {float(np.max(np.abs(X[bad]))):.3g}); rescale X")
        return out

    def _check_X(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise _not_fitted()
        X = check_dense(X, "X", 2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but SpectralTwoLayer is expecting "
                             f"{self.n_features_in_} features as input; pass rows of {self.n_features_in_} columns")
        return X

    def _blocks(self, X):
        bs = _config.block_rows(X.shape[1], X.dtype)
        for lo in range(0, X.shape[0], bs):
            Xb = X[lo:lo + bs]
            check_finite(Xb, "X", lo, _FIX)
            yield lo, self._features(Xb, row0=lo)

    def transform(self, X) -> np.ndarray:
        """The readout's features of ``X`` (n × n_readout_features_, float64)."""
        X = self._check_X(X)
        out = np.empty((X.shape[0], self.n_readout_features_))
        for lo, F in self._blocks(X):
            out[lo:lo + len(F)] = F
        return out

    def fit_transform(self, X, y) -> np.ndarray:
        """``fit(X, y)`` then ``transform(X)``."""
        return self.fit(X, y).transform(X)

    def predict(self, X) -> np.ndarray:
        """``f(x) = b + Σ_j v_j φ_j(x)`` for the rows of ``X`` (float64, computed in blocks).

        A row holding NaN or inf is an error that names it (never a silent
        prediction of the intercept).
        """
        X = self._check_X(X)
        out = np.empty(X.shape[0])
        for lo, F in self._blocks(X):
            out[lo:lo + len(F)] = F @ self.coef_ + self.intercept_
        return out

    def score(self, X, y) -> float:
        """Coefficient of determination R² of ``predict(X)`` against ``y`` (NaN when y is constant)."""
        X = self._check_X(X)
        y = _check_y(y)
        check_lengths(X.shape[0], y.shape[0])
        check_finite(y, "y", 0, _FIX)
        pred = self.predict(X)
        ss = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else float("nan")


_FIX = "remove or impute NaN/inf rows first"


def _check_y(y) -> np.ndarray:
    if y is None:
        raise ValueError("y: SpectralTwoLayer requires y to be passed, but the target y is None")
    y = np.asarray(y) if not isinstance(y, np.ma.MaskedArray) and not hasattr(y, "tocsr") else y
    if getattr(y, "ndim", 1) == 2 and y.shape[1] == 1:
        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected; "
                      "pass y.ravel() (shape (n_samples,))", DataConversionWarning, stacklevel=3)
        y = y[:, 0]
    return check_dense(y, "y", 1)


def _check_Xy(X, y):
    X = check_dense(X, "X", 2)
    y = _check_y(y)
    check_lengths(X.shape[0], y.shape[0])
    if X.shape[0] == 0:
        raise ValueError(f"X: 0 sample(s) (shape={X.shape}) while a minimum of 2 is required (one per stage).")
    if X.shape[1] == 0:
        raise ValueError(f"X: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    check_finite(y, "y", 0, _FIX)
    return X, y


class _Head:
    """The first ``n1`` rows of a block iterator, then the rest (one pass; a straddling block is cut)."""

    def __init__(self, blocks, n1):
        self.blocks, self.n1, self.rows, self.tail = blocks, n1, 0, None

    def __iter__(self):
        for Xb, yb, row0 in self.blocks:
            take = min(len(Xb), self.n1 - self.rows)
            if take < len(Xb):
                self.tail = (Xb[take:], yb[take:], row0 + take)
            if take > 0:
                self.rows += take
                yield Xb[:take], yb[:take]
            if self.rows >= self.n1:
                return

    def rest(self):
        if self.tail is not None:
            yield self.tail
        yield from self.blocks


def _not_fitted():
    return not_fitted("SpectralTwoLayer", "fit or fit_stream")


def random_directions(p: int, d: int, seed=None) -> np.ndarray:
    """``p`` random unit vectors in R^d (rows), seeded: the random-features first layer.

    Examples
    --------
    >>> from hmi_fast.network import random_directions
    >>> random_directions(3, 5, seed=0).shape
    (3, 5)
    """
    p = check_positive_int(p, "p")
    d = check_positive_int(d, "d")
    seed = 0 if seed is None else check_int(seed, "seed", 0, low="0 (or None)")
    U = np.random.default_rng([0x5EED, seed]).standard_normal((p, d))
    return U / np.linalg.norm(U, axis=1, keepdims=True)


# ---------------------------------------------------------------- excess risk
def excess_risk(model: HMIModel, predictor, n_test: int = 100_000, seed: int = 0, *, relative: bool = False,
                block_size: int | None = None):
    """Excess risk ``E (f(x) − f*(x))²`` on fresh rows of the model's stream.

    The test rows are ``TEST_START + seed·2**32 + [0, n_test)`` with
    ``TEST_START = 2**40``: no training run reads that far, and different
    seeds give disjoint test sets. ``f*`` is ``model.target`` (noise-free).

    Parameters
    ----------
    model : HMIModel
    predictor : object with ``predict(X)``, a callable, or a list of them
        A list is evaluated on the same test rows (one pass); an array of
        risks is returned.
    n_test : int
        Number of test rows (streamed in blocks).
    seed : int
        Selects the test window.
    relative : bool
        Divide by the empirical variance of f* on the same rows.

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.network import excess_risk
    >>> model = HMIModel(d=20, m_star=2, gamma=1.0, seed=0)
    >>> round(float(excess_risk(model, model.target, n_test=1000)), 12)
    0.0
    """
    if not isinstance(model, HMIModel):
        raise TypeError(f"model: expected an HMIModel, got {type(model).__name__}")
    n_test = check_int(n_test, "n_test", 1, 2**32, high="2**32")
    seed = check_int(seed, "seed", 0, _MAX_TEST_SEED)
    if not isinstance(relative, (bool, np.bool_)):
        raise TypeError(f"relative: must be True or False, got {relative!r}")
    single = not isinstance(predictor, (list, tuple))
    preds = [predictor] if single else list(predictor)
    if not preds:
        raise ValueError("predictor: got an empty list; pass a predictor or a list of them")
    funcs = []
    for p in preds:
        f = getattr(p, "predict", p)
        if not callable(f):
            raise TypeError(f"predictor: expected an object with predict(X) or a callable, got {type(p).__name__}")
        funcs.append(f)
    err = np.zeros(len(funcs))
    s1 = s2 = 0.0
    for Xb, _ in model.stream(n_test, block_size=block_size, start=TEST_START + seed * _SEED_STRIDE):
        fstar = model.target(Xb)
        s1 += float(fstar.sum())
        s2 += float(fstar @ fstar)
        Xb.flags.writeable = False  # every predictor sees the same rows
        for j, f in enumerate(funcs):
            pred = np.asarray(f(Xb), dtype=np.float64)
            if pred.shape not in ((len(Xb),), (len(Xb), 1)):
                raise ValueError(f"predictor: {_which(j, single)}returned shape {pred.shape} for {len(Xb)} rows; "
                                 "it must return one prediction per row")
            r = pred.reshape(-1) - fstar
            if not np.isfinite(r).all():
                raise ValueError(f"predictor: {_which(j, single)}returned NaN or inf for a test row; "
                                 "excess risk needs finite predictions")
            err[j] += float(r @ r)
    err /= n_test
    if relative:
        var = s2 / n_test - (s1 / n_test) ** 2
        err /= var if var > 0 else np.nan
    return float(err[0]) if single else err


def _which(j: int, single: bool) -> str:
    return "" if single else f"number {j} "


#: the largest ``seed`` of :func:`excess_risk` whose test window stays below the 2**63 rows of a stream.
_MAX_TEST_SEED = (2**63 - TEST_START - 2**32) // _SEED_STRIDE
