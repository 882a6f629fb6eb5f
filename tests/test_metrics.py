"""Error measures against explicit-projector formulas, their invariances, k_hat = 0 and validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hmi_fast.metrics import matrix_mse, overlaps, recovery, weighted_mse

from . import naive


def orthonormal_rows(k, d, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))[0].T


@pytest.fixture(scope="module")
def case():
    d, m = 40, 7
    W_star = orthonormal_rows(m, d, 1)  # (m, d), orthonormal rows
    # an estimate that sees some directions well and others not at all
    rng = np.random.default_rng(2)
    M = W_star[:4].T + 0.3 * rng.standard_normal((d, 4))
    W_hat = np.linalg.qr(np.column_stack([M, rng.standard_normal(d)]))[0].T  # (5, d) rows
    a = np.arange(1, m + 1) ** -1.3
    a /= np.linalg.norm(a)
    return W_hat, W_star, a


def test_against_naive(case):
    W_hat, W_star, a = case
    assert np.allclose(overlaps(W_hat, W_star), W_hat @ W_star.T)
    q = recovery(W_hat, W_star)
    assert q.shape == (W_star.shape[0],)
    assert np.allclose(q, naive.recovery_projector(W_hat, W_star), atol=1e-12)
    assert weighted_mse(W_hat, W_star, a) == pytest.approx(float(np.sum(a**2 * (1 - q))), abs=1e-12)
    assert matrix_mse(W_hat, W_star) == pytest.approx(naive.matrix_mse_projector(W_hat, W_star), abs=1e-12)


def test_non_orthonormal_directions(case):
    W_hat, _, _ = case
    d = W_hat.shape[1]
    W_star = np.random.default_rng(3).standard_normal((6, d)) / np.sqrt(d)  # the model's "gaussian" rows
    q = recovery(W_hat, W_star)
    assert np.allclose(q, naive.recovery_projector(W_hat, W_star), atol=1e-12)
    assert matrix_mse(W_hat, W_star) == pytest.approx(naive.matrix_mse_projector(W_hat, W_star), abs=1e-10)
    # the scale of a row does not matter
    assert np.allclose(recovery(W_hat, W_star * np.arange(1, 7)[:, None]), q)


def test_rank_deficient_directions(case):
    W_hat, W_star, _ = case
    W2 = np.vstack([W_star[:3], W_star[0] + W_star[1]])  # rank 3, 4 rows
    assert matrix_mse(W_hat, W2) == pytest.approx(naive.matrix_mse_projector(W_hat, W2), abs=1e-10)


def test_invariances(case):
    W_hat, W_star, a = case
    k = W_hat.shape[0]
    R = np.linalg.qr(np.random.default_rng(4).standard_normal((k, k)))[0]
    signs = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)[:, None]
    row_signs = np.where(np.arange(W_star.shape[0]) % 3 == 0, -1.0, 1.0)[:, None]
    q = recovery(W_hat, W_star)
    for Wh, Ws in ((W_hat * signs, W_star), (R @ W_hat, W_star), (W_hat, W_star * row_signs)):
        assert np.allclose(recovery(Wh, Ws), q, atol=1e-12)
        assert weighted_mse(Wh, Ws, a) == pytest.approx(weighted_mse(W_hat, W_star, a), abs=1e-12)
        assert matrix_mse(Wh, Ws) == pytest.approx(matrix_mse(W_hat, W_star), abs=1e-12)
    assert np.allclose(overlaps(R @ W_hat, W_star), R @ overlaps(W_hat, W_star))


def test_perfect_and_empty(case):
    _, W_star, a = case
    d, m = W_star.shape[1], W_star.shape[0]
    assert np.allclose(recovery(W_star, W_star), 1.0)
    assert weighted_mse(W_star, W_star, a) == pytest.approx(0.0, abs=1e-12)
    assert matrix_mse(W_star, W_star) == pytest.approx(0.0, abs=1e-12)
    empty = np.zeros((0, d))
    assert overlaps(empty, W_star).shape == (0, m)
    assert np.array_equal(recovery(empty, W_star), np.zeros(m))
    assert weighted_mse(empty, W_star, a) == pytest.approx(1.0)
    assert matrix_mse(empty, W_star) == pytest.approx(1.0)
    # weights are not renormalised
    assert weighted_mse(empty, W_star, 2 * a) == pytest.approx(4.0)


def test_range(case):
    W_hat, W_star, a = case
    q = recovery(W_hat, W_star)
    assert np.all((q >= 0) & (q <= 1))
    assert 0 <= weighted_mse(W_hat, W_star, a) <= 1
    k, m = W_hat.shape[0], W_star.shape[0]
    assert 0 <= matrix_mse(W_hat, W_star) <= (k + m) / m


@pytest.mark.parametrize(
    "func, args, match",
    [
        (recovery, (np.zeros(40), "W"), r"^W_hat: expected a 2-D array of shape \(k_hat, d\), got 1 dimension"),
        (recovery, ("W", np.zeros(40)), r"^W_star: expected a 2-D array of shape \(m_star, d\), got 1 dimension"),
        (recovery, (np.eye(30)[:2], "W"), r"^W_hat: expected shape \(k_hat, 40\) with one direction per row, as W_star \(7, 40\), got \(2, 30\)$"),
        (recovery, (np.eye(40)[:, :2], "W"), r"^W_hat: expected shape \(k_hat, 40\) .*got \(40, 2\); pass W_hat.T \(directions are rows\)$"),
        (overlaps, (np.full((2, 40), np.nan), "W"), r"^W_hat: contains NaN or inf"),
        (matrix_mse, ("H", np.full((3, 40), np.inf)), r"^W_star: contains NaN or inf"),
        (recovery, (2 * np.eye(40)[:2], "W"), r"^W_hat: rows are not orthonormal: max \|W_hat W_hat\^T - I\| = 3 exceeds 1e-06"),
        (matrix_mse, (2 * np.eye(40)[:2], "W"), r"^W_hat: rows are not orthonormal"),
        (weighted_mse, (2 * np.eye(40)[:2], "W", np.ones(7)), r"^W_hat: rows are not orthonormal"),
        (weighted_mse, ("H", "W", np.ones(3)), r"^a: expected shape \(7,\), one weight per row of W_star, got shape \(3,\)"),
        (weighted_mse, ("H", "W", np.full(7, np.nan)), r"^a: contains NaN or inf"),
        (recovery, ("H", np.zeros((2, 40))), r"^W_star: row 0 has zero norm"),
        (recovery, ("H", np.zeros((0, 40))), r"^W_star: has no rows"),
        (recovery, (np.zeros((2, 40), dtype=complex), "W"), r"^W_hat: unsupported dtype complex128"),
    ],
)
def test_validation(case, func, args, match):
    W_hat, W_star, _ = case
    args = tuple((W_hat if x == "H" else W_star) if isinstance(x, str) else x for x in args)
    with pytest.raises((ValueError, TypeError), match=match):
        func(*args)


def test_slightly_non_orthonormal_is_accepted(case):
    W_hat, W_star, _ = case
    q = recovery(W_hat * (1 + 1e-9), W_star)
    assert np.allclose(q, recovery(W_hat, W_star), rtol=1e-8, atol=0)


@settings(deadline=None, max_examples=30)
@given(
    arrays(np.float64, (12, 3), elements=st.floats(-1e3, 1e3, allow_nan=False)),
    arrays(np.float64, (4, 12), elements=st.floats(-1e3, 1e3, allow_nan=False)),
)
def test_property_against_projectors(M, W_star):
    assume(np.linalg.matrix_rank(M) == 3)
    assume(np.all(np.linalg.norm(W_star, axis=1) > 1e-3))
    assume(np.linalg.cond(W_star @ W_star.T) < 1e8)
    W_hat = np.linalg.qr(M)[0].T
    assert np.allclose(recovery(W_hat, W_star), naive.recovery_projector(W_hat, W_star), atol=1e-9)
    assert matrix_mse(W_hat, W_star) == pytest.approx(naive.matrix_mse_projector(W_hat, W_star), abs=1e-7)
