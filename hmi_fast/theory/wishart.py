"""Spectrum of a spiked weighted Wishart matrix: the exact finite-α theory (docs/theory.md §3).

``T = (1/n) Σ_i w_i x_i x_iᵀ`` with ``x_i ~ N(0, I_d)`` and i.i.d. weights
``w_i`` of a discrete law ``(t_j, p_j)``, in the limit d, n → ∞ with
``c = d/n`` fixed. With

    ψ(λ) = λ (c + E[w/(λ − w)])          (λ outside the support of w)

* **bulk**: its Stieltjes transform m solves Silverstein's equation
  ``m = 1/(−x + E[w/(1 + c w m)])``; with ``λ = −1/(c m)`` this reads
  ``x = ψ(λ)``. The upper edge is ``min ψ`` over ``λ > max(t_max, 0)``,
  the lower edge ``max ψ`` over ``λ < min(t_min, 0)``, both at the critical
  points ``ψ'(λ̄) = c − E[w²/(λ̄ − w)²] = 0``; where no critical point exists
  the edge is ψ at the end of the support (a hard edge).
* **spikes** (the latent coordinates ``z = W x`` enter the weights): with
  ``Θ(λ) = E[w (z zᵀ − I)/(λ − w)]`` (m* × m*), an outlier sits at ``ψ(λ*)``
  for each root of ``ν(Θ(λ*)) = c`` beyond the critical point, ν an
  eigenvalue of Θ; its eigenvector puts the mass
  ``ψ'(λ*) / (λ* vᵀ E[w (z zᵀ − I)/(λ* − w)²] v)`` on the latent space, along
  the unit eigenvector v. For one direction this is Lu & Li (2017) and
  Mondelli & Montanari (2018): ``ψ(λ*) = φ(λ*)`` with
  ``φ(λ) = λ E[w z²/(λ − w)]``, squared overlap ``ψ'/(ψ' − φ')``.

Everything is computed once per law on a grid of λ (distances ``s`` from
the end of the support, log-spaced over 18 decades), then refined per
query: the diagonal case (even links) by Newton steps on exact sums, the
matrix case on cubic Hermite interpolants of Θ in s.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._config import jit

#: λ grid: distances s = R·10^u from the end of the support, u in [−9, 9], this many points per decade
_DECADES = (-9.0, 9.0)
_PER_DECADE = 40


@jit(parallel=True)
def _law_sums(t, p, lam, s1, s2, s3):
    """s1 = Σ p t/(λ − t), s2 = Σ p t²/(λ − t)², s3 = Σ p t²/(λ − t)³ for each λ."""
    for i in prange(lam.size):
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        li = lam[i]
        for j in range(t.size):
            r = 1.0 / (li - t[j])
            v = p[j] * t[j] * r
            a1 += v
            v *= t[j] * r
            a2 += v
            a3 += v * r
        s1[i] = a1
        s2[i] = a2
        s3[i] = a3


@jit(parallel=True)
def _pair_sums_kernel(t, WT, lam, cols, o1, o2):
    """o1 = Σ_j WT[col, j] t_j/(λ − t_j), o2 = Σ_j WT[col, j] t_j/(λ − t_j)² per pair (λ, col)."""
    for i in prange(lam.size):
        a1 = 0.0
        a2 = 0.0
        li = lam[i]
        c = cols[i]
        for j in range(t.size):
            r = 1.0 / (li - t[j])
            v = WT[c, j] * t[j] * r
            a1 += v
            a2 += v * r
        o1[i] = a1
        o2[i] = a2


def law_sums(t, p, lam):
    """(S1, S2, S3) at each λ: E[w/(λ − w)], E[w²/(λ − w)²], E[w²/(λ − w)³] for the law (t, p)."""
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    flat = lam.reshape(-1)
    out = [np.empty(flat.size) for _ in range(3)]
    _law_sums(t, p, flat, *out)
    return tuple(o.reshape(lam.shape) for o in out)


def _pair_sums(t, WT, lam, cols):
    """``Σ_j WT[cols_i, j] t_j/(λ_i − t_j)`` and the same over ``(λ_i − t_j)²``, for pairs (λ_i, cols_i)."""
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    o1, o2 = np.empty(lam.size), np.empty(lam.size)
    _pair_sums_kernel(t, WT, lam, np.ascontiguousarray(cols, dtype=np.int64), o1, o2)
    return o1, o2


def _hermite(s0, s1, f0, f1, d0, d1, s):
    """Cubic Hermite interpolant on [s0, s1] in u = log s (values f, derivatives d = df/ds); value and df/ds at s."""
    u0, u1 = np.log(s0), np.log(s1)
    h = (u1 - u0).reshape((-1,) + (1,) * (f0.ndim - 1))
    x = ((np.log(s) - u0).reshape(h.shape)) / h
    g0, g1 = d0 * s0.reshape(h.shape) * h, d1 * s1.reshape(h.shape) * h  # df/dx
    x2, x3 = x * x, x * x * x
    val = (2 * x3 - 3 * x2 + 1) * f0 + (x3 - 2 * x2 + x) * g0 + (-2 * x3 + 3 * x2) * f1 + (x3 - x2) * g1
    dx = (6 * x2 - 6 * x) * f0 + (3 * x2 - 4 * x + 1) * g0 + (-6 * x2 + 6 * x) * f1 + (3 * x2 - 2 * x) * g1
    return val, dx / (h * s.reshape(h.shape))


class WeightLaw:
    """A discrete law of weights, optionally with spike masses, and the exact spectrum it implies.

    Parameters
    ----------
    values, probabilities : 1-D arrays
        Atoms ``t_j`` and their probabilities (non-negative, summing to 1).
    spikes : array of shape (G, m) or (G, m, m), optional
        ``E[(z_k² − 1) 1{w = t_j}]`` per atom (diagonal: even links), or the
        whole ``E[(z zᵀ − I) 1{w = t_j}]``.

    Examples
    --------
    The Marchenko–Pastur law (every weight 1): edges ``(1 ± √c)²``.

    >>> import numpy as np
    >>> from hmi_fast.theory import WeightLaw
    >>> law = WeightLaw([1.0], [1.0])
    >>> np.round(law.edges(np.array([0.25])).edges, 6).tolist()
    [[0.25, 2.25]]
    >>> x = np.linspace(0.3, 2.2, 5)
    >>> bool(np.all(law.density(0.25, x) > 0))
    True
    """

    def __init__(self, values, probabilities, spikes=None):
        t = np.asarray(values, dtype=np.float64)
        p = np.asarray(probabilities, dtype=np.float64)
        if t.ndim != 1 or t.size == 0 or p.shape != t.shape:
            raise ValueError(f"probabilities: must be a 1-D array of the shape of values {t.shape}, got {p.shape}")
        if not (np.isfinite(t).all() and np.isfinite(p).all()):
            raise ValueError("values: the law's values and probabilities must be finite")
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError("probabilities: must be >= 0 with a positive sum")
        p = p / p.sum()
        if spikes is not None and np.shape(spikes)[0] != t.size:
            raise ValueError(f"spikes: needs one row per value ({t.size}), got shape {np.shape(spikes)}")
        keep = p > 0
        if spikes is not None:
            spikes = np.asarray(spikes, dtype=np.float64)
            keep |= np.any(spikes.reshape(spikes.shape[0], -1) != 0, axis=1)
        self.t, self.p = t[keep], p[keep]
        self.spikes = None if spikes is None else spikes[keep]
        self._spikes_T = None if spikes is None or self.spikes.ndim != 2 else np.ascontiguousarray(self.spikes.T)
        self.diagonal = self.spikes is None or self.spikes.ndim == 2
        self.m = 0 if self.spikes is None else self.spikes.shape[1]
        support = self.t  # every node that carries mass, of the law or of the spikes
        self.t_min, self.t_max = float(support.min()), float(support.max())
        self.scale = max(float(np.max(np.abs(support))), 1e-300)
        self.mean = float(self.p @ self.t)
        self.second_moment = float(self.p @ self.t**2)
        self._ends = {}

    # ---------------------------------------------------------------- per-end grids

    def _end(self, side):
        if side not in self._ends:
            self._ends[side] = _End(self, side)
        return self._ends[side]

    def psi(self, lam, c):
        """ψ(λ) = λ (c + E[w/(λ − w)])."""
        lam = np.asarray(lam, dtype=np.float64)
        return lam * (c + law_sums(self.t, self.p, lam)[0])

    def dpsi(self, lam, c):
        """ψ'(λ) = c − E[w²/(λ − w)²]."""
        return c - law_sums(self.t, self.p, lam)[1]

    def edges(self, c):
        """Bulk edges for aspect ratios c = d/n (> 0): ``.edges``, ``.scales`` (…, 2) and ``.hard``."""
        c = _check_c(c)
        out = [self._end(side).edge(c) for side in (-1, 1)]
        return _Edges(*(np.stack([lo, hi], axis=-1) for lo, hi in zip(*out)))

    def spikes_at(self, c):
        """Outliers at each end for aspect ratios c (1-D): positions, branch overlaps, directions."""
        c = _check_c(c).reshape(-1)
        return [self._end(side).spikes(c) for side in (1, -1)]

    def emergence(self):
        """Per branch and end: the largest c at which its outlier exists (0 where it never does)."""
        return [self._end(side).emergence() for side in (1, -1)]

    def density(self, c, x):
        """Density of the bulk at the points x (Silverstein's equation)."""
        return _density(self, float(_check_c(c)), np.asarray(x, dtype=np.float64))


