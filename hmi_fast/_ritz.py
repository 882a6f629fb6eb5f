"""Building blocks of the eigensolver: orthonormal blocks, Rayleigh-Ritz in float64, eigenvalue error bounds.

:mod:`hmi_fast.eigen` runs the Lanczos iteration; this module holds what it
and its final step share: making a block orthonormal and orthogonal to a
basis whatever its conditioning, the float64 Rayleigh-Ritz step that turns
the iteration's Ritz vectors (computed with float32 products for a dense
``A``) into the returned pairs, and the bounds on eigenvalue errors that
decide convergence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from ._config import jit
from ._operator import _dot_rows


@jit()
def _cholqr2(Wt, Pt, scale):
    """Cholesky QR twice of the rows of ``Wt`` into ``Pt`` (both ``(b, d)``); False when ill-conditioned.

    The Gram matrix ``Wt Wt^T``, its Cholesky factor ``L`` and the forward
    substitution ``Pt = L^{-1} Wt`` done in one serial call (a block is a
    few vectors: NumPy's dozen small calls cost more than the arithmetic).
    Refuses (returns False, ``Pt`` undefined) when a row norm is below
    ``1e-4`` of the largest or below ``1e-12 * max(scale, largest)``, or
    when ``L``'s diagonal spreads by more than ``1e4``: the caller then uses
    column-pivoted Householder QR.
    """
    b, d = Wt.shape
    G = np.empty((b, b))
    src = Wt
    for npass in range(2):
        if npass == 1:
            scale = 1.0  # the rows are now of norm about 1
        for p in range(b):
            for q in range(p + 1):
                acc = 0.0
                u = src[p]
                v = src[q]
                for j in range(d):
                    acc += u[j] * v[j]
                G[p, q] = acc
        gmax = 0.0
        gmin = np.inf
        for p in range(b):
            g = np.sqrt(abs(G[p, p]))
            gmax = max(gmax, g)
            gmin = min(gmin, g)
        if not (gmin > 1e-4 * gmax and gmin > 1e-12 * max(scale, gmax, 1e-300)):
            return False
        # Cholesky, lower triangle of G in place
        for p in range(b):
            acc = G[p, p]
            for r in range(p):
                acc -= G[p, r] * G[p, r]
            if not acc > 0.0:
                return False
            lpp = np.sqrt(acc)
            G[p, p] = lpp
            for q in range(p + 1, b):
                t = G[q, p]
                for r in range(p):
                    t -= G[q, r] * G[p, r]
                G[q, p] = t / lpp
        lmax = 0.0
        lmin = np.inf
        for p in range(b):
            lmax = max(lmax, G[p, p])
            lmin = min(lmin, G[p, p])
        if not lmin > 1e-4 * lmax:
            return False
        # forward substitution, row by row: Pt[p] = (src[p] - sum_r L[p, r] Pt[r]) / L[p, p]
        for p in range(b):
            out = Pt[p]
            u = src[p]
            inv = 1.0 / G[p, p]
            for j in range(d):
                out[j] = u[j]
            for r in range(p):
                c = G[p, r]
                w = Pt[r]
                for j in range(d):
                    out[j] -= c * w[j]
            for j in range(d):
                out[j] *= inv
        src = Pt
    return True


def _orthonormalize(Wt, Qt, rng, scale):
    """Orthonormal rows spanning those of ``Wt``, which the caller made orthogonal to the rows of ``Qt``.

    Cholesky QR twice; column-pivoted Householder QR when the block is
    ill-conditioned. A direction whose norm is below ``1e-12 * scale`` (the
    block hit an invariant subspace, e.g. the zero matrix) is replaced by a
    random vector orthogonal to ``Qt`` and the rest, so the basis keeps
    growing. Returns a new C-contiguous ``(b, d)`` array.
    """
    Wt = np.ascontiguousarray(Wt, dtype=np.float64)
    Pt = np.empty_like(Wt)
    if Wt.shape[0] and _cholqr2(Wt, Pt, float(scale)):
        return Pt
    # Rank-revealing (column-pivoted) Householder QR: the leading columns of Q
    # span range(W) even when W is rank deficient; without pivoting a
    # negligible column would tilt the ones after it.
    Q, R, _piv = sla.qr(Wt.T, mode="economic", pivoting=True, check_finite=False)
    diag = np.abs(np.diag(R))
    bad = diag <= 1e-12 * max(scale, np.max(diag, initial=0.0), np.finfo(float).tiny)
    if not bad.any():
        return np.ascontiguousarray(Q.T)
    G = np.concatenate([Q.T[~bad], rng.standard_normal((int(bad.sum()), Wt.shape[1]))])
    for _ in range(2):
        if Qt.shape[0]:
            G -= (G @ Qt.T) @ Qt
        Q, _r = np.linalg.qr(G.T)
        G = Q.T
    return np.ascontiguousarray(G)


def _cosines(Pt, Qt):
    """``Pt @ Qt.T`` by the numba kernel (both C-contiguous rows): one pass over ``Qt``."""
    D = np.empty((Pt.shape[0], Qt.shape[0]))
    if Qt.flags.c_contiguous and Pt.flags.c_contiguous and Qt.dtype == Pt.dtype == np.float64:
        _dot_rows(Qt, Pt, D, 1.0)
    else:
        np.matmul(Pt, Qt.T, out=D)
    return D


def _orthogonal_block(Wt, Qt, rng, scale, cos_tol=1e-12):
    """:func:`_orthonormalize`, then checked against ``Qt`` and corrected.

    When a block nearly lies in ``span(Qt)`` (an invariant subspace is
    close), what is left after the projections is mostly rounding, and
    normalising it brings back components along ``Qt``; so the cosines with
    ``Qt`` are measured, and while one exceeds ``cos_tol`` the block is
    projected and made orthonormal again (directions that vanish are
    replaced by random ones). One ``(b, j)`` product when nothing is wrong.
    """
    Pt = _orthonormalize(Wt, Qt, rng, scale)
    for _ in range(3):
        if not Qt.shape[0]:
            break
        D = _cosines(Pt, Qt)
        if np.abs(D).max(initial=0.0) <= cos_tol:
            break
        Pt -= D @ Qt
        Pt -= (Pt @ Qt.T) @ Qt
        Pt = _orthonormalize(Pt, Qt, rng, 1.0)
    return Pt


@dataclass
class _State:
    """Where the Lanczos iteration stopped: Ritz values, residual estimates, vectors (rows)."""

    values: np.ndarray
    residuals: np.ndarray
    vectors: np.ndarray
    anorm: float
    n_iter: int
    block: int
    refined: np.ndarray | None = None


@dataclass
class _Refined:
    """Final Ritz pairs (vectors as columns), which met the tolerances, block products so far."""

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    ok: np.ndarray
    n_iter: int

    @property
    def converged(self):
        return bool(self.ok.all())


def _error_bounds(theta, res, wanted, other_vals=(), other_res=()):
    """Bound on the eigenvalue error of each wanted Ritz value: ``min(r, r^2 / gap)``.

    A Ritz value ``theta`` with residual ``r`` is within ``r`` of an
    eigenvalue, and within ``r^2 / gap`` of it when no other eigenvalue is
    closer than ``gap`` (Kato-Temple). ``gap`` is estimated from the two
    adjacent Ritz values (active and ``other``, e.g. locked, together), each
    moved towards ``theta`` by its own residual: a neighbour that has not
    converged shrinks the gap, and when the gap does not exceed ``r`` the
    bound is ``r``. (An eigenvalue the Krylov space has not found yet is
    invisible to this and to any residual test.)
    """
    vals = np.concatenate([theta, np.asarray(other_vals, dtype=float)])
    rs = np.concatenate([res, np.asarray(other_res, dtype=float)])
    unit = _unit(vals)  # work in units of max |theta|: no underflow of r^2
    vals, rs, theta, res = vals / unit, rs / unit, theta / unit, res / unit
    order = np.argsort(vals, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    pos = rank[wanted]
    th = theta[wanted]
    r = res[wanted]
    gap = np.full(len(wanted), np.inf)
    for step in (-1, 1):
        nb = pos + step
        ok = (nb >= 0) & (nb < len(order))
        j = order[np.clip(nb, 0, len(order) - 1)]
        gap = np.where(ok, np.minimum(gap, np.abs(th - vals[j]) - rs[j]), gap)
    with np.errstate(over="ignore"):
        return unit * np.where(gap > r, r * r / np.maximum(gap, np.finfo(float).tiny), r)


def _unit(values):
    """A power of two near ``max |values|`` (1 when all are zero): scales bounds without rounding."""
    top = float(np.abs(values).max(initial=0.0))
    return math.ldexp(1.0, math.frexp(top)[1]) if top > 0 and math.isfinite(top) else 1.0


def _within(res, rtol, anorm):
    """``res <= rtol * anorm``, all true when there is no residual tolerance (``rtol = inf``)."""
    return np.full(len(res), True) if math.isinf(rtol) else res <= rtol * anorm


def _outside_bounds(theta, res, want, near, n_top, mu_top, mu_bot):
    """Eigenvalue error estimates that use the gap to the spectrum outside the kept subspace.

    In a basis of the kept Ritz vectors (wanted pairs and neighbours) and
    their complement, ``A = [[Theta, E^T], [E, A_perp]]`` and column ``i`` of
    ``E`` has the norm ``r_i`` of the residual of pair ``i``. Second-order
    perturbation theory gives ``lambda_i - theta_i = e_i^T E^T (theta_i -
    A_perp)^{-1} E e_i + ...``, at most ``r_i^2 / eta_i`` with ``eta_i`` the
    distance from ``theta_i`` to the spectrum of ``A_perp`` (below
    ``mu_top``, above ``mu_bot``: estimated from the next Ritz values); the
    couplings through ``E`` to the other kept pairs add a relative
    ``r_j^2 / (eta_i |theta_i - theta_j|)``, included. When the residuals
    are at the level of rounding and spread over the whole spectrum (float32
    products) this is far below the pair-by-pair bound, whose gap is to the
    adjacent pair. ``inf`` where ``eta_i <= 0``.
    """
    unit = _unit(theta)
    theta, res, mu_top, mu_bot = theta / unit, res / unit, mu_top / unit, mu_bot / unit
    th = theta[want]
    eta = np.where(np.arange(len(want)) < n_top, th - mu_top, mu_bot - th)
    r = res[want]
    sep = np.abs(th[:, None] - theta[near][None, :])
    sep[want[:, None] == near[None, :]] = np.inf
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cross = (res[near][None, :] ** 2 / (np.maximum(eta, 0.0)[:, None] * sep)).max(axis=1, initial=0.0)
        est = r * r / eta * (1.0 + cross)
    return unit * np.where((eta > 0) & np.isfinite(est), est, np.inf)


#: block Krylov steps in float64 after the float32 iteration, before the
#: iteration itself goes on in float64.
POLISH_STEPS = 3


def _refine(op, state, n_top, n_bot, tols, rng, steps=POLISH_STEPS):
    """Rayleigh-Ritz in float64 on the wanted Ritz vectors and their next neighbours, extended if needed.

    One product with ``A`` (float64) gives the projection, the Ritz pairs,
    their true residuals and error bounds; converged when every wanted
    bound is at most ``tol * ||A||_est``. Otherwise the residuals of those
    pairs, made orthonormal, extend the subspace (a block Krylov step, one
    more product) and the Rayleigh-Ritz step is repeated, at most
    ``steps`` times. Products are kept, so residuals cost no extra product.
    """
    b = state.block
    tol, rtol = tols
    order = np.argsort(state.values, kind="stable")
    n = len(order)
    e_top = min(b, n - n_top - n_bot) if n_top else 0
    e_bot = min(b, n - n_top - n_bot - e_top) if n_bot else 0
    idx = np.unique(np.concatenate([order[::-1][: n_top + e_top], order[: n_bot + e_bot]]))
    # the outside spectrum's ends, from the next Ritz values at each end, moved by their residuals
    outer = n - n_top - e_top - n_bot - e_bot > 0
    mu_top = state.values[order[n - 1 - n_top - e_top]] + state.residuals[order[n - 1 - n_top - e_top]] if outer else np.inf
    mu_bot = state.values[order[n_bot + e_bot]] - state.residuals[order[n_bot + e_bot]] if outer else -np.inf
    # orthonormal to rounding (the basis is kept orthogonal to 1e-12)
    V = _orthonormalize(np.ascontiguousarray(state.vectors[idx]), state.vectors[:0], rng, 1.0)
    AV = op.matmat_t(V)
    n_ext = 0
    while True:
        G = V @ AV.T
        theta, S = np.linalg.eigh((G + G.T) / 2)
        St = np.ascontiguousarray(S.T)
        Z = St @ V
        R = St @ AV - theta[:, None] * Z
        res = np.linalg.norm(R, axis=1)
        p = len(theta)
        want = np.concatenate([np.arange(p - 1, p - 1 - n_top, -1), np.arange(n_bot)]).astype(np.intp)
        near = np.concatenate([np.arange(p - 1, p - 1 - n_top - e_top, -1), np.arange(n_bot + e_bot)]).astype(np.intp)
        anorm = max(state.anorm, float(np.abs(theta).max(initial=0.0)))
        bounds = _error_bounds(theta, res, want)
        if (n_top and not e_top) or (n_bot and not e_bot):
            bounds = res[want]  # no neighbour beyond the wanted ones: no gap to estimate
        if p > len(near):  # Ritz values of the extension beyond the kept ones bound the outside too
            mu_top = max(mu_top, theta[p - 1 - n_top - e_top] + res[p - 1 - n_top - e_top])
            mu_bot = min(mu_bot, theta[n_bot + e_bot] - res[n_bot + e_bot])
        # A neighbour kept beside the wanted pairs locates an eigenvalue only to within its
        # residual, and the spectrum the subspace has not resolved (e.g. the rest of a
        # cluster wider than the block) can reach that far: measure eta to there too
        side_top = np.arange(p - 1 - n_top, p - 1 - n_top - e_top, -1)
        side_bot = np.arange(n_bot, n_bot + e_bot)
        reach_top = max(mu_top, float(np.max(theta[side_top] + res[side_top], initial=-np.inf)))
        reach_bot = min(mu_bot, float(np.min(theta[side_bot] - res[side_bot], initial=np.inf)))
        bounds = np.minimum(bounds, _outside_bounds(theta, res, want, near, n_top, reach_top, reach_bot))
        ok = (bounds <= tol * anorm) & _within(res[want], rtol, anorm)
        converged = bool(ok.all())
        if converged or n_ext >= steps or p + len(near) > op.d:
            break
        Rt = R[near]
        for _ in range(2):  # residuals are orthogonal to V up to rounding, which their own size can match
            Rt -= (Rt @ V.T) @ V
        P = _orthogonal_block(Rt, V, rng, anorm)
        V = np.concatenate([V, P])
        AV = np.concatenate([AV, op.matmat_t(P)])
        n_ext += 1
    state.refined = Z[near]
    return _Refined(theta[want], np.ascontiguousarray(Z[want].T), res[want], ok, state.n_iter + n_ext)
