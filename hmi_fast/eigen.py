"""Top-k eigenpairs of a symmetric matrix: thick-restart block Lanczos.

Why this algorithm
------------------
The spectral matrices of this package are dense, ``d`` up to a few thousand,
and the wanted pairs are a few outliers plus the edge of a semicircle-like
bulk, where consecutive gaps are of order ``d^(-2/3)`` of the bulk width.
Three things decide the speed there:

* **Passes over A.** A dense ``d x d`` matrix does not fit in cache, so one
  product ``A @ V`` with ``b`` columns costs about the same time for
  ``b = 1`` and ``b = 16``: memory traffic, not flops, bounds it. A *block*
  Krylov method reads ``A`` once per ``b`` vectors (BLAS-3 ``gemm``); the
  single-vector Lanczos of ARPACK (``eigsh``) reads it once per vector.
* **Small gaps.** Convergence of the ``k``-th pair is governed by its gap to
  the first pair *outside* the search space. A subspace comfortably larger
  than ``k`` (and a block at least as wide as any cluster) turns the tiny
  edge gaps into a large effective gap. A block also resolves a cluster of
  up to ``b`` nearly equal eigenvalues, which single-vector Lanczos with a
  small subspace can miss while reporting convergence (scipy issue 26112).
* **Robustness.** Every new block is orthogonalised against the whole basis
  twice (classical Gram-Schmidt, twice, as two ``gemm`` pairs): full
  reorthogonalisation, no ghost eigenvalues. The projected matrix
  ``H = Q^T A Q`` is assembled explicitly from the stored products
  ``A Q``, so Rayleigh-Ritz needs no three-term recurrence to stay accurate.

Thick restart (Wu & Simon) keeps the Ritz vectors nearest the wanted end
when the basis is full; converged wanted pairs are *locked*: they leave the
active basis, new blocks are kept orthogonal to them, and they are no longer
updated. LOBPCG would need three block products of the same width per step
and converges no faster on this spectrum; a block Krylov-Schur scheme is the
same method written with a Schur form.

Convergence criterion
---------------------
A Ritz pair ``(theta, v)`` is converged when ``||A v - theta v|| <= tol *
||A||_est``, with ``||A||_est`` the largest ``|theta|`` seen so far (a lower
bound of ``||A||_2`` that is sharp once the extreme pairs are found). The
residual of each Ritz pair is read off the coupling of the basis to the next
block, ``||B s_last||``, which costs nothing; the residuals returned are
recomputed from the stored products ``A Q`` (no extra product with ``A``).
An eigenvalue with residual ``r`` is within ``r`` of an exact eigenvalue
(and within ``r^2 / gap`` when isolated), so the default ``tol = 1e-10``
gives eigenvalues to ``1e-10`` relative or better.

When the dense solver is used instead
-------------------------------------
For ``d <= 64``, for ``k > d / 3``, and whenever the Lanczos basis would not
fit in ``d`` dimensions, ``scipy.linalg.eigh`` is faster and exact: it is
called directly (an operator is then materialised with ``d`` products).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ._config import jit

try:  # prange is only used by the symmetry scan
    from numba import prange
except ImportError:  # pragma: no cover
    prange = range

__all__ = ["ConvergenceWarning", "EighResult", "topk_eigh"]

WHICH = ("LA", "SA", "BE")

#: matrices up to this size always go to the dense solver.
DENSE_MAX_D = 64

#: relative asymmetry max|A - A^T| / max|A| tolerated, per dtype.
SYMMETRY_RTOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-5}

_TILE = 64


class ConvergenceWarning(UserWarning):
    """topk_eigh stopped at ``max_iter`` before every wanted pair converged."""


@dataclass(frozen=True)
class EighResult:
    """Result of :func:`topk_eigh`.

    Attributes
    ----------
    values : ndarray of shape (k,)
        ``"LA"``: descending. ``"SA"``: ascending. ``"BE"``: the
        ``ceil(k/2)`` largest in descending order, then the ``floor(k/2)``
        smallest in ascending order.
    vectors : ndarray of shape (d, k)
        Orthonormal eigenvectors (float64), column ``i`` for ``values[i]``.
    residuals : ndarray of shape (k,)
        ``||A v_i - values[i] v_i||``.
    n_matvec : int
        Products of ``A`` with a vector (a block of ``b`` counts ``b``).
    n_iter : int
        Block products (Lanczos steps); 0 for the dense solver.
    converged : bool
        Whether every returned pair met the tolerance.
    method : str
        ``"lanczos"`` or ``"dense"``.
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    n_matvec: int
    n_iter: int
    converged: bool
    method: str = "lanczos"


