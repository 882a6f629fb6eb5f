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


# ---- eigen / selection / metrics


def topk_eigh_dense(A, k, which="LA"):
    """The k wanted eigenpairs from a full np.linalg.eigh, in topk_eigh's order.

    "LA": descending; "SA": ascending; "BE": the ceil(k/2) largest descending,
    then the floor(k/2) smallest ascending.
    """
    w, U = np.linalg.eigh(np.asarray(A, dtype=np.float64))
    d = len(w)
    if which == "LA":
        idx = list(range(d - 1, d - 1 - k, -1))
    elif which == "SA":
        idx = list(range(k))
    else:
        idx = list(range(d - 1, d - 1 - (k + 1) // 2, -1)) + list(range(k // 2))
    return w[idx], U[:, idx]


def eigenspace_projector(A, value, width):
    """Projector onto the eigenvectors of A whose eigenvalues lie within ``width`` of ``value``."""
    w, U = np.linalg.eigh(np.asarray(A, dtype=np.float64))
    V = U[:, np.abs(w - value) <= width]
    return V @ V.T


def gap_rule_count(values_from_extreme, center, sigma, delta):
    """The package's gap rule at one end, written plainly.

    ``values_from_extreme``: the eigenvalues of one end as distances beyond the
    bulk centre, from the most extreme inward. Keep everything up to the last
    index i with a normalised gap (x_i - x_{i+1}) / sigma >= delta whose value
    is beyond the bulk edge 2 sigma.
    """
    x = list(values_from_extreme)
    if x and x[-1] > 2 * sigma:  # every value beyond the edge: the edge itself follows the last one
        x.append(2 * sigma)
    k = 0
    for i in range(len(x) - 1):
        gap = (x[i] - x[i + 1]) / sigma
        if gap >= delta and x[i] > 2 * sigma:
            k = i + 1
    return k


def largest_gap_count(values_from_extreme):
    """The rule docs/selection.md warns against: keep everything before the single largest gap."""
    x = list(values_from_extreme)
    best, k = -1.0, 0
    for i in range(len(x) - 1):
        if x[i] - x[i + 1] > best:
            best, k = x[i] - x[i + 1], i + 1
    return k


def edge_rule_count(values_from_extreme, sigma, margin):
    """The bulk-edge rule at one end: values beyond 2 sigma (1 + margin) from the centre."""
    return sum(1 for x in values_from_extreme if x > 2 * sigma * (1 + margin))


def recovery_projector(W_hat, W_star):
    """q_k = ||P w_k||^2 / ||w_k||^2 with the d x d projector P = W_hat^T W_hat (rows) formed explicitly."""
    P = W_hat.T @ W_hat
    return np.array([np.sum((P @ w) ** 2) / np.sum(w * w) for w in W_star])


def matrix_mse_projector(W_hat, W_star):
    """||P_hat - P*||_F^2 / m* with both d x d projectors formed explicitly (P* via pinv); rows."""
    P_hat = W_hat.T @ W_hat
    P_star = W_star.T @ np.linalg.pinv(W_star @ W_star.T) @ W_star
    return float(np.sum((P_hat - P_star) ** 2)) / W_star.shape[0]


def gap_rule_count_beyond(values_from_extreme, beyond, scale, delta):
    """The gap rule with a bulk edge at distance ``beyond`` and gap scale ``scale`` (the exact-bulk form)."""
    x = list(values_from_extreme)
    if x and x[-1] > beyond:  # every value beyond the edge: the edge itself follows the last one
        x.append(beyond)
    k = 0
    for i in range(len(x) - 1):
        if (x[i] - x[i + 1]) / scale >= delta and x[i] > beyond:
            k = i + 1
    return k
