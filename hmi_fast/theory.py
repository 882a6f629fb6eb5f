"""Dimension-free predictions of the spectral method (docs/theory.md).

Everything here is an expectation over the m* i.i.d. N(0, 1) pre-activations
``z_k`` and the label noise ``ξ`` (``y = Σ_k a_k g_k(z_k) + √Δ ξ``); d never
enters. The population quantities

* ``μ_τ = E τ(y)``, ``E τ(y)²``, ``Var τ(y)``,
* spike strengths ``θ_k = E[τ(y) He₂(z_k)]``,

are computed once per (model, τ, n_samples, seed) and cached:

* m* = 1: composite Gauss–Legendre quadrature over z (and ξ when Δ > 0);
  the reported error is ``|Q_h − Q_2h|`` between two resolutions.
* m* > 1: Monte Carlo with the package's counter-based normal stream
  (fixed seed, ``n_samples`` rows in batches, memory O(batch · m*)).
  ``θ_k`` uses the control variate ``τ(y − a_k g_k(z_k)) He₂(z_k)``, whose
  mean is exactly 0 (the argument is independent of z_k), so the error of
  θ_k scales with a_k instead of staying O(1). Standard errors of every
  reported quantity, ratios included, come from the jackknife over batches.

Everything else (thresholds, spectrum predictions, MSE curves) is a closed
form in these numbers. The optimal preprocessing τ* (the score of the law of
y) is tabulated on a grid from a binned Gaussian-kernel density; see
:func:`optimal_preprocessing`. ``docs/theory.md`` states the mathematics.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from ._config import jit
from ._random import fill_normals, stream_key
from ._validation import check_positive_int
from .links import Link, _builtin_link
from .preprocess import Preprocess, _builtin_tau, resolve_preprocess

DEFAULT_N_SAMPLES = 2_000_000
MIN_N_SAMPLES = 1000
#: θ_k counts as 0 (α_k = inf) when |θ_k| <= ZERO_SPIKE · √E[τ²] (a rounding-level zero)
ZERO_SPIKE = 1e-12
#: most grid points of the tabulated τ*
MAX_GRID = 1 << 16
#: default kernel variance for τ* when the model has little or no label noise
DEFAULT_SMOOTHING = 1e-2
_STREAM_SALT = np.uint64(0x7E0C0FFEE)  # theory streams differ from the data stream of the same seed
_MAX_BATCH_ROWS = 1 << 16
_QUAD_L = 12.0  # z, ξ integrated over [−L, L]; φ(12) ≈ 5e-32


# ---------------------------------------------------------------- kernels


@jit(inline="always")
def _interp1(x, lo, step, values):
    """Linear interpolation on the uniform grid lo + j·step, flat outside (like np.interp)."""
    g = values.shape[0]
    s = (x - lo) / step
    if s <= 0.0:
        return values[0]
    if s >= g - 1:
        return values[g - 1]
    if not s == s:
        return np.nan
    j = int(s)
    r = s - j
    return (1.0 - r) * values[j] + r * values[j + 1]


@jit(inline="always")
def _tau(kind, code, param, lo, step, values, y):
    """τ(y): a built-in (kind 0) or a tabulated function (kind 1)."""
    if kind == 0:
        return _builtin_tau(code, param, y)
    return _interp1(y, lo, step, values)


@jit(parallel=True)
def _sums_fused(z, xi, codes, a, sd, kind, code, param, lo, step, values, partial):
    """partial[t] += Σ_rows [τ, τ², (τ(y) − τ(y − a_k g_k)) He₂(z_k) for each k], per thread."""
    n, m = z.shape
    nt = partial.shape[0]
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo_i = t * chunk
        hi_i = min(n, lo_i + chunk)
        for i in range(lo_i, hi_i):
            f = 0.0
            for k in range(m):
                f += a[k] * _builtin_link(codes[k], z[i, k])
            y = f + sd * xi[i]
            ty = _tau(kind, code, param, lo, step, values, y)
            partial[t, 0] += ty
            partial[t, 1] += ty * ty
            for k in range(m):
                zk = z[i, k]
                rest = y - a[k] * _builtin_link(codes[k], zk)
                partial[t, 2 + k] += (ty - _tau(kind, code, param, lo, step, values, rest)) * (zk * zk - 1.0)


@jit(parallel=True)
def _builtin_link_matrix(z, codes, out):
    """out[i, k] = g_{codes[k]}(z[i, k]) for the columns with codes[k] >= 0."""
    n, m = z.shape
    for i in prange(n):
        for k in range(m):
            if codes[k] >= 0:
                out[i, k] = _builtin_link(codes[k], z[i, k])


@jit()
def _map_jitted(f, x, out):
    for i in range(x.shape[0]):
        out[i] = f(x[i])


@jit(parallel=True)
def _interp_uniform(x, lo, step, values, out):
    for i in prange(x.shape[0]):
        out[i] = _interp1(x[i], lo, step, values)


@jit()
def _linear_bin(f, z, lo, h, out):
    """Linear binning of the weights [1, He₂(z_1), …, He₂(z_m)] of each row at position f."""
    n, m = z.shape
    g = out.shape[0]
    for i in range(n):
        s = (f[i] - lo) / h
        j = min(max(int(s), 0), g - 2)
        r = min(max(s - j, 0.0), 1.0)
        out[j, 0] += 1.0 - r
        out[j + 1, 0] += r
        for k in range(m):
            w = z[i, k] * z[i, k] - 1.0
            out[j, 1 + k] += (1.0 - r) * w
            out[j + 1, 1 + k] += r * w


# ---------------------------------------------------------------- evaluation helpers


def _eval_tau(tau: Preprocess, y: np.ndarray) -> np.ndarray:
    if tau.is_builtin:
        return tau(y)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if tau.is_jitted:
        out = np.empty_like(y)
        _map_jitted(tau.func, y, out)
        return out
    out = np.asarray(tau.func(y), dtype=np.float64)
    if out.shape != y.shape:
        raise ValueError(
            f"preprocess: {tau.name!r} returned shape {out.shape} for labels of shape {y.shape}; "
            "it must act elementwise"
        )
    return out


def _link_matrix(links: tuple[Link, ...], z: np.ndarray) -> np.ndarray:
    """G[i, k] = g_k(z[i, k])."""
    G = np.empty_like(z)
    codes = np.array([lk.code if lk.is_builtin else -1 for lk in links], dtype=np.int64)
    if (codes >= 0).any():
        _builtin_link_matrix(z, codes, G)
    for k, lk in enumerate(links):
        if lk.is_builtin:
            continue
        col = np.ascontiguousarray(z[:, k])
        if lk.is_jitted:
            out = np.empty_like(col)
            _map_jitted(lk.func, col, out)
            G[:, k] = out
        else:
            G[:, k] = lk(col)
    return G


def _batches(n: int) -> list[tuple[int, int]]:
    """Row ranges of the batches: at least 10, at most 64 unless a batch would exceed 2¹⁶ rows."""
    nb = max(min(64, n // 1000), 10, -(-n // _MAX_BATCH_ROWS))
    edges = np.linspace(0, n, nb + 1).astype(np.int64)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]


def _normals(key, lo: int, hi: int, m: int):
    z = np.empty((hi - lo, m))
    xi = np.empty((hi - lo, 1))
    fill_normals(key, lo, z, xi)
    return z, xi[:, 0]


def _key(seed: int) -> np.uint64:
    return np.uint64(stream_key(seed) ^ _STREAM_SALT)


@functools.lru_cache(maxsize=8)
def _gl_rule(panels: int, order: int = 8):
    """Composite Gauss–Legendre nodes and N(0, 1)-density weights on [−L, L] (0 is a panel edge)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(-_QUAD_L, _QUAD_L, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x).ravel()
    weights = (half[:, None] * w).ravel() * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    _readonly(nodes, weights)
    return nodes, weights


