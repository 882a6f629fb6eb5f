"""Streaming accumulation of ``T = (1/n) Σ_i τ(y_i) x_i x_iᵀ`` (docs/engine.md).

Per block, one Numba-parallel pass computes the weights ``w = τ(y) − μ``,
splits the rows by the sign of ``w``, scales them by ``√|w|`` and packs them
into one contiguous buffer (positive rows from the top, negative rows from
the bottom), checking for NaN/inf on the way. BLAS-3 symmetric rank-k
updates then add ``A₊ᵀA₊ − A₋ᵀA₋`` to the upper triangle of a float64
accumulator: n·d² flops instead of the 2·n·d² of a general product, and no
n×d temporary.

float32 blocks are multiplied in float32 (``ssyrk``, twice the speed) and
each block's product is added to the float64 accumulator, so rounding error
grows with the block size, not with n.
"""

from __future__ import annotations

import numpy as np
import numba
from numba import prange
from scipy.linalg import blas

from . import _config
from ._config import jit
from ._validation import check_block, check_dtype, check_positive_int
from .preprocess import Preprocess, resolve_preprocess


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
def _pack_rows(X, w, dest, buf, nt):
    """buf[dest[i]] = √|w_i| X[i] for row-major X; returns the first row holding NaN/inf, or -1."""
    n, d = X.shape
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            r = dest[i]
            nonfinite = False
            if r < 0:
                for j in range(d):
                    nonfinite |= not np.isfinite(X[i, j])
            else:
                s = np.sqrt(abs(w[i]))
                for j in range(d):
                    v = X[i, j]
                    nonfinite |= not np.isfinite(v)
                    buf[r, j] = v * s
            if nonfinite:
                if i < bad[t]:
                    bad[t] = i
    first = bad.min()
    return -1 if first == n else first


@jit(parallel=True)
def _pack_cols(X, w, dest, buf, nt):
    """Column-major variant of :func:`_pack_rows` (F-ordered X)."""
    n, d = X.shape
    scale = np.empty(n, dtype=np.float64)
    for i in range(n):
        scale[i] = np.sqrt(abs(w[i]))
    bad = np.full(nt, n, dtype=np.int64)
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
                r = dest[i]
                if r >= 0:
                    buf[r, j] = v * scale[i]
    first = bad.min()
    return -1 if first == n else first


@jit(parallel=True)
def _add_upper(S, C, nt):
    """S[i, j] += C[i, j] on the upper triangle (i <= j) of F-ordered d×d arrays."""
    d = S.shape[0]
    for t in prange(nt):
        # columns dealt round-robin so the triangle's work is balanced
        for j in range(t, d, nt):
            for i in range(j + 1):
                S[i, j] += C[i, j]


def _syrk_func(dtype):
    return blas.dsyrk if dtype == np.float64 else blas.ssyrk


