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
:func:`gd_first_layer` is the gradient-descent view of the spectral stage.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from numba import prange

from . import _config
from ._config import jit
from ._validation import check_float_array, check_positive_int, not_fitted
from .model import HMIModel
from .ridge import NormalEquations, check_ridge

ACTIVATIONS = ("relu", "abs", "tanh", "quadratic", "linear")
READOUTS = ("ridge", "hermite")
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
class SpectralTwoLayer:
    """Two-layer network with a spectral first layer and a ridge readout.

    Parameters
    ----------
    n_hidden : int or None
        ``None``: one hidden unit per estimated direction (the rows of Ŵ).
        An integer: that many random unit combinations of Ŵ's rows (seeded).
    activation : {"relu", "abs", "tanh", "quadratic", "linear"} or callable
        σ for ``readout="ridge"`` (a callable is applied to blocks of
        pre-activations and must return an array of the same shape).
    readout : {"ridge", "hermite"}
        Ridge on ``σ(<u_j, x>)``, or on the normalised Hermite features
        ``He_m(<u_j, x>)/√m!``, ``m = 1..hermite_degree``, of each unit.
    ridge : "gcv" or float
        λ by generalised cross-validation over a log grid, or a fixed λ > 0
        (objective ``(1/n) Σ (y − b − fᵀv)² + λ||v||²``; see :mod:`hmi_fast.ridge`).
    hermite_degree : int
        Highest Hermite degree of ``readout="hermite"``.
    split : float in (0, 1)
        Fraction of the samples (the first ``round(split·n)`` rows) that fit the spectral stage;
        the later rows fit the readout.
    spectral : SpectralEstimator, array or None
        The first stage's estimator (its parameters are copied; default
        ``SpectralEstimator()``), or a fixed ``(k, d)`` array of directions,
        which skips the spectral stage (baselines: the oracle ``model.W``,
        random features). With fixed directions the first ``split`` rows are
        still set aside, so that every variant fits its readout on the same rows.
    seed : int or None
        Seeds the random combinations and (when it has none) the eigensolver.

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
    >>> net = SpectralTwoLayer(readout="hermite", hermite_degree=2, seed=0).fit_stream(model, n=40_000)
    >>> net.n_hidden_, bool(excess_risk(model, net, n_test=20_000) < 0.05)
    (2, True)
    """

    def __init__(self, n_hidden=None, activation="relu", readout="ridge", ridge="gcv", hermite_degree=4,
                 split=0.5, spectral=None, seed=None):
        self.n_hidden = n_hidden
        self.activation = activation
        self.readout = readout
        self.ridge = ridge
        self.hermite_degree = hermite_degree
        self.split = split
        self.spectral = spectral
        self.seed = seed

    # ------------------------------------------------------- sklearn plumbing
    _PARAMS = ("n_hidden", "activation", "readout", "ridge", "hermite_degree", "split", "spectral", "seed")

    def get_params(self, deep=True) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> "SpectralTwoLayer":
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"set_params: invalid parameter {k!r} for SpectralTwoLayer; "
                                 f"valid: {sorted(self._PARAMS)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = SpectralTwoLayer().get_params()
        parts = []
        for k, v in self.get_params().items():
            if isinstance(v, np.ndarray):
                parts.append(f"{k}=<array of shape {v.shape}>")
            elif not (v is defaults[k] or type(v) is type(defaults[k]) and v == defaults[k]):
                parts.append(f"{k}={v!r}")
        return "SpectralTwoLayer(" + ", ".join(parts) + ")"

    # ------------------------------------------------------------ validation
    def _check_params(self):
        nh = self.n_hidden
        if nh is not None and (isinstance(nh, bool) or not isinstance(nh, numbers.Integral) or nh < 1):
            raise ValueError(f"n_hidden: must be None or an integer >= 1, got {nh!r}")
        if not callable(self.activation) and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: unknown activation {self.activation!r}; "
                             f"use one of {ACTIVATIONS} or a callable")
        if self.readout not in READOUTS:
            raise ValueError(f"readout: unknown readout {self.readout!r}; use 'ridge' or 'hermite'")
        check_ridge(self.ridge, "ridge")
        hd = self.hermite_degree
        if isinstance(hd, bool) or not isinstance(hd, numbers.Integral) or hd < 1:
            raise ValueError(f"hermite_degree: must be an integer >= 1, got {hd!r}")
        s = self.split
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0.0 < float(s) < 1.0:
            raise ValueError(f"split: must be a number strictly between 0 and 1, got {s!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                                      or self.seed < 0):
            raise ValueError(f"seed: must be None or a non-negative integer, got {self.seed!r}")
        sp = self.spectral
        if sp is not None and not isinstance(sp, np.ndarray) and not _is_spectral_estimator(sp):
            raise TypeError(f"spectral: expected a SpectralEstimator, a (k, d) array of directions or None, "
                            f"got {type(sp).__name__}")
        if isinstance(sp, np.ndarray) and (sp.ndim != 2 or not np.all(np.isfinite(sp))):
            raise ValueError(f"spectral: a fixed first layer must be a finite 2-D (k, d) array, got shape {sp.shape}")

    def _counts(self, n: int) -> tuple[int, int]:
        n1 = int(math.floor(float(self.split) * n + 0.5))
        if n1 < 1 or n - n1 < 1:
            stage = "spectral stage" if n1 < 1 else "readout"
            raise ValueError(f"split: leaves no rows for the {stage} (n={n}, split={self.split} gives {n1} spectral "
                             f"and {n - n1} readout rows); pass more rows or a split closer to 1/2")
        return n1, n - n1

    def _new_spectral(self):
        from .estimator import SpectralEstimator

        params = (SpectralEstimator() if self.spectral is None else self.spectral).get_params()
        if params.get("random_state") is None and self.seed is not None:
            params["random_state"] = int(self.seed)
        return SpectralEstimator(**params)

    # ------------------------------------------------------------------- fit
    def fit(self, X, y) -> "SpectralTwoLayer":
        """Fit on in-memory data: the first ``round(split·n)`` rows for Ŵ, the rest for the readout."""
        self._check_params()
        X = check_float_array(X, "X", 2)
        y = check_float_array(y, "y", 1)
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X and y: lengths differ ({X.shape[0]} rows in X, {y.shape[0]} labels in y)")
        n1, n2 = self._counts(X.shape[0])
        d = X.shape[1]
        if isinstance(self.spectral, np.ndarray):
            self.spectral_ = None
            directions = self._fixed(d)
        else:
            self.spectral_ = self._new_spectral().fit(X[:n1], y[:n1])
            directions = self.spectral_.components_
        bs = _config.block_rows(d)
        blocks = ((X[lo:lo + bs], y[lo:lo + bs]) for lo in range(n1, n1 + n2, bs))
        return self._fit_readout(directions, d, blocks, n1)

    def fit_stream(self, source, y=None, n=None) -> "SpectralTwoLayer":
        """Fit from a stream: an :class:`HMIModel` (with ``n``) or any source :func:`hmi_fast.spectral_matrix` accepts.

        The first ``round(split·n)`` rows fit the spectral stage and the later rows
        the readout, in one pass with memory bounded by the block.
        """
        self._check_params()
        bs = _config.block_rows(getattr(source, "d", 1000))
        fixed = isinstance(self.spectral, np.ndarray)
        if isinstance(source, HMIModel):
            if y is not None:
                raise ValueError("y: must be None when the source is an HMIModel (the model makes its own labels)")
            if n is None:
                raise ValueError("n: required when the source is an HMIModel (how many rows to stream)")
            n = check_positive_int(n, "n")
            n1, n2 = self._counts(n)
            d = source.d
            if fixed:
                self.spectral_ = None
                directions = self._fixed(d)
            else:
                self.spectral_ = self._new_spectral().fit_stream(source, n=n1)
                directions = self.spectral_.components_
            return self._fit_readout(directions, d, source.stream(n2, block_size=bs, start=n1), n1)

        from .sources import open_source

        src = open_source(source, y, n=n, block_size=bs)
        blocks, d, total = src.blocks, src.d, src.n
        if total is None:
            raise ValueError("n: required for an iterable source of unknown length (the split needs the row count)")
        n1, n2 = self._counts(total)
        head = _Head(blocks, n1)
        if fixed:
            self.spectral_ = None
            for _ in head:
                pass
        else:
            self.spectral_ = self._new_spectral().fit_stream(head)
        d = d if d is not None else self.spectral_.n_features_in_ if self.spectral_ is not None else None
        if head.rows < n1:
            raise ValueError(f"n: the source ended after {head.rows} rows, fewer than n={total}")
        return self._fit_readout(directions=self._fixed(d) if fixed else self.spectral_.components_, d=d,
                                 blocks=head.rest(), n1=n1)

    def _fixed(self, d):
        U = np.asarray(self.spectral, dtype=np.float64)
        if d is not None and U.shape[1] != d:
            raise ValueError(f"spectral: the fixed directions have {U.shape[1]} columns, but X has {d} features")
        return U

    def _fit_readout(self, directions, d, blocks, n1) -> "SpectralTwoLayer":
        W = np.asarray(directions, dtype=np.float64).reshape(-1, d if d is not None else np.shape(directions)[-1])
        d = W.shape[1]
        if self.n_hidden is None or W.shape[0] == 0:
            U = W.copy()
        else:
            rng = np.random.default_rng([0x2F, 0 if self.seed is None else int(self.seed)])
            U = rng.standard_normal((int(self.n_hidden), W.shape[0])) @ W
        norms = np.linalg.norm(U, axis=1)
        U = U[norms > 0] / norms[norms > 0, None]
        self.hidden_weights_ = np.ascontiguousarray(U)
        self.n_hidden_ = U.shape[0]
        self.n_features_in_ = d
        p = self.n_hidden_ * (int(self.hermite_degree) if self.readout == "hermite" else 1)
        self.n_readout_features_ = p
        neq = NormalEquations(p)
        for Xb, yb in blocks:
            Xb = check_float_array(Xb, "X", 2)
            if Xb.shape[1] != d:
                raise ValueError(f"X: has {Xb.shape[1]} features, but the first layer has {d}")
            neq.update(self._features(Xb), check_float_array(yb, "y", 1))
        if neq.n == 0:
            raise ValueError("split: leaves no rows for the readout; pass more rows or a smaller split")
        fit = neq.solve(self.ridge)
        self.readout_ = fit
        self.coef_ = fit.coef
        self.intercept_ = fit.intercept
        self.ridge_ = fit.lam
        self.n_samples_spectral_ = n1
        self.n_samples_readout_ = neq.n
        return self

    # ------------------------------------------------------------- predict
    def _features(self, X) -> np.ndarray:
        U = self.hidden_weights_
        Z = X @ U.T.astype(X.dtype, copy=False)
        if self.readout == "hermite":
            deg = int(self.hermite_degree)
            out = np.empty((X.shape[0], U.shape[0] * deg))
            inv = 1.0 / np.sqrt([math.factorial(m) for m in range(deg + 1)])
            _features_kernel(np.ascontiguousarray(Z), HERMITE, deg, inv, out)
            return out
        if callable(self.activation):
            out = np.asarray(self.activation(Z), dtype=np.float64)
            if out.shape != Z.shape:
                raise ValueError(f"activation: returned shape {out.shape} for input of shape {Z.shape}; "
                                 "it must act elementwise")
            return out
        out = np.empty(Z.shape)
        _features_kernel(np.ascontiguousarray(Z), ACTIVATIONS.index(self.activation), 1, np.ones(2), out)
        return out

    def _check_X(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise _not_fitted()
        X = check_float_array(X, "X", 2)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X: has {X.shape[1]} features, "
                             f"but SpectralTwoLayer was fitted with {self.n_features_in_}")
        return X

    def transform(self, X) -> np.ndarray:
        """The readout's features of ``X`` (n × n_readout_features_)."""
        return self._features(self._check_X(X))

    def predict(self, X) -> np.ndarray:
        """``f(x) = b + Σ_j v_j φ_j(x)`` for the rows of ``X`` (float64, computed in blocks)."""
        X = self._check_X(X)
        out = np.empty(X.shape[0])
        bs = _config.block_rows(X.shape[1])
        for lo in range(0, X.shape[0], bs):
            out[lo:lo + bs] = self._features(X[lo:lo + bs]) @ self.coef_ + self.intercept_
        return out

    def score(self, X, y) -> float:
        """Coefficient of determination R² of ``predict(X)`` against ``y``."""
        y = check_float_array(y, "y", 1)
        pred = self.predict(X)
        if pred.shape[0] != y.shape[0]:
            raise ValueError(f"X and y: lengths differ ({pred.shape[0]} rows in X, {y.shape[0]} labels in y)")
        ss = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else float("nan")


class _Head:
    """The first ``n1`` rows of a block iterator, then the rest (one pass; a straddling block is cut)."""

    def __init__(self, blocks, n1):
        self.blocks, self.n1, self.rows, self.tail = blocks, n1, 0, None

    def __iter__(self):
        for Xb, yb, _ in self.blocks:
            take = min(len(Xb), self.n1 - self.rows)
            if take < len(Xb):
                self.tail = (Xb[take:], yb[take:])
            if take > 0:
                self.rows += take
                yield Xb[:take], yb[:take]
            if self.rows >= self.n1:
                return

    def rest(self):
        if self.tail is not None:
            yield self.tail
        for Xb, yb, _ in self.blocks:
            yield Xb, yb


def _is_spectral_estimator(obj) -> bool:
    try:
        from .estimator import SpectralEstimator
    except ImportError:  # no instance can exist then
        return False

    return isinstance(obj, SpectralEstimator)


def _not_fitted():
    return not_fitted("SpectralTwoLayer", "fit or fit_stream")


def random_directions(p: int, d: int, seed=None) -> np.ndarray:
    """``p`` random unit vectors in R^d (rows), seeded: the random-features first layer."""
    p = check_positive_int(p, "p")
    d = check_positive_int(d, "d")
    U = np.random.default_rng([0x5EED, 0 if seed is None else int(seed)]).standard_normal((p, d))
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
    n_test = check_positive_int(n_test, "n_test")
    seed = check_positive_int(seed, "seed", minimum=0)
    single = not isinstance(predictor, (list, tuple))
    preds = [predictor] if single else list(predictor)
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
        for j, f in enumerate(funcs):
            r = np.asarray(f(Xb), dtype=np.float64).reshape(-1) - fstar
            err[j] += float(r @ r)
    err /= n_test
    if relative:
        var = s2 / n_test - (s1 / n_test) ** 2
        err /= var if var > 0 else np.nan
    return float(err[0]) if single else err


# ---------------------------------------------------------------- gradient-descent view
@dataclass(frozen=True)
class GDTrajectory:
    """First-layer gradient descent, recorded every ``record_every`` steps.

    ``steps`` (r,), ``overlap`` (r,): ``||V_pᵀ Q_U||_F² / p`` between the span
    of the first-layer weights and the top-p eigenvectors V_p of
    ``T = (1/n) Σ y_i x_i x_iᵀ``; ``overlap_power`` the same for power
    iteration with ``I + lr·T`` from the same start (the small-weight limit);
    ``overlap_star`` with the rows of ``W_star`` when given (else NaN);
    ``norm`` ``||U||_F``; ``eigenvalues`` the top p+1 eigenvalues of T;
    ``weights`` the final U (p × d).
    """

    steps: np.ndarray
    overlap: np.ndarray
    overlap_power: np.ndarray
    overlap_star: np.ndarray
    norm: np.ndarray
    eigenvalues: np.ndarray
    weights: np.ndarray


def subspace_overlap(A, V) -> float:
    """``||Vᵀ Q_A||_F² / k``: Q_A an orthonormal basis of the rows of A (k × d), V orthonormal (d × k')."""
    Q, _ = np.linalg.qr(np.asarray(A, dtype=np.float64).T)
    return float(np.sum((V.T @ Q) ** 2) / Q.shape[1])


def gd_first_layer(X, y, p, steps, lr, seed=None, *, init_scale=1e-6, activation="quadratic", record_every=1,
                   W_star=None, U0=None) -> GDTrajectory:
    """Full-batch gradient descent on the first layer of ``f(x) = Σ_j σ(<u_j, x>)``.

    Square loss ``(1/2n) Σ (y_i − f(x_i))²``, readout weights fixed to 1,
    ``u_j`` started at ``init_scale · N(0, I/d)``. With
    ``σ(z) = z²/2`` (``"quadratic"``; σ(0) = σ'(0) = 0, σ'' = 1) the gradient
    is ``−(1/n) Σ (y_i − f(x_i)) <u_j, x_i> x_i = −T u_j + O(|u|³)``, so each
    step multiplies the weights by ``I + lr·T``: power (subspace) iteration
    on T with τ = identity, converging to its top-p eigenvectors while the
    weights stay small. ``"relu"`` is offered for comparison: its gradient
    ``(1/n) Σ y_i 1{<u_j,x_i> > 0} x_i`` does not shrink with u and is not T u.

    Parameters
    ----------
    X, y : arrays (n × d), (n,)
    p : int
        Hidden units.
    steps : int
        Gradient steps.
    lr : float
        Learning rate (small: lr·λ_max(T) ≪ 1).
    seed : int or None
        Seeds the initialisation.
    init_scale : float
        Scale of the random start ``init_scale · N(0, I/d)``.
    activation : {"quadratic", "relu"}
    record_every : int
        Record the overlaps every this many steps (and at the last).
    W_star : array (m*, d), optional
        True directions: also record the overlap with their span.
    U0 : array (p, d), optional
        Explicit start (replaces the random one).

    Returns
    -------
    GDTrajectory

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.network import gd_first_layer
    >>> X, y = HMIModel(d=30, m_star=1, gamma=1.0, link="he2", seed=0).sample(6000)
    >>> bool(gd_first_layer(X, y, p=1, steps=150, lr=0.05, seed=0).overlap[-1] > 0.9)
    True
    """
    from .engine import spectral_matrix

    X = check_float_array(X, "X", 2).astype(np.float64, copy=False)
    y = check_float_array(y, "y", 1).astype(np.float64, copy=False)
    n, d = X.shape
    if y.shape[0] != n:
        raise ValueError(f"X and y: lengths differ ({n} rows in X, {y.shape[0]} labels in y)")
    p = check_positive_int(p, "p")
    if p >= d:
        raise ValueError(f"p: must be smaller than d={d} (the overlap with p of d eigenvectors), got {p}")
    steps = check_positive_int(steps, "steps", minimum=0)
    every = check_positive_int(record_every, "record_every")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: must be a finite number > 0, got {lr!r}")
    if activation not in ("quadratic", "relu"):
        raise ValueError(f"activation: must be 'quadratic' or 'relu' for the GD view, got {activation!r}")
    T = spectral_matrix(X, y, preprocess="identity")
    evals, evecs = np.linalg.eigh(T)
    V = evecs[:, ::-1][:, :p]
    Vs = None
    if W_star is not None:
        Vs, _ = np.linalg.qr(np.asarray(W_star, dtype=np.float64).T)
    rng = np.random.default_rng([0x6D, 0 if seed is None else int(seed)])
    if U0 is None:
        U = init_scale * rng.standard_normal((p, d)) / np.sqrt(d)
    else:
        U = np.array(U0, dtype=np.float64)
        if U.shape != (p, d):
            raise ValueError(f"U0: expected shape {(p, d)}, got {U.shape}")
    P = U.copy()
    M = np.eye(d) + lr * T
    rec = [[], [], [], [], []]

    def record(t):
        rec[0].append(t)
        rec[1].append(subspace_overlap(U, V))
        Qp, _ = np.linalg.qr(P.T)
        rec[2].append(float(np.sum((V.T @ Qp) ** 2) / p))
        rec[3].append(subspace_overlap(U, Vs) * p / min(p, Vs.shape[1]) if Vs is not None else np.nan)
        rec[4].append(float(np.linalg.norm(U)))

    record(0)
    for t in range(1, steps + 1):
        Z = X @ U.T  # n × p
        if activation == "quadratic":
            f = 0.5 * np.sum(Z * Z, axis=1)
            D = Z
        else:
            f = np.sum(np.maximum(Z, 0.0), axis=1)
            D = (Z > 0).astype(np.float64)
        r = y - f
        U = U + (lr / n) * (X.T @ (D * r[:, None])).T  # −lr · ∂L/∂U (Xᵀ·: BLAS gemm, not a strided product)
        P = P @ M  # rows: (I + lr T) u_j (T symmetric)
        scale = np.linalg.norm(P)
        if scale > 1e100:  # keep the power-iteration reference finite; its span is what is compared
            P /= scale
        if t % every == 0 or t == steps:
            record(t)
    return GDTrajectory(*(np.asarray(r) for r in rec), evals[::-1][: p + 1].copy(), U)
