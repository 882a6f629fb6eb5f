"""Slow, obvious NumPy references. Never imports the package's kernels.

Each section belongs to one area of the package; append, never rewrite.
"""

from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------- engine


def tau(name: str, y, level: float = 1.0):
    """The built-in preprocessing functions, written plainly."""
    y = np.asarray(y, dtype=np.float64)
    if name == "identity":
        return y.copy()
    if name == "saturating":
        return y / (1.0 + np.abs(y))
    if name == "sign":
        return np.sign(y)
    if name == "clip":
        return np.clip(y, -level, level)
    raise ValueError(name)


def link(name: str, z):
    """The built-in link functions, written plainly (Hermite polynomials from their definitions)."""
    z = np.asarray(z, dtype=np.float64)
    he2 = z**2 - 1
    he4 = z**4 - 6 * z**2 + 3
    if name == "he2":
        return he2 / math.sqrt(2)
    if name == "he2_he4":
        return he2 / 2 + he4 / (2 * math.factorial(4))
    if name == "abs":
        return np.abs(z) - math.sqrt(2 / math.pi)
    if name == "relu":
        return np.maximum(z, 0) - 1 / math.sqrt(2 * math.pi)
    raise ValueError(name)


def spectral_matrix_loop(X, w):
    """T = (1/n) Σ_i w_i x_i x_iᵀ as a Python loop over rows, in float64."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    T = np.zeros((d, d))
    for i in range(n):
        T += w[i] * np.outer(X[i], X[i])
    return T / n


def spectral_matrix_einsum(X, w):
    """The same with einsum (statsmodels style)."""
    X = np.asarray(X, dtype=np.float64)
    return np.einsum("i,ij,ik->jk", np.asarray(w, dtype=np.float64), X, X) / X.shape[0]