def _check_c(c):
    c = np.asarray(c, dtype=np.float64)
    if not (np.isfinite(c).all() and (c > 0).all()):
        raise ValueError(f"c: the aspect ratio d/n must be finite and > 0, got {c!r}")
    return c


class _Edges:
    def __init__(self, edges, lam, scales, hard):
        self.edges, self.lam, self.scales, self.hard = edges, lam, scales, hard


class _End:
    """The λ grid beyond one end of the support (side +1: top, −1: bottom) and the functions on it."""

    def __init__(self, law: WeightLaw, side: int):
        self.law, self.side = law, side
        self.b = max(law.t_max, 0.0) if side > 0 else min(law.t_min, 0.0)
        u = np.linspace(*_DECADES, int((_DECADES[1] - _DECADES[0]) * _PER_DECADE) + 1)
        self.s = law.scale * 10.0**u
        self.lam = self.b + side * self.s
        self._grid = False
        self._emergence = None

    def _ensure_grid(self):
        """S2, Θ and D (and D3 for the matrix case) on the λ grid: what the spike solvers bracket on."""
        if self._grid:
            return
        self._grid = True
        law = self.law
        t, p = law.t, law.p
        r = 1.0 / (self.lam[:, None] - t)
        X1 = t * r
        X2 = X1 * r
        self.S2 = X2 @ (p * t)
        if law.spikes is not None:
            m = law.m
            flat = law.spikes.reshape(law.t.size, -1)
            self.theta = (X1 @ flat).reshape((-1,) + law.spikes.shape[1:])  # (L, m) or (L, m, m)
            self.D = (X2 @ flat).reshape(self.theta.shape)
            if not law.diagonal:
                self.D3 = ((X2 * r) @ flat).reshape(-1, m, m)
                self.nu = np.linalg.eigvalsh(self.theta)[:, ::-1]  # descending

    # ---------------------------------------------------------------- edges

    def critical(self, c):
        """Distance s̄ of the critical point from the end of the support, and whether the edge is hard.

        ``S2(s) = E[w²/(λ(s) − w)²]`` decreases in s; safeguarded Newton in log s on ``S2 = c``.
        """
        c = np.asarray(c, dtype=np.float64)
        law = self.law
        S2_lo = law_sums(law.t, law.p, np.array([self.b + self.side * self.s[0]]))[1][0]
        hard = c >= S2_lo
        logc = np.log(np.maximum(c, 1e-300))
        u_lo = np.full(c.shape, math.log(self.s[0]))
        u_hi = np.full(c.shape, math.log(self.s[-1]))
        # start from the semicircle's critical point, √(E w²/c) beyond the mean
        guess = np.abs(law.mean - self.b) + np.sqrt(law.second_moment / np.maximum(c, 1e-300))
        u = np.clip(np.log(np.maximum(guess, 1e-300)), u_lo, u_hi)
        active = np.flatnonzero(~hard)
        for _ in range(200):
            if active.size == 0:
                break
            ua = u[active]
            s = np.exp(ua)
            _, S2, S3 = law_sums(law.t, law.p, self.b + self.side * s)
            f = np.log(np.maximum(S2, 1e-300)) - logc[active]
            lo = np.where(f > 0, ua, u_lo[active])
            hi = np.where(f <= 0, ua, u_hi[active])
            u_lo[active], u_hi[active] = lo, hi
            df = -2.0 * self.side * s * S3 / np.maximum(S2, 1e-300)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = ua - f / df
            bad = ~np.isfinite(new) | (new < lo) | (new > hi)
            new = np.where(bad, 0.5 * (lo + hi), new)
            u[active] = new
            active = active[(np.abs(new - ua) > 1e-12) & (hi - lo > 1e-12)]
        sbar = np.where(hard, self.s[0], np.exp(u))
        return sbar, hard

    def edge(self, c):
        sbar, hard = self.critical(c)
        lam = self.b + self.side * sbar
        S1, _, S3 = law_sums(self.law.t, self.law.p, lam)
        edge = lam * (c + S1)
        if self.b == 0.0:  # weights of one sign and c beyond the critical range: ψ(0) = 0 (zero eigenvalues)
            edge = np.where(hard, 0.0, edge)
        with np.errstate(invalid="ignore"):
            scale = (c * lam**2 * np.sqrt(np.abs(S3))) ** (2.0 / 3.0)
        semi = np.sqrt(c * self.law.second_moment)
        scale = np.where(hard | ~np.isfinite(scale), semi, scale)
        return edge, lam, scale, hard

    # ---------------------------------------------------------------- spikes

    def spikes(self, c):
        law = self.law
        if law.spikes is None:
            raise ValueError("this law has no spike masses")
        self._ensure_grid()
        sbar, _ = self.critical(c)
        if law.diagonal:
            return self._spikes_diagonal(c, sbar)
        return self._spikes_matrix(c, sbar)

    def _roots_on_grid(self, f, c, sbar):
        """(c index, branch, i) of the grid intervals [s_i, s_{i+1}] that hold the largest root of f = c beyond s̄.

        The largest i with f(s_i) >= c is found from the suffix maximum of f along s (non-increasing).
        """
        L = self.s.size
        rev = np.maximum.accumulate(f[::-1], axis=0)  # rev[L-1-i] = max_{i' >= i} f(s_i'), non-decreasing
        i = np.stack([L - np.searchsorted(rev[:, b], c, side="left") - 1 for b in range(f.shape[1])], axis=1)
        ok = (i >= 0) & (i < L - 1)
        ok &= self.s[np.clip(i + 1, 0, L - 1)] > sbar[:, None]
        ai, bi = np.nonzero(ok)
        return ai, bi, i[ai, bi]

    def _spikes_diagonal(self, c, sbar):
        law, t, WT = self.law, self.law.t, self.law._spikes_T
        A, m = c.size, law.m
        ai, ki, ii = self._roots_on_grid(self.theta, c, sbar)
        lo = np.maximum(self.s[ii], sbar[ai])
        hi = self.s[ii + 1].copy()
        cc = c[ai]
        # θ_k(lo) >= c > θ_k(hi) unless lo = s̄ and the root lies below it (then no outlier)
        valid = _pair_sums(t, WT, self.b + self.side * lo, ki)[0] >= cc
        s = np.sqrt(lo * hi)
        active = np.flatnonzero(valid)
        for _ in range(100):  # safeguarded Newton on θ_k(λ(s)) = c, dθ/ds = −side·D
            if active.size == 0:
                break
            sa = s[active]
            f, D = _pair_sums(t, WT, self.b + self.side * sa, ki[active])
            f -= cc[active]
            lo[active] = np.where(f >= 0, sa, lo[active])
            hi[active] = np.where(f < 0, sa, hi[active])
            with np.errstate(divide="ignore", invalid="ignore"):
                new = sa + f / (self.side * D)
            la, ha = lo[active], hi[active]
            bad = ~np.isfinite(new) | (new < la) | (new > ha)
            new = np.where(bad, np.sqrt(la * ha), new)
            s[active] = new
            active = active[(np.abs(new - sa) > 1e-12 * sa) & (ha - la > 1e-12 * ha)]
        ai, ki, s, cc = ai[valid], ki[valid], s[valid], cc[valid]
        lam = self.b + self.side * s
        S1, S2, _ = law_sums(t, law.p, lam)
        _, D = _pair_sums(t, WT, lam, ki)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.clip((cc - S2) / (lam * D), 0.0, 1.0)
        position = np.full((A, m), np.nan)
        mass = np.zeros((A, m))
        vectors = np.zeros((A, m, m))
        noise = np.full((A, m), np.nan)
        position[ai, ki] = lam * (cc + S1)
        mass[ai, ki] = q
        vectors[:, np.arange(m), np.arange(m)] = 1.0
        noise[ai, ki] = _outlier_noise(q, lam, S1, S2, cc)
        return _Spikes(position, mass, vectors, noise, self.side)

    def _interp_matrix(self, i, s):
        """Θ, dΘ/ds, D (cubic Hermite in log s) at s inside [s_i, s_{i+1}]."""
        s0, s1 = self.s[i], self.s[i + 1]
        sg = -self.side
        th, dth = _hermite(s0, s1, self.theta[i], self.theta[i + 1], sg * self.D[i], sg * self.D[i + 1], s)
        D, _ = _hermite(s0, s1, self.D[i], self.D[i + 1], 2 * sg * self.D3[i], 2 * sg * self.D3[i + 1], s)
        return th, dth, D

    def _spikes_matrix(self, c, sbar):
        law = self.law
        A, m = c.size, law.m
        ai, ji, ii = self._roots_on_grid(self.nu, c, sbar)
        lo = np.maximum(self.s[ii], sbar[ai])
        hi = self.s[ii + 1].copy()
        cc = c[ai]
        col = m - 1 - ji  # eigh sorts ascending; branch j is the j-th largest
        th, _, _ = self._interp_matrix(ii, lo)
        valid = np.linalg.eigvalsh(th)[np.arange(ji.size), col] >= cc
        s = np.sqrt(lo * hi)
        active = np.flatnonzero(valid)
        for _ in range(100):  # safeguarded Newton on ν_j(s) = c, dν/ds = vᵀ (dΘ/ds) v
            if active.size == 0:
                break
            sa = s[active]
            th, dth, _ = self._interp_matrix(ii[active], sa)
            w, V = np.linalg.eigh(th)
            r = np.arange(active.size)
            v = V[r, :, col[active]]
            f = w[r, col[active]] - cc[active]
            df = np.einsum("pi,pij,pj->p", v, dth, v)
            lo[active] = np.where(f >= 0, sa, lo[active])
            hi[active] = np.where(f < 0, sa, hi[active])
            with np.errstate(divide="ignore", invalid="ignore"):
                new = sa - f / df
            la, ha = lo[active], hi[active]
            bad = ~np.isfinite(new) | (new < la) | (new > ha)
            new = np.where(bad, np.sqrt(la * ha), new)
            s[active] = new
            active = active[(np.abs(new - sa) > 1e-10 * sa) & (ha - la > 1e-10 * ha)]
        keep = np.flatnonzero(valid)
        ai, ji, ii, s, cc, col = ai[keep], ji[keep], ii[keep], s[keep], cc[keep], col[keep]
        th, _, D = self._interp_matrix(ii, s)
        _, V = np.linalg.eigh(th)
        v = V[np.arange(ji.size), :, col]
        lam = self.b + self.side * s
        S1, S2, _ = law_sums(law.t, law.p, lam)
        den = lam * np.einsum("pi,pij,pj->p", v, D, v)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.clip((cc - S2) / den, 0.0, 1.0)
        position = np.full((A, m), np.nan)
        mass = np.zeros((A, m))
        vectors = np.zeros((A, m, m))
        noise = np.full((A, m), np.nan)
        position[ai, ji] = lam * (cc + S1)
        mass[ai, ji] = q
        vectors[ai, ji] = v
        noise[ai, ji] = _outlier_noise(q, lam, S1, S2, cc)
        return _Spikes(position, mass, vectors, noise, self.side)

    # ---------------------------------------------------------------- thresholds

    def emergence(self):
        """Largest c (per branch) at which the branch has an outlier at this end.

        The outlier meets the critical point where ``ν(λ) = S2(λ)`` (ν: θ_k(λ), or the branch's
        eigenvalue of Θ(λ)); beyond the largest such s the branch is above the critical curve.
        """
        if self._emergence is not None:
            return self._emergence
        self._ensure_grid()
        law = self.law
        F = (self.theta if law.diagonal else self.nu) - self.S2[:, None]
        m = law.m
        out = np.zeros(m)
        neg = F < 0
        last = np.where(neg.any(axis=0), self.s.size - 1 - np.argmax(neg[::-1], axis=0), -1)
        ever = (F > 0).any(axis=0)
        out[ever & (last < 0)] = self.S2[0]  # above the critical curve everywhere the grid reaches
        ks = np.flatnonzero(ever & (last >= 0) & (last < self.s.size - 1))
        if ks.size:
            lo, hi = self.s[last[ks]], self.s[last[ks] + 1]  # F(lo) < 0 <= F(hi)
            for _ in range(45):
                mid = np.sqrt(lo * hi)
                neg = self._F(ks, last[ks], mid) < 0
                lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
            s = np.sqrt(lo * hi)
            out[ks] = law_sums(law.t, law.p, self.b + self.side * s)[1]
        readonly_out = out
        readonly_out.setflags(write=False)
        self._emergence = readonly_out
        return out

    def _F(self, ks, idx, s):
        """ν_k(λ(s)) − S2(λ(s)) for branches ks at distances s (grid intervals idx for the matrix case)."""
        law = self.law
        lam = self.b + self.side * s
        S2 = law_sums(law.t, law.p, lam)[1]
        if law.diagonal:
            return _pair_sums(law.t, law._spikes_T, lam, ks)[0] - S2
        th, _, _ = self._interp_matrix(idx, s)
        return np.linalg.eigvalsh(th)[np.arange(ks.size), law.m - 1 - ks] - S2


