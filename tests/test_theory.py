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
    th = T.thresholds(mdl, "identity")
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
        np.testing.assert_allclose(got.alpha, ref.alpha, rtol=1e-9)
    user_link = model(m_star=3, link=lambda z: naive.link("he2_he4", z), noise=0.1)
    np.testing.assert_allclose(T.thresholds(user_link, "saturating", n_samples=50_000).alpha, ref.alpha, rtol=1e-9)


def test_seed_and_cache():
    mdl = model(m_star=3)
    a = T.spike_strengths(mdl, n_samples=20_000, seed=1)
    b = T.spike_strengths(mdl, n_samples=20_000, seed=1)
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
    th = T.thresholds(m20)
    thc = T.thresholds(m20, centred=True)
    np.testing.assert_allclose(th.alpha, mo.second_moment / sp.theta**2, rtol=1e-12)
    np.testing.assert_allclose(thc.alpha, mo.variance / sp.theta**2, rtol=1e-12)
    np.testing.assert_allclose(thc.alpha / th.alpha, mo.variance / mo.second_moment, rtol=1e-12)
    assert np.all(np.diff(th.alpha) > 0)  # the cascade: α_k increases with k
    assert np.all(th.alpha_se > 0) and np.all(th.alpha_se < 0.02 * th.alpha)
    # α_k ∝ k^{2γ} for the weak directions
    slope = np.polyfit(np.log(np.arange(6, 21)), np.log(th.alpha[5:]), 1)[0]
    assert slope == pytest.approx(2 * 1.3, abs=0.05)


def test_threshold_is_inf_where_theta_vanishes():
    # an odd link and an odd τ: θ = 0 exactly (quadrature is symmetric)
    th = T.thresholds(model(m_star=1, link=lambda z: z), "saturating")
    assert th.alpha[0] == np.inf and np.isnan(th.alpha_se[0])


@pytest.mark.parametrize("centred", [False, True])
def test_predict_consistency(m20, centred):
    th = T.thresholds(m20, centred=centred)
    alphas = np.geomspace(0.1, 1e5, 300)
    p = T.predict(m20, "saturating", alphas, centred=centred)
    centre = 0.0 if centred else T.moments(m20).mean
    assert p.bulk_center == centre
    assert np.all(np.diff(p.sigma) < 0)
    np.testing.assert_allclose(p.bulk_edges, centre + np.outer(2 * p.sigma, [-1, 1]))
    assert np.all((p.overlaps >= 0) & (p.overlaps <= 1)) and np.all(np.diff(p.overlaps, axis=0) >= 0)
    above = alphas[:, None] > th.alpha[None, :]
    np.testing.assert_array_equal(p.n_components, above.sum(axis=1))
    np.testing.assert_array_equal(np.isfinite(p.outliers), above)
    assert np.all(np.diff(p.n_components) >= 0) and p.n_components[0] == 0 and p.n_components[-1] == 20
    assert np.all((p.mse >= 0) & (p.mse <= 1)) and np.all(np.diff(p.mse) <= 1e-15)
    assert p.mse[0] == pytest.approx(1.0)
    theta = np.broadcast_to(th.theta, p.outliers.shape)
    up = above & (theta > 0)
    assert np.all(p.outliers[up] >= np.broadcast_to(p.bulk_edges[:, 1:], up.shape)[up])  # θ + σ²/θ ≥ 2σ
    one = T.predict(m20, "saturating", alphas[150], centred=centred)
    assert np.ndim(one.sigma) == 0 and one.overlaps.shape == (20,) and one.bulk_edges.shape == (2,)
    np.testing.assert_allclose(one.overlaps, p.overlaps[150])
    assert int(one.n_components) == p.n_components[150]


def test_negative_spike_gives_outlier_below_the_bulk():
    # τ = −y flips every spike
    mdl = model(m_star=2, link="he2", noise=0.1)
    p = T.predict(mdl, lambda y: -y, 1e3)
    assert np.all(p.thresholds.theta < 0)
    assert np.all(p.outliers < p.bulk_edges[0])


