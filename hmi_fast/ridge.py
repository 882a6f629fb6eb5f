"""Ridge regression from streamed normal equations, with λ chosen by GCV (docs/network.md).

A linear readout ``ŷ = b + fᵀv`` on ``p`` features is fitted by minimising

    (1/n) Σ_i (y_i − b − f_iᵀ v)² + λ ||v||²          (the intercept b is not penalised)

Everything the fit and its generalised cross-validation need is in the
normal equations: the centred Gram matrix ``G = F_cᵀF_c / n``, the centred
cross moment ``c = F_cᵀ y_c / n``, the centred ``yᵀy / n`` and ``n``. With
one eigendecomposition ``G = U diag(s) Uᵀ`` and ``z = Uᵀ c``, for every λ

    v(λ)      = U diag(1/(s + λ)) z
    RSS(λ)/n  = y_cᵀy_c/n − Σ_i z_i² (s_i + 2λ) / (s_i + λ)²
    tr H(λ)   = 1 + Σ_i s_i / (s_i + λ)                  (1 for the intercept)
    GCV(λ)    = n · RSS / (n − tr H)²

so a whole λ grid costs O(p) per λ after one O(p³) eigendecomposition.
Leave-one-out needs every row's leverage, which the normal equations do not
hold; it is therefore not offered for streamed data.

:class:`NormalEquations` accumulates them in streaming blocks with memory
O(p²): each block is packed (one fused Numba pass) into rows
``[f_i − c, 1, y_i − c_y]`` and one BLAS-3 symmetric rank-k update (dsyrk)
adds its ``(p+2) × (p+2)`` Gram to an F-ordered upper-triangle accumulator,
the same path as :mod:`hmi_fast.accumulator`. The shifts ``c, c_y`` (means of
the first block) keep the later centring free of cancellation. The packing
buffer is float64 whatever the features' dtype: p is small and ridge is
sensitive to the Gram's conditioning.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange
from scipy.linalg import blas

from . import _config
from ._config import jit
from ._validation import check_block, check_finite, check_float_array, check_positive_int

#: relative λ grid of ``ridge="gcv"``: λ = factor × mean eigenvalue of G.
GCV_GRID = np.geomspace(1e-8, 1e2, 41)


@jit(parallel=True)
def _pack_augmented(F, y, shift, yshift, buf, nt):
    """buf[i] = [F[i] − shift, 1, y[i] − yshift]; returns the first row holding NaN/inf, or -1."""
    n, p = F.shape
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            nonfinite = not np.isfinite(y[i])
            for j in range(p):
                v = F[i, j]
                nonfinite |= not np.isfinite(v)
                buf[i, j] = v - shift[j]
            buf[i, p] = 1.0
            buf[i, p + 1] = y[i] - yshift
            if nonfinite and i < bad[t]:
                bad[t] = i
    first = bad.min()
    return -1 if first == n else first


@dataclass(frozen=True)
class RidgeMoments:
    """Centred normal equations, each divided by n.

    ``gram = F_cᵀF_c/n`` (p×p), ``cross = F_cᵀy_c/n`` (p,), ``yy = y_cᵀy_c/n``,
    ``f_mean`` (p,), ``y_mean``, ``n``.
    """

    gram: np.ndarray
    cross: np.ndarray
    yy: float
    f_mean: np.ndarray
    y_mean: float
    n: int


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge readout ``ŷ = intercept + F @ coef``.

    ``lam`` is the λ used; ``lambdas`` and ``gcv`` the grid searched and its
    GCV values (one entry when λ was fixed); ``df`` the effective degrees of
    freedom ``tr H`` (intercept included); ``rss`` the training residual mean
    square ``RSS/n`` at ``lam``; ``n`` the number of samples.
    """

    coef: np.ndarray
    intercept: float
    lam: float
    lambdas: np.ndarray
    gcv: np.ndarray
    df: float
    rss: float
    n: int

    def predict(self, F) -> np.ndarray:
        """``intercept + F @ coef`` for finite features ``F`` (n × p)."""
        F = check_float_array(F, "F", 2)
        if F.shape[1] != self.coef.shape[0]:
            raise ValueError(f"F: has {F.shape[1]} columns, but the readout was fitted on {self.coef.shape[0]}")
        check_finite(F, "F", fix="remove or impute NaN/inf rows first")
        return F @ self.coef.astype(F.dtype, copy=False) + self.intercept