def _outlier_noise(q, lam, S1, S2, c):
    """n · Var of an outlier eigenvalue, to leading order (docs/theory.md §3.4).

    ``ℓ̂ − ℓ ≈ q · δM`` with δM the fluctuation of the latent matrix ``(1/n) Σ M_ii z_i z_iᵀ − Bᵀ(C − ℓ)⁻¹B``
    along the outlier's direction, ``M_ii = h(τ_i) = λτ_i/(λ − τ_i)``: its diagonal part has variance
    ``Var(h z²)/n ≈ (3 E h² − (E h)²)/n`` (z taken independent of τ, as for the weak directions whose
    selection is in doubt) and its off-diagonal part ``2 (E h²)² m'(ℓ) c/n = 2 (E h²)²/(n λ² ψ'(λ))``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return (q * lam) ** 2 * (3.0 * S2 - S1**2 + 2.0 * S2**2 / (c - S2))


class _Spikes:
    """Outliers at one end for A aspect ratios and m branches (NaN where none)."""

    def __init__(self, position, mass, vectors, noise, side):
        self.position = position  # (A, m)
        self.mass = mass  # (A, m): squared norm of the eigenvector's latent part
        self.vectors = vectors  # (A, m branches, m directions): unit latent directions
        self.noise = noise  # (A, m): n · Var(outlier eigenvalue)
        self.side = side

    @property
    def overlaps(self):
        """(A, branch, direction): squared overlap of each outlier's eigenvector with each w_k."""
        return self.mass[:, :, None] * self.vectors**2


