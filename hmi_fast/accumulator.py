"""Streaming accumulation of ``T = (1/n) Σ_i τ(y_i) x_i x_iᵀ`` (docs/engine.md).

Per block, one Numba-parallel pass computes the weights ``w = τ(y) − μ``,
splits the rows by the sign of ``w``, scales them by ``√|w|`` and packs them
into one contiguous buffer (positive rows from the top, negative rows from
the bottom), checking for NaN/inf and measuring the largest entry on the
way. BLAS-3 symmetric rank-k updates then add ``A₊ᵀA₊ − A₋ᵀA₋`` to the upper
triangle of a float64 accumulator: n·d² flops instead of the 2·n·d² of a
general product, and no n×d temporary.

float32 blocks are multiplied in float32 (``ssyrk``, twice the speed) and
each block's product is added to the float64 accumulator, so rounding error
grows with the block size, not with n.

Guarantees (each tested):

* **atomic updates** — :meth:`SpectralAccumulator.update` applies the whole
  block or, when it raises, leaves the state bit for bit as it was;
* **no overflow or underflow in the products** — a block whose entries
  would overflow or underflow the product precision is scaled by a power of
  two (exact) and scaled back in float64; a T that float64 cannot hold is an
  error naming the remedy;
* **frames** — an accumulator fed a model's latent rows knows their frame
  and :meth:`~SpectralAccumulator.finalize` returns T of x; rows of x added
  to it, or an accumulator of another frame merged into it, first turn its
  sums into the x frame;
* **thread safety** — one lock per accumulator; concurrent ``update`` calls
  from several threads give the same T as serial ones.
"""

from __future__ import annotations

import json
import math
import os
import threading

import numba
import numpy as np
from numba import prange
from scipy.linalg import blas

from . import _config
from ._config import jit
from ._sketch import WeightSketch
from ._validation import check_block, check_bool, check_center, check_dtype, check_positive_int
from .preprocess import BUILTIN_PREPROCESS, Preprocess, clip, resolve_preprocess

#: ``state()["format"]``; states without it (older versions) are refused.
STATE_FORMAT = "hmi_fast.SpectralAccumulator/2"

# Entries of a packed block are kept within [LO, HI] of the product precision:
# their squares, times a block's rows, neither overflow nor become subnormal.
_SAFE = {np.dtype(np.float32): (2.0**-40, 2.0**40), np.dtype(np.float64): (2.0**-400, 2.0**400)}
#: beyond this bound on |Σ| the float64 sum is checked for overflow after each block.
_SUM_LIMIT = 2.0**1000


# ------------------------------------------------------------------ kernels
@jit()
def _destinations(w, cap, dest):
    """Row i goes to dest[i]: positives count up from 0, negatives down from cap-1; zeros to -1."""
    p = 0
    q = cap - 1
    for i in range(w.shape[0]):
        if w[i] > 0.0:
            dest[i] = p
            p += 1
        elif w[i] < 0.0:
            dest[i] = q
            q -= 1
        else:
            dest[i] = -1
    return p, cap - 1 - q


@jit(parallel=True)
def _pack_rows(X, B, w, dest, buf, scale, absmask, expmask, nt):
    """buf[dest[i]] = scale·√|w_i|·X[i] for row-major X; B is X viewed as signed integers of its width.

    Returns (first row holding NaN/inf or -1, bit pattern of max |X|). The
    checks read |x| as an integer (sign bit cleared): for floats its order
    is the numeric order and NaN/inf are the patterns >= ``expmask``, so one
    integer max per row (which vectorises; a float max with NaN semantics
    does not) gives both.
    """
    n, d = X.shape
    bad = np.full(nt, n, dtype=np.int64)
    big = np.zeros(nt, dtype=B.dtype)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        m = big[t]
        for i in range(lo, hi):
            r = dest[i]
            mb = absmask - absmask
            if r < 0:
                for j in range(d):
                    b = B[i, j] & absmask
                    if b > mb:
                        mb = b
            else:
                f = np.sqrt(abs(w[i])) * scale
                for j in range(d):
                    b = B[i, j] & absmask
                    if b > mb:
                        mb = b
                    buf[r, j] = X[i, j] * f
            if mb >= expmask and i < bad[t]:
                bad[t] = i
            if mb > m:
                m = mb
        big[t] = m
    first = bad.min()
    return (-1 if first == n else first), big.max()


