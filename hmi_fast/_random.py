"""Counter-based Gaussian generator for streaming data.

Row ``i`` of a stream with seed ``s`` is generated from its own SplitMix64
sequence, started at a hash of ``(s, i)``; normals come from Doornik's
ZIGNOR variant of the Marsaglia–Tsang ziggurat (128 layers; layer index and
uniform taken from disjoint bits of one 64-bit draw). A row is therefore a
function of (seed, row index) alone: the same whatever block size, block
order or thread count reads it, and rows can be generated in parallel.

Reference: J. A. Doornik, "An improved ziggurat method to generate normal
random samples", 2005. SplitMix64: G. Steele, D. Lea, C. Flood, "Fast
splittable pseudorandom number generators", OOPSLA 2014.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange, uint64, int64

from ._config import jit
from ._validation import check_dtype, check_int, check_out

#: rows of a stream are numbered 0 .. ROW_LIMIT - 1: the kernels index them with a signed 64-bit counter.
ROW_LIMIT = 2**63
#: seeds are hashed as 64-bit words.
SEED_LIMIT = 2**64

_C = 128
_R = 3.442619855899
_V = 9.91256303526217e-3


def _tables():
    x = np.zeros(_C + 1)
    f = math.exp(-0.5 * _R * _R)
    x[0] = _V / f
    x[1] = _R
    x[_C] = 0.0
    for i in range(2, _C):
        x[i] = math.sqrt(-2.0 * math.log(_V / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    ratio = x[1:] / x[:-1]
    return x, ratio


ZIG_X, ZIG_R = _tables()

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROW_SALT = np.uint64(0xD1B54A32D192ED03)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_MASK7 = np.uint64(127)
_TWO_M52 = 2.0**-52
_TWO_M53 = 2.0**-53


@jit(inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit(inline="always")
def _row_state(key, row):
    return _mix(key ^ _mix(uint64(row) * _ROW_SALT + _GOLDEN))


@jit(inline="always")
def _next(state):
    state = state + _GOLDEN
    return state, _mix(state)


@jit(inline="always")
def _uniform_open(state):
    """Uniform on (0, 1]."""
    state, r = _next(state)
    return state, (float(r >> _S11) + 1.0) * _TWO_M53


@jit()
def _normal_slow(state, i, u, zx, zr):
    """Rejection part of ZIGNOR (about 1.2% of draws)."""
    while True:
        if i == 0:
            # tail beyond R
            while True:
                state, u1 = _uniform_open(state)
                state, u2 = _uniform_open(state)
                xt = math.log(u1) / _R
                yt = math.log(u2)
                if -2.0 * yt >= xt * xt:
                    break
            if u < 0.0:
                return state, xt - _R
            return state, _R - xt
        x = u * zx[i]
        f0 = math.exp(-0.5 * (zx[i] * zx[i] - x * x))
        f1 = math.exp(-0.5 * (zx[i + 1] * zx[i + 1] - x * x))
        state, u3 = _uniform_open(state)
        if f1 + u3 * (f0 - f1) < 1.0:
            return state, x
        # draw a fresh (i, u) and retry
        state, r = _next(state)
        i = int64(r & _MASK7)
        u = float(int64(r >> _S11)) * _TWO_M52 - 1.0
        if abs(u) < zr[i]:
            return state, u * zx[i]



@jit(inline="always")
def _normal(state, zx, zr):
    state, r = _next(state)
    i = int64(r & _MASK7)
    u = float(int64(r >> _S11)) * _TWO_M52 - 1.0
    if abs(u) < zr[i]:
        return state, u * zx[i]
    return _normal_slow(state, i, u, zx, zr)


def stream_key(seed: int) -> np.uint64:
    """The 64-bit key of a stream (a hash of the seed)."""
    seed = check_int(seed, "seed", 0, SEED_LIMIT - 1, high="2**64 - 1")
    return np.uint64(_mix_py(seed ^ 0x2545F4914F6CDD1D))


def _mix_py(z: int) -> int:
    m = (1 << 64) - 1
    z &= m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@jit(parallel=True)
def _fill_rows(key, row0, X, head, extra, zx, zr):
    """Row ``row0 + i``: X[i, :] then extra[i, :]; head[i, :h] is a float64 copy of X[i, :h]."""
    n, d = X.shape
    h = head.shape[1]
    m = extra.shape[1]
    for i in prange(n):
        state = _row_state(key, row0 + i)
        for j in range(h):
            state, v = _normal(state, zx, zr)
            X[i, j] = v
            head[i, j] = v
        for j in range(h, d):
            state, v = _normal(state, zx, zr)
            X[i, j] = v
        for j in range(m):
            state, v = _normal(state, zx, zr)
            extra[i, j] = v


def fill_normals(seed_key: np.uint64, row0: int, X: np.ndarray, extra: np.ndarray, head: np.ndarray | None = None) -> None:
    """Write the stream's rows ``row0 .. row0 + len(X)`` into ``X`` (then ``extra``) in place.

    ``X`` is C-contiguous float32 or float64; ``extra`` is a float64 array
    with the same number of rows (per-row draws that follow the covariates,
    such as label noise); ``head`` (optional, float64, same rows) receives the
    first ``head.shape[1]`` entries of each row before any rounding to X's dtype.

    Every array is checked (shape, dtype, C-contiguity, writeability, no
    shared memory) before the kernel writes it, and the rows must lie below
    :data:`ROW_LIMIT`.
    """
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise ValueError(f"X: must be a 2-D array of shape (rows, d), got {getattr(X, 'shape', type(X).__name__)}")
    n = X.shape[0]
    check_out(X, X.shape, check_dtype(X.dtype, "X"), "X")
    if not isinstance(extra, np.ndarray) or extra.ndim != 2:
        raise ValueError(f"extra: must be a 2-D float64 array with {n} rows")
    check_out(extra, (n, extra.shape[1]), np.float64, "extra", avoid=[(X, "X")])
    if head is None:
        head = np.empty((n, 0))
    elif not isinstance(head, np.ndarray) or head.ndim != 2 or head.shape[1] > X.shape[1]:
        raise ValueError(f"head: must be a 2-D float64 array with {n} rows and at most {X.shape[1]} columns")
    else:
        check_out(head, (n, head.shape[1]), np.float64, "head", avoid=[(X, "X"), (extra, "extra")])
    row0 = check_int(row0, "row0", 0, ROW_LIMIT - n, high=f"2**63 - {n}", note=" (rows are numbered by a 64-bit counter)")
    _fill_rows(np.uint64(seed_key), np.int64(row0), X, head, extra, ZIG_X, ZIG_R)


def normals(seed: int, row0: int, n: int, d: int, dtype=np.float64) -> np.ndarray:
    """Rows ``row0 .. row0+n`` of the standard normal stream with ``seed`` (shape (n, d)).

    Examples
    --------
    >>> from hmi_fast._random import normals
    >>> normals(seed=0, row0=0, n=2, d=3).shape
    (2, 3)
    """
    n = check_int(n, "n", 0)
    d = check_int(d, "d", 1)
    X = np.empty((n, d), dtype=check_dtype(dtype, "dtype"))
    fill_normals(stream_key(seed), row0, X, np.empty((n, 0)))
    return X