# ---------------------------------------------------------------- bulk density


def _density(law: WeightLaw, c: float, x: np.ndarray) -> np.ndarray:
    """ρ(x) = Im m(x + i0)/π with m = −1/(cλ) and ψ(λ) = x, Im λ > 0 (Newton with continuation)."""
    lo_e, hi_e = law.edges(np.array([c])).edges[0]
    out = np.zeros(x.shape)
    inside = (x > lo_e) & (x < hi_e)
    if not inside.any():
        return out
    xs = np.sort(np.unique(x[inside]))[::-1]  # from the top edge down
    top = law._end(1)
    sbar, _ = top.critical(np.array([c]))
    lam_bar = top.b + sbar[0]
    d2 = 2.0 * abs(law_sums(law.t, law.p, np.array([lam_bar]))[2][0])
    t, p = law.t, law.p
    pt, pt2 = p * t, p * t * t
    rho = np.zeros(xs.size)
    lam = complex(lam_bar, math.sqrt(2.0 * max(hi_e - xs[0], 1e-300) / max(d2, 1e-300)))
    for idx, xv in enumerate(xs):  # continuation: each root starts the next Newton solve
        lam = _newton_psi(t, pt, pt2, c, xv, lam)
        if lam is None or lam.imag <= 0:
            lam = _fixed_point(t, p, c, xv)
        rho[idx] = max(lam.imag, 0.0) / (math.pi * c * abs(lam) ** 2) if lam is not None else 0.0
    out[inside] = np.interp(x[inside], xs[::-1], rho[::-1])
    return out