# ---------------------------------------------------------------- population quantities


@dataclass(frozen=True)
class _Population:
    """Replicates of v = [μ_τ, E τ², θ_1, …, θ_m] and how to turn them into errors."""

    full: np.ndarray  # (2 + m,)
    reps: np.ndarray  # jackknife leave-one-batch-out values, or the coarse quadrature
    method: str  # "monte_carlo" or "quadrature"
    n_samples: int

    def estimate(self, fn):
        """(value, standard error) of fn(v); fn acts on the last axis."""
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.asarray(fn(self.full), dtype=np.float64)
            rep = np.asarray(fn(self.reps), dtype=np.float64)
            if self.method == "quadrature":
                se = np.abs(value - rep[0])
            else:
                b = rep.shape[0]
                se = np.sqrt((b - 1) / b * np.sum((rep - rep.mean(axis=0)) ** 2, axis=0))
        return value, se


def _monte_carlo(links, a, noise, tau, n, seed) -> _Population:
    m = len(links)
    key = _key(seed)
    sd = math.sqrt(noise)
    tabulated = isinstance(tau.func, TabulatedFunction)
    fused = (tau.is_builtin or tabulated) and all(lk.is_builtin for lk in links)
    codes = np.array([lk.code for lk in links], dtype=np.int64)
    table = (tau.func.lo, tau.func.step, tau.func.values) if tabulated else (0.0, 1.0, np.zeros(1))
    ranges = _batches(n)
    sums = np.zeros((len(ranges), 2 + m))
    for b, (lo, hi) in enumerate(ranges):
        z, xi = _normals(key, lo, hi, m)
        if fused:
            partial = np.zeros((numba.get_num_threads(), 2 + m))
            _sums_fused(z, xi, codes, a, sd, int(tabulated), tau.code, float(tau.param), *table, partial)
            sums[b] = partial.sum(axis=0)
            continue
        G = _link_matrix(links, z)
        y = G @ a + sd * xi
        t = _eval_tau(tau, y)
        rest = _eval_tau(tau, (y[:, None] - G * a).ravel()).reshape(G.shape)
        sums[b, 0] = t.sum()
        sums[b, 1] = t @ t
        sums[b, 2:] = np.einsum("ik,ik->k", t[:, None] - rest, z * z - 1.0)
    counts = np.array([hi - lo for lo, hi in ranges], dtype=np.float64)
    total = sums.sum(axis=0)
    reps = (total - sums) / (n - counts)[:, None]
    return _Population(total / n, reps, "monte_carlo", n)


