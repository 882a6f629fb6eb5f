"""Operators for the eigensolver: validation of A, products counted in blocks, BLAS thread control.

``topk_eigh`` accepts a dense symmetric array, a scipy sparse matrix or any
object with ``shape`` and ``matmat``/``matvec``; this module turns each into
an ``_Operator`` after checking shape, dtype, finiteness and symmetry.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time

import numba
import numpy as np
import scipy.sparse as sp

from ._config import jit

try:  # prange is only used by the symmetry scan
    from numba import prange
except ImportError:  # pragma: no cover
    prange = range

WHICH = ("LA", "SA", "BE")

#: relative asymmetry max|A - A^T| / max|A| tolerated, per dtype.
SYMMETRY_RTOL = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-5}

_TILE = 64


# ---------------------------------------------------------------- kernels


@jit(parallel=True)
def _symmetry_scan(A, tile, out, A32, copy):
    """One pass over A: max|A_ij - A_ji|, max|A_ij|, a count of NaN/inf, and (``copy``) ``A32 = float32(A)``.

    ``out`` has shape ``(n_pairs, 3)``; iteration ``p`` handles tile rows
    ``p`` and ``nt - 1 - p`` (the same work for every ``p``) and writes row
    ``p`` only. Whole rows are read contiguously (magnitude, finiteness, the
    float32 copy: vectorised), then the tiles right of the diagonal are
    compared with their mirror images, which are read down columns.
    """
    d = A.shape[0]
    nt = (d + tile - 1) // tile
    npair = (nt + 1) // 2
    for p in prange(npair):
        asym = 0.0
        amax = 0.0
        nonfinite = 0.0
        for side in range(2):
            ti = p if side == 0 else nt - 1 - p
            if side == 1 and ti == p:
                continue
            i0 = ti * tile
            i1 = min(i0 + tile, d)
            for i in range(i0, i1):
                row = A[i]
                for j in range(d):
                    a = abs(row[j])
                    amax = a if a > amax else amax
                    nonfinite += 0.0 if a < np.inf else 1.0
                if copy:
                    r32 = A32[i]
                    for j in range(d):
                        r32[j] = row[j]
            for j0 in range(i0, d, tile):
                j1 = min(j0 + tile, d)
                for i in range(i0, i1):
                    row = A[i]
                    for j in range(max(j0, i + 1), j1):
                        t = abs(row[j] - A[j, i])
                        asym = t if t > asym else asym
        out[p, 0] = asym
        out[p, 1] = amax
        out[p, 2] = nonfinite


@jit(inline="always")
def _dot44(a0, a1, a2, a3, v0, v1, v2, v3, d):
    """The 16 dot products of rows ``a0..a3`` with vectors ``v0..v3``, one pass, in the arrays' precision."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
    for j in range(d):
        x0 = a0[j]
        x1 = a1[j]
        x2 = a2[j]
        x3 = a3[j]
        y0 = v0[j]
        y1 = v1[j]
        y2 = v2[j]
        y3 = v3[j]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)


@jit(inline="always")
def _dot41(a0, a1, a2, a3, v, d):
    """The 4 dot products of rows ``a0..a3`` with one vector ``v``."""
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for j in range(d):
        y = v[j]
        s0 += a0[j] * y
        s1 += a1[j] * y
        s2 += a2[j] * y
        s3 += a3[j] * y
    return (s0, s1, s2, s3)


