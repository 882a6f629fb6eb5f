"""Link functions g of the hierarchical multi-index model (docs/model.md).

Built-ins are centred (E g(z) = 0 for z ~ N(0, 1)):

========== ==============================================
``he2``    He₂(z)/√2 = (z² − 1)/√2
``he2_he4`` He₂(z)/2 + He₄(z)/(2·4!), He₄(z) = z⁴ − 6z² + 3
``abs``    |z| − √(2/π)
``relu``   max(z, 0) − 1/√(2π)
========== ==============================================

A user function of one variable is accepted too: a numba-jitted scalar
function runs inside the package's kernels; a plain vectorised Python
callable is applied to whole columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._config import jit

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

BUILTIN_LINKS = {"he2": 0, "he2_he4": 1, "abs": 2, "relu": 3}


@jit(inline="always")
def _builtin_link(code, z):
    if code == 0:
        return (z * z - 1.0) / _SQRT2
    if code == 1:
        z2 = z * z
        return 0.5 * (z2 - 1.0) + (z2 * z2 - 6.0 * z2 + 3.0) / 48.0
    if code == 2:
        return abs(z) - _SQRT_2_OVER_PI
    return max(z, 0.0) - _INV_SQRT_2PI


def _numpy_builtin(code: int, z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if code == 0:
        return (z * z - 1.0) / _SQRT2
    if code == 1:
        z2 = z * z
        return 0.5 * (z2 - 1.0) + (z2 * z2 - 6.0 * z2 + 3.0) / 48.0
    if code == 2:
        return np.abs(z) - _SQRT_2_OVER_PI
    return np.maximum(z, 0.0) - _INV_SQRT_2PI


def _is_numba_function(f) -> bool:
    from numba.core.registry import CPUDispatcher

    return isinstance(f, CPUDispatcher)


@dataclass(frozen=True)
class Link:
    """A resolved link function.

    Attributes
    ----------
    name : str
        Built-in name or the callable's ``__name__``.
    code : int
        Built-in code (``-1`` for user functions).
    func : callable or None
        The user function (``None`` for built-ins).
    """

    name: str
    code: int = -1
    func: Callable | None = None

    @property
    def is_builtin(self) -> bool:
        return self.code >= 0

    @property
    def is_jitted(self) -> bool:
        return self.func is not None and _is_numba_function(self.func)

    def __call__(self, z) -> np.ndarray:
        """Evaluate on an array (NumPy reference path)."""
        if self.is_builtin:
            return _numpy_builtin(self.code, z)
        z = np.asarray(z, dtype=np.float64)
        if self.is_jitted:
            return np.array([self.func(float(v)) for v in z.ravel()]).reshape(z.shape)
        out = np.asarray(self.func(z), dtype=np.float64)
        if out.shape != z.shape:
            raise ValueError(
                f"link: the function {self.name!r} returned shape {out.shape} for input of shape "
                f"{z.shape}; it must act elementwise"
            )
        return out


def resolve_link(spec) -> Link:
    """Turn a name, a callable or a :class:`Link` into a :class:`Link`."""
    if isinstance(spec, Link):
        return spec
    if isinstance(spec, str):
        if spec not in BUILTIN_LINKS:
            raise ValueError(f"link: unknown name {spec!r}; use one of {sorted(BUILTIN_LINKS)} or a callable")
        return Link(spec, BUILTIN_LINKS[spec], None)
    if callable(spec):
        link = Link(getattr(spec, "__name__", "custom"), -1, spec)
        if link.is_jitted:
            _probe_jitted(link)
        return link
    raise TypeError(f"link: expected a name or a callable, got {type(spec).__name__}")


def _probe_jitted(link: Link) -> None:
    """A jitted link runs inside the kernels: check once, here, that it maps a float to a number."""
    from numba.core.errors import NumbaError

    try:
        value = link.func(0.5)
    except NumbaError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TypeError(f"link: the numba function {link.name!r} does not compile for a float64 argument "
                        f"({first}); it must map one float to one float") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"link: the numba function {link.name!r} returned {type(value).__name__} for 0.5; "
                        "it must return a float")


def resolve_links(spec, m_star: int) -> tuple[Link, ...]:
    """One link per direction: a single spec is shared by all ``m_star``."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != m_star:
            raise ValueError(f"link: got {len(spec)} links for m_star={m_star} directions; give one or m_star")
        return tuple(resolve_link(s) for s in spec)
    link = resolve_link(spec)
    return (link,) * m_star


@jit(parallel=False)
def _apply_builtin_links(z, codes, a, out):
    """out[i] = Σ_k a[k] g_{codes[k]}(z[i, k]) for built-in links."""
    n, m = z.shape
    for i in range(n):
        s = 0.0
        for k in range(m):
            s += a[k] * _builtin_link(codes[k], z[i, k])
        out[i] = s


@jit()
def _apply_jitted_link(f, z, k, a_k, out):
    """out[i] += a_k f(z[i, k]) for a numba-jitted user link."""
    for i in range(z.shape[0]):
        out[i] += a_k * f(z[i, k])


def combine(links: tuple[Link, ...], a: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Noise-free target ``Σ_k a_k g_k(z_k)`` for pre-activations ``z`` of shape (n, m*)."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    n, m = z.shape
    out = np.zeros(n, dtype=np.float64)
    builtin = np.array([link.is_builtin for link in links])
    if builtin.any():
        codes = np.array([link.code if link.is_builtin else 0 for link in links], dtype=np.int64)
        coef = np.where(builtin, a, 0.0).astype(np.float64)
        _apply_builtin_links(z, codes, coef, out)
    for k, link in enumerate(links):
        if link.is_builtin:
            continue
        if link.is_jitted:
            _apply_jitted_link(link.func, z, k, float(a[k]), out)
        else:
            out += a[k] * link(z[:, k])
    return out
