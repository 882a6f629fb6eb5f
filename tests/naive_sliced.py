"""Slow, obvious NumPy references for SIR and SAVE (tests/naive.py style). Never imports the package.

Each function loops over rows or slices and uses the textbook formulas:
nothing streamed, nothing shifted, nothing packed.
"""

from __future__ import annotations

import numpy as np


def slices_of(y, edges):
    """Slice index of each label: h with edges[h-1] < y <= edges[h], by comparison with every edge."""
    y = np.asarray(y, dtype=np.float64)
    return np.array([sum(1 for e in edges if yi > e) for yi in y], dtype=int)


def slice_moments(X, y, edges):
    """Per-slice counts, means and covariances (divided by n_h), from a Python loop over rows."""
    X = np.asarray(X, dtype=np.float64)
    H = len(edges) + 1
    d = X.shape[1]
    idx = slices_of(y, edges)
    counts = np.zeros(H, dtype=int)
    sums = np.zeros((H, d))
    for i in range(X.shape[0]):
        counts[idx[i]] += 1
        sums[idx[i]] += X[i]
    means = np.full((H, d), np.nan)
    covs = np.full((H, d, d), np.nan)
    for h in range(H):
        if counts[h]:
            means[h] = sums[h] / counts[h]
            R = X[idx == h] - means[h]
            covs[h] = R.T @ R / counts[h]
    return counts, means, covs


def whitener(X):
    """Lower Cholesky factor of the covariance of X divided by n, and the mean."""
    X = np.asarray(X, dtype=np.float64)
    m = X.mean(axis=0)
    C = (X - m).T @ (X - m) / X.shape[0]
    return np.linalg.cholesky(C), m


def sir_matrix(X, y, edges):
    """Σ_h p_h m_h m_hᵀ with m_h the mean of the whitened rows of slice h."""
    L, m = whitener(X)
    Z = np.linalg.solve(L, (np.asarray(X, dtype=np.float64) - m).T).T
    idx = slices_of(y, edges)
    n, d = Z.shape
    M = np.zeros((d, d))
    for h in range(len(edges) + 1):
        rows = Z[idx == h]
        if len(rows):
            mh = rows.mean(axis=0)
            M += len(rows) / n * np.outer(mh, mh)
    return M


def save_matrix(X, y, edges, ddof=0):
    """Σ_h p_h (I − V_h)² with V_h the covariance of the whitened rows of slice h, divided by n_h − ddof."""
    L, m = whitener(X)
    Z = np.linalg.solve(L, (np.asarray(X, dtype=np.float64) - m).T).T
    idx = slices_of(y, edges)
    n, d = Z.shape
    M = np.zeros((d, d))
    for h in range(len(edges) + 1):
        rows = Z[idx == h]
        if len(rows):
            R = rows - rows.mean(axis=0)
            A = np.eye(d) - R.T @ R / (len(rows) - ddof)
            M += len(rows) / n * A @ A
    return M
