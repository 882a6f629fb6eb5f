"""Top-k eigenpairs of a symmetric matrix: thick-restart block Lanczos.

Why this algorithm
------------------
The spectral matrices of this package are dense, ``d`` up to a few thousand,
and the wanted pairs are a few outliers plus the edge of a semicircle-like
bulk, where consecutive gaps are of order ``d^(-2/3)`` of the bulk width.

* **BLAS-3 products.** ``A`` does not stay in cache, so a product with a
  block of ``b`` vectors (one ``gemm``) costs far less per vector than ``b``
  products with one vector (``gemv``, what ARPACK's ``eigsh`` does): on the
  reference machine (2 cores, OpenBLAS) a 16-vector block costs about 4
  single products at d = 2000. The basis is stored by rows and the product
  is ``X^T A`` (``A`` symmetric), which OpenBLAS runs faster than ``A X``.
* **Small gaps.** The ``k``-th pair converges with its gap to the first pair
  *outside* the search space, so the basis is kept well larger than ``k``
  (``2k + 12b`` vectors) and the block at least as wide as any cluster of
  nearly equal wanted eigenvalues: block Krylov resolves a cluster of up to
  ``b`` of them, which single-vector Lanczos with a small subspace can miss
  while reporting convergence (scipy issue 26112).
* **Robustness.** Each new block is orthogonalised against the whole basis
  twice (classical Gram-Schmidt as ``gemm`` pairs; one pass is not enough,
  its error grows by ``||A p|| / ||w||`` per step), then made orthonormal by
  Cholesky QR twice, or by column-pivoted Householder QR when the block is
  ill-conditioned; directions lost to an invariant subspace (the zero
  matrix, an exact eigenvector in ``v0``) are replaced by random ones. The
  projected matrix ``H = Q A Q^T`` is assembled from the Gram-Schmidt
  coefficients, so Rayleigh-Ritz needs no three-term recurrence.

Thick restart (Wu & Simon): when the basis is full, the Ritz vectors nearest
the wanted end(s) are kept (the wanted ones and half of the remaining room)
together with the pending block, which preserves the Krylov relation.
Converged wanted pairs are *locked*: they leave the active basis, new blocks
stay orthogonal to them, and they no longer change. LOBPCG needs three block
products per step for the same polynomial degree; block Krylov-Schur is this
method written with a Schur form.

Convergence criterion
---------------------
A Ritz pair ``(theta, v)`` has converged when ``||A v - theta v|| <= tol *
||A||_est``, ``||A||_est`` being the largest ``|theta|`` seen (a lower bound of
``||A||_2``, sharp once the extreme pairs are found). During the iteration
the residual is read off the coupling ``B`` of the last block to the next,
``||B s_last||`` (no product with ``A``); Rayleigh-Ritz checks are scheduled
where the residual's geometric decay predicts convergence, from the iterates
only, so a given seed always gives the same result. At the end one product
with the ``k`` returned vectors gives the true residuals (counted in
``n_matvec``). An eigenvalue with residual ``r`` is within ``r`` of an exact
one, and within ``r^2 / gap`` when isolated: the default ``tol = 1e-10``
gives eigenvalues to 1e-10 relative or much better; ``tol = 1e-6`` still
gives about 1e-11 on spectral matrices, with about 25% fewer products.

Threads
-------
The products with ``A`` and the large projections run on the caller's BLAS
threads; the small calls (Cholesky, QR, ``eigh`` of ``H``) on one thread,
where thread start-up and synchronisation cost more than they save.

When the dense solver is used instead
-------------------------------------
For ``d <= 64``, for ``k > d / 3``, and when the Lanczos basis would not fit
in ``d`` dimensions, ``scipy.linalg.eigh`` is faster and exact: it is called
directly (an operator is then materialised with ``d`` products).

Performance and its limits
--------------------------
The bulk-edge pairs need a Krylov polynomial of high degree: on the
Figure-2 spectral matrices (alpha = 164, top 20) about 700 products at
d = 2000 and 850 at d = 4000 for ``tol = 1e-10`` (540 and 630 for
``tol = 1e-6``). ``eigh(subset_by_index)`` reduces the whole matrix to
tridiagonal form, half of its flops in memory-bound BLAS-2, so its cost grows
like d^3 against about d^2.3 here. On the reference machine (2 cores,
OpenBLAS) the crossover is near d = 3000: at d = 2000 ``eigh`` with a subset
is faster, at d = 4000 this solver is 1.5-1.8x faster than the best of
``eigsh`` and ``eigh`` (2.1-2.2x with ``tol = 1e-6``), and the gap widens with
d. ``benchmarks/test_bench_eigen.py`` measures it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from ._operator import (  # noqa: F401  (SYMMETRY_RTOL re-exported)
    SYMMETRY_RTOL,
    WHICH,
    _as_operator,
    _blas_num_threads,
    _blas_threads,
    _check_k,
    _check_v0,
)

__all__ = ["ConvergenceWarning", "EighResult", "topk_eigh"]


#: matrices up to this size always go to the dense solver.
DENSE_MAX_D = 64

#: with method="auto", dense matrices below this size go to LAPACK: measured
#: crossover of Lanczos (tol 1e-10) against eigh(subset_by_index) on
#: spectral matrices, 2-core machine (docs/benchmarks.md). "BE" needs two
#: LAPACK calls, so its crossover is lower.
DENSE_AUTO_D = {"LA": 2800, "SA": 2800, "BE": 2000}



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


def _orthonormalize(Wt, Qt, rng, scale):
    """Orthonormal rows spanning those of ``Wt``, which the caller made orthogonal to the rows of ``Qt``.

    Cholesky QR twice; column-pivoted Householder QR when the block is
    ill-conditioned. A direction whose norm is below ``1e-12 * scale`` (the
    block hit an invariant subspace, e.g. the zero matrix) is replaced by a
    random vector orthogonal to ``Qt`` and the rest, so the basis keeps
    growing. Returns a new C-contiguous ``(b, d)`` array.
    """
    G = Wt @ Wt.T
    gd = np.sqrt(np.abs(np.diag(G)))
    tiny = 1e-12 * max(scale, float(gd.max(initial=0.0)), np.finfo(float).tiny)
    if gd.min(initial=np.inf) > 1e-4 * gd.max(initial=0.0) and gd.min(initial=np.inf) > tiny:
        try:
            L = np.linalg.cholesky(G)
        except np.linalg.LinAlgError:
            L = None
        if L is not None and np.abs(np.diag(L)).min() > 1e-4 * np.abs(np.diag(L)).max():
            # (b x b inverses applied by gemm: faster than a triangular solve with d right-hand sides)
            eye = np.eye(len(L))
            Pt = sla.solve_triangular(L, eye, lower=True, check_finite=False) @ Wt
            # a second Cholesky QR pass restores orthonormality to rounding
            L2 = np.linalg.cholesky(Pt @ Pt.T)
            return sla.solve_triangular(L2, eye, lower=True, check_finite=False) @ Pt
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


# ---------------------------------------------------------------- public function


def topk_eigh(A, k, *, which="LA", tol=1e-10, max_iter=None, block_size=None, seed=None, v0=None,
              method="auto") -> EighResult:
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
        Vectors per block (default 8 for ``k <= 24``, 16 for ``k <= 64``, else
        32); at least the size of any cluster of nearly equal wanted eigenvalues.
    seed : int or numpy.random.Generator, optional
        Start block; ``None`` means seed 0, so results are reproducible by default.
    v0 : ndarray of shape (d,) or (d, c), optional
        Start vector(s), completed with random columns to ``block_size``
        (``c > block_size`` widens the block to ``c``).
    method : {"auto", "lanczos", "dense"}
        ``"auto"`` uses LAPACK (``scipy.linalg.eigh`` on index subsets) for
        dense matrices with ``d < DENSE_AUTO_D[which]`` — below that size it
        was measured faster than Lanczos on spectral matrices (see
        ``docs/benchmarks.md``) — and Lanczos otherwise; ``"lanczos"`` forces
        Lanczos except where it makes no sense (tiny d, k close to d);
        ``"dense"`` forces LAPACK.

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
    if method not in ("auto", "lanczos", "dense"):
        raise ValueError(f"method: must be 'auto', 'lanczos' or 'dense', got {method!r}")
    op = _as_operator(A)
    d = op.d
    if d == 0:
        raise ValueError("A: is empty (d = 0); give at least a 1 x 1 matrix")
    k = _check_k(k, d, which)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: must be a positive finite number, got {tol!r}")
    tol = float(tol)
    if block_size is None:
        b = 8 if k <= 24 else (16 if k <= 64 else 32)
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
    n_top, n_bot = {"LA": (k, 0), "SA": (0, k), "BE": ((k + 1) // 2, k // 2)}[which]
    m_max = min(_subspace_size(k, b), b * ((d - k - b) // b))
    auto_dense = method == "auto" and op.kind == "dense" and d < DENSE_AUTO_D[which]
    if method == "dense" or auto_dense or d <= DENSE_MAX_D or 3 * k > d or m_max < k + 3 * b:
        return _dense(op, n_top, n_bot)
    P0 = rng.standard_normal((d, b))
    if V0 is not None:
        P0[:, : V0.shape[1]] = V0
    # small BLAS calls on one thread, products with A on the caller's threads
    op.threads = _blas_num_threads()
    with _blas_threads(1):
        return _lanczos(op, n_top, n_bot, tol, int(max_iter), b, m_max, rng, P0)


def _subspace_size(k, b):
    """Active basis size at which the iteration restarts: ``2k + 12b``, a multiple of b.

    Measured on spectral matrices (d = 1000-4000, k = 20-40): a larger basis
    needs fewer products but costs more to reorthogonalise; this is near the
    optimum across that range.
    """
    m = 2 * k + 12 * b
    return b * math.ceil(m / b)


def _dense(op, n_top, n_bot):
    """All pairs by ``scipy.linalg.eigh`` (small d or k close to d).

    Up to d = 256 on one BLAS thread: faster there than several.
    """
    with _blas_threads(1 if op.d <= 256 else None):
        return _dense_kernel(op, n_top, n_bot)


def _dense_kernel(op, n_top, n_bot):
    M = op.dense()
    d = op.d
    if n_bot == 0:
        lam, V = sla.eigh(M, subset_by_index=[d - n_top, d - 1], check_finite=False)
        lam, V = lam[::-1], V[:, ::-1]
    elif n_top == 0:
        lam, V = sla.eigh(M, subset_by_index=[0, n_bot - 1], check_finite=False)
    elif 3 * (n_top + n_bot) < d:  # two subset calls cost less than all pairs
        lt, Vt = sla.eigh(M, subset_by_index=[d - n_top, d - 1], check_finite=False)
        lb, Vb = sla.eigh(M, subset_by_index=[0, n_bot - 1], check_finite=False)
        lam, V = np.concatenate([lt[::-1], lb]), np.hstack([Vt[:, ::-1], Vb])
    else:
        w, U = sla.eigh(M, check_finite=False)
        idx = np.concatenate([np.arange(d - 1, d - 1 - n_top, -1), np.arange(n_bot)])
        lam, V = w[idx], U[:, idx]
    V = np.ascontiguousarray(V)
    # scipy's BLAS, like the eigh above: alternating between numpy's and scipy's
    # OpenBLAS copies makes each run against the other's spinning threads (2x slower)
    res = np.linalg.norm(sla.blas.dgemm(1.0, M, V) - V * lam, axis=0)
    nmv = op.n_matvec + (len(lam) if op.kind == "operator" else 0)
    return EighResult(lam.copy(), V, res, int(nmv), 0, True, "dense")


def _lanczos(op, n_top, n_bot, tol, max_iter, b, m_max, rng, P):
    """Thick-restart block Lanczos. The basis is stored by rows (``Qt[i]`` is a basis vector).

    Rows ``[0, nl)`` of ``Qt`` hold locked eigenvectors, rows ``[nl, nl + ma)``
    the active basis, whose projection ``H = Q A Q^T`` is assembled from the
    products as they come. ``Pt`` is the pending block: orthonormal,
    orthogonal to every row of ``Qt``, and the only direction in which ``A``
    maps the active basis outside itself, through the last block
    (``A q_last = ... + B^T p``); so the residual of a Ritz pair with
    coefficients ``s`` is ``||B s_last||``.
    """
    d = op.d
    k = n_top + n_bot
    cap = k + m_max + b
    Qt = np.empty((cap, d))
    H = np.zeros((m_max, m_max))
    lock_val = np.empty(k)
    lock_end = np.empty(k, dtype=np.int8)  # +1 top, -1 bottom
    nl = ma = 0
    anorm = 0.0
    Pt = _orthonormalize(P.T.copy(), Qt[:0], rng, 1.0)
    n_iter = 0
    theta = S = est = None
    done = False
    next_rr = 1  # block step of the next Rayleigh-Ritz check
    last = None  # (n_iter, worst relative residual) at the previous check
    while True:
        # ---- expand the active basis by the pending block
        j0 = nl + ma
        j1 = j0 + b
        Qt[j0:j1] = Pt
        Wt = op.matmat_t(Pt)
        n_iter += 1
        Qall = Qt[:j1]
        W0 = Wt.copy()
        with _blas_threads(op.threads if j1 * d * b >= _BIG_GEMM else 1):
            C = Qall @ Wt.T  # (j1, b) = Q A P^T, full reorthogonalisation coefficients
        Ca = C[nl:]
        H[ma : ma + b, :ma] = Ca[:ma].T
        H[:ma, ma : ma + b] = Ca[:ma]
        H[ma : ma + b, ma : ma + b] = (Ca[ma:] + Ca[ma:].T) / 2
        ma += b
        scale = max(anorm, float(np.abs(Ca[ma - b :]).max()))
        with _blas_threads(op.threads if j1 * d * b >= _BIG_GEMM else 1):
            Wt -= C.T @ Qall
            # Twice is enough: a second full pass. One pass leaves components
            # along Q of size (orthogonality error of Q) * ||A p|| / ||w||,
            # which grows from step to step, since ||A p|| > ||w||.
            Wt -= (Wt @ Qall.T) @ Qall
        Pt = _orthonormalize(Wt, Qall, rng, scale)
        # ---- Rayleigh-Ritz on the active basis
        rem_top = n_top - int(np.count_nonzero(lock_end[:nl] == 1))
        rem_bot = n_bot - int(np.count_nonzero(lock_end[:nl] == -1))
        full = ma + b > m_max
        if full or n_iter >= max_iter or (ma >= rem_top + rem_bot + b and n_iter >= next_rr):
            B = Pt @ W0.T  # (b, b): coupling of the last block to the pending one
            theta, S = sla.eigh(H[:ma, :ma], check_finite=False, driver="evd")
            anorm = max(anorm, float(np.abs(theta).max()), float(np.abs(lock_val[:nl]).max(initial=0.0)))
            est = np.linalg.norm(B @ S[ma - b : ma], axis=0)
            top = np.arange(ma - 1, ma - 1 - min(rem_top, ma), -1)
            bot = np.arange(min(rem_bot, ma))
            worst = float(np.max(est[np.concatenate([top, bot])], initial=0.0)) / max(anorm, np.finfo(float).tiny)
            if worst <= tol:
                done = True
            next_rr = n_iter + _rr_interval(ma, b, d, last, (n_iter, worst), tol)
            last = (n_iter, worst)
        if done or n_iter >= max_iter:
            break
        if not full:
            continue
        # ---- restart: lock converged wanted pairs from each end, keep the nearest others
        conv = est <= tol * anorm
        lk_top = _leading(conv[top])
        lk_bot = _leading(conv[bot])
        rem = rem_top + rem_bot
        extra = min(int(_KEEP * (m_max - rem)), m_max - rem - b)
        extra = max(extra, 0)
        e_top = (extra * rem_top) // rem if rem_top and rem_bot else (extra if rem_top else 0)
        e_bot = extra - e_top
        keep = np.unique(
            np.concatenate([np.arange(ma - 1, -1, -1)[lk_top : rem_top + e_top], np.arange(ma)[lk_bot : rem_bot + e_bot]])
        )
        lock = np.concatenate([top[:lk_top], bot[:lk_bot]])
        sel = np.concatenate([lock, keep]).astype(np.intp)
        Yt = np.ascontiguousarray(S[:, sel].T) @ Qt[nl : nl + ma]
        nlk = len(lock)
        Qt[nl : nl + len(sel)] = Yt
        lock_val[nl : nl + nlk] = theta[lock]
        lock_end[nl : nl + lk_top] = 1
        lock_end[nl + lk_top : nl + nlk] = -1
        nl += nlk
        ma = len(keep)
        H[:] = 0.0
        H[np.arange(ma), np.arange(ma)] = theta[keep]
        theta = S = est = None
        # Pt stays: it is orthogonal to the old active basis, hence to every kept or locked vector.
    return _finish(op, Qt, nl, ma, lock_val, theta, S, est, n_top, n_bot, tol, anorm, n_iter, done)


#: flops (j * d * b) above which the projections use the caller's BLAS threads.
_BIG_GEMM = 2_000_000

#: fraction of the non-wanted room kept as Ritz vectors at a thick restart.
_KEEP = 0.5


def _rr_interval(ma, b, d, last, now, tol):
    """Block steps until the next Rayleigh-Ritz check.

    The worst wanted residual falls about geometrically with the block
    steps; from the last two checks, predict when it reaches ``tol`` and
    check a little before. Without a usable rate, check as often as keeps a
    dense eigh of the ``ma x ma`` projection (about ``10 ma^3`` flops) under
    a quarter of a block product (``2 d^2 b`` flops). Deterministic: depends
    on the iterates only, never on timings.
    """
    base = max(1, math.ceil(10.0 * ma**3 / (0.25 * 2.0 * d * d * b)))
    if last is None or now[1] <= 0.0 or last[1] <= 0.0 or now[1] >= last[1]:
        return base
    rate = (math.log(now[1]) - math.log(last[1])) / (now[0] - last[0])  # < 0
    steps = (math.log(tol) - math.log(now[1])) / rate
    return max(base, int(0.8 * steps))


def _leading(flags):
    """Number of leading True values."""
    if len(flags) == 0 or flags.all():
        return len(flags)
    return int(np.argmin(flags))


def _finish(op, Qt, nl, ma, lock_val, theta, S, est, n_top, n_bot, tol, anorm, n_iter, done):
    """Merge locked and active pairs, pick the wanted ones; one last product gives true residuals."""
    vals = [lock_val[:nl]]
    Vt = [Qt[:nl]]
    conv = [np.ones(nl, dtype=bool)]
    if theta is not None:
        vals.append(theta)
        Vt.append(np.ascontiguousarray(S.T) @ Qt[nl : nl + ma])
        conv.append(est <= tol * anorm)
    vals = np.concatenate(vals)
    conv = np.concatenate(conv)
    order = np.argsort(vals, kind="stable")
    idx = np.concatenate([order[::-1][:n_top], order[:n_bot]])
    Vt = np.ascontiguousarray(np.concatenate(Vt)[idx])
    lam = vals[idx]
    res = np.linalg.norm(op.matmat_t(Vt) - lam[:, None] * Vt, axis=1)
    ok = conv[idx]
    converged = bool(done and ok.all())
    if not converged:
        warnings.warn(
            f"topk_eigh: {int(ok.sum())} of {len(lam)} eigenpairs converged to tol={tol:g} in {n_iter} block "
            "products (max_iter reached); returning the best estimates (raise max_iter or block_size)",
            ConvergenceWarning,
            stacklevel=3,
        )
    return EighResult(lam, np.ascontiguousarray(Vt.T), res, int(op.n_matvec), int(n_iter), converged, "lanczos")
