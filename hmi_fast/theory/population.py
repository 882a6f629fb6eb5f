"""Population quantities of the weights τ(y) under the model (docs/theory.md §2, §7).

Everything is an expectation over the m* i.i.d. N(0, 1) pre-activations
``z_k`` and the label noise ``ξ`` (``y = Σ_k a_k g_k(z_k) + √Δ ξ``); d never
enters. One pass over the draws gives, for a (model, τ, n_samples, seed):

* the moments ``μ_τ = E τ(y)``, ``E τ(y)²`` and the spike strengths
  ``θ_k = E[τ(y) He₂(z_k)]`` (exact sums, as floats);
* the **law of τ(y)** on a uniform grid by linear binning, with the
  He₂-weighted masses ``E[He₂(z_k) 1_j(τ)]`` (and ``E[z_k z_l 1_j(τ)]`` for
  pairs of links that are not even): everything the finite-α theory
  (:mod:`hmi_fast.theory.wishart`) integrates against.

m* = 1 uses composite Gauss–Legendre quadrature over z (and ξ when Δ > 0);
the reported error is ``|Q_h − Q_2h|`` between two resolutions. m* > 1 uses
Monte Carlo with the package's counter-based normal stream. θ_k and the
He₂ masses use the control variate ``τ(y − a_k g_k(z_k))``, which is
independent of z_k, so their error scales with a_k instead of staying O(1).
Standard errors come from the jackknife: over batches for the moments,
over ``LAW_GROUPS`` groups of batches for the law.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from .._config import jit
from .._validation import check_positive_int
from ..preprocess import Preprocess, resolve_preprocess
from ._sampling import (
    DEFAULT_N_SAMPLES,
    MIN_N_SAMPLES,
    TabulatedFunction,
    _weights_fused,
    batches,
    check_model,
    check_seed,
    eval_tau,
    gl_rule,
    is_even_link,
    link_matrix,
    normals,
    readonly,
    theory_key,
)

#: intervals of the initial grid of the law of τ
LAW_NODES = 1024
#: at most this many grid points (the grid is coarsened by 2 beyond)
MAX_LAW_NODES = 1 << 14
#: jackknife groups of the law (Monte Carlo)
LAW_GROUPS = 8
#: intervals of the grid of the law for quadrature (m* = 1)
QUAD_LAW_NODES = 4096
#: quadrature atoms lighter than this fraction of the heaviest are folded into the grid's end nodes
QUAD_TAIL = 1e-14


# ---------------------------------------------------------------- kernels


@jit(parallel=True)
def _accumulate(t, rest, z, lo, step, pk, pl, sums, P, E, C):
    """One batch, per-thread partials (first axis of every output).

    sums[:, 0..1] += τ, τ²; sums[:, 2 + k] += (τ − τ_{−k}) He₂(z_k);
    P[:, j] += hat_j(τ); E[:, j, k] += He₂(z_k) (hat_j(τ) − hat_j(τ_{−k}));
    C[:, j, q] += z_k z_l (hat_j(τ) − hat_j(τ_{−k})) for the pairs q = (pk[q], pl[q]).
    hat_j is the linear-binning weight of node lo + j·step; values lie inside the grid.
    """
    n, m = z.shape
    nt = P.shape[0]
    g = P.shape[1]
    npair = pk.shape[0]
    chunk = (n + nt - 1) // nt
    for th in prange(nt):
        jk = np.empty(m, dtype=np.int64)
        rk = np.empty(m)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            ti = t[i]
            s = (ti - lo) / step
            j = min(max(int(s), 0), g - 2)
            r = min(max(s - j, 0.0), 1.0)
            sums[th, 0] += ti
            sums[th, 1] += ti * ti
            P[th, j] += 1.0 - r
            P[th, j + 1] += r
            for k in range(m):
                h = z[i, k] * z[i, k] - 1.0
                sums[th, 2 + k] += (ti - rest[i, k]) * h
                sk = (rest[i, k] - lo) / step
                jj = min(max(int(sk), 0), g - 2)
                rr = min(max(sk - jj, 0.0), 1.0)
                jk[k] = jj
                rk[k] = rr
                E[th, j, k] += (1.0 - r) * h
                E[th, j + 1, k] += r * h
                E[th, jj, k] -= (1.0 - rr) * h
                E[th, jj + 1, k] -= rr * h
            for q in range(npair):
                k = pk[q]
                v = z[i, k] * z[i, pl[q]]
                C[th, j, q] += (1.0 - r) * v
                C[th, j + 1, q] += r * v
                C[th, jk[k], q] -= (1.0 - rk[k]) * v
                C[th, jk[k] + 1, q] -= rk[k] * v


@jit()
def _bin_atoms(t, w, h, lo, step, P, E):
    """Linear binning of weighted atoms: P[j] += w hat_j(t), E[j, 0] += w h hat_j(t)."""
    g = P.shape[0]
    for i in range(t.shape[0]):
        s = (t[i] - lo) / step
        j = min(max(int(s), 0), g - 2)
        r = min(max(s - j, 0.0), 1.0)
        P[j] += w[i] * (1.0 - r)
        P[j + 1] += w[i] * r
        E[j, 0] += w[i] * h[i] * (1.0 - r)
        E[j + 1, 0] += w[i] * h[i] * r


# ---------------------------------------------------------------- the law of τ


@dataclass(frozen=True, eq=False)
class Law:
    """The law of the weights τ(y) on the grid ``lo + j·step`` (linear binning).

    ``p[j]`` is the probability at node j; ``he2[j, k]`` the mass of He₂(z_k)
    there, ``E[He₂(z_k) hat_j(τ)]``; ``cross[j, q]`` that of ``z_k z_l`` for
    the pairs ``pairs[q] = (k, l)``, k > l, whose links are both not even
    (for an even link those masses vanish by symmetry). Any smooth f has
    ``E[f(τ) He₂(z_k)] ≈ Σ_j f(t_j) he2[j, k]``, exact for f linear between nodes.
    """

    lo: float
    step: float
    p: np.ndarray
    he2: np.ndarray
    pairs: np.ndarray
    cross: np.ndarray

    @property
    def nodes(self) -> np.ndarray:
        return self.lo + self.step * np.arange(self.p.size)

    @property
    def diagonal(self) -> bool:
        """Whether the latent matrix ``E[τ z zᵀ/(λ − τ)]`` is diagonal (no pair of non-even links)."""
        return self.pairs.shape[0] == 0

    def spike_matrix(self) -> np.ndarray:
        """``M[j] = E[(z zᵀ − I) hat_j(τ)]``, shape (G, m, m)."""
        g, m = self.he2.shape
        M = np.zeros((g, m, m))
        idx = np.arange(m)
        M[:, idx, idx] = self.he2
        for q, (k, l) in enumerate(self.pairs):
            M[:, k, l] = M[:, l, k] = self.cross[:, q]
        return M


def _tau_range(tau: Preprocess):
    """Known bounds of τ, or None (then the grid follows the draws)."""
    if tau.is_builtin:
        if tau.name in ("saturating", "sign"):
            return -1.0, 1.0
        if tau.name == "clip":
            return -float(tau.param), float(tau.param)
        return None
    if isinstance(tau.func, TabulatedFunction):
        return float(tau.func.values.min()), float(tau.func.values.max())
    return None


def _coarsen(a: np.ndarray) -> np.ndarray:
    """Linear-binning masses on a grid of step h (odd length) to step 2h: exact for hat functions."""
    out = a[0::2].copy()
    half = 0.5 * a[1::2]
    out[:-1] += half
    out[1:] += half
    return out


class _Grid:
    """A uniform grid that grows by whole steps (and coarsens by 2) as draws need; holds group masses."""

    def __init__(self, lo, hi, groups, m, npair):
        self.step = (hi - lo) / LAW_NODES if hi > lo else max(abs(lo), 1.0) * 1e-6
        self.lo = lo
        g = LAW_NODES + 1
        self.P = np.zeros((groups, g))
        self.E = np.zeros((groups, g, m))
        self.C = np.zeros((groups, g, npair))

    @property
    def size(self):
        return self.P.shape[1]

    def cover(self, vmin, vmax):
        hi = self.lo + self.step * (self.size - 1)
        left = max(0, math.ceil((self.lo - vmin) / self.step))
        right = max(0, math.ceil((vmax - hi) / self.step))
        if left or right:
            pad = ((0, 0), (left, right))
            self.P = np.pad(self.P, pad)
            self.E = np.pad(self.E, pad + ((0, 0),))
            self.C = np.pad(self.C, pad + ((0, 0),))
            self.lo -= left * self.step
        while self.size > MAX_LAW_NODES:
            if self.size % 2 == 0:  # make the length odd: one more node on the right
                self.P, self.E, self.C = (np.pad(x, ((0, 0), (0, 1)) + ((0, 0),) * (x.ndim - 2))
                                          for x in (self.P, self.E, self.C))
            self.P = np.stack([_coarsen(x) for x in self.P])
            self.E = np.stack([_coarsen(x) for x in self.E])
            self.C = np.stack([_coarsen(x) for x in self.C])
            self.step *= 2.0


def _trim(law_arrays, lo, step):
    """Drop the end nodes where every replicate has no mass, of the law or of the spikes."""
    used = np.zeros(law_arrays[0].shape[1], dtype=bool)
    for x in law_arrays:
        used |= np.any(x.reshape(x.shape[0], x.shape[1], -1) != 0, axis=(0, 2))
    used = np.flatnonzero(used)
    a, b = used[0], used[-1] + 1
    return [x[:, a:b] for x in law_arrays], lo + a * step


def _laws(P, E, C, pairs, lo, step, total, counts):
    """Full law and leave-one-group-out replicates from group sums."""
    (P, E, C), lo = _trim([P, E, C], lo, step)
    full = Law(lo, step, P.sum(0) / total, E.sum(0) / total, pairs, C.sum(0) / total)
    reps = []
    if P.shape[0] > 1:
        for g in range(P.shape[0]):
            rest = total - counts[g]
            reps.append(Law(lo, step, (P.sum(0) - P[g]) / rest, (E.sum(0) - E[g]) / rest, pairs,
                            (C.sum(0) - C[g]) / rest))
    for law in [full, *reps]:
        readonly(law.p, law.he2, law.cross, law.pairs)
    return full, tuple(reps)


# ---------------------------------------------------------------- population quantities


@dataclass(frozen=True, eq=False)
class _Population:
    """Replicates of v = [μ_τ, E τ², θ_1, …, θ_m], the law of τ, and how to turn them into errors."""

    full: np.ndarray  # (2 + m,)
    reps: np.ndarray  # jackknife leave-one-batch-out values, or the coarse quadrature
    method: str  # "monte_carlo" or "quadrature"
    n_samples: int
    law: Law
    law_reps: tuple  # jackknife leave-one-group-out laws, or the coarse quadrature's

    def estimate(self, fn):
        """(value, standard error) of fn(v); fn acts on the last axis."""
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.asarray(fn(self.full), dtype=np.float64)
            rep = np.asarray(fn(self.reps), dtype=np.float64)
        return value, spread(value, rep, self.method)


def spread(value, reps, method):
    """Standard error from replicates: jackknife (Monte Carlo) or |fine − coarse| (quadrature)."""
    value = np.asarray(value, dtype=np.float64)
    reps = np.asarray(reps, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if method == "quadrature":
            return np.abs(value - reps[0])
        b = reps.shape[0]
        return np.sqrt((b - 1) / b * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))


def _check_finite(t, rest, tau):
    if not (np.isfinite(t).all() and np.isfinite(rest).all()):
        raise ValueError(
            f"preprocess: {tau.name!r} gave non-finite values on this model's labels; "
            "it must map every finite label to a finite weight"
        )


def _monte_carlo(links, a, noise, tau, n, seed) -> _Population:
    m = len(links)
    key = theory_key(seed)
    sd = math.sqrt(noise)
    tabulated = isinstance(tau.func, TabulatedFunction)
    fused = (tau.is_builtin or tabulated) and all(lk.is_builtin for lk in links)
    codes = np.array([lk.code for lk in links], dtype=np.int64)
    table = (tau.func.lo, tau.func.step, tau.func.values) if tabulated else (0.0, 1.0, np.zeros(1))
    even = [is_even_link(lk) for lk in links]
    pairs = np.array([(k, l) for k in range(m) for l in range(k) if not (even[k] or even[l])],
                     dtype=np.int64).reshape(-1, 2)
    pk, pl = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    ranges = batches(n)
    groups = min(LAW_GROUPS, len(ranges))
    sums = np.zeros((len(ranges), 2 + m))
    counts = np.zeros(groups)
    bounds = _tau_range(tau)
    grid = None if bounds is None else _Grid(*bounds, groups, m, len(pairs))
    nt = numba.get_num_threads()
    for b, (lo, hi) in enumerate(ranges):
        z, xi = normals(key, lo, hi, m)
        if fused:
            t, rest = np.empty(hi - lo), np.empty((hi - lo, m))
            _weights_fused(z, xi, codes, a, sd, int(tabulated), tau.code, float(tau.param), *table, t, rest)
        else:
            G = link_matrix(links, z)
            y = G @ a + sd * xi
            t = eval_tau(tau, y)
            rest = eval_tau(tau, (y[:, None] - G * a).ravel()).reshape(G.shape)
        _check_finite(t, rest, tau)
        vmin, vmax = min(t.min(), rest.min()), max(t.max(), rest.max())
        if grid is None:
            pad = 0.05 * (vmax - vmin)
            grid = _Grid(vmin - pad, vmax + pad, groups, m, len(pairs))
        grid.cover(vmin, vmax)
        g = b % groups
        part = [np.zeros((nt, 2 + m)), np.zeros((nt, grid.size)), np.zeros((nt, grid.size, m)),
                np.zeros((nt, grid.size, len(pairs)))]
        _accumulate(t, np.ascontiguousarray(rest), z, grid.lo, grid.step, pk, pl, *part)
        sums[b] = part[0].sum(axis=0)
        grid.P[g] += part[1].sum(axis=0)
        grid.E[g] += part[2].sum(axis=0)
        grid.C[g] += part[3].sum(axis=0)
        counts[g] += hi - lo
    batch_counts = np.array([hi - lo for lo, hi in ranges], dtype=np.float64)
    total = sums.sum(axis=0)
    reps = (total - sums) / (n - batch_counts)[:, None]
    law, law_reps = _laws(grid.P, grid.E, grid.C, pairs, grid.lo, grid.step, float(n), counts)
    return _Population(total / n, reps, "monte_carlo", n, law, law_reps)


def _quadrature_chunks(links, a, noise, tau, scale):
    """Atoms of the law of τ from the quadrature rule, in chunks: (τ, weight, He₂(z)) per chunk.

    Scale 2 is the fine rule, 1 the coarse one; with Δ > 0 the atoms are the (z, ξ) node pairs.
    """
    panels_z = (1024 if noise > 0 else 4096) * scale // 2
    z, wz = gl_rule(panels_z)
    f = a[0] * link_matrix(links, z[:, None])[:, 0]
    he2 = z * z - 1.0
    if noise == 0:
        yield eval_tau(tau, f), wz, he2
        return
    xi, wx = gl_rule(256 * scale // 2)
    sd = math.sqrt(noise)
    for s in range(0, z.size, 256):
        t = eval_tau(tau, (f[s : s + 256, None] + sd * xi).ravel())
        yield t, (wz[s : s + 256, None] * wx).ravel(), np.repeat(he2[s : s + 256], xi.size)


def _quadrature(links, a, noise, tau) -> _Population:
    """m* = 1: composite Gauss–Legendre over z (⊗ ξ when Δ > 0), at two resolutions.

    The grid of the law spans the τ of the atoms of weight above QUAD_TAIL times the largest;
    the few beyond are folded into the end nodes.
    """
    vals, lo, hi = [], math.inf, -math.inf
    for scale in (2, 1):  # fine first
        acc = np.zeros(3)
        for t, w, h in _quadrature_chunks(links, a, noise, tau, scale):
            _check_finite(t, t, tau)
            acc += [w @ t, w @ (t * t), w @ (t * h)]
            if scale == 2:
                big = w > QUAD_TAIL * w.max()
                lo, hi = min(lo, float(t[big].min())), max(hi, float(t[big].max()))
        vals.append(acc)
    vals = np.array(vals)
    step = (hi - lo) / QUAD_LAW_NODES if hi > lo else max(abs(lo), 1.0) * 1e-6
    P, E = np.zeros((2, QUAD_LAW_NODES + 1)), np.zeros((2, QUAD_LAW_NODES + 1, 1))
    for i, scale in enumerate((2, 1)):
        for t, w, h in _quadrature_chunks(links, a, noise, tau, scale):
            _bin_atoms(np.clip(t, lo, hi), w, h, lo, step, P[i], E[i])
    (P, E), lo = _trim([P, E], lo, step)
    empty = np.zeros((0, 2), dtype=np.int64)
    fine, coarse = (Law(lo, step, P[i], E[i], empty, np.zeros((P.shape[1], 0))) for i in range(2))
    for law in (fine, coarse):
        readonly(law.p, law.he2, law.cross, law.pairs)
    return _Population(vals[0], vals[1:], "quadrature", 0, fine, (coarse,))


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


def population(model, preprocess, n_samples, seed):
    """The cached population of (model, τ, n_samples, seed) and the resolved τ."""
    check_model(model)
    tau = resolve_preprocess(preprocess)
    n = check_positive_int(n_samples, "n_samples", minimum=MIN_N_SAMPLES)
    seed = check_seed(seed)
    a = np.ascontiguousarray(model.a, dtype=np.float64)
    args = (tuple(model.links), a.tobytes(), float(model.noise), tau, n, seed)
    try:
        hash(args)
    except TypeError:  # an unhashable user function: compute without the cache
        return _population_cached.__wrapped__(*args), tau
    return _population_cached(*args), tau


# ---------------------------------------------------------------- public API


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
    pop, tau = population(model, preprocess, n_samples, seed)
    mu, mu_se = pop.estimate(lambda v: v[..., 0])
    s2, s2_se = pop.estimate(lambda v: v[..., 1])
    var, var_se = pop.estimate(lambda v: v[..., 1] - v[..., 0] ** 2)
    return Moments(float(mu), float(mu_se), float(s2), float(s2_se), float(var), float(var_se),
                   tau.name, pop.method, pop.n_samples)


def spike_strengths(model, preprocess="saturating", *, n_samples: int = DEFAULT_N_SAMPLES,
                    seed: int = 0) -> SpikeStrengths:
    """Spike strengths ``θ_k = E[τ(y) He₂(z_k)]``, k = 1..m*.

    For even links and orthonormal directions, ``E T = μ_τ I + Σ_k θ_k w_k w_kᵀ``
    (for other links ``E T`` also has the off-diagonal terms ``E[τ z_k z_l]``).
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
    pop, tau = population(model, preprocess, n_samples, seed)
    th, se = pop.estimate(lambda v: v[..., 2:])
    readonly(th, se)
    return SpikeStrengths(th, se, tau.name, pop.method, pop.n_samples)
