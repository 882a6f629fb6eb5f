"""Gap and edge selection on planted spectra with known counts, against the plain reference, and validation."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hmi_fast.selection import Selection, select_components

from . import naive


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def planted_spectrum(d, spikes, mu=0.3, sigma=0.05, seed=0):
    """Eigenvalues of mu I + sigma * GOE (semicircle mu +- 2 sigma) + sum_k sigma theta_k v_k v_k^T."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((d, d))
    B = (G + G.T) / np.sqrt(2.0 * d)
    V = np.linalg.qr(rng.standard_normal((d, len(spikes))))[0]
    A = mu * np.eye(d) + sigma * (B + (V * np.asarray(spikes, dtype=float)) @ V.T)
    return np.linalg.eigvalsh(A)


def ends(w, per_end):
    """topk_eigh's "BE" layout: the largest descending, then the smallest ascending."""
    return np.concatenate([w[::-1][:per_end], w[:per_end]])


def moments(d, n, mu, sigma):
    """tau_mean and tau_sq_mean that give this bulk: sigma^2 = tau_sq_mean d / n."""
    return {"tau_mean": mu, "tau_sq_mean": sigma**2 * n / d}


D, N, MU, SIGMA = 1000, 100_000, 0.3, 0.05
SPIKES = [9.0, 6.0, 5.7, 3.0, -4.0]  # two close spikes (6, 5.7), a weaker one (3) and a negative one


@pytest.fixture(scope="module")
def spectrum():
    return planted_spectrum(D, SPIKES, MU, SIGMA)


@pytest.mark.parametrize("source", ["moments", "ends", "full"])
def test_planted_counts(spectrum, source):
    if source == "full":
        ev, kw = spectrum, {}
    else:
        ev = ends(spectrum, 20)
        kw = moments(D, N, MU, SIGMA) if source == "moments" else {}
    for rule in ("gap", "edge"):
        s = select_components(ev, d=D, n=N, rule=rule, **kw)
        assert isinstance(s, Selection)
        assert (s.n_top, s.n_bottom, s.n_components) == (4, 1, 5)
        assert s.n_components_gap == s.n_components_edge == 5 and s.agree
        assert not s.saturated
        # the selected ones are the 4 largest and the smallest, from the extreme inward
        assert np.array_equal(ev[s.index], np.concatenate([np.sort(ev)[::-1][:4], np.sort(ev)[:1]]))
        assert s.sigma == pytest.approx(SIGMA, rel=0.15)
        assert s.bulk_center == pytest.approx(MU, abs=0.2 * SIGMA)
        assert s.bulk_edges == pytest.approx((s.bulk_center - 2 * s.sigma, s.bulk_center + 2 * s.sigma))
        assert s.threshold == pytest.approx(D ** (-1 / 3))


def test_which_ends(spectrum):
    kw = moments(D, N, MU, SIGMA)
    top = np.sort(spectrum)[::-1][:20]
    bottom = np.sort(spectrum)[:20]
    s = select_components(top, d=D, n=N, which="LA", **kw)
    assert (s.n_top, s.n_bottom) == (4, 0) and len(s.gaps[1]) == 0
    s = select_components(bottom, d=D, n=N, which="SA", **kw)
    assert (s.n_top, s.n_bottom) == (0, 1) and s.index.tolist() == [0]
    s = select_components(ends(spectrum, 20), d=D, n=N, which="LA", **kw)
    assert (s.n_top, s.n_bottom) == (4, 0)


def test_two_spikes_of_different_strength():
    # largest-single-gap keeps only the strong one; the package rule keeps both
    w = planted_spectrum(D, [12.0, 3.0], MU, SIGMA, seed=1)
    x = (np.sort(w)[::-1][:20] - MU) / SIGMA
    assert naive.largest_gap_count(x) == 1
    s = select_components(ends(w, 20), d=D, n=N, **moments(D, N, MU, SIGMA))
    assert s.n_top == 2


def test_two_close_spikes_kept():
    w = planted_spectrum(D, [6.0, 5.7], MU, SIGMA, seed=2)
    s = select_components(ends(w, 20), d=D, n=N, **moments(D, N, MU, SIGMA))
    assert s.n_top == 2 and s.n_bottom == 0
    assert s.gaps[0][0] < 1.0 < s.gaps[0][1]  # close pair, then the large gap to the bulk


def test_saturated(spectrum):
    kw = moments(D, N, MU, SIGMA)
    s = select_components(np.sort(spectrum)[::-1][:3], d=D, n=N, which="LA", **kw)
    # no bulk eigenvalue supplied: flagged, and the bulk edge bounds the gap after the 3rd spike
    assert s.saturated and s.n_top == 3
    assert s.n_components_edge == 3 and len(s.gaps[0]) == 2
    assert not select_components(ends(spectrum, 20), d=D, n=N, **kw).saturated