def _newton_psi(t, pt, pt2, c, x, lam):
    for _ in range(100):
        r = 1.0 / (lam - t)
        f = lam * (c + np.dot(pt, r)) - x
        df = c - np.dot(pt2, r * r)
        if df == 0:
            return None
        step = f / df
        # keep to the upper half-plane
        new = lam - step
        if new.imag <= 0:
            new = complex(new.real, 0.5 * lam.imag)
        lam = new
        if abs(step) <= 1e-13 * abs(lam):
            return lam
    return None


def _fixed_point(t, p, c, x, eta=1e-9):
    """Damped iteration of Silverstein's equation for m at x + iη (the slow, sure fallback)."""
    z = complex(x, eta)
    m = complex(0.0, 1.0) / max(abs(x), 1e-3)
    for _ in range(20000):
        new = 1.0 / (-z + np.dot(p, t / (1.0 + c * t * m)))
        if abs(new - m) <= 1e-12 * abs(m):
            m = new
            break
        m = 0.5 * (m + new)
    if m == 0:
        return None
    return -1.0 / (c * m)


# ---------------------------------------------------------------- laws from data


def bin_values(values, probabilities=None, nodes: int = 4096):
    """Linear binning of weights (and their probabilities) on a uniform grid of ``nodes`` intervals over their range."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    p = np.full(v.size, 1.0 / v.size) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo or v.size <= nodes:
        order = np.argsort(v, kind="stable")
        return v[order], p[order] / p.sum()
    step = (hi - lo) / nodes
    s = (v - lo) / step
    j = np.minimum(s.astype(np.int64), nodes - 1)
    r = s - j
    P = np.bincount(j, p * (1.0 - r), nodes + 1) + np.bincount(j + 1, p * r, nodes + 1)
    return lo + step * np.arange(nodes + 1), P / P.sum()
