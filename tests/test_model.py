"""The HMI model and its streaming sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import hmi_fast
from hmi_fast import HMIModel
from hmi_fast._random import normals

from . import naive


@pytest.fixture(scope="module")
def big_sample():
    model = HMIModel(d=30, m_star=4, gamma=1.3, link="he2_he4", noise=0.3, seed=11)
    X, y = model.sample(200_000)
    return model, X, y


def test_coefficients_normalised_and_decreasing():
    model = HMIModel(d=50, m_star=10, gamma=1.3)
    a = model.a
    assert math.isclose(np.sum(a**2), 1.0, rel_tol=1e-14)
    assert np.all(np.diff(a) < 0)
    assert np.allclose(a / a[0], np.arange(1, 11) ** -1.3)


def test_directions_orthonormal_and_gaussian_option():
    W = HMIModel(d=80, m_star=7, gamma=1.0, seed=2).W
    assert W.shape == (7, 80)
    assert np.allclose(W @ W.T, np.eye(7), atol=1e-12)
    G = HMIModel(d=4000, m_star=3, gamma=1.0, seed=2, directions="gaussian").W
    assert np.allclose(np.linalg.norm(G, axis=1), 1.0, atol=0.1)


@pytest.mark.parametrize("bs", [1, 13, 256, 10_000])
def test_stream_same_rows_for_any_block_size(bs):
    model = HMIModel(d=17, m_star=2, gamma=1.0, noise=0.5, seed=5)
    X, y = model.sample(1000)
    blocks = [(xb.copy(), yb.copy()) for xb, yb in model.stream(1000, block_size=bs)]
    assert np.array_equal(np.vstack([b[0] for b in blocks]), X)
    assert np.array_equal(np.concatenate([b[1] for b in blocks]), y)


def test_stream_independent_of_thread_count_and_start():
    model = HMIModel(d=33, m_star=3, gamma=1.0, noise=0.1, seed=9)
    X, y = model.sample(500)
    with hmi_fast.threads(1):
        X1, y1 = model.sample(500)
    assert np.array_equal(X, X1) and np.array_equal(y, y1)
    Xs, ys = model.rows(123, 321)
    assert np.array_equal(Xs, X[123:321]) and np.array_equal(ys, y[123:321])


def test_other_seed_differs():
    X0, _ = HMIModel(d=10, m_star=1, gamma=1.0, seed=0).sample(100)
    X1, _ = HMIModel(d=10, m_star=1, gamma=1.0, seed=1).sample(100)
    assert not np.allclose(X0, X1)
    assert np.corrcoef(X0.ravel(), X1.ravel())[0, 1] < 0.05


def test_float32_rows_are_rounded_float64_rows():
    model = HMIModel(d=12, m_star=2, gamma=1.0, seed=4)
    X64, _ = model.sample(300)
    X32, y32 = model.sample(300, dtype=np.float32)
    assert X32.dtype == np.float32 and y32.dtype == np.float32
    assert np.array_equal(X32, X64.astype(np.float32))


def test_normals_distribution():
    x = normals(seed=123, row0=0, n=2000, d=500).ravel()  # 10^6 draws
    # Kolmogorov-Smirnov against N(0, 1) and the first moments within sampling error
    assert stats.kstest(x, "norm").pvalue > 1e-4
    n = x.size
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert abs(x.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(x**4) - 3) < 5 * math.sqrt(96 / n)
    # the ziggurat's tail (beyond R = 3.4426) has the right mass
    tail = np.mean(np.abs(x) > 3.442619855899)
    p = 2 * stats.norm.sf(3.442619855899)
    assert abs(tail - p) < 5 * math.sqrt(p / n)


def test_preactivations_standard_and_uncorrelated(big_sample):
    model, X, y = big_sample
    Z = X @ model.W.T
    n = len(Z)
    C = np.cov(Z.T)
    assert np.allclose(np.diag(C), 1.0, atol=5 * math.sqrt(2 / n))
    off = C[~np.eye(len(C), dtype=bool)]
    assert np.abs(off).max() < 5 / math.sqrt(n)


def test_label_moments_against_quadrature(big_sample):
    model, X, y = big_sample
    # E g(z)^2 for he2_he4 by Gauss-Hermite quadrature (probabilists' weight)
    t, wq = np.polynomial.hermite_e.hermegauss(40)
    wq = wq / wq.sum()
    eg2 = np.sum(wq * naive.link("he2_he4", t) ** 2)
    eg4 = np.sum(wq * naive.link("he2_he4", t) ** 4)
    var_y = np.sum(model.a**2) * eg2 + model.noise
    n = len(y)
    assert abs(y.mean()) < 5 * math.sqrt(var_y / n)
    # Var(y^2) bounded crudely by E y^4 <= 8 (sum a^4 Eg^4 + ...) ; use the empirical one
    assert abs(np.mean(y**2) - var_y) < 5 * np.std(y**2) / math.sqrt(n)
    assert eg4 > 0


@pytest.mark.parametrize("name", ["he2", "he2_he4", "abs", "relu"])
def test_links_match_naive(name):
    model = HMIModel(d=20, m_star=3, gamma=0.7, link=name, seed=1)
    X, y = model.sample(500)
    Z = X @ model.W.T
    ref = sum(model.a[k] * naive.link(name, Z[:, k]) for k in range(3))
    assert np.allclose(y, ref, atol=1e-12)
    # built-in links are centred: E g(z) = 0 by adaptive quadrature
    from scipy import integrate

    mean, _ = integrate.quad(lambda z: naive.link(name, z) * stats.norm.pdf(z), -40, 40, points=[0.0], limit=200)
    assert abs(mean) < 1e-10


def test_user_links_python_numba_and_per_direction():
    import numba

    @numba.njit
    def cube(z):
        return z**3 - 3 * z

    model = HMIModel(d=15, m_star=3, gamma=1.0, link=[np.tanh, cube, "he2"], seed=3)
    X, y = model.sample(200)
    Z = X @ model.W.T
    ref = model.a[0] * np.tanh(Z[:, 0]) + model.a[1] * (Z[:, 1] ** 3 - 3 * Z[:, 1]) + model.a[2] * naive.link("he2", Z[:, 2])
    assert np.allclose(y, ref, atol=1e-12)
    assert np.allclose(model.target(X), ref, atol=1e-12)


def test_noise_added():
    clean = HMIModel(d=10, m_star=2, gamma=1.0, seed=7)
    noisy = HMIModel(d=10, m_star=2, gamma=1.0, seed=7, noise=0.25)
    X, y0 = clean.sample(50_000)
    X1, y1 = noisy.sample(50_000)
    assert np.array_equal(X, X1)
    r = y1 - y0
    assert abs(r.var() - 0.25) < 5 * 0.25 * math.sqrt(2 / len(r))


def test_model_validation():
    with pytest.raises(ValueError, match=r"d: must be an integer >= 1, got 0"):
        HMIModel(0, 1, 1.0)
    with pytest.raises(ValueError, match=r"m_star: must be at most d=3, got 4"):
        HMIModel(3, 4, 1.0)
    with pytest.raises(ValueError, match=r"noise: the variance Δ must be finite and >= 0"):
        HMIModel(3, 1, 1.0, noise=-1)
    with pytest.raises(ValueError, match=r"directions: must be one of"):
        HMIModel(3, 1, 1.0, directions="random")
    with pytest.raises(ValueError, match=r"link: unknown name 'cos'"):
        HMIModel(3, 1, 1.0, link="cos")
    with pytest.raises(ValueError, match=r"link: got 2 links for m_star=3"):
        HMIModel(5, 3, 1.0, link=["he2", "abs"])
    with pytest.raises(ValueError, match=r"seed: must be a non-negative integer"):
        HMIModel(3, 1, 1.0, seed=-2)
    with pytest.raises(ValueError, match=r"gamma: must be a finite number"):
        HMIModel(3, 1, float("nan"))
    with pytest.raises(TypeError, match=r"dtype: unsupported dtype int64"):
        HMIModel(3, 1, 1.0).sample(10, dtype=np.int64)
    with pytest.raises(ValueError, match=r"n: must be an integer >= 1, got 0"):
        HMIModel(3, 1, 1.0).sample(0)
    with pytest.raises(ValueError, match=r"X: expected shape \(n, 3\)"):
        HMIModel(3, 1, 1.0).target(np.ones((2, 4)))