class SpectralAccumulator:
    """Streaming accumulator for the spectral matrix ``T``.

    Parameters
    ----------
    d : int
        Number of features.
    preprocess : str, callable or Preprocess
        The label transform τ (see :mod:`hmi_fast.preprocess`).
    dtype : np.float32 or np.float64
        Precision of the block products; the running sum is always float64.
    center : bool or float
        Subtract μ from every weight: ``False`` (default) none, a float μ,
        or ``True`` to use the mean of τ over the first block seen.
    block_size : int, optional
        Capacity of the packing buffer; larger updates are processed in
        chunks of this many rows (memory: ``block_size × d`` of ``dtype``).
        Default: 32 MiB of rows (see :func:`hmi_fast._config.block_rows`).

    Attributes
    ----------
    n : int
        Rows seen so far.
    weight_mean, weight_sq_mean : float
        Mean of the weights ``w = τ(y) − shift`` and of their squares: the
        bulk of T is centred near ``weight_mean`` with radius about
        ``2 sqrt(weight_sq_mean · d / n)`` (docs/theory.md).
    shift : float or None
        The μ subtracted from the weights (``None`` until the first block when ``center=True``).

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

    def __init__(self, d, *, preprocess="saturating", dtype=np.float64, center=False, block_size=None):
        self.d = check_positive_int(d, "d")
        self.preprocess: Preprocess = resolve_preprocess(preprocess)
        self.dtype = check_dtype(dtype, "dtype")
        if center is True or center is False:
            self.shift = 0.0 if center is False else None
        else:
            mu = float(center)
            if not np.isfinite(mu):
                raise ValueError(f"center: must be True, False or a finite number, got {center!r}")
            self.shift = mu
        self.center = center
        self.block_size = _config.block_rows(self.d, self.dtype, block_size)
        self.n = 0
        self._wsum = 0.0
        self._w2sum = 0.0
        self._sum = np.zeros((self.d, self.d), dtype=np.float64, order="F")  # upper triangle used
        self._buf = None
        self._dest = None
        self._scratch = None

    # ------------------------------------------------------------ internals
    def _buffers(self, rows: int):
        cap = min(self.block_size, max(rows, 1))
        if self._buf is None or self._buf.shape[0] < cap:
            self._buf = np.empty((cap, self.d), dtype=self.dtype)
            self._dest = np.empty(cap, dtype=np.int64)
        return self._buf, self._dest

    def _add_block(self, X, w, row0):
        n = X.shape[0]
        buf, dest = self._buffers(n)
        cap = buf.shape[0]
        p, q = _destinations(w, cap, dest[:n])
        pack = _pack_cols if (X.flags.f_contiguous and not X.flags.c_contiguous) else _pack_rows
        bad = pack(X, w, dest[:n], buf, numba.get_num_threads())
        if bad >= 0:
            raise ValueError(f"X: non-finite value in row {row0 + bad}; remove or impute NaN/inf before building T")
        syrk = _syrk_func(self.dtype)
        if self.dtype == np.float64:
            if p:
                syrk(1.0, buf[:p].T, beta=1.0, c=self._sum, trans=0, lower=0, overwrite_c=1)
            if q:
                syrk(-1.0, buf[cap - q :].T, beta=1.0, c=self._sum, trans=0, lower=0, overwrite_c=1)
            return
        if self._scratch is None:
            self._scratch = np.zeros((self.d, self.d), dtype=np.float32, order="F")
        c = self._scratch
        beta = 0.0
        if p:
            syrk(1.0, buf[:p].T, beta=beta, c=c, trans=0, lower=0, overwrite_c=1)
            beta = 1.0
        if q:
            syrk(-1.0, buf[cap - q :].T, beta=beta, c=c, trans=0, lower=0, overwrite_c=1)
            beta = 1.0
        if beta:
            _add_upper(self._sum, c, numba.get_num_threads())

    # --------------------------------------------------------------- public
    def update(self, X_block, y_block) -> "SpectralAccumulator":
        """Add the rows of one block. Returns ``self``."""
        X, y = check_block(X_block, y_block, self.d, "the accumulator's d")
        n = X.shape[0]
        if n == 0:
            return self
        if self.shift is None:
            self.shift = float(np.mean(self.preprocess(_finite_labels(y, self.n))))
        w = self.preprocess.weights(y, shift=self.shift, row0=self.n)
        self._wsum += float(np.sum(w))
        self._w2sum += float(np.dot(w, w))
        step = self.block_size
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            self._add_block(X[lo:hi], w[lo:hi], self.n + lo)
        self.n += n
        return self

    def merge(self, other: "SpectralAccumulator") -> "SpectralAccumulator":
        """Add another accumulator's rows (same d, τ and centring). Returns ``self``."""
        if not isinstance(other, SpectralAccumulator):
            raise TypeError(f"other: expected a SpectralAccumulator, got {type(other).__name__}")
        if other.d != self.d:
            raise ValueError(f"other: d differs ({other.d} vs {self.d}); merge accumulators of the same width")
        if other.preprocess != self.preprocess:
            raise ValueError("other: built with a different preprocess; merge accumulators of the same τ")
        if other.n and self.n and other.shift != self.shift:
            raise ValueError(
                f"other: centred with a different μ ({other.shift} vs {self.shift}); pass the same float as center"
            )
        if self.n == 0:
            self.shift = other.shift if other.shift is not None else self.shift
        self._sum += other._sum
        self._wsum += other._wsum
        self._w2sum += other._w2sum
        self.n += other.n
        return self

    @property
    def weight_mean(self) -> float:
        return self._wsum / self.n if self.n else float("nan")

    @property
    def weight_sq_mean(self) -> float:
        return self._w2sum / self.n if self.n else float("nan")

    def state(self) -> dict:
        """Everything needed to resume: arrays and numbers (see :meth:`from_state`)."""
        pre = self.preprocess
        if not pre.is_builtin:
            raise ValueError("state: only accumulators with a built-in preprocess can be saved; pass its name")
        return {
            "sum": self._sum, "n": self.n, "wsum": self._wsum, "w2sum": self._w2sum,
            "shift": np.nan if self.shift is None else self.shift, "preprocess": pre.name, "param": pre.param,
            "dtype": self.dtype.name, "block_size": self.block_size,
        }

    @classmethod
    def from_state(cls, state) -> "SpectralAccumulator":
        """Rebuild an accumulator saved with :meth:`state` (e.g. through ``np.savez``)."""
        from .preprocess import BUILTIN_PREPROCESS, Preprocess

        name = str(state["preprocess"])
        pre = Preprocess(name, BUILTIN_PREPROCESS[name], float(state["param"]), None)
        shift = float(state["shift"])
        acc = cls(np.shape(state["sum"])[0], preprocess=pre, dtype=str(state["dtype"]),
                  center=True if np.isnan(shift) else shift, block_size=int(state["block_size"]))
        acc.shift = None if np.isnan(shift) else shift
        acc._sum[...] = state["sum"]
        acc.n = int(state["n"])
        acc._wsum = float(state["wsum"])
        acc._w2sum = float(state["w2sum"])
        return acc

    def finalize(self, dtype=np.float64) -> np.ndarray:
        """T = (1/n) Σ w_i x_i x_iᵀ as a symmetric d×d C-ordered array (the accumulator stays usable)."""
        if self.n == 0:
            raise ValueError("finalize: no rows seen yet; call update() with at least one row first")
        dtype = check_dtype(dtype, "dtype")
        return _symmetrize_scaled(self._sum, 1.0 / self.n).astype(dtype, copy=False)

    def copy(self) -> "SpectralAccumulator":
        """An independent accumulator with the same state."""
        new = SpectralAccumulator(
            self.d, preprocess=self.preprocess, dtype=self.dtype, center=self.center, block_size=self.block_size
        )
        new.shift = self.shift
        new.n = self.n
        new._wsum, new._w2sum = self._wsum, self._w2sum
        new._sum[...] = self._sum
        return new

    def __repr__(self) -> str:
        return (
            f"SpectralAccumulator(d={self.d}, preprocess={self.preprocess.name!r}, dtype={self.dtype.name}, "
            f"n={self.n})"
        )


def _finite_labels(y, row0):
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"y: non-finite value at row {row0 + int(np.argmax(bad))}; remove or impute NaN/inf labels")
    return y


@jit(parallel=True)
def _symmetrize_kernel(S, scale, out):
    d = S.shape[0]
    for i in prange(d):
        for j in range(i, d):
            v = S[i, j] * scale
            out[i, j] = v
            out[j, i] = v


def _symmetrize_scaled(S: np.ndarray, scale: float) -> np.ndarray:
    """Full symmetric matrix from the upper triangle of ``S``, times ``scale``."""
    out = np.empty(S.shape, dtype=np.float64)
    _symmetrize_kernel(S, scale, out)
    return out