# ---------------------------------------------------------------- kernels


@jit(parallel=True)
def _symmetry_scan(A, tile, out):
    """One tiled pass over A: per tile-row pair, max|A_ij - A_ji|, max|A_ij|, count of non-finite.

    ``out`` has shape ``(n_pairs, 3)``; iteration ``p`` writes row ``p`` only.
    Tile rows ``p`` and ``nt - 1 - p`` go together so every iteration does
    the same work.
    """
    d = A.shape[0]
    nt = (d + tile - 1) // tile
    npair = (nt + 1) // 2
    for p in prange(npair):
        asym = 0.0
        amax = 0.0
        bad = 0.0
        for side in range(2):
            ti = p if side == 0 else nt - 1 - p
            if side == 1 and ti == p:
                continue
            i0 = ti * tile
            i1 = min(i0 + tile, d)
            for tj in range(ti, nt):
                j0 = tj * tile
                j1 = min(j0 + tile, d)
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        a = A[i, j]
                        c = A[j, i]
                        if not (abs(a) < np.inf and abs(c) < np.inf):
                            bad += 1.0
                            continue
                        t = abs(a - c)
                        if t > asym:
                            asym = t
                        if abs(a) > amax:
                            amax = abs(a)
                        if abs(c) > amax:
                            amax = abs(c)
        out[p, 0] = asym
        out[p, 1] = amax
        out[p, 2] = bad


def _orthonormalize(W, Qb, rng, scale):
    """Make the columns of ``W`` orthonormal and orthogonal to ``Qb`` (in place where possible).

    Classical Gram-Schmidt twice against ``Qb``, then Householder QR. A
    column whose norm after projection is below ``scale * 1e-12`` (the block
    has hit an invariant subspace, e.g. the zero matrix) is replaced by a
    random vector orthogonal to everything, so the basis keeps growing.
    Returns the orthonormal block.
    """
    if Qb.shape[1]:
        for _ in range(2):
            W -= Qb @ (Qb.T @ W)
    P, R = np.linalg.qr(W)
    diag = np.abs(np.diag(R))
    bad = diag <= 1e-12 * max(scale, np.max(diag, initial=0.0), np.finfo(float).tiny)
    if not bad.any():
        return P
    nbad = int(bad.sum())
    G = rng.standard_normal((W.shape[0], nbad))
    P = np.concatenate([P[:, ~bad], G], axis=1)
    for _ in range(2):
        if Qb.shape[1]:
            P -= Qb @ (Qb.T @ P)
        P, _r = np.linalg.qr(P)
    return P


def _priority(theta, n_top, n_bot):
    """Indices of ``theta`` (ascending) ordered from the top end and from the bottom end."""
    m = len(theta)
    top = np.arange(m - 1, m - 1 - n_top, -1)
    bot = np.arange(0, n_bot)
    return top, bot


# ---------------------------------------------------------------- operator wrapper


