"""The gradient-descent view of the spectral stage (docs/network.md, "The gradient-descent view").

Near a small initialisation, full-batch gradient descent on the first layer
of ``f(x) = Σ_j σ(<u_j, x>)`` with ``σ(z) = z²/2`` multiplies the weights by
``I + lr·T`` at every step, ``T = (1/n) Σ y_i x_i x_iᵀ``: power iteration on
the spectral matrix with τ = identity. :func:`gd_first_layer` runs it beside
that power iteration and records both overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_dense, check_finite, check_int, check_lengths, check_number
from .engine import spectral_matrix


@dataclass(frozen=True)
class GDTrajectory:
    """First-layer gradient descent, recorded every ``record_every`` steps.

    ``steps`` (r,), ``overlap`` (r,): ``||V_pᵀ Q_U||_F² / p`` between the span
    of the first-layer weights and the top-p eigenvectors V_p of
    ``T = (1/n) Σ y_i x_i x_iᵀ``; ``overlap_power`` the same for power
    iteration with ``I + lr·T`` from the same start (the small-weight limit);
    ``overlap_star`` with the rows of ``W_star`` when given (else NaN);
    ``norm`` ``||U||_F``; ``eigenvalues`` the top p+1 eigenvalues of T;
    ``weights`` the final U (p × d).
    """

    steps: np.ndarray
    overlap: np.ndarray
    overlap_power: np.ndarray
    overlap_star: np.ndarray
    norm: np.ndarray
    eigenvalues: np.ndarray
    weights: np.ndarray


def subspace_overlap(A, V) -> float:
    """``||Vᵀ Q_A||_F² / k``: Q_A an orthonormal basis of the rows of A (k × d), V orthonormal (d × k')."""
    Q, _ = np.linalg.qr(np.asarray(A, dtype=np.float64).T)
    return float(np.sum((V.T @ Q) ** 2) / Q.shape[1])


def gd_first_layer(X, y, p, steps, lr, seed=None, *, init_scale=1e-6, activation="quadratic", record_every=1,
                   W_star=None, U0=None) -> GDTrajectory:
    """Full-batch gradient descent on the first layer of ``f(x) = Σ_j σ(<u_j, x>)``.

    Square loss ``(1/2n) Σ (y_i − f(x_i))²``, readout weights fixed to 1,
    ``u_j`` started at ``init_scale · N(0, I/d)``. With
    ``σ(z) = z²/2`` (``"quadratic"``; σ(0) = σ'(0) = 0, σ'' = 1) the gradient
    is ``−(1/n) Σ (y_i − f(x_i)) <u_j, x_i> x_i = −T u_j + O(|u|³)``, so each
    step multiplies the weights by ``I + lr·T``: power (subspace) iteration
    on T with τ = identity, converging to its top-p eigenvectors while the
    weights stay small. ``"relu"`` is offered for comparison: its gradient
    ``(1/n) Σ y_i 1{<u_j,x_i> > 0} x_i`` does not shrink with u and is not T u.

    Parameters
    ----------
    X, y : arrays (n × d), (n,)
    p : int
        Hidden units.
    steps : int
        Gradient steps.
    lr : float
        Learning rate (small: lr·λ_max(T) ≪ 1).
    seed : int or None
        Seeds the initialisation.
    init_scale : float
        Scale of the random start ``init_scale · N(0, I/d)``.
    activation : {"quadratic", "relu"}
    record_every : int
        Record the overlaps every this many steps (and at the last).
    W_star : array (m*, d), optional
        True directions: also record the overlap with their span.
    U0 : array (p, d), optional
        Explicit start (replaces the random one).

    Returns
    -------
    GDTrajectory

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.network import gd_first_layer
    >>> X, y = HMIModel(d=30, m_star=1, gamma=1.0, link="he2", seed=0).sample(6000)
    >>> bool(gd_first_layer(X, y, p=1, steps=150, lr=0.05, seed=0).overlap[-1] > 0.9)
    True
    """
    X = check_dense(X, "X", 2).astype(np.float64, copy=False)
    y = check_dense(y, "y", 1).astype(np.float64, copy=False)
    n, d = X.shape
    check_lengths(n, y.shape[0])
    check_finite(X, "X", fix="remove or impute NaN/inf rows first")
    check_finite(y, "y", fix="remove or impute NaN/inf labels first")
    p = check_int(p, "p", 1, d - 1, note=f" (smaller than d={d}: the overlap with p of d eigenvectors)")
    steps = check_int(steps, "steps", 0)
    every = check_int(record_every, "record_every", 1)
    lr = check_number(lr, "lr", 0.0, strict=True)
    init_scale = check_number(init_scale, "init_scale", 0.0, strict=True)
    seed = 0 if seed is None else check_int(seed, "seed", 0, low="0 (or None)")
    if activation not in ("quadratic", "relu"):
        raise ValueError(f"activation: must be 'quadratic' or 'relu' for the GD view, got {activation!r}")
    Vs = None
    if W_star is not None:
        Ws = check_dense(W_star, "W_star", 2).astype(np.float64)
        if Ws.shape[1] != d or Ws.shape[0] == 0:
            raise ValueError(f"W_star: expected shape (m_star, {d}) with one direction per row, got {Ws.shape}")
        check_finite(Ws, "W_star", fix="pass finite directions")
        Vs, _ = np.linalg.qr(Ws.T)
    if U0 is not None:
        U0 = check_dense(U0, "U0", 2).astype(np.float64)
        if U0.shape != (p, d):
            raise ValueError(f"U0: expected shape {(p, d)}, got {U0.shape}")
        check_finite(U0, "U0", fix="pass a finite start")
    T = spectral_matrix(X, y, preprocess="identity")
    evals, evecs = np.linalg.eigh(T)
    V = evecs[:, ::-1][:, :p]
    rng = np.random.default_rng([0x6D, seed])
    U = init_scale * rng.standard_normal((p, d)) / np.sqrt(d) if U0 is None else U0.copy()
    P = U.copy()
    M = np.eye(d) + lr * T
    rec = [[], [], [], [], []]

    def record(t):
        rec[0].append(t)
        rec[1].append(subspace_overlap(U, V))
        Qp, _ = np.linalg.qr(P.T)
        rec[2].append(float(np.sum((V.T @ Qp) ** 2) / p))
        rec[3].append(subspace_overlap(U, Vs) * p / min(p, Vs.shape[1]) if Vs is not None else np.nan)
        rec[4].append(float(np.linalg.norm(U)))

    record(0)
    for t in range(1, steps + 1):
        Z = X @ U.T  # n × p
        if activation == "quadratic":
            f = 0.5 * np.sum(Z * Z, axis=1)
            D = Z
        else:
            f = np.sum(np.maximum(Z, 0.0), axis=1)
            D = (Z > 0).astype(np.float64)
        r = y - f
        U = U + (lr / n) * (X.T @ (D * r[:, None])).T  # −lr · ∂L/∂U (Xᵀ·: BLAS gemm, not a strided product)
        P = P @ M  # rows: (I + lr T) u_j (T symmetric)
        scale = np.linalg.norm(P)
        if scale > 1e100:  # keep the power-iteration reference finite; its span is what is compared
            P /= scale
        if t % every == 0 or t == steps:
            record(t)
    return GDTrajectory(*(np.asarray(r) for r in rec), evals[::-1][: p + 1].copy(), U)