@jit(parallel=True)
def _pack_cols(X, w, dest, buf, scale, nt):
    """Column-major variant of :func:`_pack_rows` (F-ordered X); returns (first bad row or -1, max |X|)."""
    n, d = X.shape
    sq = np.empty(n, dtype=np.float64)
    for i in range(n):
        sq[i] = np.sqrt(abs(w[i])) * scale
    bad = np.full(nt, n, dtype=np.int64)
    big = np.zeros(nt)
    chunk = (d + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(d, lo + chunk)
        for j in range(lo, hi):
            for i in range(n):
                v = X[i, j]
                if not np.isfinite(v):
                    if i < bad[t]:
                        bad[t] = i
                elif abs(v) > big[t]:
                    big[t] = abs(v)
                r = dest[i]
                if r >= 0:
                    buf[r, j] = v * sq[i]
    first = bad.min()
    return (-1 if first == n else first), big.max()


@jit(parallel=True)
def _scan(B, absmask, expmask, nt):
    """(first row holding NaN/inf or -1, bit pattern of max |X|) from the integer view B of X; writes nothing."""
    n, d = B.shape
    bad = np.full(nt, n, dtype=np.int64)
    big = np.zeros(nt, dtype=B.dtype)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        m = big[t]
        for i in range(lo, hi):
            mb = absmask - absmask
            for j in range(d):
                b = B[i, j] & absmask
                if b > mb:
                    mb = b
            if mb >= expmask and i < bad[t]:
                bad[t] = i
            if mb > m:
                m = mb
        big[t] = m
    first = bad.min()
    return (-1 if first == n else first), big.max()


_BITS = {
    np.dtype(np.float64): (np.int64, np.int64(0x7FFFFFFFFFFFFFFF), np.int64(0x7FF0000000000000)),
    np.dtype(np.float32): (np.int32, np.int32(0x7FFFFFFF), np.int32(0x7F800000)),
}


def _max_abs_and_first_bad(X, nt, pack=None):
    """Run ``pack(X, B, ...)`` (or the scan) and decode: (first bad row or -1, max |X| as a float)."""
    itype, absmask, expmask = _BITS[X.dtype]
    B = X.view(itype)
    bad, bits = _scan(B, absmask, expmask, nt) if pack is None else pack(B, absmask, expmask)
    return bad, float(np.array([bits], dtype=itype).view(X.dtype)[0])


@jit(parallel=True)
def _add_upper(S, C, factor, nt):
    """S[i, j] += factor·C[i, j] on the upper triangle (i <= j) of F-ordered d×d arrays."""
    d = S.shape[0]
    for t in prange(nt):
        # columns dealt round-robin so the triangle's work is balanced
        for j in range(t, d, nt):
            for i in range(j + 1):
                S[i, j] += factor * C[i, j]


@jit(parallel=True)
def _col_sums(X, w, sx, swx, nt):
    """sx += Σ_i X[i], swx += Σ_i w_i X[i] in float64 (per-thread partial sums, reduced after)."""
    n, d = X.shape
    part = np.zeros((nt, 2, d))
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            wi = w[i]
            for j in range(d):
                v = np.float64(X[i, j])
                part[t, 0, j] += v
                part[t, 1, j] += wi * v
    for t in range(nt):
        for j in range(d):
            sx[j] += part[t, 0, j]
            swx[j] += part[t, 1, j]


@jit(parallel=True)
def _symmetrize_kernel(S, G, delta, scale, out):
    """out = scale·(S − delta·G) from the upper triangles (G ignored when delta == 0)."""
    d = S.shape[0]
    for i in prange(d):
        for j in range(i, d):
            v = S[i, j]
            if delta != 0.0:
                v -= delta * G[i, j]
            v *= scale
            out[i, j] = v
            out[j, i] = v


def _syrk_func(dtype):
    return blas.dsyrk if dtype == np.float64 else blas.ssyrk


def _full(S: np.ndarray) -> np.ndarray:
    """Symmetric full matrix from the upper triangle of S."""
    out = np.empty(S.shape, dtype=np.float64)
    _symmetrize_kernel(S, S, 0.0, 1.0, out)
    return out


def _upper_fortran(A: np.ndarray) -> np.ndarray:
    return np.asfortranarray(np.triu(A))


# ------------------------------------------------------------------ the accumulator
class SpectralAccumulator:
    """Streaming accumulator for the spectral matrix ``T``.

    Parameters
    ----------
    d : int
        Number of features.
    preprocess : str, tuple, callable or Preprocess
        The label transform τ (see :mod:`hmi_fast.preprocess`).
    dtype : np.float32 or np.float64
        Precision of the block products; the running sums are always float64.
    center : bool or float
        ``False`` (default): weights ``τ(y_i)``. A float μ: weights
        ``τ(y_i) − μ``. ``True``: the exact mean of τ over every row the
        accumulator holds, whatever the order in which rows arrive; this keeps
        the unweighted Gram matrix beside T (a second rank-k update per block,
        about twice the work). When all labels are known in advance, pass their
        mean as a float instead (the engine does this for arrays and files).
    block_size : int, optional
        Capacity of the packing buffer; larger updates are processed in
        chunks of this many rows (memory: ``block_size × d`` of ``dtype``).
        Default: 32 MiB of rows (see :func:`hmi_fast._config.block_rows`).
    moments : bool
        Also keep ``Σ x``, ``Σ w x`` and the unweighted Gram ``Σ x xᵀ`` (one
        more rank-k update per block): what centring and whitening of x need
        (:meth:`moments`).
    frame : LatentFrame or None
        Frame of the rows :meth:`update` receives by default (``None``: x
        itself). The engine sets it when it streams a model's latent rows.

    Attributes
    ----------
    n : int
        Rows seen so far.
    weight_mean, weight_sq_mean : float
        Mean of the weights ``w = τ(y) − shift`` and of their squares: the
        bulk of T is centered near ``weight_mean`` with radius about
        ``2 sqrt(weight_sq_mean · d / n)`` (docs/theory.md).
    shift : float or None
        The μ subtracted from the weights (with ``center=True``: the mean of τ
        over the rows seen; ``None`` before the first row).
    weight_sketch
        The law of the weights (a view with ``.law()``), from a mergeable
        fixed-size summary of τ(y_i) (:class:`hmi_fast._sketch.WeightSketch`).
    frame : LatentFrame or None
        Frame of the sums held (``None``: x).

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import SpectralAccumulator
    >>> rng = np.random.default_rng(0)
    >>> acc = SpectralAccumulator(5, preprocess="identity")
    >>> for _ in range(3):
    ...     _ = acc.update(rng.standard_normal((10, 5)), rng.standard_normal(10))
    >>> acc.n, acc.finalize().shape
    (30, (5, 5))
    """

    def __init__(self, d, *, preprocess="saturating", dtype=np.float64, center=False, block_size=None,
                 moments=False, frame=None):
        self.d = check_positive_int(d, "d")
        self.preprocess: Preprocess = resolve_preprocess(preprocess)
        self.dtype = check_dtype(dtype, "dtype")
        self.center = check_center(center)
        self.moments_kept = check_bool(moments, "moments")
        self.block_size = _config.block_rows(self.d, self.dtype, block_size)
        self.frame = _check_frame(frame, self.d)
        self._lock = threading.RLock()
        self.n = 0
        self._base = None if self.center is True else (0.0 if self.center is False else float(self.center))
        self._wsum = 0.0
        self._w2sum = 0.0
        self._sum = np.zeros((self.d, self.d), dtype=np.float64, order="F")  # upper triangle used
        self._gram = np.zeros_like(self._sum) if self._keeps_gram else None
        self._sx = np.zeros(self.d) if self.moments_kept else None
        self._swx = np.zeros(self.d) if self.moments_kept else None
        self._bound = 0.0  # bound on max |entry| of the sums (overflow watch)
        self._sketch = WeightSketch()
        self._buf = self._dest = self._scratch = None

    @property
    def _keeps_gram(self) -> bool:
        return self.center is True or self.moments_kept

    # ------------------------------------------------------------ weights
    @property
    def shift(self):
        """The constant subtracted from τ: μ, the exact mean (``center=True``), or 0."""
        if self.center is True:
            return None if self.n == 0 else self._base + self._wsum / self.n
        return self._base

    @property
    def _delta(self) -> float:
        """Mean of the stored weights when ``center=True`` (subtracted at finalize), else 0."""
        return self._wsum / self.n if (self.center is True and self.n) else 0.0

    @property
    def weight_mean(self) -> float:
        if not self.n:
            return float("nan")
        return 0.0 if self.center is True else self._wsum / self.n

    @property
    def weight_sq_mean(self) -> float:
        if not self.n:
            return float("nan")
        m2 = self._w2sum / self.n
        if self.center is True:
            m2 = max(m2 - self._delta**2, 0.0)
        return m2

    @property
    def weight_sketch(self) -> "_WeightLaw":
        """The law of the weights, for ``select_components(..., weights=acc.weight_sketch)``.

        A live view: ``.law()`` returns ``(values, probabilities)`` of the
        weights ``τ(y_i) − shift`` of the rows held at the time of the call;
        ``.counts`` are the bin counts of the underlying :class:`WeightSketch` of τ.
        """
        return _WeightLaw(self)

    def weight_law(self):
        """``(values, probabilities)``: the law of the weights ``τ(y_i) − shift`` (from :attr:`weight_sketch`)."""
        with self._lock:
            return self._sketch.law(self.shift or 0.0)

    # ------------------------------------------------------------ internals
    def _buffers(self, rows: int):
        cap = min(self.block_size, max(rows, 1))
        if self._buf is None or self._buf.shape[0] < cap:
            self._buf = np.empty((cap, self.d), dtype=self.dtype)
            self._dest = np.empty(cap, dtype=np.int64)
        return self._buf, self._dest

    def _gram_product(self, X, ones, xmax, row0):
        """gram += Σ_i X_i X_iᵀ; straight from X when it allows (C-ordered, in the product dtype, in range)."""
        lo, hi = _SAFE[self.dtype]
        bound = X.shape[0] * xmax * xmax
        if (X.flags.c_contiguous and X.dtype == self.dtype and (xmax == 0.0 or lo <= xmax <= hi)
                and self._bound + bound <= _SUM_LIMIT):
            if self.dtype == np.float64:
                blas.dsyrk(1.0, X.T, beta=1.0, c=self._gram, trans=0, lower=0, overwrite_c=1)
                return bound
            if self._scratch is None or self._scratch.dtype != self.dtype:
                self._scratch = np.zeros((self.d, self.d), dtype=self.dtype, order="F")
            blas.ssyrk(1.0, X.T, beta=0.0, c=self._scratch, trans=0, lower=0, overwrite_c=1)
            _add_upper(self._gram, self._scratch, 1.0, numba.get_num_threads())
            return bound
        return self._product(X, ones, self._gram, row0)

    def _product(self, X, w, target, row0, what="X"):
        """target (upper, F-ordered float64) += Σ_i w_i X_i X_iᵀ over the rows of one chunk.

        Raises before touching ``target`` when X holds NaN/inf or the result
        would overflow float64; returns the chunk's bound on |entry|.
        """
        n = X.shape[0]
        buf, dest = self._buffers(n)
        cap = buf.shape[0]
        p, q = _destinations(w, cap, dest[:n])
        nt = numba.get_num_threads()
        if X.flags.f_contiguous and not X.flags.c_contiguous:
            def pack(scale):
                return _pack_cols(X, w, dest[:n], buf, scale, nt)
        else:
            def pack(scale):
                return _max_abs_and_first_bad(
                    X, nt, lambda B, am, em: _pack_rows(X, B, w, dest[:n], buf, scale, am, em, nt))
        bad, xmax = pack(1.0)
        if bad >= 0:
            raise ValueError(f"{what}: non-finite value in row {row0 + bad}; remove or impute NaN/inf before building T")
        # a bound on √|w_i|·|x_ij| over the packed rows (exact when the largest |x| is in a row of the largest |w|)
        big = xmax * math.sqrt(float(np.max(np.abs(w), initial=0.0)))
        if big == 0.0 or not (p or q):
            return 0.0
        if not math.isfinite(big):
            raise ValueError(
                f"{what}: values too large: √|w|·|x| overflows float64 in rows {row0}..{row0 + n - 1}; "
                "rescale X, e.g. X / np.abs(X).max() (T scales by the square)"
            )
        lo, hi = _SAFE[self.dtype]
        bound = (p + q) * big * big
        e = 0
        if not lo <= big <= hi:  # scale the packed rows by a power of two (exact) and back in float64
            e = max(math.frexp(big)[1], -1000)  # below 2^-1000 the squares underflow float64 anyway
            pack(math.ldexp(1.0, -e))
        careful = e != 0 or self.dtype == np.float32 or self._bound + bound > _SUM_LIMIT
        syrk = _syrk_func(self.dtype)
        if not careful:  # float64 in range: straight into the sum
            if p:
                syrk(1.0, buf[:p].T, beta=1.0, c=target, trans=0, lower=0, overwrite_c=1)
            if q:
                syrk(-1.0, buf[cap - q:].T, beta=1.0, c=target, trans=0, lower=0, overwrite_c=1)
            return bound
        if self._scratch is None or self._scratch.dtype != self.dtype:
            self._scratch = np.zeros((self.d, self.d), dtype=self.dtype, order="F")
        c = self._scratch
        beta = 0.0
        if p:
            syrk(1.0, buf[:p].T, beta=beta, c=c, trans=0, lower=0, overwrite_c=1)
            beta = 1.0
        if q:
            syrk(-1.0, buf[cap - q:].T, beta=beta, c=c, trans=0, lower=0, overwrite_c=1)
        if e == 0 and self._bound + bound <= _SUM_LIMIT:
            _add_upper(target, c, 1.0, nt)
            return bound
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            new = np.asfortranarray(np.triu(target) + np.ldexp(np.triu(c).astype(np.float64), 2 * e))
        if not np.isfinite(new).all():
            raise ValueError(
                f"{what}: values too large: the sums of T overflow float64 (rows {row0}..{row0 + n - 1} reach "
                f"√|w|·|x| = {big:.3g}); rescale X, e.g. X / np.abs(X).max() (T scales by the square)"
            )
        target[...] = new
        return bound

    def _snapshot(self) -> dict:
        """Copies of every mutable field (restored when an update fails half-way)."""
        return {k: (v.copy(order="K") if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()
                if k not in ("_lock", "_buf", "_dest", "_scratch", "_sketch")}

    def _restore(self, snap: dict) -> None:
        self.__dict__.update(snap)

    def _frame_change(self, frame):
        """What incoming rows in ``frame`` need: None (same frame), "adopt", "to_x"; or refuse."""
        frame = _check_frame(frame, self.d)
        if frame == self.frame:
            return None
        if self.n == 0:
            return "adopt"
        if frame is None:  # x rows into latent-frame sums: turn the sums into the x frame first
            return "to_x"
        raise ValueError(
            f"frame: these rows are in {frame!r} but the accumulator holds sums in "
            f"{'the x frame' if self.frame is None else repr(self.frame)}; pass rows of x (frame=None)"
        )

    def _to_x_frame(self):
        if self.frame is None:
            return
        f = self.frame
        self._sum = _upper_fortran(f.matrix_to_x(_full(self._sum)))
        if self._gram is not None:
            self._gram = _upper_fortran(f.matrix_to_x(_full(self._gram)))
        if self._sx is not None:
            self._sx = f.vector_to_x(self._sx)
            self._swx = f.vector_to_x(self._swx)
        self.frame = None

    # --------------------------------------------------------------- public
    def update(self, X_block, y_block, *, frame=None) -> "SpectralAccumulator":
        """Add the rows of one block; returns ``self``.

        The update is atomic: when it raises (bad X or y, a τ that fails, an
        overflow), the accumulator is left exactly as it was.

        Parameters
        ----------
        X_block : array of shape (rows, d)
        y_block : array of shape (rows,)
        frame : LatentFrame or None
            Frame of ``X_block``'s rows (``None``: x). Only the engine passes a
            latent frame (a model's latent rows); rows of x added to sums held
            in a latent frame turn those sums into the x frame first.
        """
        X, y = check_block(X_block, y_block, self.d, "the accumulator's d")
        n = X.shape[0]
        with self._lock:
            if n == 0:
                return self
            base = self._base
            if base is None:  # center=True: store weights relative to the first block's mean (conditioning)
                base = float(np.mean(self.preprocess(_finite_labels(y, self.n))))
            w = self.preprocess.weights(y, shift=base, row0=self.n)
            step = self.block_size
            risky = False
            if n > step or self._gram is not None:  # several products: find every error before the first is added
                bad, xmax = _max_abs_and_first_bad(X, numba.get_num_threads())
                if bad >= 0:
                    raise ValueError(
                        f"X: non-finite value in row {self.n + bad}; remove or impute NaN/inf before building T"
                    )
                bound_all = n * max(float(np.max(np.abs(w), initial=0.0)), 1.0) * xmax * xmax
                risky = not self._bound + bound_all <= _SUM_LIMIT  # an overflow could stop a later product
            change = self._frame_change(frame)
            snapshot = self._snapshot() if (risky or change == "to_x") else None
            try:
                if change == "to_x":
                    self._to_x_frame()
                ones = np.ones(min(n, step)) if self._gram is not None else None
                for lo in range(0, n, step):
                    hi = min(n, lo + step)
                    b = self._product(X[lo:hi], w[lo:hi], self._sum, self.n + lo)
                    if self._gram is not None:
                        b = max(b, self._gram_product(X[lo:hi], ones[: hi - lo], xmax, self.n + lo))
                    self._bound += b
            except Exception:
                if snapshot is not None:
                    self._restore(snapshot)
                raise
            if self._sx is not None:
                _col_sums(X, w, self._sx, self._swx, numba.get_num_threads())
            if change == "adopt":
                self.frame = frame
            self._base = base
            self._wsum += float(np.sum(w))
            self._w2sum += float(np.dot(w, w))
            self._sketch.add(w, base)
            self.n += n
        return self

    def merge(self, other: "SpectralAccumulator") -> "SpectralAccumulator":
        """Add another accumulator's rows (same d, τ, centring and moments); returns ``self``.

        Accumulators held in different frames are both brought into the x
        frame first (``other`` is not changed).
        """
        if not isinstance(other, SpectralAccumulator):
            raise TypeError(f"other: expected a SpectralAccumulator, got {type(other).__name__}")
        if other is self:
            raise ValueError("other: an accumulator cannot be merged into itself; merge a copy()")
        first, second = sorted((self, other), key=id)
        with first._lock, second._lock:
            if other.d != self.d:
                raise ValueError(f"other: d differs ({other.d} vs {self.d}); merge accumulators of the same width")
            if other.preprocess != self.preprocess:
                raise ValueError(
                    f"other: built with preprocess {other.preprocess.name!r}, not {self.preprocess.name!r}; "
                    "merge accumulators of the same τ"
                )
            if not _same_center(other.center, self.center):
                raise ValueError(
                    f"other: center differs ({other.center!r} vs {self.center!r}); merge accumulators with the same center"
                )
            if other.moments_kept != self.moments_kept:
                raise ValueError(
                    f"other: moments={other.moments_kept} but moments={self.moments_kept} here; "
                    "merge accumulators built with the same moments option"
                )
            if other.n == 0:
                return self
            src = other
            if other.frame != self.frame:
                if self.n == 0:
                    self.frame = other.frame
                else:
                    src = other.copy()
                    src._to_x_frame()
                    self._to_x_frame()
            d_base = 0.0
            if self.center is True:
                if self.n == 0:
                    self._base = other._base
                d_base = src._base - self._base  # other's weights are relative to its own base
            self._sum += src._sum if d_base == 0.0 else src._sum + d_base * src._gram
            if self._gram is not None:
                self._gram += src._gram
            if self._sx is not None:
                self._sx += src._sx
                self._swx += src._swx + d_base * src._sx
            self._wsum += src._wsum + d_base * src.n
            self._w2sum += src._w2sum + 2.0 * d_base * src._wsum + d_base**2 * src.n
            self._bound += src._bound
            self._sketch.merge(src._sketch)
            self.n += src.n
        return self

    def finalize(self, dtype=np.float64) -> np.ndarray:
        """T = (1/n) Σ w_i x_i x_iᵀ of x as a symmetric d×d C-ordered array (the accumulator stays usable).

        With ``center=True`` the weights are centered by their exact mean
        over all rows held. Sums held in a latent frame are turned into T of x
        (the accumulator itself is not changed).
        """
        dtype = check_dtype(dtype, "dtype")
        with self._lock:
            if self.n == 0:
                raise ValueError("finalize: no rows seen yet; call update() with at least one row first")
            out = np.empty((self.d, self.d), dtype=np.float64)
            G = self._gram if self._gram is not None else self._sum
            _symmetrize_kernel(self._sum, G, self._delta, 1.0 / self.n, out)
            if self.frame is not None:
                out = np.ascontiguousarray(self.frame.matrix_to_x(out))
        return out.astype(dtype, copy=False)

    def moments(self) -> dict:
        """First and second moments of x and the weighted first moment, in the x frame (needs ``moments=True``).

        Returns ``{"n", "mean": x̄, "gram": Σ x xᵀ / n, "weight_mean": w̄,
        "weighted_sum": Σ w_i x_i / n}`` with ``w`` the weights of
        :meth:`finalize`. With them (docs/engine.md), the covariance is
        ``gram − x̄ x̄ᵀ`` and T of centered x is
        ``(1/n) Σ w_i (x_i − x̄)(x_i − x̄)ᵀ = T − s x̄ᵀ − x̄ sᵀ + w̄ x̄ x̄ᵀ``.
        """
        with self._lock:
            if not self.moments_kept:
                raise ValueError("moments: this accumulator was built with moments=False; build it with moments=True")
            if self.n == 0:
                raise ValueError("moments: no rows seen yet; call update() with at least one row first")
            n = self.n
            gram, sx, swx = _full(self._gram) / n, self._sx / n, self._swx / n
            m = swx - self._delta * sx  # Σ w_i x_i / n with the weights of finalize()
            if self.frame is not None:
                gram = self.frame.matrix_to_x(gram)
                sx, m = self.frame.vector_to_x(sx), self.frame.vector_to_x(m)
            return {"n": n, "mean": sx, "gram": gram, "weight_mean": self.weight_mean, "weighted_sum": m}

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        """Everything needed to resume or to ship the accumulator: NumPy arrays and scalars.

        Save it with ``np.savez(path, **acc.state())`` and read it back with
        :meth:`from_state` (which validates what it reads).
        """
        pre = self.preprocess
        if not pre.is_builtin:
            raise ValueError("state: only accumulators with a built-in preprocess can be saved; pass its name")
        with self._lock:
            empty = np.zeros((0, 0))
            out = {
                "format": STATE_FORMAT, "d": self.d, "n": self.n,
                "sum": np.array(self._sum), "wsum": self._wsum, "w2sum": self._w2sum,
                "base": np.nan if self._base is None else self._base,
                "center": "exact" if self.center is True else ("none" if self.center is False else "value"),
                "preprocess": pre.name, "param": pre.param, "dtype": self.dtype.name,
                "block_size": self.block_size, "moments": self.moments_kept,
                "frame": "" if self.frame is None else json.dumps(self.frame.key),
                "gram": empty if self._gram is None else np.array(self._gram),
                "sx": np.zeros(0) if self._sx is None else self._sx.copy(),
                "swx": np.zeros(0) if self._swx is None else self._swx.copy(),
                "bound": self._bound,
            }
            out.update(self._sketch.state())
            out["sketch_counts"] = out["sketch_counts"].copy()
            out["sketch_sums"] = out["sketch_sums"].copy()
        return out

    @classmethod
    def from_state(cls, state) -> "SpectralAccumulator":
        """Rebuild an accumulator from :meth:`state` (a dict, an ``np.load``-ed ``.npz``, or its path).

        Everything is checked for meaning, not only format: shapes, counts,
        finiteness, consistency of the weight moments; a damaged or foreign
        file is a ValueError naming the file and the key.
        """
        where = ""
        if isinstance(state, (str, bytes, os.PathLike)):
            path = os.fsdecode(state)
            where = f" in {path!r}"
            try:
                with np.load(path, allow_pickle=False) as f:
                    state = {k: f[k] for k in f.files}
            except FileNotFoundError:
                raise FileNotFoundError(f"state: no such file {path!r}") from None
            except Exception as exc:  # truncated, byte-flipped, not a zip, not .npz
                raise ValueError(
                    f"state: {path!r} is not a readable accumulator state ({type(exc).__name__}: {exc}); "
                    "delete it to recompute"
                ) from None
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(
                f"state: expected a dict from SpectralAccumulator.state(), a loaded .npz or a path, got {type(state).__name__}"
            )
        try:
            return _from_state(cls, state)
        except ValueError as exc:
            raise ValueError(f"{exc}{where}") from None

    def copy(self) -> "SpectralAccumulator":
        """An independent accumulator with the same state (user preprocess functions included)."""
        with self._lock:
            new = SpectralAccumulator(self.d, preprocess=self.preprocess, dtype=self.dtype, center=self.center,
                                      block_size=self.block_size, moments=self.moments_kept, frame=self.frame)
            new.n, new._base, new._wsum, new._w2sum, new._bound = self.n, self._base, self._wsum, self._w2sum, self._bound
            new._sum[...] = self._sum
            if self._gram is not None:
                new._gram[...] = self._gram
            if self._sx is not None:
                new._sx[...] = self._sx
                new._swx[...] = self._swx
            new._sketch = self._sketch.copy()
        return new

    def __reduce__(self):
        return (SpectralAccumulator.from_state, (self.state(),))

    def __repr__(self) -> str:
        frame = "" if self.frame is None else f", frame={self.frame!r}"
        return (
            f"SpectralAccumulator(d={self.d}, preprocess={self.preprocess.name!r}, dtype={self.dtype.name}, "
            f"center={self.center!r}, n={self.n}{frame})"
        )


# ------------------------------------------------------------------ helpers
class _WeightLaw:
    """``acc.weight_sketch``: the law of an accumulator's weights, read when asked."""

    def __init__(self, acc):
        self._acc = acc

    def law(self):
        return self._acc.weight_law()

    @property
    def counts(self) -> np.ndarray:
        return self._acc._sketch.counts

    def __repr__(self) -> str:
        return f"<law of the weights of {self._acc!r}>"


def _check_frame(frame, d):
    from .model import LatentFrame

    if frame is None:
        return None
    if not isinstance(frame, LatentFrame):
        raise TypeError(f"frame: expected None or a LatentFrame (HMIModel.frame), got {type(frame).__name__}")
    if frame.d != d:
        raise ValueError(f"frame: its d={frame.d} differs from the accumulator's d={d}")
    return frame


def _same_center(a, b) -> bool:
    return type(a) is type(b) and a == b


def _finite_labels(y, row0):
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"y: non-finite value at row {row0 + int(np.argmax(bad))}; remove or impute NaN/inf labels")
    return y


_STATE_KEYS = ("format", "d", "n", "sum", "wsum", "w2sum", "base", "center", "preprocess", "param", "dtype",
               "block_size", "moments", "frame", "gram", "sx", "swx", "bound", "sketch_counts", "sketch_sums",
               "sketch_min", "sketch_max")


def _scalar(state, key, kind):
    """One scalar entry of a state, checked for its kind ('int', 'float', 'str', 'bool')."""
    v = np.asarray(state[key])
    if v.shape != ():
        raise ValueError(f"state: {key!r} must be a scalar, got an array of shape {v.shape}")
    v = v[()]
    if isinstance(v, np.generic):
        v = v.item()
    if kind == "str":
        if not isinstance(v, str):
            raise ValueError(f"state: {key!r} must be a string, got {v!r}")
        return v
    if kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"state: {key!r} must be True or False, got {v!r}")
        return bool(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"state: {key!r} must be a number, got {v!r}")
    if kind == "int":
        if float(v) != int(v) or isinstance(v, (float, np.floating)) and not float(v).is_integer():
            raise ValueError(f"state: {key!r} must be an integer, got {v!r}")
        return int(v)
    return float(v)