def test_mse_curve(m20):
    th = T.thresholds(m20)
    c = T.mse_curve(m20, alphas=np.geomspace(1e-2, 1e7, 400))
    np.testing.assert_allclose(c.mse, c.mse_piecewise, rtol=1e-12, atol=1e-15)
    assert np.all(np.diff(c.mse) <= 1e-15) and c.mse[0] == pytest.approx(1.0)
    a2 = m20.a**2
    np.testing.assert_allclose(c.mse[-1], np.sum(a2 * th.alpha) / 1e7)
    default = T.mse_curve(m20)
    assert default.alphas.size == 200 and default.alphas[0] < th.alpha[0] < th.alpha[-1] < default.alphas[-1]
    cc = T.mse_curve(m20, alphas=[10.0], centred=True)
    assert cc.mse[0] < T.mse_curve(m20, alphas=[10.0]).mse[0]  # centring lowers the thresholds


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
    th = T.thresholds(mdl, n_samples=200_000)
    al = np.geomspace(th.alpha[2], th.alpha[29], 60)
    slope = np.polyfit(np.log(al), np.log(T.mse_curve(mdl, alphas=al, n_samples=200_000).mse), 1)[0]
    assert slope == pytest.approx(T.scaling_law(gamma).exponent, abs=0.05)
    late = np.geomspace(10 * th.alpha[-1], 1e3 * th.alpha[-1], 10)
    slope = np.polyfit(np.log(late), np.log(T.mse_curve(mdl, alphas=late, n_samples=200_000).mse), 1)[0]
    assert slope == pytest.approx(-1.0, abs=1e-6)


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
    th = T.thresholds(mdl, tau)
    weak = slice(9, None)
    assert np.all(mdl.a[weak] < 0.05)
    err = np.hypot(th.alpha_se, opt.thresholds.alpha_se)[weak]
    np.testing.assert_array_less(opt.thresholds.alpha[weak] - 4 * err, th.alpha[weak])
    # ... and the leading-order bound 1/(a_k² μ₂² J) is approached by τ* for the weakest ones
    np.testing.assert_allclose(opt.thresholds.alpha[-5:], opt.cs_bound[-5:], rtol=0.06)


@pytest.mark.parametrize("centred", [False, True])
def test_direction_bounds_hold_for_every_tau(noisy20, centred):
    """α_k(τ) ≥ 1/E[h_k(y)²] for every k and every τ (exact Cauchy–Schwarz, v = Δ)."""
    mdl, opt = noisy20
    assert opt.smoothing == mdl.noise
    for tau in ["saturating", "identity", "sign", ("clip", 0.5), opt.preprocess]:
        th = T.thresholds(mdl, tau, centred=centred)
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
    with pytest.raises(TypeError, match=r"^centred: must be True or False"):
        T.thresholds(mdl, centred="yes")
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


# ---------------------------------------------------------------- against the spectrum (slow)


@pytest.mark.slow
@pytest.mark.parametrize("m_star, alpha, centred", [(3, 100.0, False), (5, 200.0, False), (3, 300.0, True)])
def test_predictions_against_spectrum(m_star, alpha, centred):
    """Eigenvalues of T at d = 300 against the large-α predictions.

    Tolerances: outlier k fluctuates like the Rayleigh quotient
    ``w_kᵀ T w_k = (1/n) Σ τ(y_i) z_ik²``, whose standard deviation s_k is
    measured on the same data; the Wigner picture misses O(σ²) terms at
    finite α. Tolerance 5 s_k + 0.1σ. The whole bulk moves with the
    empirical mean of the weights (its sd is about σ/√d ≈ 0.06σ), so the
    edges are compared after that shift; what remains is Tracy–Widom
    fluctuations O(σ d^{-2/3}) ≈ 0.02σ and an O(1/α) shift from the
    non-semicircular finite-α law (observed ≤ 0.1σ over six seeds):
    tolerance 0.15σ. Overlaps ``1 − α_k/α``
    are leading order (observed deviations ≤ 0.02): tolerance 0.03. Only
    directions with α ≥ 10 α_k are compared.
    """
    d = 300
    n = int(alpha * d)
    mdl = HMIModel(d=d, m_star=m_star, gamma=1.3, link="he2_he4", seed=m_star)
    p = T.predict(mdl, "saturating", alpha, centred=centred)
    X, y = mdl.sample(n)
    center = T.moments(mdl).mean if centred else False
    ev, V = np.linalg.eigh(spectral_matrix(X, y, center=center))
    t = naive.tau("saturating", y)
    z = X @ mdl.W.T
    s = (t[:, None] * z * z).std(axis=0) / math.sqrt(n)
    strong = alpha >= 10 * p.thresholds.alpha
    assert strong[0] and np.all(p.thresholds.theta > 0)
    k = int(strong.sum())
    top = ev[::-1][:k]
    np.testing.assert_array_less(np.abs(top - p.outliers[:k]), 5 * s[:k] + 0.1 * p.sigma)
    shift = t.mean() - (center if centred else 0.0) - p.bulk_center
    assert abs(ev[::-1][m_star] - shift - p.bulk_edges[1]) < 0.15 * p.sigma  # first bulk eigenvalue from the top
    assert abs(ev[0] - shift - p.bulk_edges[0]) < 0.15 * p.sigma
    overlaps = ((V[:, ::-1][:, :m_star].T @ mdl.W.T) ** 2).max(axis=0)
    np.testing.assert_allclose(overlaps[:k], p.overlaps[:k], atol=0.03)


def test_unhashable_user_tau_bypasses_the_cache():
    class Tau:
        __hash__ = None

        def __call__(self, y):
            return y / (1 + np.abs(y))

    mdl = model(m_star=2)
    np.testing.assert_allclose(T.thresholds(mdl, Tau(), n_samples=20_000).alpha,
                               T.thresholds(mdl, "saturating", n_samples=20_000).alpha, rtol=1e-9)