class NormalEquations:
    """Streaming normal equations ``FᵀF, Fᵀy, yᵀy, Σf, Σy, n`` of a linear readout.

    Parameters
    ----------
    p : int
        Number of features (0 allowed: an intercept-only readout).
    block_size : int, optional
        Rows packed per BLAS call (default: 32 MiB of rows, see ``hmi_fast._config.block_rows``); memory is
        ``block_size × (p + 2)`` float64 plus the ``(p+2)²`` accumulator.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast.ridge import NormalEquations
    >>> rng = np.random.default_rng(0)
    >>> F = rng.standard_normal((1000, 3))
    >>> y = 1.0 + F @ [1.0, -2.0, 0.5]
    >>> fit = NormalEquations(3).update(F[:400], y[:400]).update(F[400:], y[400:]).solve(1e-10)
    >>> np.round(fit.coef, 6).tolist(), round(fit.intercept, 6)
    ([1.0, -2.0, 0.5], 1.0)
    """

    def __init__(self, p, *, block_size=None):
        self.p = check_positive_int(p, "p", minimum=0)
        self.block_size = _config.block_rows(max(self.p, 1) + 2, np.float64, block_size)
        self.n = 0
        self.shift = None  # feature shift c (p,), set from the first block
        self.yshift = 0.0
        self._sum = np.zeros((self.p + 2, self.p + 2), dtype=np.float64, order="F")  # upper triangle
        self._buf = None

    # ------------------------------------------------------------ updates
    def update(self, F, y) -> "NormalEquations":
        """Add the rows of one block of features ``F`` (n_b × p) and labels ``y``. Returns ``self``.

        Atomic: a block with a NaN or inf anywhere raises (naming the row) and
        leaves the accumulator exactly as it was.
        """
        F, y = check_block(F, y, self.p, "the readout's p", xname="F")
        n = F.shape[0]
        if n == 0:
            return self
        step = self.block_size
        # a failure in a later chunk must not keep the earlier ones: restore the (p+2)² sum (small)
        saved = (self.shift, self.yshift, self._sum.copy() if n > step else None)
        try:
            if self.shift is None:
                head = slice(0, min(n, step))
                self.shift = np.ascontiguousarray(np.mean(F[head], axis=0, dtype=np.float64))
                self.yshift = float(np.mean(y[head], dtype=np.float64))
                if not (np.all(np.isfinite(self.shift)) and np.isfinite(self.yshift)):
                    self._raise_nonfinite(F, y, self.n)
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                self._add(F[lo:hi], y[lo:hi], self.n + lo)
        except BaseException:
            self.shift, self.yshift = saved[0], saved[1]
            if saved[2] is not None:
                self._sum[...] = saved[2]
            raise
        self.n += n
        return self

    def _add(self, F, y, row0):
        b = F.shape[0]
        if self._buf is None or self._buf.shape[0] < b:
            self._buf = np.empty((min(self.block_size, max(b, 1)), self.p + 2), dtype=np.float64)
        buf = self._buf[:b]
        bad = _pack_augmented(F, y, self.shift, self.yshift, buf, numba.get_num_threads())
        if bad >= 0:
            self._raise_nonfinite(F, y, row0)
        blas.dsyrk(1.0, buf.T, beta=1.0, c=self._sum, trans=0, lower=0, overwrite_c=1)

    def _raise_nonfinite(self, F, y, row0):
        bad_y = ~np.isfinite(y)
        if bad_y.any():
            row = row0 + int(np.argmax(bad_y))
            raise ValueError(f"y: non-finite value at row {row}; remove or impute NaN/inf labels")
        row = int(np.argmax(~np.isfinite(F).all(axis=1)))
        raise ValueError(f"F: non-finite value in row {row0 + row}; remove or impute NaN/inf before the readout")

    def merge(self, other: "NormalEquations") -> "NormalEquations":
        """Add another accumulator's rows (same p). Returns ``self``."""
        if not isinstance(other, NormalEquations):
            raise TypeError(f"other: expected a NormalEquations, got {type(other).__name__}")
        if other.p != self.p:
            raise ValueError(f"other: p differs ({other.p} vs {self.p}); merge readouts with the same features")
        if other.n == 0:
            return self
        if self.n == 0:
            self.shift, self.yshift = other.shift.copy(), other.yshift
            self._sum[...] = other._sum
            self.n = other.n
            return self
        S = _symmetric(other._sum)
        delta = np.zeros(self.p + 2)
        delta[: self.p] = other.shift - self.shift
        delta[self.p + 1] = other.yshift - self.yshift
        # rows a' = a + δ in self's shift: Σa'a'ᵀ = Σaaᵀ + (Σa)δᵀ + δ(Σa)ᵀ + n δδᵀ, Σa = S[:, p]
        s1 = S[:, self.p]
        S += np.outer(s1, delta) + np.outer(delta, s1) + other.n * np.outer(delta, delta)
        self._sum += np.triu(S)
        self.n += other.n
        return self

    # ------------------------------------------------------------ results
    def moments(self) -> RidgeMoments:
        """The centred normal equations divided by n (see :class:`RidgeMoments`)."""
        if self.n == 0:
            raise ValueError("NormalEquations: no rows seen yet; call update() with at least one row first")
        p, n = self.p, self.n
        S = _symmetric(self._sum) / n
        m = S[:, p]  # mean of the shifted augmented rows (the "1" column)
        C = S - np.outer(m, m)
        gram = 0.5 * (C[:p, :p] + C[:p, :p].T)
        return RidgeMoments(np.ascontiguousarray(gram), C[:p, p + 1].copy(), max(float(C[p + 1, p + 1]), 0.0),
                       self.shift + m[:p], self.yshift + float(m[p + 1]), n)

    def solve(self, lam="gcv", lambdas=None) -> RidgeFit:
        """Ridge fit with a fixed ``lam > 0`` or with λ chosen by GCV (see :func:`solve_ridge`)."""
        return solve_ridge(self.moments(), lam, lambdas=lambdas)

    def __repr__(self) -> str:
        return f"NormalEquations(p={self.p}, n={self.n})"