def _quadrature(links, a, noise, tau) -> _Population:
    """m* = 1: composite Gauss–Legendre over z (⊗ ξ when Δ > 0), at two resolutions."""
    out = []
    for scale in (2, 1):  # fine first
        panels_z = (1024 if noise > 0 else 4096) * scale // 2
        z, wz = _gl_rule(panels_z)
        f = a[0] * _link_matrix(links, z[:, None])[:, 0]
        he2 = z * z - 1.0
        if noise == 0:
            t = _eval_tau(tau, f)
            out.append([wz @ t, wz @ (t * t), wz @ (t * he2)])
            continue
        xi, wx = _gl_rule(256 * scale // 2)
        acc = np.zeros(3)
        for s in range(0, z.size, 256):
            t = _eval_tau(tau, (f[s : s + 256, None] + math.sqrt(noise) * xi).ravel()).reshape(-1, xi.size)
            m1, m2 = t @ wx, (t * t) @ wx
            ws = wz[s : s + 256]
            acc += [ws @ m1, ws @ m2, ws @ (m1 * he2[s : s + 256])]
        out.append(acc)
    vals = np.asarray(out)
    return _Population(vals[0], vals[1:], "quadrature", 0)


@functools.lru_cache(maxsize=32)
def _population_cached(links, a_bytes, noise, tau, n, seed) -> _Population:
    a = np.frombuffer(a_bytes, dtype=np.float64).copy()
    pop = _quadrature(links, a, noise, tau) if len(links) == 1 else _monte_carlo(links, a, noise, tau, n, seed)
    if not (np.isfinite(pop.full).all() and np.isfinite(pop.reps).all()):
        raise ValueError(
            f"preprocess: {tau.name!r} gave non-finite values on this model's labels; "
            "it must map every finite label to a finite weight"
        )
    for arr in (pop.full, pop.reps):
        arr.setflags(write=False)
    return pop


def _population(model, preprocess, n_samples, seed):
    _check_model(model)
    tau = resolve_preprocess(preprocess)
    n = check_positive_int(n_samples, "n_samples", minimum=MIN_N_SAMPLES)
    seed = _check_seed(seed)
    a = np.ascontiguousarray(model.a, dtype=np.float64)
    args = (tuple(model.links), a.tobytes(), float(model.noise), tau, n, seed)
    try:
        hash(args)
    except TypeError:  # an unhashable user function: compute without the cache
        return _population_cached.__wrapped__(*args), tau
    return _population_cached(*args), tau


# ---------------------------------------------------------------- validation


def _check_model(model) -> None:
    if not all(hasattr(model, name) for name in ("a", "links", "noise", "m_star")):
        raise TypeError(f"model: expected an HMIModel, got {type(model).__name__}")


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_centred(centred) -> bool:
    if not isinstance(centred, (bool, np.bool_)):
        raise TypeError(f"centred: must be True or False, got {centred!r}")
    return bool(centred)


def _check_alpha(alpha, name: str = "alpha") -> np.ndarray:
    try:
        arr = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: must be a positive number or a 1-D array of them, got {alpha!r}") from None
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"{name}: must be a positive number or a non-empty 1-D array, got shape {arr.shape}")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name}: every sample ratio α = n/d must be finite and > 0, got {alpha!r}")
    return arr