def _array(state, key, shape):
    a = np.asarray(state[key])
    if a.dtype.kind not in "fiu" or a.shape != shape:
        raise ValueError(f"state: {key!r} must be a float array of shape {shape}, got dtype {a.dtype}, shape {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"state: {key!r} holds NaN or inf")
    return a


def _from_state(cls, state):
    missing = [k for k in _STATE_KEYS if k not in state]
    if "format" in missing:
        raise ValueError("state: no 'format' entry: not a state of this version of hmi_fast's SpectralAccumulator; recompute it")
    fmt = _scalar(state, "format", "str")
    if fmt != STATE_FORMAT:
        raise ValueError(f"state: format {fmt!r} is not {STATE_FORMAT!r}; recompute it with this version")
    if missing:
        raise ValueError(f"state: missing entries {missing}")
    d = _scalar(state, "d", "int")
    n = _scalar(state, "n", "int")
    if d < 1:
        raise ValueError(f"state: 'd' must be >= 1, got {d}")
    if n < 0:
        raise ValueError(f"state: 'n' must be >= 0, got {n}")
    name = _scalar(state, "preprocess", "str")
    if name not in BUILTIN_PREPROCESS:
        raise ValueError(f"state: unknown preprocess {name!r}; expected one of {sorted(BUILTIN_PREPROCESS)}")
    param = _scalar(state, "param", "float")
    pre = clip(param) if name == "clip" else Preprocess(name, BUILTIN_PREPROCESS[name], 1.0, None)
    dtype = _scalar(state, "dtype", "str")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"state: 'dtype' must be 'float32' or 'float64', got {dtype!r}")
    block_size = _scalar(state, "block_size", "int")
    if block_size < 1:
        raise ValueError(f"state: 'block_size' must be >= 1, got {block_size}")
    moments = _scalar(state, "moments", "bool")
    mode = _scalar(state, "center", "str")
    base = _scalar(state, "base", "float")
    if mode not in ("none", "value", "exact"):
        raise ValueError(f"state: 'center' must be 'none', 'value' or 'exact', got {mode!r}")
    if mode == "none" and base != 0.0:
        raise ValueError(f"state: 'base' must be 0 without centring, got {base}")
    if mode == "value" and not math.isfinite(base):
        raise ValueError(f"state: 'base' must be a finite number with center=value, got {base}")
    if mode == "exact" and not (math.isfinite(base) if n else math.isnan(base)):
        raise ValueError(f"state: 'base' must be {'finite' if n else 'NaN'} for an exact-centred state with n={n}")
    center = {"none": False, "exact": True}.get(mode, base)
    frame_text = _scalar(state, "frame", "str")
    frame = None
    if frame_text:
        from .model import LatentFrame

        try:
            key = json.loads(frame_text)
        except json.JSONDecodeError:
            raise ValueError(f"state: 'frame' is not valid JSON: {frame_text[:80]!r}") from None
        frame = LatentFrame.from_key(key)
    S = _array(state, "sum", (d, d))
    wsum, w2sum = _scalar(state, "wsum", "float"), _scalar(state, "w2sum", "float")
    bound = _scalar(state, "bound", "float")
    if not (math.isfinite(wsum) and math.isfinite(w2sum) and w2sum >= 0):
        raise ValueError(f"state: 'wsum', 'w2sum' must be finite with w2sum >= 0, got {wsum}, {w2sum}")
    if n == 0 and (np.any(S) or wsum or w2sum):
        raise ValueError("state: n is 0 but the sums are not zero")
    if wsum * wsum > n * w2sum * (1 + 1e-9) + 1e-300:
        raise ValueError(f"state: inconsistent weight moments (wsum² = {wsum * wsum:.6g} > n·w2sum = {n * w2sum:.6g})")
    keeps_gram = mode == "exact" or moments
    G = _array(state, "gram", (d, d) if keeps_gram else (0, 0))
    if keeps_gram and (np.diag(G) < 0).any():
        raise ValueError("state: 'gram' has a negative diagonal entry; it is not a Gram matrix")
    sx = _array(state, "sx", (d,) if moments else (0,))
    swx = _array(state, "swx", (d,) if moments else (0,))
    sketch = WeightSketch.from_state(state["sketch_counts"], state["sketch_sums"], _scalar(state, "sketch_min", "float"),
                                     _scalar(state, "sketch_max", "float"), n)
    acc = cls(d, preprocess=pre, dtype=dtype, center=center, block_size=block_size, moments=moments, frame=frame)
    acc.n, acc._wsum, acc._w2sum, acc._bound = n, wsum, w2sum, max(bound, 0.0)
    acc._base = (None if n == 0 else base) if mode == "exact" else acc._base
    acc._sum[...] = np.triu(S)
    if keeps_gram:
        acc._gram[...] = np.triu(G)
    if moments:
        acc._sx[...] = sx
        acc._swx[...] = swx
    acc._sketch = sketch
    return acc
