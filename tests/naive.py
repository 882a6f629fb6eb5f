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


# ---- network


def ridge_reference(F, y, lam):
    """Ridge with an unpenalised intercept from the explicit hat matrix.

    Minimises (1/n) Σ (y_i − b − f_iᵀv)² + λ ||v||²: with the design A = [1, F] and
    D = diag(0, 1, …, 1), β = (AᵀA + nλD)⁻¹ Aᵀy and H = A (AᵀA + nλD)⁻¹ Aᵀ.
    Returns (coef, intercept, tr H, RSS/n, GCV = n·RSS/(n − tr H)²).
    """
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, p = F.shape
    A = np.hstack([np.ones((n, 1)), F])
    D = np.eye(p + 1)
    D[0, 0] = 0.0
    M = A.T @ A + n * lam * D
    beta = np.linalg.solve(M, A.T @ y)
    H = A @ np.linalg.solve(M, A.T)
    r = y - H @ y
    rss = float(r @ r)
    df = float(np.trace(H))
    return beta[1:], float(beta[0]), df, rss / n, n * rss / (n - df) ** 2


def normal_equations_loop(F, y):
    """FᵀF, Fᵀy, yᵀy, Σf, Σy and n as a Python loop over rows."""
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    p = F.shape[1]
    G, c, yy, sf, sy = np.zeros((p, p)), np.zeros(p), 0.0, np.zeros(p), 0.0
    for i in range(F.shape[0]):
        G += np.outer(F[i], F[i])
        c += F[i] * y[i]
        yy += y[i] * y[i]
        sf += F[i]
        sy += y[i]
    return G, c, yy, sf, sy, F.shape[0]


def hermite_features(Z, degree):
    """He_m(z)/√m!, m = 1..degree, for each column of Z (grouped by column), from numpy's HermiteE."""
    from numpy.polynomial import hermite_e

    Z = np.asarray(Z, dtype=np.float64)
    cols = []
    for j in range(Z.shape[1]):
        for m in range(1, degree + 1):
            coef = np.zeros(m + 1)
            coef[m] = 1.0
            cols.append(hermite_e.hermeval(Z[:, j], coef) / math.sqrt(math.factorial(m)))
    return np.stack(cols, axis=1) if cols else np.zeros((Z.shape[0], 0))


def gd_quadratic_reference(X, y, U0, lr, steps):
    """Full-batch GD on U for f(x) = Σ_j (u_jᵀx)²/2 and loss (1/2n) Σ (y − f)², written plainly."""
    X = np.asarray(X, dtype=np.float64)
    U = np.array(U0, dtype=np.float64)
    n = X.shape[0]
    for _ in range(steps):
        grad = np.zeros_like(U)
        for i in range(n):
            z = U @ X[i]
            r = y[i] - 0.5 * float(z @ z)
            grad -= np.outer(z, X[i]) * r / n
        U = U - lr * grad
    return U