def _readonly(*arrays):
    for x in arrays:
        if isinstance(x, np.ndarray):
            x.setflags(write=False)


# ---------------------------------------------------------------- public API: population


@dataclass(frozen=True)
class Moments:
    """``μ_τ = E τ(y)``, ``E τ(y)²`` and ``Var τ(y)`` with standard errors."""

    mean: float
    mean_se: float
    second_moment: float
    second_moment_se: float
    variance: float
    variance_se: float
    preprocess: str
    method: str
    n_samples: int


@dataclass(frozen=True)
class SpikeStrengths:
    """``θ_k = E[τ(y) He₂(z_k)]`` (shape (m*,)) with standard errors."""

    theta: np.ndarray
    theta_se: np.ndarray
    preprocess: str
    method: str
    n_samples: int


@dataclass(frozen=True)
class Thresholds:
    """k-critical thresholds ``α_k = noise / θ_k²``.

    inf where θ_k = 0 (to rounding: ``|θ_k| <= ZERO_SPIKE · √E[τ²]``).

    ``noise`` is ``E τ²`` or, with ``centred``, ``Var τ``.
    """

    alpha: np.ndarray
    alpha_se: np.ndarray
    theta: np.ndarray
    noise: float
    centred: bool
    preprocess: str


def moments(model, preprocess="saturating", *, n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> Moments:
    """Moments of the weights τ(y) under the model.

    Parameters
    ----------
    model : HMIModel
        Only ``a``, ``links`` and ``noise`` are used (d never enters).
    preprocess : str, tuple or callable
        τ, anything :func:`~hmi_fast.preprocess.resolve_preprocess` accepts.
    n_samples : int
        Monte Carlo size (>= 1000) for m* > 1; m* = 1 uses quadrature.
    seed : int
        Seed of the Monte Carlo stream.

    Returns
    -------
    Moments

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import moments
    >>> mo = moments(HMIModel(d=10, m_star=2, gamma=1.0, link="he2", noise=0.5), "identity", n_samples=20_000)
    >>> abs(mo.second_moment - 1.5) < 5 * mo.second_moment_se + 1e-12
    True
    """
    pop, tau = _population(model, preprocess, n_samples, seed)
    mu, mu_se = pop.estimate(lambda v: v[..., 0])
    s2, s2_se = pop.estimate(lambda v: v[..., 1])
    var, var_se = pop.estimate(lambda v: v[..., 1] - v[..., 0] ** 2)
    return Moments(float(mu), float(mu_se), float(s2), float(s2_se), float(var), float(var_se),
                   tau.name, pop.method, pop.n_samples)


def spike_strengths(model, preprocess="saturating", *, n_samples: int = DEFAULT_N_SAMPLES,
                    seed: int = 0) -> SpikeStrengths:
    """Spike strengths ``θ_k = E[τ(y) He₂(z_k)]``, k = 1..m*.

    With orthonormal directions, ``E T = μ_τ I + Σ_k θ_k w_k w_kᵀ``.
    Parameters as in :func:`moments`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import spike_strengths
    >>> model = HMIModel(d=10, m_star=3, gamma=1.0, link="he2")
    >>> sp = spike_strengths(model, "identity", n_samples=20_000)
    >>> bool(np.all(np.abs(sp.theta - np.sqrt(2) * model.a) < 5 * sp.theta_se + 1e-12))
    True
    """
    pop, tau = _population(model, preprocess, n_samples, seed)
    th, se = pop.estimate(lambda v: v[..., 2:])
    _readonly(th, se)
    return SpikeStrengths(th, se, tau.name, pop.method, pop.n_samples)


def _thresholds(pop, tau, centred) -> Thresholds:
    def alphas(v):
        noise = v[..., 1:2] - (v[..., 0:1] ** 2 if centred else 0.0)
        th2 = v[..., 2:] ** 2
        nonzero = th2 > ZERO_SPIKE**2 * v[..., 1:2]
        return np.where(nonzero, noise / np.where(nonzero, th2, 1.0), np.inf)

    al, al_se = pop.estimate(alphas)
    noise, _ = pop.estimate(lambda v: v[..., 1] - (v[..., 0] ** 2 if centred else 0.0))
    al_se = np.where(np.isfinite(al), al_se, np.nan)
    theta = np.array(pop.full[2:])
    _readonly(al, al_se, theta)
    return Thresholds(al, al_se, theta, float(noise), centred, tau.name)


def thresholds(model, preprocess="saturating", centred: bool = False, *, n_samples: int = DEFAULT_N_SAMPLES,
               seed: int = 0) -> Thresholds:
    """k-critical thresholds ``α_k = E τ² / θ_k²`` (centred: ``Var τ / θ_k²``).

    Direction k separates from the bulk of T iff α > α_k (docs/theory.md).
    Parameters as in :func:`moments`; ``centred`` for weights τ − μ_τ.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import thresholds
    >>> th = thresholds(HMIModel(d=10, m_star=3, gamma=1.3), n_samples=20_000)
    >>> bool(np.all(np.diff(th.alpha) > 0))
    True
    """
    centred = _check_centred(centred)
    pop, tau = _population(model, preprocess, n_samples, seed)
    return _thresholds(pop, tau, centred)


# Predictions and τ* live in their own modules; re-exported here (imported at the end: they use the helpers above).
from .predictions import (  # noqa: E402,F401
    MSECurve,
    Prediction,
    ScalingLaw,
    mse_curve,
    predict,
    scaling_law,
)
from .optimal import (  # noqa: E402,F401
    FisherInformation,
    OptimalPreprocessing,
    TabulatedFunction,
    fisher_information,
    optimal_preprocessing,
)
