"""Error measures of an estimated subspace against the hidden directions (docs/selection.md).

Directions are rows, as everywhere in the package (``components_``,
``HMIModel.W``): ``W_hat`` is ``(k_hat, d)`` with orthonormal rows (the
selected eigenvectors, e.g. ``SpectralEstimator.components_``), ``P_hat =
W_hat^T W_hat``; ``W_star`` is ``(m*, d)`` with rows ``w_k``. Every function
accepts ``k_hat = 0`` (``W_hat`` of shape ``(0, d)``). Eigenvectors from
:func:`~hmi_fast.topk_eigh` are columns, as in ``numpy.linalg.eigh``: pass
``res.vectors[:, index].T``.

Non-orthonormal ``W_star`` (the model's ``directions="gaussian"``): recovery
is measured per direction as ``q_k = ||P_hat w_k||^2 / ||w_k||^2`` (the
squared cosine between ``w_k`` and the subspace), and ``matrix_mse`` uses
the orthogonal projector ``P*`` onto ``span(W*)``, which equals
``W*^T W*`` when the rows are orthonormal.

Nothing here forms a ``d x d`` matrix: ``||P_hat w||^2 = ||W_hat w||^2`` for
orthonormal rows ``W_hat``, and ``||P_hat - P*||_F^2 = k_hat + r - 2 ||W_hat U||_F^2``
for orthonormal bases ``W_hat`` (rows) and ``U`` (columns, rank ``r``) of the two subspaces.
"""

from __future__ import annotations

import numpy as np

__all__ = ["matrix_mse", "overlaps", "recovery", "weighted_mse"]

#: tolerance on ``max |W_hat W_hat^T - I|`` and on ``max |W* W*^T - I|`` (orthonormality tests).
ORTHONORMAL_TOL = 1e-6


def _as_2d(X, name: str, what: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind in "iub":
        X = X.astype(np.float64)
    if X.dtype.kind != "f":
        raise TypeError(f"{name}: unsupported dtype {X.dtype}; pass a float array")
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape {what}, got {X.ndim} dimension(s) of shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name}: contains NaN or inf; it must be finite")
    return X.astype(np.float64, copy=False)


def _check_pair(W_hat, W_star):
    W_hat = _as_2d(W_hat, "W_hat", "(k_hat, d)")
    W_star = _as_2d(W_star, "W_star", "(m_star, d)")
    if W_star.shape[0] == 0:
        raise ValueError("W_star: has no rows; give at least one direction, shape (m_star, d)")
    d = W_star.shape[1]
    if W_hat.shape[1] != d:
        hint = "; pass W_hat.T (directions are rows)" if W_hat.shape[0] == d else ""
        raise ValueError(
            f"W_hat: expected shape (k_hat, {d}) with one direction per row, as W_star {W_star.shape}, "
            f"got {W_hat.shape}{hint}"
        )
    norms = np.linalg.norm(W_star, axis=1)
    if (norms == 0).any():
        raise ValueError(f"W_star: row {int(np.argmin(norms))} has zero norm; every direction must be non-zero")
    return W_hat, W_star, norms


def _check_orthonormal(W_hat):
    k = W_hat.shape[0]
    if k == 0:
        return
    dev = float(np.abs(W_hat @ W_hat.T - np.eye(k)).max())
    if dev > ORTHONORMAL_TOL:
        raise ValueError(
            f"W_hat: rows are not orthonormal: max |W_hat W_hat^T - I| = {dev:.3g} exceeds {ORTHONORMAL_TOL:g}; "
            "orthonormalise it first, e.g. np.linalg.qr(W_hat.T)[0].T"
        )


def overlaps(W_hat, W_star) -> np.ndarray:
    """Overlap matrix ``Q = W_hat W*^T``.

    Parameters
    ----------
    W_hat : array of shape (k_hat, d)
        Estimated directions as rows (orthonormality not required here).
    W_star : array of shape (m_star, d)
        Hidden directions as rows.

    Returns
    -------
    ndarray of shape (k_hat, m_star)

    Examples
    --------
    >>> import numpy as np
    >>> overlaps(np.eye(3)[:2], np.eye(3)).round(3)
    array([[1., 0., 0.],
           [0., 1., 0.]])
    """
    W_hat, W_star, _ = _check_pair(W_hat, W_star)
    return W_hat @ W_star.T