class _Operator:
    """``A`` as products with blocks of float64 vectors, counting them."""

    def __init__(self, A, d, kind):
        self.A = A
        self.d = d
        self.kind = kind  # "dense", "sparse" or "operator"
        self.n_matvec = 0

    def matmat(self, X):
        self.n_matvec += X.shape[1]
        if self.kind in ("dense", "sparse"):
            return np.asarray(self.A @ X, dtype=np.float64)
        A = self.A
        if hasattr(A, "matmat"):
            Y = np.asarray(A.matmat(X), dtype=np.float64)
        else:
            Y = np.column_stack([np.asarray(A.matvec(X[:, j]), dtype=np.float64).reshape(-1) for j in range(X.shape[1])])
        Y = Y.reshape(self.d, X.shape[1])
        if not np.isfinite(Y).all():
            raise ValueError("A: the operator returned NaN or inf; check the operator's matvec/matmat")
        return Y

    def dense(self):
        if self.kind == "dense":
            return self.A
        if self.kind == "sparse":
            return self.A.toarray().astype(np.float64)
        M = self.matmat(np.eye(self.d))
        return (M + M.T) / 2


# ---------------------------------------------------------------- validation


def _as_operator(A):
    """Validate ``A`` and wrap it; dense float32 is converted to float64 once."""
    if sp.issparse(A):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A: must be a square 2-D matrix, got shape {A.shape}")
        if A.dtype.kind not in "fiub":
            raise TypeError(f"A: unsupported dtype {A.dtype}; convert to np.float32 or np.float64")
        A = A.tocsr().astype(np.float64)
        if A.nnz and not np.isfinite(A.data).all():
            raise ValueError("A: contains NaN or inf; remove or replace the non-finite entries")
        amax = float(abs(A).max()) if A.nnz else 0.0
        asym = float(abs(A - A.T).max()) if A.nnz else 0.0
        _check_asym(asym, amax, np.dtype(np.float64))
        return _Operator(A, A.shape[0], "sparse")
    if not isinstance(A, np.ndarray) and hasattr(A, "shape") and (hasattr(A, "matmat") or hasattr(A, "matvec")):
        shape = tuple(A.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"A: must be a square 2-D operator, got shape {shape}")
        return _Operator(A, int(shape[0]), "operator")
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"A: must be a square 2-D array, got an array with {A.ndim} dimension(s) of shape {A.shape}")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A: must be square, got shape {A.shape}")
    if A.dtype.kind in "iub":
        A = A.astype(np.float64)
    elif A.dtype not in SYMMETRY_RTOL:
        raise TypeError(f"A: unsupported dtype {A.dtype}; convert to np.float32 or np.float64")
    dtype = A.dtype
    d = A.shape[0]
    if d:
        nt = (d + _TILE - 1) // _TILE
        out = np.zeros(((nt + 1) // 2, 3))
        _symmetry_scan(A, _TILE, out)
        if out[:, 2].sum() > 0:
            raise ValueError(f"A: contains {int(out[:, 2].sum())} NaN or inf entries; A must be finite")
        _check_asym(float(out[:, 0].max()), float(out[:, 1].max()), dtype)
    if dtype != np.float64:
        A = A.astype(np.float64)  # documented: float32 input is computed in float64
    return _Operator(A, d, "dense")


def _check_asym(asym, amax, dtype):
    rtol = SYMMETRY_RTOL[np.dtype(dtype)]
    if asym > rtol * amax:
        raise ValueError(
            f"A: is not symmetric: max|A - A^T| / max|A| = {asym / amax:.3g} exceeds {rtol:g} for {np.dtype(dtype)}; "
            "pass (A + A.T) / 2"
        )


def _check_k(k, d, which):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k: must be an integer between 1 and d={d}, got {k!r}")
    k = int(k)
    if not 1 <= k <= d:
        raise ValueError(f"k: must be between 1 and d={d}, got {k}")
    if which == "BE" and math.ceil(k / 2) > d / 2:
        raise ValueError(
            f"k: with which='BE', ceil(k/2)={math.ceil(k / 2)} eigenvalues from the top would pass the middle "
            f"of the spectrum (d={d}); use k <= {2 * (d // 2)} or which='LA'/'SA'"
        )
    return k


def _ends(k, which):
    if which == "LA":
        return k, 0
    if which == "SA":
        return 0, k
    return (k + 1) // 2, k // 2


def _check_v0(v0, d):
    if v0 is None:
        return None
    V = np.asarray(v0, dtype=np.float64)
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != d or V.shape[1] < 1:
        raise ValueError(f"v0: must have shape ({d},) or ({d}, c) with c >= 1, got shape {np.shape(v0)}")
    if not np.isfinite(V).all():
        raise ValueError("v0: contains NaN or inf; pass a finite start vector")
    return V


def _start_block(V, d, b, rng):
    G = rng.standard_normal((d, b))
    if V is not None:
        G[:, : V.shape[1]] = V
    return G


# ---------------------------------------------------------------- public function


def topk_eigh(A, k, *, which="LA", tol=1e-10, max_iter=None, block_size=None, seed=None, v0=None) -> EighResult:
    """The ``k`` extreme eigenpairs of a symmetric matrix or operator.

    Thick-restart block Lanczos with full reorthogonalisation and locking;
    the products with ``A`` and the orthogonalisation are BLAS-3 ``gemm``
    (see the module docstring for the algorithm, the convergence criterion
    and when the dense solver is used instead).

    Parameters
    ----------
    A : ndarray, sparse matrix or operator
        Dense symmetric ``(d, d)`` float32/float64 array (float32 is
        converted once to float64 and computed in float64; integers to
        float64), a scipy sparse matrix, or any object with ``shape`` and
        ``matmat`` and/or ``matvec`` (e.g. ``scipy.sparse.linalg.LinearOperator``);
        an operator's symmetry is assumed, not checked.
    k : int
        Number of eigenpairs, ``1 <= k <= d``.
    which : {"LA", "SA", "BE"}
        Largest algebraic, smallest algebraic, or both ends: ``ceil(k/2)``
        from the top and ``floor(k/2)`` from the bottom (as ARPACK's "BE").
    tol : float
        Converged when ``||A v - lambda v|| <= tol * ||A||_est``.
    max_iter : int, optional
        Most block products (default ``10 * ceil(d / block_size) + 100``).
    block_size : int, optional
        Vectors per block (default ``min(max(8, ceil(k/2)), 24)``).
    seed : int or numpy.random.Generator, optional
        Start block; ``None`` means seed 0, so results are reproducible by default.
    v0 : ndarray of shape (d,) or (d, c), optional
        Start vector(s), completed with random columns to ``block_size``
        (``c > block_size`` widens the block to ``c``).

    Returns
    -------
    EighResult
        ``values``, ``vectors``, ``residuals``, ``n_matvec``, ``n_iter``,
        ``converged``, ``method``.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` is reached first; the best estimates are returned
        with ``converged=False``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast.eigen import topk_eigh
    >>> A = np.diag(np.arange(100.0))
    >>> topk_eigh(A, 3).values
    array([99., 98., 97.])
    """
    if which not in WHICH:
        raise ValueError(f"which: must be one of {WHICH}, got {which!r}")
    op = _as_operator(A)
    d = op.d
    if d == 0:
        raise ValueError("A: is empty (d = 0); give at least a 1 x 1 matrix")
    k = _check_k(k, d, which)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: must be a positive finite number, got {tol!r}")
    tol = float(tol)
    if block_size is None:
        b = min(max(8, math.ceil(k / 2)), 24)
    else:
        if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 1:
            raise ValueError(f"block_size: must be a positive integer, got {block_size!r}")
        b = int(block_size)
    if max_iter is None:
        max_iter = 10 * math.ceil(d / b) + 100
    elif isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter: must be a positive integer, got {max_iter!r}")
    V0 = _check_v0(v0, d)
    if V0 is not None:
        b = max(b, V0.shape[1])  # a wider start block widens the block
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(0 if seed is None else seed)
    n_top, n_bot = _ends(k, which)
    m_max = _subspace_size(k, b)
    if d <= DENSE_MAX_D or 3 * k > d or k + m_max + b > d:
        return _dense(op, n_top, n_bot)
    P0 = _start_block(V0, d, b, rng)
    return _lanczos(op, n_top, n_bot, tol, int(max_iter), b, m_max, rng, P0)


def _subspace_size(k, b):
    """Active basis size at which the iteration restarts (a multiple of b)."""
    m = max(2 * k, k + 3 * b) + b
    return b * math.ceil(m / b)


def _dense(op, n_top, n_bot):
    """All pairs by ``scipy.linalg.eigh`` (small d or k close to d)."""
    M = op.dense()
    d = op.d
    if n_bot == 0:
        lam, V = sla.eigh(M, subset_by_index=[d - n_top, d - 1], check_finite=False)
        lam, V = lam[::-1], V[:, ::-1]
    elif n_top == 0:
        lam, V = sla.eigh(M, subset_by_index=[0, n_bot - 1], check_finite=False)
    else:
        w, U = sla.eigh(M, check_finite=False)
        idx = np.concatenate([np.arange(d - 1, d - 1 - n_top, -1), np.arange(n_bot)])
        lam, V = w[idx], U[:, idx]
    V = np.ascontiguousarray(V)
    res = np.linalg.norm(M @ V - V * lam, axis=0)
    nmv = op.n_matvec + (len(lam) if op.kind == "operator" else 0)
    return EighResult(lam.copy(), V, res, int(nmv), 0, True, "dense")


def _lanczos(op, n_top, n_bot, tol, max_iter, b, m_max, rng, P):
    d = op.d
    k = n_top + n_bot
    cap = k + m_max + b  # columns of the buffers: locked + active + one block
    Q = np.empty((d, cap), order="F")
    AQ = np.empty((d, cap), order="F")
    H = np.zeros((m_max, m_max))
    lock_val = np.empty(k)
    lock_end = np.empty(k, dtype=np.int8)  # +1 top, -1 bottom
    nl = 0  # locked columns Q[:, :nl]
    ma = 0  # active columns Q[:, nl:nl+ma]
    anorm = 0.0
    P = _orthonormalize(P, Q[:, :0], rng, 1.0)
    n_iter = 0
    theta = S = est = None
    done = False
    while True:
        # ---- expand by one block
        j0 = nl + ma
        Q[:, j0 : j0 + b] = P
        W = op.matmat(P)
        n_iter += 1
        AQ[:, j0 : j0 + b] = W
        C = Q[:, : j0 + b].T @ W  # (nl + ma + b, b)
        Ca = C[nl:]
        H[ma : ma + b, :ma] = Ca[:ma].T
        H[:ma, ma : ma + b] = Ca[:ma]
        H[ma : ma + b, ma : ma + b] = (Ca[ma:] + Ca[ma:].T) / 2
        ma += b
        W -= Q[:, : j0 + b] @ C
        W -= Q[:, : j0 + b] @ (Q[:, : j0 + b].T @ W)
        scale = max(anorm, float(np.abs(Ca[ma - b :]).max()))
        P = _orthonormalize(W, Q[:, : j0 + b], rng, scale)
        B = P.T @ AQ[:, j0 : j0 + b]  # coupling of the last block to the next one
        # ---- Rayleigh-Ritz on the active basis
        rem_top = n_top - int(np.sum(lock_end[:nl] == 1))
        rem_bot = n_bot - int(np.sum(lock_end[:nl] == -1))
        full = ma + b > m_max
        if ma >= rem_top + rem_bot + b or full:
            theta, S = sla.eigh(H[:ma, :ma], check_finite=False, driver="evd")
            anorm = max(anorm, float(np.abs(theta).max()), float(np.abs(lock_val[:nl]).max(initial=0.0)))
            est = np.linalg.norm(B @ S[ma - b : ma], axis=0)
            top, bot = _priority(theta, min(rem_top, ma), min(rem_bot, ma))
            want = np.concatenate([top, bot])
            ok = est[want] <= tol * anorm
            if ok.all():
                done = True
        if done or n_iter >= max_iter:
            break
        if not full:
            continue
        # ---- restart: lock converged wanted pairs from each end, keep the nearest others
        conv = est <= tol * anorm
        lk_top = _leading(conv[top])
        lk_bot = _leading(conv[bot])
        extra = max(m_max - 2 * b - (rem_top + rem_bot), 0)  # room kept for non-wanted Ritz vectors
        if rem_top and rem_bot:
            e_top = (extra * rem_top) // (rem_top + rem_bot)
        else:
            e_top = extra if rem_top else 0
        e_bot = extra - e_top
        order_top = np.arange(ma - 1, -1, -1)
        order_bot = np.arange(ma)
        keep_top = order_top[lk_top : rem_top + e_top]
        keep_bot = order_bot[lk_bot : rem_bot + e_bot]
        keep = np.unique(np.concatenate([keep_top, keep_bot]))
        lock = np.concatenate([top[:lk_top], bot[:lk_bot]])
        sel = np.concatenate([lock, keep]).astype(np.intp)
        Ssel = S[:, sel]
        Yq = Q[:, nl : nl + ma] @ Ssel
        Ya = AQ[:, nl : nl + ma] @ Ssel
        nlk = len(lock)
        Q[:, nl : nl + len(sel)] = Yq
        AQ[:, nl : nl + len(sel)] = Ya
        lock_val[nl : nl + nlk] = theta[lock]
        lock_end[nl : nl + lk_top] = 1
        lock_end[nl + lk_top : nl + nlk] = -1
        nl += nlk
        ma = len(keep)
        H[:] = 0.0
        H[np.arange(ma), np.arange(ma)] = theta[keep]
        # P (the pending block) is orthogonal to the old active basis, hence to every kept vector.
    return _finish(op, Q, AQ, nl, ma, lock_val, lock_end, theta, S, est, n_top, n_bot, tol, anorm, n_iter, done)


def _leading(flags):
    """Number of leading True values."""
    if len(flags) == 0 or flags.all():
        return len(flags)
    return int(np.argmin(flags))


def _finish(op, Q, AQ, nl, ma, lock_val, lock_end, theta, S, est, n_top, n_bot, tol, anorm, n_iter, done):
    """Merge locked and active pairs, pick the wanted ones, residuals from the stored products."""
    vals = [lock_val[:nl]]
    V = [Q[:, :nl]]
    AV = [AQ[:, :nl]]
    conv = [np.ones(nl, dtype=bool)]
    if theta is not None:
        vals.append(theta)
        V.append(Q[:, nl : nl + ma] @ S)
        AV.append(AQ[:, nl : nl + ma] @ S)
        conv.append(est <= tol * anorm)
    vals = np.concatenate(vals)
    V = np.concatenate(V, axis=1)
    AV = np.concatenate(AV, axis=1)
    conv = np.concatenate(conv)
    order = np.argsort(vals, kind="stable")
    idx = np.concatenate([order[::-1][:n_top], order[:n_bot]])
    lam = vals[idx]
    X = np.ascontiguousarray(V[:, idx])
    res = np.linalg.norm(AV[:, idx] - X * lam, axis=0)
    ok = conv[idx]
    converged = bool(done and ok.all())
    if not converged:
        import warnings

        warnings.warn(
            f"topk_eigh: {int(ok.sum())} of {len(lam)} eigenpairs converged to tol={tol:g} within max_iter={n_iter} "
            "block products; returning the best estimates (raise max_iter or block_size)",
            ConvergenceWarning,
            stacklevel=3,
        )
    return EighResult(lam, X, res, int(op.n_matvec), int(n_iter), converged, "lanczos")
