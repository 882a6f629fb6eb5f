"""The optimal preprocessing τ* (the score of the law of y) and the Fisher information (docs/theory.md).

By Cauchy–Schwarz, ``E[τ']² <= E[τ²] J(y)`` with J the Fisher information of
the law of y, so the score ``τ*(y) = −p_y'(y)/p_y(y)`` gives the smallest
small-a_k thresholds. ``hmi_fast.theory`` re-exports these functions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import convolve1d
from scipy.signal import fftconvolve

from .._validation import check_positive_int
from ..links import Link, combine
from ..preprocess import Preprocess
from ._sampling import (
    DEFAULT_N_SAMPLES,
    MIN_N_SAMPLES,
    TabulatedFunction,
    _linear_bin,
    batches,
    check_model,
    check_seed,
    gl_rule,
    link_matrix,
    normals,
    readonly,
    theory_key,
)
from .population import _population_cached
from .predictions import Thresholds, _large_alpha_thresholds

#: most grid points of the tabulated τ*
MAX_GRID = 1 << 16
#: default kernel variance for τ* when the model has little or no label noise
DEFAULT_SMOOTHING = 1e-2
#: draws within one kernel width needed before the score is trusted at a bandwidth (docs/theory.md §5)
TAIL_COUNT = 200
#: the kernel variance grows by 4× per level, up to 4**TAIL_LEVELS · v, where the draws are sparse
TAIL_LEVELS = 4


# ---------------------------------------------------------------- public API: optimal τ


@dataclass(frozen=True)
class FisherInformation:
    """``J = E[τ*(y)²]`` of the (smoothed) law of y, with its standard error."""

    value: float
    se: float
    smoothing: float


@dataclass(frozen=True)
class OptimalPreprocessing:
    """The score ``τ*(y) = −p'(y)/p(y)`` and what it achieves.

    ``p`` is the law of ``f(z) + √v ξ`` with kernel variance v =
    ``smoothing`` (the law of y itself when v = Δ). ``cs_bound`` is the
    leading-order Cauchy–Schwarz bound ``1/(a_k² μ₂(g_k)² J)`` of docs/theory.md
    (small a_k); ``direction_bounds`` is the exact per-direction bound
    ``1/E[h_k(y)²]``, ``h_k(y) = E[He₂(z_k) | y]``, below every α_k(τ),
    centred or not, when v = Δ.
    """

    preprocess: Preprocess
    grid: np.ndarray
    score: np.ndarray
    density: np.ndarray
    smoothing: float
    fisher_information: FisherInformation
    thresholds: Thresholds
    mu2: np.ndarray
    cs_bound: np.ndarray
    cs_bound_se: np.ndarray
    direction_bounds: np.ndarray
    direction_bounds_se: np.ndarray


@functools.lru_cache(maxsize=64)
def _mu2(link: Link) -> float:
    """μ₂(g) = E[g(z) He₂(z)] by composite Gauss–Legendre (kinks at 0 fall on a panel edge)."""
    z, w = gl_rule(2048)
    return float(w @ (link_matrix((link,), z[:, None])[:, 0] * (z * z - 1.0)))


def _kernel(step: float, v: float):
    half = int(math.ceil(9 * math.sqrt(v) / step))
    u = step * np.arange(-half, half + 1)
    return u, np.exp(-0.5 * u * u / v) / math.sqrt(2 * math.pi * v)


def _tail_score(counts: np.ndarray, step: float, v: float, count: float, score: np.ndarray):
    """τ* where the draws are sparse: the score at wider kernels, blended by how many draws each one sees.

    At level j the kernel variance is ``v·4^j``; ``ρ_j = min(1, n_j/TAIL_COUNT)`` with n_j the expected
    draws within one kernel width, ``count · p_j(y) · √(2π v_j)``. The blend
    ``ρ_0 s_0 + (1 − ρ_0)(ρ_1 s_1 + (1 − ρ_1)(…))`` is continuous in y; beyond the last point where
    the widest kernel still sees TAIL_COUNT draws, τ* is flat.
    """
    levels = []
    for j in range(TAIL_LEVELS + 1):
        vj = v * 4.0**j
        u, k = _kernel(step, vj)
        if j == 0:
            p, mdp = convolve1d(counts, k, mode="constant"), convolve1d(counts, u / vj * k, mode="constant")
            s = score
        else:
            p = fftconvolve(counts, k, mode="same")
            mdp = fftconvolve(counts, u / vj * k, mode="same")
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(p > 1e-300, mdp / p, 0.0)
        rho = np.clip(count * np.maximum(p, 0.0) * math.sqrt(2 * math.pi * vj) / TAIL_COUNT, 0.0, 1.0)
        levels.append((s, rho))
    out = levels[-1][0]
    for s, rho in reversed(levels[:-1]):
        out = rho * s + (1.0 - rho) * out
    sure = np.flatnonzero(levels[-1][1] >= 1.0)
    if sure.size:
        out[: sure[0]] = out[sure[0]]
        out[sure[-1] + 1 :] = out[sure[-1]]
    return out


def _score_tables(bins: np.ndarray, step: float, v: float, count: float):
    """p, τ*, J and E[h_k²] on the grid from linearly binned weights (G, 1 + m), normalised to sum 1.

    ``count`` draws went into the bins (it sets how far the tail blend of :func:`_tail_score` reaches).
    """
    u, k0 = _kernel(step, v)
    num = convolve1d(bins, k0, axis=0, mode="constant")
    p = num[:, 0]
    # −p'(y_i) = Σ_b w_b (y_i − c_b)/v φ_v(y_i − c_b): a true convolution with u/v φ_v(u), as convolve1d does
    minus_dp = convolve1d(bins[:, 0], u / v * k0, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        score = minus_dp / p
        h = num[:, 1:] / p[:, None]
    ok = p > 0
    score, h = np.where(ok, score, 0.0), np.where(ok[:, None], h, 0.0)
    score = _tail_score(bins[:, 0], step, v, count, score)
    fisher = float(np.sum(score**2 * p) * step)
    eh2 = np.sum(h**2 * p[:, None], axis=0) * step
    return p, score, fisher, eh2


def _grow(bins: list, lo: float, step: float, need_lo: float, need_hi: float, v: float):
    """Pad the binned arrays with whole steps so that [need_lo, need_hi] lies on the grid."""
    size = bins[0].shape[0]
    left = max(0, math.ceil((lo - need_lo) / step))
    right = max(0, math.ceil((need_hi - (lo + (size - 1) * step)) / step))
    if size + left + right > MAX_GRID:
        raise ValueError(
            f"smoothing: the kernel variance v={v:g} is too small for the spread of y (the grid would need "
            f"{size + left + right} > {MAX_GRID} points); increase smoothing or lower grid"
        )
    if left or right:
        bins = [np.pad(b, ((left, right), (0, 0))) for b in bins]
    return bins, lo - left * step


@functools.lru_cache(maxsize=8)
def _optimal_cached(links, a_bytes, noise, v, resolution, n, seed):
    a = np.frombuffer(a_bytes, dtype=np.float64).copy()
    m = len(links)
    key, ranges = theory_key(seed), batches(n)
    sd = math.sqrt(v)
    step = sd / resolution
    groups = np.array_split(np.arange(len(ranges)), min(10, len(ranges)))
    bins, lo = None, 0.0
    for g, idx in enumerate(groups):  # one pass; groups give standard errors
        for b in idx:
            z = normals(key, *ranges[b], m)[0]
            f = combine(links, a, z)
            need_lo, need_hi = f.min() - 9 * sd, f.max() + 9 * sd
            if bins is None:
                bins, lo = [np.zeros((2, 1 + m)) for _ in groups], need_lo
            bins, lo = _grow(bins, lo, step, need_lo, need_hi, v)
            _linear_bin(f, z, lo, step, bins[g])
    total = np.sum(bins, axis=0)
    density, score, fisher, eh2 = _score_tables(total / n, step, v, n)
    per_group = []
    for b in bins:
        _, _, fg, eh2g = _score_tables(b / b[:, 0].sum(), step, v, b[:, 0].sum())
        per_group.append(np.concatenate([[fg], 1.0 / eh2g]))
    spread = np.std(np.asarray(per_group), axis=0, ddof=1) / math.sqrt(len(groups))
    func = TabulatedFunction(lo, step, score)
    tau = Preprocess("optimal", -1, 1.0, func)
    pop = _population_cached(links, a_bytes, noise, tau, n, seed + 1)
    al, al_se, noise = _large_alpha_thresholds(pop, 0.0)
    readonly(al, al_se)
    th = Thresholds(al, al_se, np.array(pop.full[2:]), noise, 0.0, tau.name, "large_alpha", None, None)
    mu2 = np.array([_mu2(lk) for lk in links])
    with np.errstate(divide="ignore"):
        cs = 1.0 / (a**2 * mu2**2 * fisher)
        bounds = 1.0 / eh2
    cs_se = cs * spread[0] / fisher
    bounds_se = spread[1:]
    grid_y = func.grid
    readonly(grid_y, density, mu2, cs, cs_se, bounds, bounds_se)
    return OptimalPreprocessing(tau, grid_y, func.values, density, v, FisherInformation(fisher, float(spread[0]), v),
                                th, mu2, cs, cs_se, bounds, bounds_se)


def optimal_preprocessing(model, *, grid: int = 8, smoothing: float | None = None,
                          n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> OptimalPreprocessing:
    """The optimal preprocessing τ* (the score of the law of y) and its thresholds.

    ``p(y) = E_z φ_v(y − f(z))`` is estimated from ``n_samples`` draws of
    ``f(z) = Σ a_k g_k(z_k)``, linearly binned on a uniform grid and
    convolved with the Gaussian kernel of variance v; then
    ``τ* = −p'/p`` is tabulated on the grid (linear interpolation inside,
    flat outside), which covers [min f − 9√v, max f + 9√v]. Its thresholds
    are computed on an independent stream (seed + 1), so τ* is not
    evaluated on the draws that built it.

    Parameters
    ----------
    model : HMIModel
    grid : int
        Grid resolution: points per kernel standard deviation √v (>= 2,
        default 8; at most 2¹⁶ points in all).
    smoothing : float, optional
        Kernel variance v >= Δ. Default ``max(Δ, 1e-2)``: v = Δ gives the
        exact score of y; v > Δ the score of ``y + √(v − Δ) ξ'`` (needed when
        Δ = 0, where the law of y may be singular).
    n_samples, seed
        As in :func:`moments`.

    Returns
    -------
    OptimalPreprocessing
        ``.preprocess`` is a :class:`~hmi_fast.Preprocess` usable everywhere
        a τ is accepted.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import optimal_preprocessing, thresholds
    >>> model = HMIModel(d=10, m_star=3, gamma=1.0, link="he2", noise=1.0)
    >>> opt = optimal_preprocessing(model, n_samples=100_000)
    >>> bool(opt.fisher_information.value >= 1 / 2)  # Cramér–Rao: J >= 1 / Var y
    True
    >>> sat = thresholds(model, "saturating", n_samples=100_000)
    >>> bool(np.all(opt.direction_bounds <= sat.alpha))
    True
    """
    check_model(model)
    n = check_positive_int(n_samples, "n_samples", minimum=MIN_N_SAMPLES)
    seed = check_seed(seed)
    resolution = check_positive_int(grid, "grid", minimum=2)
    delta = float(model.noise)
    if smoothing is None:
        v = max(delta, DEFAULT_SMOOTHING)
    else:
        v = float(smoothing)
        if not (math.isfinite(v) and v > 0 and v >= delta):
            raise ValueError(
                f"smoothing: the kernel variance must be finite, > 0 and >= the model's noise Δ={delta}, "
                f"got {smoothing!r}"
            )
    a = np.ascontiguousarray(model.a, dtype=np.float64)
    return _optimal_cached(tuple(model.links), a.tobytes(), delta, v, resolution, n, seed)


def fisher_information(model, *, smoothing: float | None = None, n_samples: int = DEFAULT_N_SAMPLES,
                       seed: int = 0) -> FisherInformation:
    """Fisher information ``J = E[τ*(y)²]`` of the law of y (smoothed to variance v; see
    :func:`optimal_preprocessing`).

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import fisher_information
    >>> J = fisher_information(HMIModel(d=10, m_star=1, gamma=1.0, link="he2", noise=1e6), n_samples=100_000)
    >>> abs(J.value * 1e6 - 1) < 0.01
    True
    """
    return optimal_preprocessing(model, smoothing=smoothing, n_samples=n_samples, seed=seed).fisher_information
