"""Draws, quadrature rules and kernels shared by the theory modules (lowest layer: imports no other theory module).

Everything here is an expectation tool over the m* i.i.d. N(0, 1)
pre-activations ``z_k`` and the label noise ``ξ``: the counter-based normal
stream, batches, the Gauss–Legendre rule, evaluation of links and τ, the
tabulated functions used for τ*, and argument checks common to the theory.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from numba import prange

from .._config import jit
from .._random import fill_normals, stream_key
from ..links import Link, _builtin_link
from ..preprocess import Preprocess, _builtin_tau

DEFAULT_N_SAMPLES = 2_000_000
MIN_N_SAMPLES = 1000
_STREAM_SALT = np.uint64(0x7E0C0FFEE)  # theory streams differ from the data stream of the same seed
_MAX_BATCH_ROWS = 1 << 16
_QUAD_L = 12.0  # z, ξ integrated over [−L, L]; φ(12) ≈ 5e-32


# ---------------------------------------------------------------- tabulated functions


@jit(inline="always")
def _interp1(x, lo, step, values):
    """Linear interpolation on the uniform grid lo + j·step, flat outside (like np.interp)."""
    g = values.shape[0]
    s = (x - lo) / step
    if s <= 0.0:
        return values[0]
    if s >= g - 1:
        return values[g - 1]
    if not s == s:
        return np.nan
    j = int(s)
    r = s - j
    return (1.0 - r) * values[j] + r * values[j + 1]


@jit(parallel=True)
def _interp_uniform(x, lo, step, values, out):
    for i in prange(x.shape[0]):
        out[i] = _interp1(x[i], lo, step, values)


class TabulatedFunction:
    """Vectorised linear interpolation on a uniform grid, flat outside it (picklable)."""

    def __init__(self, lo: float, step: float, values: np.ndarray):
        self.lo, self.step = float(lo), float(step)
        self.values = np.ascontiguousarray(values, dtype=np.float64)
        self.values.setflags(write=False)

    @property
    def grid(self) -> np.ndarray:
        return self.lo + self.step * np.arange(self.values.size)

    def __call__(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        flat = np.ascontiguousarray(y.reshape(-1))
        out = np.empty_like(flat)
        _interp_uniform(flat, self.lo, self.step, self.values, out)
        return out.reshape(y.shape)

    def __repr__(self) -> str:
        hi = self.lo + self.step * (self.values.size - 1)
        return f"TabulatedFunction([{self.lo:.4g}, {hi:.4g}], {self.values.size} points)"


# ---------------------------------------------------------------- kernels


@jit(inline="always")
def _tau(kind, code, param, lo, step, values, y):
    """τ(y): a built-in (kind 0) or a tabulated function (kind 1)."""
    if kind == 0:
        return _builtin_tau(code, param, y)
    return _interp1(y, lo, step, values)


@jit(parallel=True)
def _weights_fused(z, xi, codes, a, sd, kind, code, param, lo, step, values, t, rest):
    """t[i] = τ(y_i) and rest[i, k] = τ(y_i − a_k g_k(z_ik)) for built-in links and a built-in or tabulated τ."""
    n, m = z.shape
    for i in prange(n):
        f = 0.0
        for k in range(m):
            f += a[k] * _builtin_link(codes[k], z[i, k])
        y = f + sd * xi[i]
        t[i] = _tau(kind, code, param, lo, step, values, y)
        for k in range(m):
            rest[i, k] = _tau(kind, code, param, lo, step, values, y - a[k] * _builtin_link(codes[k], z[i, k]))


@jit(parallel=True)
def _builtin_link_matrix(z, codes, out):
    """out[i, k] = g_{codes[k]}(z[i, k]) for the columns with codes[k] >= 0."""
    n, m = z.shape
    for i in prange(n):
        for k in range(m):
            if codes[k] >= 0:
                out[i, k] = _builtin_link(codes[k], z[i, k])


@jit()
def _map_jitted(f, x, out):
    for i in range(x.shape[0]):
        out[i] = f(x[i])


@jit()
def _linear_bin(f, z, lo, h, out):
    """Linear binning of the weights [1, He₂(z_1), …, He₂(z_m)] of each row at position f."""
    n, m = z.shape
    g = out.shape[0]
    for i in range(n):
        s = (f[i] - lo) / h
        j = min(max(int(s), 0), g - 2)
        r = min(max(s - j, 0.0), 1.0)
        out[j, 0] += 1.0 - r
        out[j + 1, 0] += r
        for k in range(m):
            w = z[i, k] * z[i, k] - 1.0
            out[j, 1 + k] += (1.0 - r) * w
            out[j + 1, 1 + k] += r * w


# ---------------------------------------------------------------- evaluation helpers


def eval_tau(tau: Preprocess, y: np.ndarray) -> np.ndarray:
    """τ(y) elementwise for any resolved τ (built-in, jitted or vectorised Python)."""
    if tau.is_builtin:
        return tau(y)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if tau.is_jitted:
        out = np.empty_like(y)
        _map_jitted(tau.func, y, out)
        return out
    out = np.asarray(tau.func(y), dtype=np.float64)
    if out.shape != y.shape:
        raise ValueError(
            f"preprocess: {tau.name!r} returned shape {out.shape} for labels of shape {y.shape}; "
            "it must act elementwise"
        )
    return out


def link_matrix(links: tuple[Link, ...], z: np.ndarray) -> np.ndarray:
    """G[i, k] = g_k(z[i, k])."""
    G = np.empty_like(z)
    codes = np.array([lk.code if lk.is_builtin else -1 for lk in links], dtype=np.int64)
    if (codes >= 0).any():
        _builtin_link_matrix(z, codes, G)
    for k, lk in enumerate(links):
        if lk.is_builtin:
            continue
        col = np.ascontiguousarray(z[:, k])
        if lk.is_jitted:
            out = np.empty_like(col)
            _map_jitted(lk.func, col, out)
            G[:, k] = out
        else:
            G[:, k] = lk(col)
    return G


def batches(n: int) -> list[tuple[int, int]]:
    """Row ranges of the batches: at least 10, at most 64 unless a batch would exceed 2¹⁶ rows."""
    nb = max(min(64, n // 1000), 10, -(-n // _MAX_BATCH_ROWS))
    edges = np.linspace(0, n, nb + 1).astype(np.int64)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]


def normals(key, lo: int, hi: int, m: int):
    """Rows lo..hi of the theory stream: pre-activations (rows, m) and noise draws (rows,)."""
    z = np.empty((hi - lo, m))
    xi = np.empty((hi - lo, 1))
    fill_normals(key, lo, z, xi)
    return z, xi[:, 0]


def theory_key(seed: int) -> np.uint64:
    return np.uint64(stream_key(seed) ^ _STREAM_SALT)


@functools.lru_cache(maxsize=8)
def gl_rule(panels: int, order: int = 8):
    """Composite Gauss–Legendre nodes and N(0, 1)-density weights on [−L, L] (0 is a panel edge)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(-_QUAD_L, _QUAD_L, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x).ravel()
    weights = (half[:, None] * w).ravel() * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    readonly(nodes, weights)
    return nodes, weights


