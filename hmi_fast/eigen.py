"""Top-k eigenpairs of a symmetric matrix: thick-restart block Lanczos.

Why this algorithm
------------------
The spectral matrices of this package are dense, ``d`` up to a few thousand,
and the wanted pairs are a few outliers plus the edge of a semicircle-like
bulk, where consecutive gaps are of order ``d^(-2/3)`` of the bulk width.

* **Cheap products.** The solver's time is the products with ``A``. For a
  dense ``A`` the iteration multiplies by a float32 copy (half the bytes;
  at d = 2000 it stays in a 32 MiB last-level cache), made in the same pass
  that checks symmetry and finiteness, and a float64 Rayleigh-Ritz step at
  the end makes the result as accurate as float64 products would (see
  *Precision*). A block of ``b`` vectors is multiplied by a numba kernel
  that reads ``A`` once per block, 4 rows against 4 vectors at a time in
  registers (``hmi_fast._operator._dot_rows``): at d = 2000 four vectors
  cost 0.2 ms where four ``sgemv`` cost 0.5 ms and ``sgemm`` 1 ms (OpenBLAS
  packs all of ``A`` for so few columns), and at d = 4000 eight vectors
  cost one pass over memory, 2.6 ms, where ``sgemm`` takes 5-7 ms.
* **Small gaps.** The ``k``-th pair converges with its gap to the first pair
  *outside* the search space, so the basis is kept well larger than ``k``
  (``2k + 12b`` vectors) and the block at least as wide as any cluster of
  nearly equal wanted eigenvalues: block Krylov resolves a cluster of up to
  ``b`` of them, which single-vector Lanczos with a small subspace can miss
  while reporting convergence (scipy issue 26112). Wider blocks need more
  products for the same accuracy, so the default block is the narrowest
  that is cheap: 4 when the float32 copy fits in half the last-level cache
  (8 for ``k > 48``), else 8, since every block step then costs a pass over
  memory (16 for ``k > 64``).
* **Robustness.** Each new block is orthogonalised against the whole basis
  by classical Gram-Schmidt (the same kernel for the coefficients, a
  ``gemm`` for the update), made orthonormal by Cholesky QR twice (one
  numba call), or by column-pivoted Householder QR when it is
  ill-conditioned, and then its cosines with the basis are measured (the
  kernel again): above ``1e-12`` (``1e-9`` while the products are float32,
  whose own errors are ``1e-7``) it is projected and made orthonormal again
  ("twice is enough"), which on spectral matrices happens in about one step
  in six, so the second pass is paid only where needed; a block that had
  nearly collapsed into the basis (an invariant subspace, an exact
  eigenvector in ``v0``, the zero matrix) has its lost directions replaced
  by random ones. The projected matrix
  ``H = Q A Q^T`` is assembled from the Gram-Schmidt coefficients.

Thick restart (Wu & Simon): when the basis is full, the Ritz vectors nearest
the wanted end(s) are kept (the wanted ones and a quarter of the remaining room)
together with the pending block, which preserves the Krylov relation.
Converged wanted pairs are *locked*: they leave the active basis, new blocks
stay orthogonal to them, and they no longer change. LOBPCG needs three block
products per step for the same polynomial degree; block Krylov-Schur is this
method written with a Schur form.

Convergence criterion
---------------------
``tol`` bounds the eigenvalues' error, relative to ``||A||_est`` (the largest
``|theta|`` seen, a lower bound of ``||A||_2`` that is sharp once the extreme
pairs are found), as ``scipy.sparse.linalg.eigsh``'s ``tol`` reads. A Ritz
value ``theta`` with residual ``r = ||A v - theta v||`` is within ``r`` of an
eigenvalue, within ``r^2 / gap`` when no other eigenvalue is closer than
``gap`` (Kato-Temple), and within about ``r^2 / eta`` after a Rayleigh-Ritz
step on a subspace that also holds its neighbours, ``eta`` the distance to
the spectrum outside that subspace (``hmi_fast._ritz``); gaps are estimated
from the adjacent Ritz values, moved towards ``theta`` by their own
residuals. A pair has converged when one of these bounds is at most ``tol *
||A||_est``. Eigenvalues converge twice as fast as vectors, so this takes
far fewer products than a residual test: a converged pair has ``r <=
sqrt(2 tol) ||A||``, and its eigenvector is within ``r / gap`` of the exact
one. ``residual_tol`` adds ``r <= residual_tol * ||A||_est`` for callers who
need accurate vectors. During the iteration the residual is read off the
coupling ``B`` of the last block to the next, ``||B s_last||`` (no product
with ``A``); Rayleigh-Ritz checks are scheduled where the error's geometric
decay predicts convergence, from the iterates only, so a given seed always
gives the same result. No test based on Ritz values can see an eigenvalue
the Krylov space has not found yet; the block size is the guard against
that.

Precision
---------
With float32 products the Lanczos relation holds for ``A`` rounded to
float32, ``A + E`` with ``||E||`` about ``1e-7 ||A||``: the iteration stops
when the wanted pairs meet ``tol`` or their residual reaches ``LOWP_FLOOR``,
what such products can resolve. Then one product with ``A`` in float64 on
the wanted Ritz vectors and ``b`` neighbours at each wanted end gives the
returned pairs, their true residuals and the bounds above; the residuals
are then about ``1e-7 ||A||`` and the eigenvalue errors ``1e-12``-``1e-14``
relative on spectral matrices. If a bound is still above ``tol`` (wanted
eigenvalues within about ``1e-7 ||A||`` of others outside the subspace), up
to ``POLISH_STEPS`` float64 block Krylov steps extend the subspace, and if
that is not enough the iteration goes on with float64 products from the
refined vectors. ``residual_tol < LOWP_RESIDUAL_MIN`` uses float64 products
from the start. The float32 copy costs ``4 d^2`` bytes; it is scaled by a
power of two (exactly) so that neither it nor any Gram matrix overflows or
underflows, whatever the magnitude of ``A``.

Threads
-------
For a dense ``A`` the products and the projections against the basis run
on numba's threads (``hmi_fast.threads`` sets how many), and the whole
solve keeps the BLAS on one thread: the remaining BLAS calls are small, and
an idle OpenBLAS thread busy-waits for about 0.1 s after each call, taking
the core a numba thread needs. The package's ``GOMP_SPINCOUNT`` (about 0.3
ms, ``hmi_fast._config``) keeps numba's workers awake between the
iteration's kernels. The same effect runs the other way: right after a
multi-threaded BLAS call of the caller's (``scipy.linalg.eigh``, ``X.T @
X``, the engine's ``syrk``), that library's threads spin on a core for 0.1
s, and a two-thread numba kernel waits for it at every call (a d = 1000
solve took 49-54 ms instead of 23). So a solve that finds another thread of
the process running (``/proc/self/task``, Linux) starts on one numba thread
and widens once that thread is idle (``hmi_fast._operator._Cores``); results
do not depend on the thread count. Operators keep the caller's BLAS threads
for their own products.

When the dense solver is used instead
-------------------------------------
For ``d <= 64``, for ``k > d / 3``, and when the Lanczos basis would not fit
in ``d`` dimensions, ``scipy.linalg.eigh`` is faster and exact: it is called
directly (an operator is then materialised with ``d`` products). With
``method="auto"`` dense matrices below the measured crossover
(``DENSE_AUTO_D``, ``DENSE_AUTO_PER_K``) go to it as well.

Performance
-----------
``benchmarks/test_bench_eigen.py`` measures this solver against
``eigh(subset_by_index)``, ``eigsh`` and full ``eigh`` on the Figure-2
spectral matrices; ``docs/benchmarks.md`` has the numbers.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from . import _config
from ._operator import (  # noqa: F401  (SYMMETRY_RTOL re-exported)
    SYMMETRY_RTOL,
    WHICH,
    _as_operator,
    _check_k,
    _check_v0,
    _Cores,
)
from ._ritz import (
    POLISH_STEPS,
    _error_bounds,
    _cosines,
    _orthogonal_block,
    _orthonormalize,
    _refine,
    _State,
    _within,
)

__all__ = ["ConvergenceWarning", "EighResult", "topk_eigh"]


#: matrices up to this size always go to the dense solver.
DENSE_MAX_D = 64

#: with method="auto", dense matrices with d < max(DENSE_AUTO_D, DENSE_AUTO_PER_K * m),
#: m the pairs wanted at one end, go to LAPACK: the measured crossover of
#: Lanczos against eigh(subset_by_index) on spectral matrices, 2-core machine
#: (docs/benchmarks.md): d ~ 1000 for 20 and for 40 pairs per end (at d = 1400
#: Lanczos is 2.1x faster for 20, 1.6x for 40; at d = 600, 0.6x and 0.3x).
DENSE_AUTO_D = 1000
DENSE_AUTO_PER_K = 25



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


# ---------------------------------------------------------------- public function


def topk_eigh(A, k, *, which="LA", tol=1e-10, max_iter=None, block_size=None, seed=None, v0=None,
              residual_tol=None, method="auto") -> EighResult:
    """The ``k`` extreme eigenpairs of a symmetric matrix or operator.

    Thick-restart block Lanczos with full reorthogonalisation and locking;
    for a dense ``A`` the products use a float32 copy of it and a final
    float64 Rayleigh-Ritz step gives float64 accuracy (see the module
    docstring for the algorithm, the convergence criterion, the precision
    and when the dense solver is used instead).

    Parameters
    ----------
    A : ndarray, sparse matrix or operator
        Dense symmetric ``(d, d)`` float32/float64 array (float32 is
        converted once to float64 and results are float64; integers to
        float64; the Lanczos path also keeps a float32 copy, ``4 d^2``
        bytes), a scipy sparse matrix, or any object with ``shape`` and
        ``matmat`` and/or ``matvec`` (e.g. ``scipy.sparse.linalg.LinearOperator``);
        an operator's symmetry is assumed, not checked.
    k : int
        Number of eigenpairs, ``1 <= k <= d``.
    which : {"LA", "SA", "BE"}
        Largest algebraic, smallest algebraic, or both ends: ``ceil(k/2)``
        from the top and ``floor(k/2)`` from the bottom (as ARPACK's "BE").
    tol : float
        Relative accuracy of the eigenvalues: converged when each returned
        eigenvalue's error bound is at most ``tol * ||A||_est`` (see the
        module docstring; residuals are then at most ``sqrt(2 tol) ||A||``).
    max_iter : int, optional
        Most block products (default ``10 * ceil(d / block_size) + 100``),
        and at least the ``ceil(k / block_size)`` that hold ``k`` vectors.
    block_size : int, optional
        Vectors per block; at least the size of any cluster of nearly equal
        wanted eigenvalues. Default: 4 for ``k <= 48``, else 8, when the
        float32 copy of a dense ``A`` fits in half the last-level cache;
        otherwise 8 for ``k <= 64``, else 16.
    seed : int or numpy.random.Generator, optional
        Start block; ``None`` means seed 0, so results are reproducible by default.
    v0 : ndarray of shape (d,) or (d, c), optional
        Start vector(s), completed with random columns to ``block_size``
        (``c > block_size`` widens the block to ``c``).
    residual_tol : float, optional
        Also require ``||A v - lambda v|| <= residual_tol * ||A||_est`` for
        every returned pair (accurate eigenvectors: within ``residual / gap``
        of the exact ones). Below ``1e-6`` the products are float64 from the
        start. Default: no residual test.
    method : {"auto", "lanczos", "dense"}
        ``"auto"`` uses LAPACK (``scipy.linalg.eigh`` on index subsets) for
        dense matrices with ``d < max(DENSE_AUTO_D, DENSE_AUTO_PER_K * m)``,
        ``m`` the pairs wanted at one end — there it was measured faster
        than Lanczos on spectral matrices (see
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
        with ``converged=False`` (their true residuals in ``residuals``).

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
    if residual_tol is not None:
        if isinstance(residual_tol, bool) or not isinstance(residual_tol, numbers.Real) or not (
            math.isfinite(residual_tol) and residual_tol > 0
        ):
            raise ValueError(f"residual_tol: must be a positive finite number or None, got {residual_tol!r}")
        residual_tol = float(residual_tol)
    shape = A.shape if isinstance(A, np.ndarray) and A.ndim == 2 else None
    # numba's threads for this solve: one while another thread of the process keeps a core
    # busy (see "Threads" above); restored on return
    lanczos = (shape is not None and isinstance(k, numbers.Integral) and not isinstance(k, bool)
               and which in WHICH and 1 <= k <= shape[0] and not _dense_solver(shape[0], int(k), which, method))
    cores = _Cores() if (lanczos and _config.THREAD_TUNING) else None
    try:
        return _topk_dense_or_lanczos(A, k, which, tol, max_iter, block_size, seed, v0, residual_tol, method,
                                      shape, cores)
    finally:
        if cores is not None:
            cores.restore()


def _topk_dense_or_lanczos(A, k, which, tol, max_iter, block_size, seed, v0, residual_tol, method, shape, cores):
    # a dense A that will be iterated on in float32 gets its float32 copy from the validation pass
    op = _as_operator(A, float32_copy=shape is not None and _float32_products(shape[0], k, which, method, residual_tol))
    op.cores = cores
    d = op.d
    if d == 0:
        raise ValueError("A: is empty (d = 0); give at least a 1 x 1 matrix")
    k = _check_k(k, d, which)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: must be a positive finite number, got {tol!r}")
    tol = float(tol)
    tols = (tol, math.inf if residual_tol is None else residual_tol)
    n_top, n_bot = _ends(k, which)
    if op.kind == "dense" and _float32_products(d, k, which, method, residual_tol):
        op.make_lowp()  # products in float32 while iterating (made already, unless A was float32)
    if block_size is None:
        b = _default_block(k, d, op.lowp is not None)
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
    m_max = min(_subspace_size(k, b), b * ((d - k - b) // b))
    if _dense_solver(d, k, which, method, auto=op.kind == "dense") or m_max < k + 3 * b:
        return _dense(op, n_top, n_bot)
    P0 = rng.standard_normal((d, b))
    if V0 is not None:
        P0[:, : V0.shape[1]] = V0
    # Dense A: numba's threads do the products (and the projections against the basis);
    # everything else is small and runs on one BLAS thread (see "Threads" above)
    with _config.blas_threads(1 if (op.kind == "dense" and _config.THREAD_TUNING) else None):
        return _solve(op, n_top, n_bot, tols, tol, residual_tol, max_iter, k, b, m_max, rng, P0)


def _solve(op, n_top, n_bot, tols, tol, residual_tol, max_iter, k, b, m_max, rng, P0):
    d = op.d
    state = _lanczos(op, n_top, n_bot, tols, int(max_iter), b, m_max, rng, P0)
    result = _refine(op, state, n_top, n_bot, tols, rng, steps=min(POLISH_STEPS, max_iter - state.n_iter))
    if not result.converged and op.lowp is not None and result.n_iter < max_iter:
        # the float32 products could not resolve these pairs (gaps near 1e-7 ||A||):
        # go on in float64 from the refined vectors, the wanted ones and their neighbours
        op.lowp = None
        Z = state.refined
        b2 = max(b, Z.shape[0])
        m2 = min(_subspace_size(k, b2), b2 * ((d - k - b2) // b2))
        if m2 < k + 3 * b2:  # too wide for this d: start again with the first block instead
            b2, m2, Z = b, m_max, P0.T
        state = _lanczos(op, n_top, n_bot, tols, int(max_iter) - result.n_iter, b2, m2, rng, Z.T,
                         n_iter0=result.n_iter)
        result = _refine(op, state, n_top, n_bot, tols, rng, steps=0)
    if not result.converged:
        ok = int(np.count_nonzero(result.ok))
        crit = f"tol={tol:g}" + ("" if residual_tol is None else f", residual_tol={residual_tol:g}")
        warnings.warn(
            f"topk_eigh: {ok} of {k} eigenpairs converged to {crit} in {result.n_iter} block "
            "products (max_iter reached); returning the best estimates (raise max_iter or block_size)",
            ConvergenceWarning,
            stacklevel=4,  # the caller of topk_eigh
        )
    # back from the operator's units (A * 2**shift) to A's
    return EighResult(np.ldexp(result.values, -op.shift), result.vectors, np.ldexp(result.residuals, -op.shift),
                      int(op.n_matvec), int(result.n_iter), result.converged, "lanczos")


def _ends(k, which):
    """Pairs wanted at the top and at the bottom of the spectrum."""
    return {"LA": (k, 0), "SA": (0, k), "BE": ((k + 1) // 2, k // 2)}[which]


def _dense_solver(d, k, which, method, auto=True):
    """Whether to use LAPACK: asked for, too small for Lanczos, or (``auto``: a dense ``A``) below the crossover."""
    n_top, n_bot = _ends(k, which)
    below = auto and method == "auto" and d < max(DENSE_AUTO_D, DENSE_AUTO_PER_K * max(n_top, n_bot))
    return method == "dense" or below or d <= DENSE_MAX_D or 3 * k > d


def _float32_products(d, k, which, method, residual_tol):
    """Whether Lanczos on a dense ``A`` iterates with its float32 copy (False for arguments still to be checked)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= d or which not in WHICH:
        return False
    if residual_tol is not None and residual_tol < LOWP_RESIDUAL_MIN:
        return False
    return not _dense_solver(d, int(k), which, method)


def _default_block(k, d, lowp):
    """Vectors per block: at least any cluster of nearly equal wanted eigenvalues, and cheap products.

    Block Krylov needs more products for the same accuracy the wider the
    block, and the product kernel reads ``A`` once per block. When the
    float32 copy stays in the last-level cache the products are cheap and
    the narrowest block wins: 4 (d = 2000: k = 20 and 40 both 10-40% faster
    than 8). When ``A`` streams from memory each block step costs a pass over
    it and 8 wins (d = 4000: k = 20 11% faster than 4, k = 40 20% faster than
    16). Measured on spectral matrices (docs/benchmarks.md); wider for k
    beyond the measured range.
    """
    if lowp and 4 * d * d <= _cache_bytes() // 2:
        return 4 if k <= 48 else 8
    return 8 if k <= 64 else 16


def _cache_bytes():
    """Size of the last-level cache (32 MiB when the system does not say)."""
    try:
        size = int(os.sysconf("SC_LEVEL3_CACHE_SIZE"))
    except (AttributeError, ValueError, OSError):
        size = 0
    return size if size > 0 else 32 * 2**20


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
    with _config.blas_threads(1 if (op.d <= 256 and _config.THREAD_TUNING) else None):
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


def _lanczos(op, n_top, n_bot, tols, max_iter, b, m_max, rng, P, n_iter0=0):
    """Thick-restart block Lanczos. The basis is stored by rows (``Qt[i]`` is a basis vector).

    Rows ``[0, nl)`` of ``Qt`` hold locked eigenvectors, rows ``[nl, nl + ma)``
    the active basis, whose projection ``H = Q A Q^T`` is assembled from the
    products as they come. ``Pt`` is the pending block: orthonormal,
    orthogonal to every row of ``Qt``, and the only direction in which ``A``
    maps the active basis outside itself, through the last block
    (``A q_last = ... + B^T p``); so the residual of a Ritz pair with
    coefficients ``s`` is ``||B s_last||``. Products use ``A``'s float32 copy
    when the operator has one. Returns a :class:`_State`.
    """
    d = op.d
    k = n_top + n_bot
    tol, rtol = tols
    cap = k + m_max + b
    Qt = np.empty((cap, d))
    H = np.zeros((m_max, m_max))
    lock_val = np.empty(k)
    lock_res = np.empty(k)
    lock_end = np.empty(k, dtype=np.int8)  # +1 top, -1 bottom
    nl = ma = 0
    anorm = 0.0
    floor = LOWP_FLOOR if op.lowp is not None else 0.0
    # basis orthogonality kept to 1e-12; with float32 products, whose errors are
    # ~1e-7 ||A||, 1e-9 is as good (the final Rayleigh-Ritz step is in float64
    # on vectors made orthonormal again) and saves most second projections
    cos_tol = LOWP_COS_TOL if op.lowp is not None else 1e-12
    Pt = _orthonormalize(np.ascontiguousarray(P.T), Qt[:0], rng, 1.0)
    n_iter = n_iter0
    theta = S = est = None
    done = False
    next_rr = n_iter0 + 1  # block step of the next Rayleigh-Ritz check
    last = None  # (n_iter, worst relative error bound) at the previous check
    while True:
        # ---- expand the active basis by the pending block
        j0 = nl + ma
        j1 = j0 + b
        Qt[j0:j1] = Pt
        Wt = op.matmat_t(Pt, exact=False)
        n_iter += 1
        Qall = Qt[:j1]
        W0 = Wt.copy()
        C = _cosines(Wt, Qall).T  # (j1, b) = Q A P^T, full reorthogonalisation coefficients
        Ca = C[nl:]
        H[ma : ma + b, :ma] = Ca[:ma].T
        H[:ma, ma : ma + b] = Ca[:ma]
        H[ma : ma + b, ma : ma + b] = (Ca[ma:] + Ca[ma:].T) / 2
        ma += b
        scale = max(anorm, float(np.abs(Ca[ma - b :]).max()))
        Wt -= C.T @ Qall  # (NumPy's BLAS; a numba kernel for this update was slower)
        # One pass leaves components along Q of size (orthogonality error of
        # Q) * ||A p|| / ||w||; _orthogonal_block measures them on the
        # normalised block and projects again when they exceed cos_tol.
        Pt = _orthogonal_block(Wt, Qall, rng, scale, cos_tol)
        # ---- Rayleigh-Ritz on the active basis
        rem_top = n_top - int(np.count_nonzero(lock_end[:nl] == 1))
        rem_bot = n_bot - int(np.count_nonzero(lock_end[:nl] == -1))
        full = ma + b > m_max
        if full or n_iter - n_iter0 >= max_iter or (ma >= rem_top + rem_bot + b and n_iter >= next_rr):
            B = Pt @ W0.T  # (b, b): coupling of the last block to the pending one
            theta, S = np.linalg.eigh(H[:ma, :ma])
            anorm = max(anorm, float(np.abs(theta).max()), float(np.abs(lock_val[:nl]).max(initial=0.0)))
            est = np.linalg.norm(B @ S[ma - b : ma], axis=0)
            top = np.arange(ma - 1, ma - 1 - min(rem_top, ma), -1)
            bot = np.arange(min(rem_bot, ma))
            wanted = np.concatenate([top, bot])
            bound = _error_bounds(theta, est, wanted, lock_val[:nl], lock_res[:nl])
            conv = np.zeros(ma, dtype=bool)
            conv[wanted] = ((bound <= tol * anorm) & _within(est[wanted], rtol, anorm)) | (est[wanted] <= floor * anorm)
            # progress: the worst ratio of a wanted pair's error to what it must reach
            ratio = np.maximum(bound / tol, est[wanted] / rtol) / max(anorm, np.finfo(float).tiny)
            worst = float(np.max(np.where(conv[wanted], 0.0, ratio), initial=0.0))
            if conv[wanted].all():
                done = True
            next_rr = n_iter + _rr_interval(ma, b, d, last, (n_iter, worst))
            last = (n_iter, worst)
        if done or (n_iter - n_iter0 >= max_iter and nl + ma >= k):
            break
        if not full:
            continue
        # ---- restart: lock converged wanted pairs from each end, keep the nearest others
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
        lock_res[nl : nl + nlk] = est[lock]
        lock_end[nl : nl + lk_top] = 1
        lock_end[nl + lk_top : nl + nlk] = -1
        nl += nlk
        ma = len(keep)
        H[:] = 0.0
        H[np.arange(ma), np.arange(ma)] = theta[keep]
        theta = S = est = None
        # Pt stays: it is orthogonal to the old active basis, hence to every kept or locked vector.
    # all current approximations: locked pairs, then the active Ritz pairs
    vals, res, Vt = [lock_val[:nl]], [lock_res[:nl]], [Qt[:nl]]
    if theta is not None:
        vals.append(theta)
        res.append(est)
        Vt.append(np.ascontiguousarray(S.T) @ Qt[nl : nl + ma])
    return _State(np.concatenate(vals), np.concatenate(res), np.concatenate(Vt), anorm, n_iter, b)


#: fraction of the non-wanted room kept as Ritz vectors at a thick restart. A quarter
#: needs about as many products as a half and makes each cycle cheaper (a smaller basis
#: to project against, fewer restarts): 10-20% faster at d = 1000-4000, k = 20 and 40.
_KEEP = 0.25

#: with float32 products, a pair whose residual is below this (relative to
#: ||A||) is as good as those products can make it; the float64 Rayleigh-Ritz
#: step then decides.
LOWP_FLOOR = 3e-7

#: largest cosine of a new block with the basis accepted while the products are float32.
LOWP_COS_TOL = 1e-9

#: a ``residual_tol`` below this needs float64 products from the start.
LOWP_RESIDUAL_MIN = 1e-6


def _rr_interval(ma, b, d, last, now):
    """Block steps until the next Rayleigh-Ritz check.

    The worst ratio of a wanted pair's error bound (or residual) to its
    tolerance falls about geometrically with the block steps; from the last
    two checks, predict when it reaches 1 and
    check a little before. Without a usable rate, check as often as keeps a
    dense eigh of the ``ma x ma`` projection (about ``10 ma^3`` flops) under
    a quarter of a block product (``2 d^2 b`` flops). Deterministic: depends
    on the iterates only, never on timings.
    """
    base = max(1, math.ceil(10.0 * ma**3 / (0.25 * 2.0 * d * d * b)))
    if last is None or now[1] <= 0.0 or last[1] <= 0.0 or now[1] >= last[1]:
        return base
    rate = (math.log(now[1]) - math.log(last[1])) / (now[0] - last[0])  # < 0
    steps = -math.log(now[1]) / rate  # to reach a ratio of 1
    return max(base, int(0.8 * steps))


def _leading(flags):
    """Number of leading True values."""
    if len(flags) == 0 or flags.all():
        return len(flags)
    return int(np.argmin(flags))