def recovery(W_hat, W_star) -> np.ndarray:
    """Per-direction recovery ``q_k = ||P_hat w_k||^2 / ||w_k||^2`` in [0, 1].

    Computed as ``||W_hat w_k||^2 / ||w_k||^2``; no projector is formed.
    For orthonormal ``W_star`` this is ``||P_hat w_k||^2`` (docs/selection.md).

    Parameters
    ----------
    W_hat : array of shape (k_hat, d)
        Orthonormal rows (checked to 1e-6), e.g. ``SpectralEstimator.components_``.
    W_star : array of shape (m_star, d)

    Returns
    -------
    ndarray of shape (m_star,)

    Examples
    --------
    >>> import numpy as np
    >>> recovery(np.eye(3)[:1], np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])).round(3)
    array([0.5, 0. ])
    """
    W_hat, W_star, norms = _check_pair(W_hat, W_star)
    _check_orthonormal(W_hat)
    Q = W_hat @ W_star.T
    q = np.einsum("ij,ij->j", Q, Q) / norms**2
    return np.clip(q, 0.0, 1.0)


def weighted_mse(W_hat, W_star, a) -> float:
    """Weighted error ``MSE_gamma = sum_k a_k^2 (1 - q_k)`` (package convention).

    With ``sum_k a_k^2 = 1`` (the model's normalisation) it lies in [0, 1]:
    1 when nothing is learned, 0 for perfect recovery. ``a`` is used as
    given, never renormalised, so other weights give other scales.

    Parameters
    ----------
    W_hat : array of shape (k_hat, d)
        Orthonormal rows.
    W_star : array of shape (m_star, d)
    a : array of shape (m_star,)
        Coefficients ``a_k`` (e.g. ``HMIModel.a``).

    Examples
    --------
    >>> import numpy as np
    >>> weighted_mse(np.eye(2)[:1], np.eye(2), [0.8, 0.6])
    0.36
    """
    q = recovery(W_hat, W_star)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] != q.shape[0]:
        raise ValueError(f"a: expected shape ({q.shape[0]},), one weight per row of W_star, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("a: contains NaN or inf; it must be finite")
    return float(np.sum(a * a * (1.0 - q)))


def matrix_mse(W_hat, W_star) -> float:
    """Matrix error ``||P_hat - P*||_F^2 / m*`` (package convention).

    ``P*`` is the orthogonal projector onto ``span(W*)`` (``W*^T W*`` for
    orthonormal rows). Closed form from the overlaps,
    ``k_hat + r - 2 ||W_hat U||_F^2`` with ``U`` an orthonormal basis of
    ``span(W*)`` of rank ``r``: no ``d x d`` matrix is formed.

    Parameters
    ----------
    W_hat : array of shape (k_hat, d)
        Orthonormal rows.
    W_star : array of shape (m_star, d)

    Examples
    --------
    >>> import numpy as np
    >>> matrix_mse(np.eye(3)[:1], np.eye(3)[:2])
    0.5
    """
    W_hat, W_star, _ = _check_pair(W_hat, W_star)
    _check_orthonormal(W_hat)
    m = W_star.shape[0]
    G = W_star @ W_star.T
    if float(np.abs(G - np.eye(m)).max()) <= ORTHONORMAL_TOL:
        U = W_star.T
        r = m
    else:
        u, s, _ = np.linalg.svd(W_star.T, full_matrices=False)
        r = int(np.sum(s > s[0] * max(W_star.shape) * np.finfo(np.float64).eps))
        U = u[:, :r]
    Q = W_hat @ U
    value = W_hat.shape[0] + r - 2.0 * float(np.sum(Q * Q))
    return max(value, 0.0) / m