@jit(parallel=True)
def _dot_rows(A, Xt, Yt, scale):
    """``Yt[c, i] = scale * (A[i] . Xt[c])``, i.e. ``Yt = scale * Xt @ A.T``, in one pass over ``A``.

    ``A`` (n, m) and ``Xt`` (b, m) are C-contiguous, float32 or float64;
    ``Yt`` (b, n) is float64. Each thread takes blocks of 4 rows of ``A``
    and forms their dot products with the vectors 4 at a time (16
    accumulators, one load of ``A`` per 4 multiply-adds; the rows stay in
    L1/L2 between groups of vectors), so for the few vectors of a Lanczos
    block ``A`` is read from memory once, at its bandwidth, where OpenBLAS's
    ``gemm`` packs all of ``A`` and ``gemv`` reads it once per vector. Sums
    are in ``A``'s precision, as in BLAS.
    """
    n, m = A.shape
    b = Xt.shape[0]
    ng = b // 4
    for rb in prange((n + 3) // 4):
        i = 4 * rb
        if i + 4 <= n:
            a0 = A[i]
            a1 = A[i + 1]
            a2 = A[i + 2]
            a3 = A[i + 3]
            for g in range(ng):
                c = 4 * g
                s = _dot44(a0, a1, a2, a3, Xt[c], Xt[c + 1], Xt[c + 2], Xt[c + 3], m)
                for r in range(4):
                    for q in range(4):
                        Yt[c + q, i + r] = scale * s[4 * r + q]
            for c in range(4 * ng, b):
                t = _dot41(a0, a1, a2, a3, Xt[c], m)
                for r in range(4):
                    Yt[c, i + r] = scale * t[r]
        else:  # the last n % 4 rows
            for ii in range(i, n):
                a = A[ii]
                for c in range(b):
                    v = Xt[c]
                    acc = a[0] * v[0]
                    for j in range(1, m):
                        acc += a[j] * v[j]
                    Yt[c, ii] = scale * acc


# ---------------------------------------------------------------- BLAS threads

# ---------------------------------------------------------------- operator wrapper


def _busy_threads():
    """Threads of this process, other than the caller, that are running now (Linux; 0 elsewhere)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    me = threading.get_native_id()
    busy = 0
    for tid in tids:
        if tid == str(me):
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread has ended
            continue
        end = stat.rfind(b")")  # the state follows the command name, which may hold spaces
        busy += stat[end + 2 : end + 3] == b"R"
    return busy


class _Cores:
    """numba's thread count for one solve: one while another thread of the process keeps a core busy.

    An idle OpenBLAS thread busy-waits for about 0.1 s after each call (right
    after ``X.T @ X``, ``scipy.linalg.eigh``, the engine's ``syrk``). A
    two-thread numba kernel then waits for a core at every call: measured at
    d = 1000, a solve takes 78 ms instead of 24 ms on one thread (which the
    spinning thread does not slow down). So a solve starts on one thread
    when another thread of the process is running, looks again every
    ``RECHECK`` seconds (about 50 us: ``/proc/self/task``), and widens to
    numba's full count once none is. Each output of the kernels is computed
    by one thread in a fixed order, so results do not depend on this.
    """

    RECHECK = 0.005

    def __init__(self):
        self.top = numba.get_num_threads()
        # with OMP_WAIT_POLICY=ACTIVE numba's own idle workers always run: nothing to learn here
        active = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "ACTIVE"
        busy = self.top > 1 and not active and _busy_threads() > 0
        if busy:  # numba's own workers spin for SPINCOUNT (~0.3 ms) after a kernel: look again after that
            time.sleep(4e-4)
            busy = _busy_threads() > 0
        self.narrow = busy
        self.last = time.perf_counter()
        if self.narrow:
            numba.set_num_threads(1)

    def step(self):
        """Call between kernels: widen once the other threads are idle."""
        if self.narrow and time.perf_counter() - self.last > self.RECHECK:
            self.last = time.perf_counter()
            if _busy_threads() == 0:
                self.narrow = False
                numba.set_num_threads(self.top)

    def restore(self):
        numba.set_num_threads(self.top)


class _Operator:
    """``A`` as products with blocks of float64 vectors, counting them.

    ``lowp``, for dense ``A`` only, is ``A`` rounded to float32: products
    with it (``matmat_t(..., exact=False)``) read half the bytes and are
    accurate to about ``1e-7 ||A||``; the eigensolver uses them while it
    iterates and ``A`` itself (float64) for the final Rayleigh-Ritz step.
    """

    def __init__(self, A, d, kind):
        self.A = A
        self.d = d
        self.kind = kind  # "dense", "sparse" or "operator"
        self.lowp = None
        self._f32_input = None  # a float32 A as given, reused by make_lowp
        # products are returned for A * 2**shift, 2**-shift near max|A_ij| (dense and sparse
        # A): Gram matrices of products then neither overflow nor underflow
        self.shift = 0
        self.lowp_shift = 0
        self.n_matvec = 0
        self.cores = None  # a _Cores for dense A, set by the solver

    def matmat(self, X):
        self.n_matvec += X.shape[1]
        if self.kind in ("dense", "sparse"):
            return np.asarray(self.A @ X, dtype=np.float64)
        A = self.A
        try:
            if hasattr(A, "matmat"):
                Y = np.asarray(A.matmat(X), dtype=np.float64)
            else:
                Y = np.column_stack([np.asarray(A.matvec(X[:, j]), dtype=np.float64).reshape(-1)
                                     for j in range(X.shape[1])])
        except ValueError as exc:  # e.g. scipy's reshape error when the operator's shape and its products disagree
            raise ValueError(
                f"A: the operator's product failed for a block of shape {X.shape} ({exc}); its shape says "
                f"{(self.d, self.d)}: make matvec/matmat accept vectors of length {self.d}"
            ) from None
        want = (self.d, X.shape[1])
        if X.shape[1] == 1 and Y.shape == (self.d,):
            Y = Y.reshape(want)
        if Y.shape != want:
            raise ValueError(
                f"A: the operator returned shape {Y.shape} for a block of shape {X.shape}; it must return "
                f"{want} (A @ X, one column per vector)"
            )
        if not np.isfinite(Y).all():
            raise ValueError("A: the operator returned NaN or inf; check the operator's matvec/matmat")
        return Y

    def matmat_t(self, Xt, exact=True):
        """``(A X)^T`` for ``X = Xt^T``, float64, times ``2**shift``.

        Dense ``A``: by :func:`_dot_rows` on numba's threads (``A`` is
        symmetric, so its rows are its columns), with the float32 copy when
        ``exact`` is false and there is one. Others: the caller's products.
        """
        if self.kind != "dense":
            Y = np.ascontiguousarray(self.matmat(Xt.T).T)
            return np.ldexp(Y, self.shift, out=Y) if self.shift else Y
        self.n_matvec += Xt.shape[0]
        Y = np.empty(Xt.shape)
        if exact or self.lowp is None:
            # scale by 2**shift in the kernel (exact) unless that power of two leaves float64's range
            inside = abs(self.shift) < 1000
            _dot_rows(self.A, np.ascontiguousarray(Xt), Y, math.ldexp(1.0, self.shift) if inside else 1.0)
            return Y if inside else np.ldexp(Y, self.shift, out=Y)
        if self.cores is not None:
            self.cores.step()
        # the float32 copy holds A * 2**lowp_shift; the scale is a power of two (exact)
        _dot_rows(self.lowp, Xt.astype(np.float32), Y, math.ldexp(1.0, self.shift - self.lowp_shift))
        return Y

    def make_lowp(self):
        """Keep a float32 copy of a dense ``A`` for ``matmat_t(..., exact=False)`` (``4 d^2`` bytes)."""
        if self.kind != "dense" or self.lowp is not None or not self.d:
            return
        given = self._f32_input
        if abs(self.shift) <= 64:  # float32's range holds A itself; scale the (small) products instead
            self.lowp = np.ascontiguousarray(given if given is not None else self.A, dtype=np.float32)
            self.lowp_shift = 0
        else:  # A * 2**shift (exact) in float32: neither overflow nor underflow
            self.lowp = np.empty((self.d, self.d), dtype=np.float32)
            np.ldexp(self.A, self.shift, out=self.lowp, casting="unsafe")
            self.lowp_shift = self.shift

    def dense(self):
        if self.kind == "dense":
            return self.A
        if self.kind == "sparse":
            return self.A.toarray().astype(np.float64)
        M = self.matmat(np.eye(self.d))
        return (M + M.T) / 2


# ---------------------------------------------------------------- validation


def _as_operator(A, float32_copy=False):
    """Validate ``A`` and wrap it; dense float32 is converted to float64 once.

    With ``float32_copy`` a dense float64 ``A`` also gets its float32 copy
    for the iteration (``op.lowp``) from the same pass over it; otherwise
    :meth:`_Operator.make_lowp` makes one on demand (a float32 input is used
    as it is).
    """
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
        op = _Operator(A, A.shape[0], "sparse")
        op.shift = -math.frexp(amax)[1] if amax > 0 else 0
        return op
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
    copy = bool(float32_copy) and dtype == np.float64 and d > 0
    A32 = np.empty((d, d) if copy else (0, 0), dtype=np.float32)
    if d:
        nt = (d + _TILE - 1) // _TILE
        out = np.zeros(((nt + 1) // 2, 3))
        _symmetry_scan(A, _TILE, out, A32, copy)
        if out[:, 2].sum() > 0:
            bad = int(A.size - np.count_nonzero(np.isfinite(A)))
            raise ValueError(f"A: contains {bad} NaN or inf entries; A must be finite")
        _check_asym(float(out[:, 0].max()), float(out[:, 1].max()), dtype)
    amax = float(out[:, 1].max()) if d else 0.0
    if dtype != np.float64:
        A32_in = A if dtype == np.float32 else None
        A = A.astype(np.float64)  # documented: float32 input is computed in float64
    else:
        A32_in = None
        A = np.ascontiguousarray(A)  # rows for the product kernel
    op = _Operator(A, d, "dense")
    op.shift = -math.frexp(amax)[1] if amax > 0 else 0
    op._f32_input = A32_in
    if copy and abs(op.shift) <= 64:  # float32's range holds A itself (else make_lowp scales it)
        op.lowp = A32
    return op


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
