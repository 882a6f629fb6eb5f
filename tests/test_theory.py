"""Tests of hmi_fast.theory: exact cases, brute-force Monte Carlo, consistency, validation.

Tolerances are in units of the reported standard errors (5 s.e. unless
stated), so they test the errors as much as the values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmi_fast import HMIModel, spectral_matrix
from hmi_fast import theory as T
from hmi_fast.preprocess import resolve_preprocess

from . import naive

SQRT2 = math.sqrt(2.0)


def model(m_star=3, gamma=1.3, link="he2_he4", noise=0.0, d=20, seed=0):
    return HMIModel(d=max(d, m_star), m_star=m_star, gamma=gamma, link=link, noise=noise, seed=seed)


# ---------------------------------------------------------------- exact cases


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_identity_he2_exact_monte_carlo(noise):
    # y = Σ a_k He₂(z_k)/√2 + √Δ ξ: μ = 0, E y² = 1 + Δ, θ_k = E[y He₂(z_k)] = √2 a_k
    mdl = model(m_star=4, gamma=1.0, link="he2", noise=noise)
    mo = T.moments(mdl, "identity")
    sp = T.spike_strengths(mdl, "identity")
    assert mo.method == sp.method == "monte_carlo" and mo.n_samples == T.DEFAULT_N_SAMPLES
    assert abs(mo.mean) < 5 * mo.mean_se and mo.mean_se < 2e-3
    assert abs(mo.second_moment - (1 + noise)) < 5 * mo.second_moment_se and mo.second_moment_se < 5e-3
    assert abs(mo.variance - (1 + noise)) < 5 * mo.variance_se
    np.testing.assert_array_less(np.abs(sp.theta - SQRT2 * mdl.a), 5 * sp.theta_se)
    # the control variate makes the error proportional to a_k: ≈ a_k √(28/n)
    np.testing.assert_allclose(sp.theta_se, mdl.a * math.sqrt(28 / T.DEFAULT_N_SAMPLES), rtol=0.5)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_identity_he2_exact_quadrature(noise):
    mdl = model(m_star=1, link="he2", noise=noise)
    mo = T.moments(mdl, "identity")
    sp = T.spike_strengths(mdl, "identity")
    assert mo.method == "quadrature"
    assert abs(mo.mean) < 1e-12 and abs(mo.second_moment - 1 - noise) < 1e-12
    assert abs(sp.theta[0] - SQRT2) < 1e-12 and sp.theta_se[0] < 1e-12
    th = T.thresholds(mdl, "identity", regime="large_alpha")
    assert th.alpha[0] == pytest.approx((1 + noise) / 2, abs=1e-12)


# ---------------------------------------------------------------- against brute force


@pytest.mark.parametrize(
    "m_star, link, noise, tau",
    [(3, "he2_he4", 0.0, "saturating"), (3, "relu", 0.2, "sign"), (1, "he2_he4", 0.2, ("clip", 0.5)),
     (1, "abs", 0.0, "saturating"), (4, "abs", 0.1, "identity")],
)
def test_against_sampled_model(m_star, link, noise, tau):
    n = 200_000
    mdl = model(m_star=m_star, link=link, noise=noise, seed=3)
    X, y = mdl.sample(n)
    z = X @ mdl.W.T
    t = naive.tau(tau if isinstance(tau, str) else tau[0], y, *([] if isinstance(tau, str) else [tau[1]]))
    w = t[:, None] * (z * z - 1)
    mo = T.moments(mdl, tau)
    sp = T.spike_strengths(mdl, tau)
    se_mu = math.hypot(t.std() / math.sqrt(n), mo.mean_se)
    assert abs(t.mean() - mo.mean) <= 5 * se_mu + 1e-12
    se_s2 = math.hypot((t * t).std() / math.sqrt(n), mo.second_moment_se)
    assert abs((t * t).mean() - mo.second_moment) <= 5 * se_s2 + 1e-12
    se_th = np.hypot(w.std(axis=0) / math.sqrt(n), sp.theta_se)
    np.testing.assert_array_less(np.abs(w.mean(axis=0) - sp.theta), 5 * se_th + 1e-12)


def test_user_functions_take_the_generic_paths():
    """A user τ (numpy or jitted) and a user link reproduce the built-ins on the same stream."""
    import numba

    mdl = model(m_star=3, link="he2_he4", noise=0.1)
    ref = T.thresholds(mdl, "saturating", n_samples=50_000)
    sat = lambda y: y / (1 + np.abs(y))  # noqa: E731
    jsat = numba.njit(lambda y: y / (1.0 + abs(y)))
    for tau in (sat, jsat):
        got = T.thresholds(mdl, tau, n_samples=50_000)
        # same draws; the law's grid follows the draws for a user τ instead of [-1, 1], so the
        # linear-binning error (O(step²), about 1e-4 here) differs
        np.testing.assert_allclose(got.alpha, ref.alpha, rtol=1e-3)
        np.testing.assert_allclose(T.thresholds(mdl, tau, n_samples=50_000, regime="large_alpha").alpha,
                                   T.thresholds(mdl, n_samples=50_000, regime="large_alpha").alpha, rtol=1e-9)
    user_link = model(m_star=3, link=lambda z: naive.link("he2_he4", z), noise=0.1)
    np.testing.assert_allclose(T.thresholds(user_link, "saturating", n_samples=50_000).alpha, ref.alpha, rtol=1e-9)


def test_seed_and_cache():
    mdl = model(m_star=3)
    from hmi_fast.theory import population

    a = T.spike_strengths(mdl, n_samples=20_000, seed=1)
    hits = population._population_cached.cache_info().hits
    T.spike_strengths(mdl, n_samples=20_000, seed=1)
    assert population._population_cached.cache_info().hits == hits + 1  # the second call is served by the cache
    population._population_cached.cache_clear()
    b = T.spike_strengths(mdl, n_samples=20_000, seed=1)  # computed again from scratch: the same numbers
    assert population._population_cached.cache_info().misses == 1
    c = T.spike_strengths(mdl, n_samples=20_000, seed=2)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)
    np.testing.assert_array_less(np.abs(a.theta - c.theta), 5 * np.hypot(a.theta_se, c.theta_se))
    with pytest.raises(ValueError):
        a.theta[0] = 0.0  # cached results are read-only


# ---------------------------------------------------------------- thresholds, predict, mse_curve


@pytest.fixture(scope="module")
def m20():
    return model(m_star=20, gamma=1.3, link="he2_he4", d=20)


def test_thresholds_definition_and_centring(m20):
    mo = T.moments(m20)
    sp = T.spike_strengths(m20)
    th = T.thresholds(m20, regime="large_alpha")
    thc = T.thresholds(m20, center=True, regime="large_alpha")
    assert thc.center == mo.mean and th.center == 0.0
    np.testing.assert_allclose(T.thresholds(m20, center=mo.mean, regime="large_alpha").alpha, thc.alpha, rtol=1e-12)
    np.testing.assert_allclose(th.alpha, mo.second_moment / sp.theta**2, rtol=1e-12)
    np.testing.assert_allclose(thc.alpha, mo.variance / sp.theta**2, rtol=1e-12)
    np.testing.assert_allclose(thc.alpha / th.alpha, mo.variance / mo.second_moment, rtol=1e-12)
    assert np.all(np.diff(th.alpha) > 0)  # the cascade: α_k increases with k
    assert np.all(th.alpha_se > 0) and np.all(th.alpha_se < 0.02 * th.alpha)
    # α_k ∝ k^{2γ} for the weak directions
    slope = np.polyfit(np.log(np.arange(6, 21)), np.log(th.alpha[5:]), 1)[0]
    assert slope == pytest.approx(2 * 1.3, abs=0.05)


@pytest.mark.parametrize("regime", ["exact", "large_alpha"])
def test_threshold_is_inf_where_theta_vanishes(regime):
    # an odd link and an odd τ: θ = 0 exactly (quadrature is symmetric)
    th = T.thresholds(model(m_star=1, link=lambda z: z), "saturating", regime=regime)
    assert th.alpha[0] == np.inf and np.isnan(th.alpha_se[0])


@pytest.mark.parametrize("regime", ["exact", "large_alpha"])
@pytest.mark.parametrize("center", [False, True])
def test_predict_consistency(m20, regime, center):
    th = T.thresholds(m20, center=center, regime=regime)
    alphas = np.geomspace(0.1, 1e5, 300)
    p = T.predict(m20, "saturating", alphas, center=center, regime=regime)
    mean = T.moments(m20).mean
    assert p.regime == regime and p.bulk_center == pytest.approx(0.0 if center else mean, abs=1e-15)
    np.testing.assert_allclose(p.c, 1 / alphas)
    assert np.all(np.diff(p.sigma) < 0)
    lo, hi = p.bulk_edges[:, 0], p.bulk_edges[:, 1]
    assert np.all(lo < p.bulk_center) and np.all(p.bulk_center < hi)
    assert np.all(np.diff(hi) < 0) and np.all(np.diff(lo) > 0)  # the bulk shrinks as α grows
    if regime == "large_alpha":
        np.testing.assert_allclose(p.bulk_edges, p.bulk_center + np.outer(2 * p.sigma, [-1, 1]))
    assert np.all((p.overlaps >= 0) & (p.overlaps <= 1)) and np.all(np.diff(p.overlaps, axis=0) >= -1e-12)
    above = alphas[:, None] > th.alpha[None, :]
    np.testing.assert_array_equal(p.n_components, above.sum(axis=1))
    np.testing.assert_array_equal(np.isfinite(p.outliers), above)
    assert p.n_components[0] == 0 and p.n_components[-1] == 20
    assert np.all((p.mse >= 0) & (p.mse <= 1)) and np.all(np.diff(p.mse) <= 1e-12)
    assert p.mse[0] == pytest.approx(1.0)
    up = above & (th.theta[None, :] > 0)
    assert np.all(p.outliers[up] >= np.broadcast_to(hi[:, None], up.shape)[up])  # outliers lie beyond the edge
    one = T.predict(m20, "saturating", alphas[150], center=center, regime=regime)
    assert np.ndim(one.sigma) == 0 and one.overlaps.shape == (20,) and one.bulk_edges.shape == (2,)
    np.testing.assert_allclose(one.overlaps, p.overlaps[150])
    assert int(one.n_components) == p.n_components[150]
    if regime == "exact":
        se = p.outliers_se[np.isfinite(p.outliers)]
        assert np.all(se[np.isfinite(se)] >= 0) and np.mean(np.isfinite(se)) > 0.95  # NaN only at thresholds
        assert np.all(p.mse_se >= 0)


def test_exact_thresholds_switch_the_outliers(m20):
    th = T.thresholds(m20)
    assert th.regime == "exact" and np.all(np.diff(th.alpha) > 0)
    assert np.all(th.alpha_se > 0) and np.all(th.alpha_se < 0.02 * th.alpha)
    below = T.predict(m20, "saturating", th.alpha * (1 - 1e-4))
    above = T.predict(m20, "saturating", th.alpha * (1 + 1e-4))
    np.testing.assert_array_equal(np.diag(np.isfinite(below.outliers)), False)
    np.testing.assert_array_equal(np.diag(np.isfinite(above.outliers)), True)
    assert np.all(np.diag(above.overlaps) < 0.01)  # q_k rises from 0 at the threshold
    # the finite-α thresholds are later than E τ²/θ_k², less so for the weak directions
    large = T.thresholds(m20, regime="large_alpha")
    ratio = th.alpha / large.alpha
    assert np.all(ratio > 1) and ratio[-1] < 1.05 and ratio[0] > 1.1
    half = T.thresholds(m20, level=0.5)
    q = T.predict(m20, "saturating", half.alpha).overlaps
    np.testing.assert_allclose(np.diag(q), 0.5, atol=1e-6)
    np.testing.assert_allclose(T.thresholds(m20, level=0.5, regime="large_alpha").alpha, 2 * large.alpha)


def test_finite_d_aspect_ratio(m20):
    p = T.predict(m20, "saturating", [10.0, 100.0], d=400)
    np.testing.assert_allclose(p.c, (1 - 20 / 400) / np.array([10.0, 100.0]))
    ref = T.predict(m20, "saturating", (1 / p.c))  # the same c from d = None
    np.testing.assert_allclose(p.outliers, ref.outliers, equal_nan=True)
    th = T.thresholds(m20, d=400)
    np.testing.assert_allclose(th.alpha, T.thresholds(m20).alpha * (1 - 20 / 400))


@pytest.mark.parametrize("regime", ["exact", "large_alpha"])
def test_negative_spike_gives_outlier_below_the_bulk(regime):
    # τ = −sat(y) flips every spike
    mdl = model(m_star=2, link="he2", noise=0.1)
    p = T.predict(mdl, lambda y: -y / (1 + np.abs(y)), 1e3, regime=regime)
    assert np.all(p.thresholds.theta < 0)
    assert np.all(p.outliers < p.bulk_edges[0]) and p.n_components == 2
    flip = T.predict(mdl, "saturating", 1e3, regime=regime)
    np.testing.assert_allclose(p.outliers, -flip.outliers, rtol=1e-6)
    np.testing.assert_allclose(p.overlaps, flip.overlaps, atol=1e-6)


@pytest.mark.parametrize("regime", ["exact", "large_alpha"])
def test_mse_curve(m20, regime):
    large = T.thresholds(m20, regime="large_alpha")
    c = T.mse_curve(m20, alphas=np.geomspace(1e-2, 1e7, 200), regime=regime)
    np.testing.assert_allclose(c.mse_large_alpha, c.mse_piecewise, rtol=1e-12, atol=1e-15)
    assert np.all(np.diff(c.mse) <= 1e-12) and c.mse[0] == pytest.approx(1.0)
    a2 = m20.a**2
    np.testing.assert_allclose(c.mse_large_alpha[-1], np.sum(a2 * large.alpha) / 1e7)
    if regime == "exact":
        assert np.all(c.mse >= c.mse_large_alpha - 1e-12)  # finite-α overlaps are lower
        # α (1 − q_k) → E[τ² z_k²]/θ_k², not α_k = E τ²/θ_k²: the curves differ by a constant factor at the end
        assert 1.0 < c.mse[-1] / c.mse_large_alpha[-1] < 2.0
    else:
        np.testing.assert_allclose(c.mse, c.mse_large_alpha)
    default = T.mse_curve(m20, regime=regime)
    assert default.alphas.size == 200 and default.alphas[0] < default.thresholds.alpha[0]
    assert default.thresholds.alpha[-1] < default.alphas[-1]
    cc = T.mse_curve(m20, alphas=[10.0, 1e4], center=True, regime=regime)
    raw = T.mse_curve(m20, alphas=[10.0, 1e4], regime=regime)
    if regime == "large_alpha":
        assert np.all(cc.mse < raw.mse)  # centring lowers the noise from E τ² to Var τ
    else:
        # the overlaps' noise is E[w² z_k²] = E[τ² z_k²] − μ² − 2μθ_k for w = τ − μ: larger when μ θ_k < 0,
        # as here (μ < 0): centring raises the error (simulated in docs/theory.md §9)
        assert T.moments(m20).mean < 0 and np.all(cc.mse > raw.mse)


# ---------------------------------------------------------------- scaling law


def test_scaling_law_regimes():
    law = T.scaling_law(1.3, m_star=20)
    assert law.regime == "power_law" and law.exponent == pytest.approx(-(1 - 1 / 2.6))
    assert law.final_exponent == -1.0 and "20" in law.description
    assert T.scaling_law(0.3).regime == "plateau" and T.scaling_law(0.3).exponent == 0.0
    assert T.scaling_law(0.5).regime == "borderline" and "borderline" in T.scaling_law(0.5).description


@pytest.mark.parametrize("gamma", [1.3, 2.0])
def test_scaling_law_matches_mse_curve(gamma):
    mdl = model(m_star=100, gamma=gamma, link="he2_he4", d=100)
    th = T.thresholds(mdl, n_samples=200_000, regime="large_alpha")
    al = np.geomspace(th.alpha[2], th.alpha[29], 60)
    curve = T.mse_curve(mdl, alphas=al, n_samples=200_000)
    exponent = T.scaling_law(gamma).exponent
    assert T.fit_slope(al, curve.mse_large_alpha, al[0], al[-1]) == pytest.approx(exponent, abs=0.05)
    # the exact curve falls faster through this window: the strong directions' finite-α deficit
    # (1 − q_k ≈ E[τ² z_k²]/(α θ_k²), twice α_k/α for k = 1) fades as α grows (docs/theory.md §6)
    slope = T.fit_slope(al, curve.mse, al[0], al[-1])
    assert exponent - 0.12 < slope < exponent
    late = np.geomspace(10 * th.alpha[-1], 1e3 * th.alpha[-1], 10)
    slope = np.polyfit(np.log(late), np.log(T.mse_curve(mdl, alphas=late, n_samples=200_000,
                                                       regime="large_alpha").mse), 1)[0]
    assert slope == pytest.approx(-1.0, abs=1e-6)


def test_discovery_slopes():
    mdl = model(m_star=30, gamma=1.3, link="he2_he4", d=30)
    s = T.discovery_slopes(mdl, n_samples=100_000)
    th = T.thresholds(mdl, n_samples=100_000)
    assert s.window == pytest.approx((2 * th.alpha[0], th.alpha[-1]))
    assert s.predicted_exponent == pytest.approx(-(1 - 1 / 2.6))
    curve = T.mse_curve(mdl, alphas=np.geomspace(*s.window, 60), n_samples=100_000)
    assert s.exact == pytest.approx(T.fit_slope(curve.alphas, curve.mse, *s.window))
    assert s.large_alpha == pytest.approx(T.fit_slope(curve.alphas, curve.mse_large_alpha, *s.window))
    w = T.discovery_slopes(mdl, window=(10.0, 100.0), n_samples=100_000)
    assert w.window == (10.0, 100.0) and np.isfinite(w.exact)
    with pytest.raises(ValueError, match=r"^window: must be \(lo, hi\) with lo < hi"):
        T.discovery_slopes(mdl, window=(100.0, 10.0), n_samples=100_000)


# ---------------------------------------------------------------- optimal preprocessing


def test_optimal_score_of_a_gaussian_label():
    # linear link: f ~ N(0, 1) exactly, y ~ N(0, 1 + Δ), τ*(y) = y/(1 + Δ), J = 1/(1 + Δ)
    mdl = model(m_star=3, link=lambda z: z, noise=0.5)
    opt = T.optimal_preprocessing(mdl, n_samples=400_000)
    assert opt.smoothing == 0.5
    mid = np.abs(opt.grid) < 2.5
    np.testing.assert_allclose(opt.score[mid], opt.grid[mid] / 1.5, atol=0.02)
    J = opt.fisher_information
    assert abs(J.value - 1 / 1.5) < 5 * J.se + 2e-3
    y = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(opt.preprocess(y), np.interp(y, opt.grid, opt.score))
    assert opt.preprocess(np.array([1e9]))[0] == opt.score[-1]  # flat outside the grid
    assert T.fisher_information(mdl, n_samples=400_000) == J


@pytest.fixture(scope="module")
def noisy20():
    mdl = model(m_star=20, gamma=1.3, link="he2_he4", noise=0.5, d=20)
    return mdl, T.optimal_preprocessing(mdl)


@pytest.mark.parametrize("tau", ["saturating", "identity", "sign"])
def test_optimal_beats_others_on_weak_directions(noisy20, tau):
    """docs/theory.md: for small a_k, α_k(τ) ≥ α_k(τ*) (Cauchy–Schwarz); here k = 10..20 (a_k < 0.05)."""
    mdl, opt = noisy20
    assert opt.thresholds.regime == "large_alpha"  # a statement about the leading order
    th = T.thresholds(mdl, tau, regime="large_alpha")
    weak = slice(9, None)
    assert np.all(mdl.a[weak] < 0.05)
    err = np.hypot(th.alpha_se, opt.thresholds.alpha_se)[weak]
    np.testing.assert_array_less(opt.thresholds.alpha[weak] - 4 * err, th.alpha[weak])
    # ... and the leading-order bound 1/(a_k² μ₂² J) is approached by τ* for the weakest ones
    np.testing.assert_allclose(opt.thresholds.alpha[-5:], opt.cs_bound[-5:], rtol=0.06)


@pytest.mark.parametrize("center", [False, True])
def test_direction_bounds_hold_for_every_tau(noisy20, center):
    """α_k(τ) ≥ 1/E[h_k(y)²] for every k and every τ (exact Cauchy–Schwarz, v = Δ)."""
    mdl, opt = noisy20
    assert opt.smoothing == mdl.noise
    for tau in ["saturating", "identity", "sign", ("clip", 0.5), opt.preprocess]:
        th = T.thresholds(mdl, tau, center=center, regime="large_alpha")
        err = np.hypot(th.alpha_se, opt.direction_bounds_se)
        np.testing.assert_array_less(opt.direction_bounds - 4 * err, th.alpha)


def test_optimal_noiseless_uses_smoothing():
    mdl = model(m_star=3)
    opt = T.optimal_preprocessing(mdl, n_samples=50_000)
    assert opt.smoothing == T.DEFAULT_SMOOTHING and opt.fisher_information.smoothing == T.DEFAULT_SMOOTHING
    assert np.all(np.isfinite(opt.score)) and np.all(opt.density >= 0)
    assert np.sum(opt.density) * (opt.grid[1] - opt.grid[0]) == pytest.approx(1.0, abs=1e-6)
    finer = T.optimal_preprocessing(mdl, n_samples=50_000, grid=16, smoothing=0.02)
    assert finer.smoothing == 0.02 and finer.grid[1] - finer.grid[0] == pytest.approx(math.sqrt(0.02) / 16)


def test_tabulated_function():
    f = T.TabulatedFunction(-1.0, 0.5, np.array([0.0, 1.0, 4.0, 9.0, 16.0]))
    x = np.array([[-5.0, -1.0, -0.75], [0.25, 1.0, 7.0]])
    np.testing.assert_allclose(f(x), np.interp(x, f.grid, f.values))
    assert np.isnan(f(np.array([np.nan]))[0])
    assert "5 points" in repr(f)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf, [1.0, -2.0]])
def test_alpha_validation(m20, bad):
    with pytest.raises(ValueError, match=r"^alpha: every sample ratio"):
        T.predict(m20, "saturating", bad)


def test_validation_messages(m20):
    mdl = model(m_star=2)
    with pytest.raises(ValueError, match=r"^alpha: must be a positive number or a non-empty 1-D"):
        T.predict(mdl, "saturating", np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"^alpha: must be a positive number"):
        T.predict(mdl, "saturating", "ten")
    with pytest.raises(ValueError, match=r"^alphas: every sample ratio"):
        T.mse_curve(mdl, alphas=[0.0])
    with pytest.raises(ValueError, match=r"^preprocess: unknown name 'tanh'"):
        T.moments(mdl, "tanh")
    with pytest.raises(ValueError, match=r"^n_samples: must be an integer >= 1000"):
        T.thresholds(mdl, n_samples=999)
    with pytest.raises(ValueError, match=r"^seed: must be a non-negative integer"):
        T.moments(mdl, seed=-1)
    with pytest.raises(TypeError, match=r"^center: must be True, False or a finite number"):
        T.thresholds(mdl, center="yes")
    with pytest.raises(ValueError, match=r"^regime: must be 'exact' or 'large_alpha'"):
        T.predict(mdl, "saturating", 10.0, regime="exact_")
    with pytest.raises(ValueError, match=r"^level: must be a number in \(0, 1\)"):
        T.thresholds(mdl, level=1.0)
    with pytest.raises(ValueError, match=r"^d: must be larger than m_star=2"):
        T.predict(mdl, "saturating", 10.0, d=2)
    with pytest.raises(ValueError, match=r"^preprocess: 'identity' has unbounded weights"):
        T.predict(mdl, "identity", 10.0)
    with pytest.raises(ValueError, match=r"^alpha: must be a single number"):
        T.bulk_density(mdl, "saturating", [1.0, 2.0])
    with pytest.raises(TypeError, match=r"^model: expected an HMIModel"):
        T.moments(object())
    with pytest.raises(ValueError, match=r"^gamma: must be a finite number"):
        T.scaling_law(float("nan"))
    with pytest.raises(ValueError, match=r"^m_star: must be an integer >= 1"):
        T.scaling_law(1.0, m_star=0)
    with pytest.raises(ValueError, match=r"^smoothing: the kernel variance must be finite, > 0 and >= the model's"):
        T.optimal_preprocessing(model(m_star=2, noise=0.5), smoothing=0.1)
    with pytest.raises(ValueError, match=r"^smoothing: the kernel variance must be"):
        T.optimal_preprocessing(mdl, smoothing=-1.0)
    with pytest.raises(ValueError, match=r"^grid: must be an integer >= 2"):
        T.optimal_preprocessing(mdl, grid=1)
    with pytest.raises(ValueError, match=r"^smoothing: the kernel variance v=1e-12 is too small"):
        T.optimal_preprocessing(mdl, smoothing=1e-12, n_samples=1000)
    with pytest.raises(ValueError, match=r"^preprocess: 'bad' gave non-finite values"):
        def bad(y):
            return np.log(y)
        with np.errstate(all="ignore"):
            T.moments(mdl, bad, n_samples=1000)


def test_resolve_accepts_preprocess_objects(m20):
    pre = resolve_preprocess(("clip", 0.5))
    np.testing.assert_array_equal(T.thresholds(m20, pre).alpha, T.thresholds(m20, ("clip", 0.5)).alpha)


def test_unhashable_user_tau_bypasses_the_cache():
    class Tau:
        __hash__ = None

        def __call__(self, y):
            return y / (1 + np.abs(y))

    mdl = model(m_star=2)
    for regime, rtol in (("large_alpha", 1e-9), ("exact", 1e-3)):  # exact: the law's grid differs (see above)
        np.testing.assert_allclose(T.thresholds(mdl, Tau(), n_samples=20_000, regime=regime).alpha,
                                   T.thresholds(mdl, "saturating", n_samples=20_000, regime=regime).alpha,
                                   rtol=rtol)