@pytest.mark.parametrize("seed, d", [(3, 500), (4, 800), (5, 600)])
def test_against_naive_rule(seed, d):
    rng = np.random.default_rng(seed)
    spikes = list(rng.uniform(1.0, 8.0, 4)) + list(-rng.uniform(1.0, 5.0, 2))
    w = planted_spectrum(d, spikes, MU, SIGMA, seed=seed)
    ev = ends(w, 15)
    n = 50_000
    kw = moments(d, n, MU, SIGMA)
    sigma = np.sqrt(kw["tau_sq_mean"] * d / n)
    top = np.sort(ev[ev > MU])[::-1] - MU
    bot = MU - np.sort(ev[ev < MU])
    for delta in (None, 0.05, 0.5):
        s = select_components(ev, d=d, n=n, threshold=delta, **kw)
        dl = d ** (-1 / 3) if delta is None else delta
        assert s.n_top == naive.gap_rule_count(top, 0.0, sigma, dl)
        assert s.n_bottom == naive.gap_rule_count(bot, 0.0, sigma, dl)
        for margin in (0.0, 0.05, 0.3):
            e = select_components(ev, d=d, n=n, rule="edge", margin=margin, threshold=delta, **kw)
            assert e.n_top == naive.edge_rule_count(top, sigma, margin)
            assert e.n_bottom == naive.edge_rule_count(bot, sigma, margin)
            assert e.n_components_gap == s.n_components_gap


def test_threshold_and_margin(spectrum):
    kw = moments(D, N, MU, SIGMA)
    ev = ends(spectrum, 20)
    assert select_components(ev, d=D, n=N, threshold=100.0, **kw).n_components == 0
    s = select_components(ev, d=D, n=N, rule="edge", margin=10.0, **kw)
    assert s.n_components == 0 and s.n_components_gap == 5 and not s.agree


@pytest.mark.parametrize(
    "ev, kwargs, match",
    [
        (np.ones((2, 2)), {}, r"^eigenvalues: expected a non-empty 1-D array, got shape \(2, 2\)"),
        (np.array([]), {}, r"^eigenvalues: expected a non-empty 1-D array, got shape \(0,\)"),
        (np.array([1.0, np.nan]), {}, r"^eigenvalues: contain NaN or inf"),
        (np.array(["a", "b"]), {}, r"^eigenvalues: unsupported dtype"),
        (None, {"d": 0}, r"^d: must be a positive integer, got 0"),
        (None, {"n": 2.5}, r"^n: must be a positive integer, got 2.5"),
        (None, {"rule": "largest"}, r"^rule: must be one of \('gap', 'edge'\), got 'largest'"),
        (None, {"which": "LM"}, r"^which: must be one of \('BE', 'LA', 'SA'\), got 'LM'"),
        (None, {"tau_sq_mean": -1.0, "tau_mean": 0.0}, r"^tau_sq_mean: must be >= 0, got -1.0"),
        (None, {"tau_mean": np.nan}, r"^tau_mean: must be a finite number"),
        (None, {"threshold": 0.0}, r"^threshold: must be > 0, got 0.0"),
        (None, {"margin": -0.1}, r"^margin: must be >= 0, got -0.1"),
        (None, {"which": "LA"}, r"^tau_sq_mean: the bulk centre and width cannot both be estimated from one end"),
        (np.linspace(-1, 1, 50), {"d": 10}, r"^eigenvalues: got 50 of them, but a d x d matrix has only d=10"),
    ],
)
def test_validation(spectrum, ev, kwargs, match):
    ev = ends(spectrum, 5) if ev is None else ev
    args = {"d": D, "n": N}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        select_components(ev, **args)


def test_real_spectral_matrix_small():
    """On a real T (d = 300): the gap rule keeps directions that are recovered."""
    from hmi_fast import HMIModel, accumulate
    from hmi_fast.eigen import topk_eigh
    from hmi_fast.metrics import recovery

    d, alpha = 300, 164
    model = HMIModel(d, m_star=20, gamma=1.3, link="he2_he4", seed=0)
    n = alpha * d
    acc = accumulate(model, n=n)
    res = topk_eigh(acc.finalize(), 40, which="BE")
    for kw in ({"tau_mean": acc.weight_mean, "tau_sq_mean": acc.weight_sq_mean}, {"weights": acc.weight_sketch}):
        s = select_components(res.values, d=d, n=n, **kw)
        assert s.n_components >= 2
        q = recovery(res.vectors[:, s.index].T, model.W)
        assert q[0] > 0.5 and q[1] > 0.5


# ---------------------------------------------------------------- exact bulk from the weights


class Sketch:
    """A stand-in for the accumulator's weight sketch: a histogram of the weights."""

    def __init__(self, w, bins=256):
        counts, edges = np.histogram(w, bins=bins)
        self.values, self.probs = 0.5 * (edges[1:] + edges[:-1]), counts / counts.sum()

    def law(self):
        return self.values, self.probs


