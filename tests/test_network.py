"""Two-stage network (docs/network.md): ridge/GCV, streamed normal equations, readout, excess risk, GD view."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hmi_fast import HMIModel
from hmi_fast.network import (
    TEST_START,
    SpectralTwoLayer,
    excess_risk,
    gd_first_layer,
    random_directions,
    subspace_overlap,
)
from hmi_fast.ridge import NormalEquations, fit_ridge, gcv_curve, solve_ridge

from . import naive


def needs_spectral():
    """The spectral stage needs eigen, selection and metrics; skip cleanly while they are missing."""
    try:
        import hmi_fast.estimator  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only while the package is being assembled
        pytest.skip(f"spectral estimator not importable yet: {exc}")


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(3)
    F = rng.standard_normal((400, 6)) * [1.0, 2.0, 0.5, 1.0, 3.0, 1.0] + [5.0, -1.0, 0.0, 2.0, 0.0, 10.0]
    y = F @ rng.standard_normal(6) + 0.7 * rng.standard_normal(400) - 3.0
    return F, y


# ------------------------------------------------------------------ ridge and GCV
@pytest.mark.parametrize("lam", [1e-6, 0.03, 2.0])
def test_fixed_ridge_matches_hat_matrix(features, lam):
    F, y = features
    fit = fit_ridge(F, y, lam=lam)
    coef, b, df, rss, gcv = naive.ridge_reference(F, y, lam)
    assert np.allclose(fit.coef, coef, rtol=1e-9, atol=1e-11)
    assert fit.intercept == pytest.approx(b, rel=1e-9, abs=1e-10)
    assert fit.df == pytest.approx(df, rel=1e-10)
    assert fit.rss == pytest.approx(rss, rel=1e-8)
    assert fit.gcv[0] == pytest.approx(gcv, rel=1e-8)
    assert fit.lam == lam


def test_gcv_curve_and_choice_match_naive(features):
    F, y = features
    grid = np.geomspace(1e-4, 10, 9)
    fit = fit_ridge(F, y, lambdas=grid)
    ref = np.array([naive.ridge_reference(F, y, lam)[4] for lam in grid])
    assert np.allclose(fit.gcv, ref, rtol=1e-8)
    assert fit.lam == grid[np.argmin(ref)]
    assert np.allclose(fit.coef, naive.ridge_reference(F, y, fit.lam)[0], rtol=1e-9)


def test_default_grid_is_relative_to_the_gram_scale(features):
    F, y = features
    a, b = fit_ridge(F, y), fit_ridge(10 * F, y)
    assert b.lam == pytest.approx(100 * a.lam) and a.lambdas.size == 41
    assert np.allclose(10 * b.coef, a.coef)


def test_gcv_formulas_from_eigenvalues():
    rng = np.random.default_rng(0)
    s, z = rng.uniform(0.1, 3, 5), rng.standard_normal(5)
    lam = np.array([0.5])
    rss, df, gcv = gcv_curve(s, z, 10.0, 50, lam)
    assert df[0] == pytest.approx(1 + np.sum(s / (s + 0.5)))
    assert rss[0] == pytest.approx(10 - np.sum(z**2 * (s + 1.0) / (s + 0.5) ** 2))
    assert gcv[0] == pytest.approx(rss[0] / (1 - df[0] / 50) ** 2)


# ------------------------------------------------------------------ streamed normal equations
@settings(max_examples=25, deadline=None)
@given(block=st.integers(1, 450), cut=st.integers(0, 400))
def test_streamed_normal_equations_equal_in_memory(features, block, cut):
    F, y = features
    G, c, yy, sf, sy, n = naive.normal_equations_loop(F, y)
    a = NormalEquations(6, block_size=block).update(F[:cut], y[:cut])
    for lo in range(cut, 400, 37):
        a.update(F[lo:lo + 37], y[lo:lo + 37])
    mo = a.moments()
    fm, ym = sf / n, sy / n
    assert mo.n == n
    assert np.allclose(mo.gram, G / n - np.outer(fm, fm), rtol=1e-11, atol=1e-11)
    assert np.allclose(mo.cross, c / n - fm * ym, rtol=1e-11, atol=1e-11)
    assert mo.yy == pytest.approx(yy / n - ym**2, rel=1e-11)
    assert np.allclose(mo.f_mean, fm) and mo.y_mean == pytest.approx(ym)


def test_merge_equals_one_stream(features):
    F, y = features
    whole = NormalEquations(6).update(F, y).moments()
    a = NormalEquations(6, block_size=13).update(F[:150], y[:150])
    b = NormalEquations(6, block_size=64).update(F[150:] + 0.0, y[150:])
    merged = a.merge(b).moments()
    assert np.allclose(merged.gram, whole.gram, rtol=1e-11, atol=1e-12)
    assert np.allclose(merged.cross, whole.cross, rtol=1e-11, atol=1e-12)
    assert merged.yy == pytest.approx(whole.yy, rel=1e-11)
    empty = NormalEquations(6).merge(NormalEquations(6).update(F, y)).moments()
    assert np.allclose(empty.gram, whole.gram)


def test_float32_features_accumulate_in_float64(features):
    F, y = features
    a = NormalEquations(6).update(F.astype(np.float32), y).moments()
    b = NormalEquations(6).update(F.astype(np.float32).astype(np.float64), y).moments()
    assert np.allclose(a.gram, b.gram, rtol=1e-12)


def test_large_offsets_do_not_cancel():
    rng = np.random.default_rng(1)
    F = 1e6 + rng.standard_normal((3000, 3))
    y = F @ [1.0, -1.0, 2.0] + 0.1 * rng.standard_normal(3000)
    fit = fit_ridge(F, y, lam=1e-8)
    assert np.allclose(fit.coef, [1.0, -1.0, 2.0], atol=0.01)


# ------------------------------------------------------------------ features and readout
def test_hermite_features_match_numpy(features):
    F, _ = features
    U = random_directions(3, 6, seed=1)
    net = SpectralTwoLayer(readout="hermite", hermite_degree=5, spectral=U).fit(F, F[:, 0])
    assert np.allclose(net.transform(F), naive.hermite_features(F @ U.T, 5), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "abs", "tanh", "quadratic", "linear", np.sin])
def test_planted_target_linear_in_features_is_recovered(activation):
    rng = np.random.default_rng(2)
    d, k = 12, 4
    U = random_directions(k, d, seed=5)
    X = rng.standard_normal((3000, d))
    act = {"relu": lambda z: np.maximum(z, 0), "abs": np.abs, "tanh": np.tanh, "quadratic": np.square,
           "linear": lambda z: z}.get(activation, activation)
    v = np.array([1.0, -2.0, 0.5, 3.0])
    y = 0.25 + act(X @ U.T) @ v
    net = SpectralTwoLayer(activation=activation, spectral=U, split=0.25).fit(X, y)
    assert np.allclose(net.coef_, v, atol=1e-5) and net.intercept_ == pytest.approx(0.25, abs=1e-5)
    assert net.score(X, y) > 1 - 1e-9


def test_planted_hermite_target_is_recovered():
    rng = np.random.default_rng(4)
    U = random_directions(2, 10, seed=0)
    X = rng.standard_normal((2000, 10))
    Z = X @ U.T
    y = (Z[:, 0] ** 2 - 1) / math.sqrt(2) - 0.5 * (Z[:, 1] ** 3 - 3 * Z[:, 1]) / math.sqrt(6)
    net = SpectralTwoLayer(readout="hermite", hermite_degree=3, spectral=U).fit(X, y)
    assert np.allclose(net.coef_, [0, 1, 0, 0, 0, -0.5], atol=1e-5)


def test_fit_and_streams_agree():
    model = HMIModel(d=15, m_star=2, gamma=1.0, link="he2", noise=0.3, seed=2)
    X, y = model.sample(3001)
    kw = dict(readout="hermite", hermite_degree=2, spectral=model.W)
    a = SpectralTwoLayer(**kw).fit(X, y)
    b = SpectralTwoLayer(**kw).fit_stream(model, n=3001)
    c = SpectralTwoLayer(**kw).fit_stream(((X[i:i + 700], y[i:i + 700]) for i in range(0, 3001, 700)), n=3001)
    for other in (b, c):
        assert np.allclose(other.coef_, a.coef_, rtol=1e-10, atol=1e-12)
        assert other.n_samples_readout_ == a.n_samples_readout_ == 1500  # round(0.5 · 3001) = 1501 spectral rows


def test_random_combinations_are_seeded_and_unit_norm():
    U = random_directions(3, 20, seed=0)
    X = np.random.default_rng(0).standard_normal((400, 20))
    y = X[:, 0] ** 2
    a = SpectralTwoLayer(n_hidden=7, spectral=U, seed=1).fit(X, y)
    b = SpectralTwoLayer(n_hidden=7, spectral=U, seed=1).fit(X, y)
    c = SpectralTwoLayer(n_hidden=7, spectral=U, seed=2).fit(X, y)
    assert a.hidden_weights_.shape == (7, 20) and np.allclose(np.linalg.norm(a.hidden_weights_, axis=1), 1)
    assert np.array_equal(a.hidden_weights_, b.hidden_weights_) and np.array_equal(a.coef_, b.coef_)
    assert not np.allclose(a.hidden_weights_, c.hidden_weights_)
    Q = np.linalg.qr(U.T)[0]
    assert np.allclose(a.hidden_weights_ @ Q @ Q.T, a.hidden_weights_)  # in span(Ŵ)
    assert subspace_overlap(U, Q) == pytest.approx(1.0)


def test_params_roundtrip_and_clone():
    net = SpectralTwoLayer(n_hidden=5, ridge=0.1)
    assert net.get_params()["n_hidden"] == 5 and net.set_params(split=0.3) is net and net.split == 0.3
    assert "n_hidden=5" in repr(net) and "ridge=0.1" in repr(net)
    sklearn = pytest.importorskip("sklearn.base")
    assert sklearn.clone(net).get_params()["split"] == 0.3


# ------------------------------------------------------------------ the two stages together
@pytest.fixture(scope="module")
def fitted():
    needs_spectral()
    from hmi_fast.estimator import SpectralEstimator

    model = HMIModel(d=60, m_star=3, gamma=1.0, link="he2", seed=1)
    spectral = SpectralEstimator(max_components=8)
    net = SpectralTwoLayer(readout="hermite", hermite_degree=2, spectral=spectral, seed=0)
    return model, net.fit_stream(model, n=120_000)


def test_two_stage_network_has_small_excess_risk(fitted):
    model, net = fitted
    risk, zero = excess_risk(model, [net, lambda X: np.zeros(len(X))], n_test=20_000)
    assert net.n_hidden_ >= 3
    assert risk < 0.05 * zero  # zero predictor: risk = Var f*
    assert excess_risk(model, net, n_test=20_000, relative=True) == pytest.approx(risk / zero, rel=0.02)


def test_two_stage_is_deterministic_under_seed(fitted):
    model, net = fitted
    again = SpectralTwoLayer(**net.get_params()).fit_stream(model, n=120_000)
    assert np.array_equal(again.coef_, net.coef_) and np.array_equal(again.hidden_weights_, net.hidden_weights_)
    assert net.spectral_ is not net.spectral and net.spectral_.n_samples_seen_ == 60_000


def test_default_spectral_stage_runs_in_memory():
    needs_spectral()
    model = HMIModel(d=30, m_star=1, gamma=1.0, link="he2", seed=0)
    X, y = model.sample(20_000)
    net = SpectralTwoLayer(n_hidden=8, seed=0).fit(X, y)
    assert net.hidden_weights_.shape[0] in (0, 8) and np.isfinite(net.predict(X[:5])).all()


# ------------------------------------------------------------------ excess risk
def test_excess_risk_conventions():
    model = HMIModel(d=10, m_star=2, gamma=1.0, link="he2", seed=0)
    assert excess_risk(model, model.target, n_test=500) == 0.0
    zero = excess_risk(model, lambda X: np.zeros(len(X)), n_test=20_000)
    assert zero == pytest.approx(1.0, rel=0.05)  # Var f* = Σ a_k² Var He2/√2 = 1
    X0, _ = model.rows(TEST_START, TEST_START + 3)
    seen = []
    excess_risk(model, lambda X: seen.append(X.copy()) or np.zeros(len(X)), n_test=3)
    assert np.array_equal(seen[0], X0)
    other = excess_risk(model, lambda X: np.zeros(len(X)), n_test=20_000, seed=1)
    assert other != zero


# ------------------------------------------------------------------ gradient-descent view
def test_gd_step_matches_plain_reference():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 8)), rng.standard_normal(60)
    U0 = 0.3 * rng.standard_normal((2, 8))
    tr = gd_first_layer(X, y, p=2, steps=4, lr=0.1, U0=U0)
    assert np.allclose(tr.weights, naive.gd_quadratic_reference(X, y, U0, 0.1, 4), rtol=1e-12, atol=1e-14)


def test_gd_aligns_with_top_eigenvectors_of_T():
    model = HMIModel(d=200, m_star=2, gamma=1.0, link="he2", seed=0)
    X, y = model.sample(10_000)
    tr = gd_first_layer(X, y, p=2, steps=220, lr=0.05, seed=0, record_every=20, W_star=model.W)
    assert tr.overlap[0] < 0.05 and tr.overlap[-1] > 0.9
    assert np.allclose(tr.overlap, tr.overlap_power, atol=1e-3)  # small weights: GD = power iteration on T
    assert tr.norm[-1] < 0.5 and tr.overlap_star[-1] > 0.8  # still near the small initialisation


# ------------------------------------------------------------------ bad input
def test_unfitted_and_wrong_width():
    net = SpectralTwoLayer()
    with pytest.raises(Exception, match="not fitted yet; call fit or fit_stream first"):
        net.predict(np.zeros((2, 3)))
    U = random_directions(2, 5, seed=0)
    X = np.random.default_rng(0).standard_normal((50, 5))
    net = SpectralTwoLayer(spectral=U).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="X: has 4 features, but SpectralTwoLayer was fitted with 5"):
        net.predict(X[:, :4])
    with pytest.raises(ValueError, match="fixed directions have 5 columns, but X has 4 features"):
        SpectralTwoLayer(spectral=U).fit(X[:, :4], X[:, 0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_hidden=0), "n_hidden: must be None or an integer >= 1, got 0"),
    (dict(activation="gelu"), "activation: unknown activation 'gelu'"),
    (dict(readout="mlp"), "readout: unknown readout 'mlp'; use 'ridge' or 'hermite'"),
    (dict(ridge=0.0), "ridge: must be 'gcv' or a finite number > 0, got 0.0"),
    (dict(ridge=-1), "ridge: must be 'gcv' or a finite number > 0"),
    (dict(ridge="loo"), "ridge: unknown rule 'loo'"),
    (dict(split=1.0), "split: must be a number strictly between 0 and 1, got 1.0"),
    (dict(split=0), "split: must be a number strictly between 0 and 1"),
    (dict(hermite_degree=0), "hermite_degree: must be an integer >= 1"),
])
def test_bad_parameters(kwargs, match):
    X = np.random.default_rng(0).standard_normal((20, 4))
    params = dict(spectral=random_directions(2, 4, seed=0))
    params.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SpectralTwoLayer(**params).fit(X, X[:, 0])


def test_split_leaving_a_stage_empty():
    X = np.random.default_rng(0).standard_normal((3, 4))
    U = random_directions(1, 4, seed=0)
    with pytest.raises(ValueError, match=r"split: leaves no rows for the spectral stage \(n=3, split=0.1 gives 0"):
        SpectralTwoLayer(spectral=U, split=0.1).fit(X, X[:, 0])
    with pytest.raises(ValueError, match=r"split: leaves no rows for the readout \(n=3, split=0.9 gives 3"):
        SpectralTwoLayer(spectral=U, split=0.9).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="n: required when the source is an HMIModel"):
        SpectralTwoLayer(spectral=U).fit_stream(HMIModel(4, 1, 1.0))


def test_other_bad_input():
    with pytest.raises(TypeError, match="spectral: expected a SpectralEstimator, a"):
        SpectralTwoLayer(spectral="pca").fit(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="F: non-finite value in row 3"):
        NormalEquations(2).update(np.array([[0, 1], [1, 0], [2, 2], [np.nan, 0.0]]), np.zeros(4))
    with pytest.raises(ValueError, match="lambdas: must be a non-empty array of finite numbers > 0"):
        solve_ridge(NormalEquations(1).update(np.ones((3, 1)), np.ones(3)).moments(), lambdas=[0.0])
    with pytest.raises(ValueError, match="lr: must be a finite number > 0"):
        gd_first_layer(np.ones((5, 3)), np.ones(5), p=1, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="p: must be smaller than d=3"):
        gd_first_layer(np.ones((5, 3)), np.ones(5), p=3, steps=1, lr=0.1)
