"""SIR and SAVE matrices from per-slice moments, in the whitened frame, and the map back to x (docs/sliced.md).

With ``Σ̂ = L Lᵀ`` the Cholesky factor of the covariance of x (divided by n,
as statsmodels and ``sliced`` do), the whitened rows are
``z = L⁻¹ (x − x̄)``; ``p_h = n_h / n``.

* SIR:  ``M = Σ_h p_h m_h m_hᵀ``, ``m_h = L⁻¹ (x̄_h − x̄)`` (rank at most ``H − 1``);
* SAVE: ``M = Σ_h p_h (I − V_h)² = I − 2 Σ p_h V_h + Σ p_h V_h²``,
  ``V_h = L⁻¹ Σ̂_h L⁻ᵀ`` with ``Σ̂_h`` divided by ``n_h − ddof``;
* bias-corrected SAVE (Li & Zhu 2007, as statsmodels' ``bc=True``):
  ``M = I − 2 Σ p_h V_h + k₁ Σ p_h V_h² − k₂ Ψ`` (``ddof = 1``), with ``c = n / H``,
  ``k₁ = c (c − 1) / ((c − 1)² + 1)``, ``k₂ = (c − 1) / ((c − 1)² + 1)`` and ``Ψ``
  from the second pass (:class:`~hmi_fast.sliced.SliceResidualAccumulator`).

``Σ p_h V_h²`` is computed without forming a whitened ``V_h``:
``V_h² = L⁻¹ (Uᵀ U) L⁻ᵀ`` with ``U = L⁻¹ Σ̂_h`` (one ``trsm`` and one ``syrk``
per slice, ``2 d³`` flops), so SAVE costs ``2 (H + 1) d³`` flops beyond the pass.

The eigenvalues do not depend on the square root chosen for ``Σ̂``; the
Cholesky frame is statsmodels' own, so its matrices are reproduced exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas

from .sliced import METHODS, SliceResidualAccumulator, _sym

__all__ = ["WhitenedMatrix", "whitened_matrix"]


class WhitenedMatrix:
    """A SIR or SAVE matrix in the whitened frame and what maps it back to x.

    Attributes
    ----------
    matrix : ndarray (d, d)
        The symmetric matrix ``M`` in the frame ``z = L⁻¹ (x − mean)``.
    whitener : ndarray (d, d)
        ``L``, lower triangular, ``Σ̂ = L Lᵀ``.
    mean : ndarray (d,)
    n : int
    counts, edges : ndarray
        Rows per slice and the interior slice edges.
    method : str
    factor : ndarray (H', d) or None
        SIR only: ``B`` with ``M = Bᵀ B``, one row ``√p_h m_h`` per non-empty slice.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import SlicedAccumulator, slice_edges
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((2000, 3)) * [1.0, 2.0, 3.0]; y = X[:, 2] + 0.1 * rng.standard_normal(2000)
    >>> wm = SlicedAccumulator(3, slice_edges(y, 10)).update(X, y).finalize("sir")
    >>> vals, vecs = np.linalg.eigh(wm.matrix)
    >>> beta = wm.directions(vecs[:, -1:])[0]
    >>> bool(abs(beta[2]) / np.linalg.norm(beta) > 0.999)  # y depends on x_3 only
    True
    """

    def __init__(self, matrix, whitener, mean, n, counts, edges, method, factor=None):
        self.matrix = matrix
        self.whitener = whitener
        self.mean = mean
        self.n = n
        self.counts = counts
        self.edges = edges
        self.method = method
        self.factor = factor

    @property
    def n_slices(self) -> int:
        """Non-empty slices."""
        return int(np.count_nonzero(self.counts))

    def directions(self, vectors) -> np.ndarray:
        """x-space directions ``β = L⁻ᵀ v`` of whitened-frame vectors (columns in, rows out).

        ``βᵢᵀ Σ̂ βⱼ = vᵢᵀ vⱼ``: orthonormal ``v`` give Σ̂-orthonormal ``β``
        (statsmodels' ``params``), and ``(x − x̄)ᵀ β`` are the sufficient
        predictors, of unit variance and uncorrelated over the rows seen.
        """
        V = np.asarray(vectors, dtype=np.float64)
        return sla.solve_triangular(self.whitener, V, lower=True, trans="T").T

    def __repr__(self) -> str:
        return f"WhitenedMatrix(method={self.method!r}, d={self.matrix.shape[0]}, n={self.n}, slices={self.n_slices})"


def whitened_matrix(acc, method="sir", *, ddof=None, correction=None) -> WhitenedMatrix:
    """The SIR, SAVE or bias-corrected SAVE matrix of a :class:`~hmi_fast.SlicedAccumulator`."""
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    acc._need_rows("finalize")
    if acc.n < 2:
        raise ValueError(f"finalize: {acc.n} row seen; the covariance of x needs at least 2")
    L = acc.whitener()
    p = acc.counts / acc.n
    live = np.flatnonzero(acc.counts)
    args = (L, acc.mean(), acc.n, acc.counts.copy(), acc.edges.copy(), method)
    if method == "sir":
        if ddof is not None or correction is not None:
            raise ValueError("ddof, correction: apply to SAVE only; leave them unset for method='sir'")
        B = (acc._sums[live] / acc.counts[live, None] - acc._sums.sum(axis=0) / acc.n).T  # d × live
        B = sla.solve_triangular(L, B, lower=True) * np.sqrt(p[live])
        M = B @ B.T
        return WhitenedMatrix(0.5 * (M + M.T), *args, factor=np.ascontiguousarray(B.T))
    if not acc.per_slice:
        raise ValueError("method: SAVE needs one Gram per slice; build the accumulator with per_slice=True")
    if method == "save_bc":
        if ddof not in (None, 1):
            raise ValueError(f"ddof: bias-corrected SAVE uses slice covariances divided by n_h - 1, got ddof={ddof}")
        ddof = 1
        if not isinstance(correction, SliceResidualAccumulator):
            raise TypeError(
                "correction: bias-corrected SAVE needs a SliceResidualAccumulator fed the same rows in a second "
                "pass (see SlicedAccumulator.residual_accumulator)"
            )
        if correction.n != acc.n or not np.array_equal(correction.edges, acc.edges):
            raise ValueError(
                f"correction: saw {correction.n} rows (moments: {acc.n}) or other edges; "
                "feed it the same rows as the moments"
            )
    else:
        if correction is not None:
            raise ValueError("correction: applies to method='save_bc' only")
        ddof = 0 if ddof is None else ddof
        if isinstance(ddof, bool) or ddof not in (0, 1):
            raise ValueError(f"ddof: must be 0 or 1, got {ddof!r}")
    small = [int(h) for h in live if acc.counts[h] - ddof < 1]
    if small:
        raise ValueError(
            f"ddof: slice {small[0]} holds {acc.counts[small[0]]} row(s), too few for a covariance divided by "
            f"n_h - {ddof}; use fewer slices or ddof=0"
        )
    A1, A2 = _save_parts(acc, L, p, live, ddof)
    M = np.eye(acc.d) - 2.0 * A1
    if method == "save":
        M += A2
    else:
        c = acc.n / live.size
        k1 = c * (c - 1.0) / ((c - 1.0) ** 2 + 1.0)
        k2 = (c - 1.0) / ((c - 1.0) ** 2 + 1.0)
        M += k1 * A2 - k2 * correction.finalize()
    return WhitenedMatrix(0.5 * (M + M.T), *args)


def _save_parts(acc, L, p, live, ddof):
    """``Σ p_h V_h`` and ``Σ p_h V_h²`` in the whitened frame, one slice at a time."""
    d = acc.d
    S1 = np.zeros((d, d))
    S2 = np.zeros((d, d), order="F")
    for h in live:
        C = acc.slice_covariance(h, ddof)
        S1 += p[h] * C
        U = sla.solve_triangular(L, C, lower=True, overwrite_b=True, check_finite=False)  # L⁻¹ Σ̂_h
        blas.dsyrk(p[h], np.asfortranarray(U), beta=1.0, c=S2, trans=1, lower=0, overwrite_c=1)  # += p Uᵀ U
    out = []
    for S in (S1, _sym(S2)):
        W = sla.solve_triangular(L, S, lower=True, check_finite=False)
        W = sla.solve_triangular(L, W.T, lower=True, check_finite=False)
        out.append(0.5 * (W + W.T))
    return out