def spiked_weighted_wishart(d, n, spikes, seed):
    """T = (1/n) Σ w_i x_i x_iᵀ with w_i = tanh(s_i + Σ_k θ_k (x_ik² − 1)): spikes along e_1..e_K."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    s = 0.3 * rng.standard_normal(n) + 0.4
    for k, th in enumerate(spikes):
        s += th * (X[:, k] ** 2 - 1)
    w = np.tanh(s)
    w_eig, V = np.linalg.eigh((X * w[:, None]).T @ X / n)
    return w_eig, V, w


@pytest.mark.parametrize("alpha", [4, 30])
def test_exact_bulk_from_weights(alpha):
    d = 300
    n = alpha * d
    ev, V, w = spiked_weighted_wishart(d, n, [0.6, 0.4], seed=alpha)
    from hmi_fast.theory.wishart import WeightLaw, bin_values

    s = select_components(ev, d=d, n=n, weights=w)
    assert s.bulk == "exact"
    E = WeightLaw(*bin_values(w)).edges(np.array([d / n]))
    assert s.bulk_edges == pytest.approx(tuple(E.edges[0]))
    assert s.edge_scales == pytest.approx(tuple(E.scales[0]))
    assert s.bulk_center == pytest.approx(w.mean()) and s.sigma == pytest.approx(np.sqrt(np.mean(w**2) * d / n))
    # one planted direction has left the bulk at α = 4, both at α = 30, and they are the kept ones
    k = 1 if alpha == 4 else 2
    assert s.n_top == k and s.n_bottom == 0 and s.n_components_edge == k
    q = (V[:2, s.index] ** 2).sum(axis=1)
    assert np.all(q[:k] > (0.3 if alpha == 4 else 0.8))
    # the sketch of the same weights gives (nearly) the same bulk, and the same counts
    h = select_components(ev, d=d, n=n, weights=Sketch(w))
    assert h.bulk_edges == pytest.approx(s.bulk_edges, abs=0.02 * s.sigma)
    assert (h.n_top, h.n_bottom) == (s.n_top, s.n_bottom)
    # against the plain rule with the same edges and scales
    top = np.sort(ev[ev > s.bulk_center])[::-1] - s.bulk_center
    assert s.n_top == naive.gap_rule_count_beyond(top, s.bulk_edges[1] - s.bulk_center, s.edge_scales[1],
                                                  s.threshold)
    if alpha == 4:
        # the semicircle is far too narrow here: its edge rule counts bulk eigenvalues as spikes
        semi = select_components(ev, d=d, n=n, tau_mean=w.mean(), tau_sq_mean=np.mean(w**2))
        assert semi.bulk == "semicircle" and semi.n_components_edge > 4


def test_exact_bulk_rules_with_ends_only():
    d, n = 300, 3000
    ev, _, w = spiked_weighted_wishart(d, n, [0.6], seed=7)
    ends = np.concatenate([ev[::-1][:10], ev[:10]])
    full = select_components(ev, d=d, n=n, weights=w)
    part = select_components(ends, d=d, n=n, weights=w)
    assert (part.n_top, part.n_bottom) == (full.n_top, full.n_bottom) == (1, 0)
    assert not part.saturated
    la = select_components(ev[::-1][:3], d=d, n=n, which="LA", weights=w)
    assert la.n_top == 1 and not la.saturated
    one = select_components(ev[::-1][:1], d=d, n=n, which="LA", weights=w)
    # no bulk eigenvalue supplied: flagged, and the bulk edge bounds the gap after the spike
    assert one.saturated and one.n_top == 1 and one.n_components_edge == 1


@pytest.mark.parametrize(
    "weights, exc, match",
    [
        (np.ones((2, 2)), ValueError, r"^weights: expected a non-empty 1-D array, got shape \(2, 2\)"),
        (np.array([1.0, np.nan]), ValueError, r"^weights: non-finite value at index 1"),
        (np.array(["a"]), TypeError, r"^weights: expected a 1-D array of numbers or an object with .law\(\)"),
    ],
)
def test_weights_validation(spectrum, weights, exc, match):
    with pytest.raises(exc, match=match):
        select_components(ends(spectrum, 5), d=D, n=N, weights=weights)


def test_weights_law_validation(spectrum):
    class Bad:
        def __init__(self, out):
            self.out = out

        def law(self):
            return self.out

    ev = ends(spectrum, 5)
    with pytest.raises(TypeError, match=r"^weights: .law\(\) must return a pair"):
        select_components(ev, d=D, n=N, weights=Bad([1.0]))
    with pytest.raises(ValueError, match=r"^weights: .law\(\) must return two non-empty 1-D arrays"):
        select_components(ev, d=D, n=N, weights=Bad((np.ones(3), np.ones(2))))
    with pytest.raises(ValueError, match=r"^weights: .law\(\) returned NaN/inf values or negative"):
        select_components(ev, d=D, n=N, weights=Bad((np.ones(2), np.array([1.0, -0.5]))))
