"""Preprocessing functions τ applied to labels before building T (docs/engine.md).

================ ===================================================
``saturating``   τ(y) = y / (1 + |y|)   (the paper's figures; default)
``identity``     τ(y) = y               (principal Hessian directions)
``sign``         τ(y) = sign(y)
``clip``         τ(y) = clip(y, −c, c)  (``("clip", c)`` or ``clip(c)``; c = 1 by default)
================ ===================================================

A user function works too: a numba-jitted scalar function runs inside the
kernels; a plain vectorised Python callable is applied to each block of y,
and its output is checked for shape and finiteness.

Centring (docs/theory.md) subtracts a constant μ from every weight; it is an
option of the accumulator, not of τ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import numba
from numba import prange

from ._config import jit
from .links import _is_numba_function

BUILTIN_PREPROCESS = {"identity": 0, "saturating": 1, "sign": 2, "clip": 3}


@jit(inline="always")
def _builtin_tau(code, param, y):
    if code == 0:
        return y
    if code == 1:
        return y / (1.0 + abs(y))
    if code == 2:
        if y > 0.0:
            return 1.0
        if y < 0.0:
            return -1.0
        return 0.0
    return min(max(y, -param), param)


def _numpy_tau(code: int, param: float, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if code == 0:
        return y.copy()
    if code == 1:
        return y / (1.0 + np.abs(y))
    if code == 2:
        return np.sign(y)
    return np.clip(y, -param, param)


@jit(parallel=True)
def _weights_builtin(y, code, param, shift, out, nt):
    """out[i] = τ(y[i]) − shift; returns the first index whose y is not finite, or -1."""
    n = y.shape[0]
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            v = y[i]
            if not np.isfinite(v):
                if i < bad[t]:
                    bad[t] = i
                out[i] = 0.0
            else:
                out[i] = _builtin_tau(code, param, v) - shift
    first = bad.min()
    return -1 if first == n else first


@jit()
def _weights_jitted(f, y, shift, out):
    """out[i] = f(y[i]) − shift for a jitted user τ; returns first bad index or -1."""
    for i in range(y.shape[0]):
        v = y[i]
        if not np.isfinite(v):
            return i
        w = f(v)
        if not np.isfinite(w):
            return y.shape[0] + i
        out[i] = w - shift
    return -1


@dataclass(frozen=True)
class Preprocess:
    """A resolved preprocessing function τ.

    Attributes
    ----------
    name : str
    code : int
        Built-in code, ``-1`` for user functions.
    param : float
        The clip level (ignored by other built-ins).
    func : callable or None
        The user function.
    """

    name: str
    code: int = -1
    param: float = 1.0
    func: Callable | None = None

    @property
    def is_builtin(self) -> bool:
        return self.code >= 0

    @property
    def is_jitted(self) -> bool:
        return self.func is not None and _is_numba_function(self.func)

    def __call__(self, y) -> np.ndarray:
        """τ(y) evaluated with NumPy (reference path, no validation of y)."""
        if self.is_builtin:
            return _numpy_tau(self.code, self.param, y)
        y = np.asarray(y, dtype=np.float64)
        if self.is_jitted:
            return np.array([self.func(float(v)) for v in y.ravel()]).reshape(y.shape)
        return np.asarray(self.func(y), dtype=np.float64)

    def weights(self, y: np.ndarray, shift: float = 0.0, out: np.ndarray | None = None, row0: int = 0) -> np.ndarray:
        """Weights ``τ(y) − shift`` of a block, validated (``row0`` numbers rows in messages)."""
        y = np.ascontiguousarray(y, dtype=np.float64)
        n = y.shape[0]
        if out is None:
            out = np.empty(n, dtype=np.float64)
        if self.is_builtin:
            bad = _weights_builtin(y, self.code, float(self.param), float(shift), out, numba.get_num_threads())
            if bad >= 0:
                raise ValueError(f"y: non-finite value at row {row0 + bad}; remove or impute NaN/inf labels")
            return out
        if self.is_jitted:
            try:
                bad = _weights_jitted(self.func, y, float(shift), out)
            except numba.core.errors.TypingError as exc:
                first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
                raise TypeError(
                    f"preprocess: the jitted function {self.name!r} must take a float label and return a float "
                    f"weight; numba could not compile it with one ({first[:200]})"
                ) from None
            if 0 <= bad < n:
                raise ValueError(f"y: non-finite value at row {row0 + bad}; remove or impute NaN/inf labels")
            if bad >= n:
                raise ValueError(
                    f"preprocess: {self.name!r} returned a non-finite value at row {row0 + bad - n}; "
                    "it must map every finite label to a finite weight"
                )
            return out
        finite = np.isfinite(y)
        if not finite.all():
            first = int(np.argmin(finite))
            raise ValueError(f"y: non-finite value at row {row0 + first}; remove or impute NaN/inf labels")
        w = np.asarray(self.func(y))
        if w.shape != y.shape:
            raise ValueError(
                f"preprocess: {self.name!r} returned shape {w.shape} for labels of shape {y.shape}; "
                "it must act elementwise and return one weight per label"
            )
        if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
            raise ValueError(f"preprocess: {self.name!r} must return real numbers, got dtype {w.dtype}")
        wf = np.isfinite(w)
        if not wf.all():
            first = int(np.argmin(wf))
            raise ValueError(
                f"preprocess: {self.name!r} returned a non-finite value at row {row0 + first}; "
                "it must map every finite label to a finite weight"
            )
        np.subtract(w, shift, out=out)
        return out


def clip(level: float = 1.0) -> Preprocess:
    """τ(y) = clip(y, −level, level)."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, float, np.integer, np.floating)):
        raise TypeError(f"preprocess: the clip level must be a positive finite number, e.g. ('clip', 1.0), got {level!r}")
    level = float(level)
    if not (np.isfinite(level) and level > 0):
        raise ValueError(f"preprocess: the clip level must be a positive finite number, e.g. ('clip', 1.0), got {level}")
    return Preprocess("clip", BUILTIN_PREPROCESS["clip"], level, None)


def resolve_preprocess(spec) -> Preprocess:
    """Turn a name, ``("clip", level)``, a callable or a :class:`Preprocess` into a :class:`Preprocess`."""
    if isinstance(spec, Preprocess):
        return spec
    if isinstance(spec, str):
        if spec not in BUILTIN_PREPROCESS:
            raise ValueError(
                f"preprocess: unknown name {spec!r}; use one of {sorted(BUILTIN_PREPROCESS)} or a callable"
            )
        if spec == "clip":
            return clip(1.0)
        return Preprocess(spec, BUILTIN_PREPROCESS[spec], 1.0, None)
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "clip":
        return clip(spec[1])
    if callable(spec):
        return Preprocess(getattr(spec, "__name__", "custom"), -1, 1.0, spec)
    raise TypeError(f"preprocess: expected a name, ('clip', level) or a callable, got {type(spec).__name__}")