def _symmetric(U: np.ndarray) -> np.ndarray:
    return np.triu(U) + np.triu(U, 1).T


def check_ridge(lam, name: str = "ridge"):
    """``"gcv"`` or a finite float > 0 (TypeError for other types, ValueError for other values)."""
    if isinstance(lam, str):
        if lam != "gcv":
            raise ValueError(f"{name}: unknown rule {lam!r}; use 'gcv' or a number > 0")
        return lam
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"{name}: must be 'gcv' or a finite number > 0, got {lam!r}")
    if not np.isfinite(lam) or lam <= 0:
        raise ValueError(f"{name}: must be 'gcv' or a finite number > 0, got {lam!r}")
    return float(lam)


def gcv_curve(s, z, yy, n, lambdas):
    """RSS/n, tr H and GCV along ``lambdas`` from the eigenpairs (s, z = Uᵀc) of the centred Gram.

    Returns ``(rss, df, gcv)`` arrays. ``gcv`` is ``inf`` where ``tr H >= n``.
    """
    lam = np.asarray(lambdas, dtype=np.float64)[:, None]
    s = np.maximum(np.asarray(s, dtype=np.float64), 0.0)[None, :]
    z2 = (np.asarray(z, dtype=np.float64) ** 2)[None, :]
    rss = np.maximum(yy - np.sum(z2 * (s + 2 * lam) / (s + lam) ** 2, axis=1), 0.0)
    df = 1.0 + np.sum(s / (s + lam), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gcv = np.where(df < n, rss / (1.0 - df / n) ** 2, np.inf)
    return rss, df, gcv


def solve_ridge(moments: RidgeMoments, lam="gcv", lambdas=None) -> RidgeFit:
    """Ridge readout from centred normal equations.

    Parameters
    ----------
    moments : RidgeMoments
        From :meth:`NormalEquations.moments`.
    lam : "gcv" or float
        A fixed λ > 0 (in the units of the objective above), or ``"gcv"``
        to minimise GCV over ``lambdas``.
    lambdas : array, optional
        The grid for ``"gcv"``; default ``GCV_GRID × tr(G)/p`` (41 log-spaced
        factors from 1e-8 to 1e2 of the mean eigenvalue).

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast.ridge import NormalEquations, solve_ridge
    >>> rng = np.random.default_rng(1)
    >>> F = rng.standard_normal((500, 4)); y = F[:, 0] + 0.1 * rng.standard_normal(500)
    >>> fit = solve_ridge(NormalEquations(4).update(F, y).moments())
    >>> bool(abs(fit.coef[0] - 1) < 0.05), fit.lambdas.size
    (True, 41)
    """
    if not isinstance(moments, RidgeMoments):
        raise TypeError(f"moments: expected RidgeMoments (from NormalEquations.moments()), got {type(moments).__name__}")
    lam = check_ridge(lam)
    mo = moments
    n, p = mo.n, mo.gram.shape[0]
    if p == 0:
        return RidgeFit(np.zeros(0), mo.y_mean, 0.0 if lam == "gcv" else lam, np.zeros(1), np.full(1, mo.yy),
                        1.0, mo.yy, n)
    s, U = np.linalg.eigh(mo.gram)
    s = np.maximum(s, 0.0)
    z = U.T @ mo.cross
    if lam == "gcv":
        if lambdas is None:
            scale = float(np.mean(s))
            grid = GCV_GRID * (scale if scale > 0 else 1.0)
        else:
            try:
                grid = np.asarray(lambdas, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise TypeError(f"lambdas: must be an array of numbers > 0, got {lambdas!r}") from None
            if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
                raise ValueError("lambdas: must be a non-empty array of finite numbers > 0")
        rss, df, gcv = gcv_curve(s, z, mo.yy, n, grid)
        best = int(np.argmin(gcv))
        chosen = float(grid[best])
    else:
        grid = np.array([lam])
        rss, df, gcv = gcv_curve(s, z, mo.yy, n, grid)
        best, chosen = 0, lam
    coef = U @ (z / (s + chosen))
    intercept = mo.y_mean - float(mo.f_mean @ coef)
    return RidgeFit(coef, intercept, chosen, grid, gcv, float(df[best]), float(rss[best]), n)


def fit_ridge(F, y, lam="gcv", *, lambdas=None, block_size=None) -> RidgeFit:
    """Ridge regression of ``y`` on the columns of in-memory ``F`` (with an unpenalised intercept).

    Accumulates the normal equations in blocks (see :class:`NormalEquations`)
    and solves them (see :func:`solve_ridge`).

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast.ridge import fit_ridge
    >>> F = np.random.default_rng(0).standard_normal((200, 2))
    >>> fit = fit_ridge(F, 3.0 - F[:, 1], lam=1e-9)
    >>> np.allclose(fit.coef, [0.0, -1.0]), round(fit.intercept, 6)
    (True, 3.0)
    """
    F = check_float_array(F, "F", 2)
    y = check_float_array(y, "y", 1)
    if F.shape[0] == 0:
        raise ValueError("F: has no rows; the readout needs at least one sample")
    check_ridge(lam)
    return NormalEquations(F.shape[1], block_size=block_size).update(F, y).solve(lam, lambdas)