def is_even_link(link: Link) -> bool:
    """g(z) = g(−z): built-ins by name, a user link checked on a grid (then E[h(τ) z_k z_l] = 0 for k ≠ l)."""
    if link.is_builtin:
        return link.name != "relu"
    z = np.linspace(0.05, 6.0, 64)
    g = link_matrix((link,), np.concatenate([z, -z])[:, None])[:, 0]
    gp, gm = g[: z.size], g[z.size:]
    return bool(np.all(np.abs(gp - gm) <= 1e-12 * (1.0 + np.abs(gp))))


def readonly(*arrays):
    for x in arrays:
        if isinstance(x, np.ndarray):
            x.setflags(write=False)


# ---------------------------------------------------------------- validation


def check_model(model) -> None:
    if not all(hasattr(model, name) for name in ("a", "links", "noise", "m_star")):
        raise TypeError(f"model: expected an HMIModel, got {type(model).__name__}")


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_center(center):
    """``center``: False (raw weights), True (subtract E τ) or a finite float μ."""
    if isinstance(center, (bool, np.bool_)):
        return bool(center)
    if isinstance(center, numbers.Real) and math.isfinite(center):
        return float(center)
    raise TypeError(f"center: must be True, False or a finite number, got {center!r}")


def check_alpha(alpha, name: str = "alpha") -> np.ndarray:
    try:
        arr = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: must be a positive number or a 1-D array of them, got {alpha!r}") from None
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"{name}: must be a positive number or a non-empty 1-D array, got shape {arr.shape}")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name}: every sample ratio α = n/d must be finite and > 0, got {alpha!r}")
    return arr


def check_regime(regime) -> str:
    if regime not in ("exact", "large_alpha"):
        raise ValueError(f"regime: must be 'exact' or 'large_alpha', got {regime!r}")
    return regime
