"""SpectralEstimator: recovery, streaming equivalences and scikit-learn conventions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from hmi_fast import HMIModel, SpectralEstimator, metrics

from . import naive


@pytest.fixture(scope="module")
def model():
    return HMIModel(d=80, m_star=3, gamma=1.0, link="he2", seed=4)


@pytest.fixture(scope="module")
def data(model):
    return model.sample(40_000)


def test_recovers_the_strong_directions(model, data):
    X, y = data
    est = SpectralEstimator(max_components=10).fit(X, y)
    q = metrics.recovery(est.components_, model.W)
    assert est.n_components_ >= 2
    assert q[0] > 0.9 and q[1] > 0.8
    assert np.allclose(est.components_ @ est.components_.T, np.eye(est.n_components_), atol=1e-10)
    assert est.n_samples_seen_ == len(y) and est.n_features_in_ == 80
    assert est.selection_.n_components == est.n_components_


def test_fit_stream_and_partial_fit_equal_fit(model, data):
    X, y = data
    ref = SpectralEstimator(max_components=10).fit(X, y)
    streamed = SpectralEstimator(max_components=10).fit_stream(model, n=len(y))
    part = SpectralEstimator(max_components=10)
    for lo in range(0, len(y), 7000):
        part.partial_fit(X[lo : lo + 7000], y[lo : lo + 7000])
    for other in (streamed, part):
        assert other.n_components_ == ref.n_components_
        assert np.allclose(other.eigenvalues_, ref.eigenvalues_, rtol=1e-9)
        P, Q = other.projector(), ref.projector()
        assert np.abs(P - Q).max() < 1e-8


def test_integer_n_components_and_transform(data):
    X, y = data
    est = SpectralEstimator(n_components=4, max_components=6).fit(X, y)
    assert est.components_.shape == (4, 80)
    Z = est.transform(X[:10])
    assert Z.shape == (10, 4)
    assert np.allclose(Z, X[:10] @ est.components_.T)
    assert np.allclose(est.fit_transform(X, y), X @ est.components_.T)


def test_params_roundtrip():
    est = SpectralEstimator(preprocess="sign", max_components=7)
    params = est.get_params()
    assert params["preprocess"] == "sign" and params["max_components"] == 7
    est.set_params(which="LA")
    assert est.which == "LA"
    assert "preprocess='sign'" in repr(est)
    with pytest.raises(ValueError, match=r"Invalid parameter 'colour' for estimator SpectralEstimator"):
        est.set_params(colour=1)


def test_errors(data):
    X, y = data
    with pytest.raises(NotFittedError, match=r"SpectralEstimator: not fitted yet"):
        SpectralEstimator().transform(X)
    with pytest.raises(ValueError, match=r"n_components: unknown rule 'max'"):
        SpectralEstimator(n_components="max").fit(X, y)
    with pytest.raises(ValueError, match=r"max_components: must be an integer >= 1"):
        SpectralEstimator(max_components=0).fit(X, y)
    with pytest.raises(ValueError, match=r"which: must be 'BE', 'LA' or 'SA'"):
        SpectralEstimator(which="top").fit(X, y)
    est = SpectralEstimator(max_components=3).fit(X[:500], y[:500])
    with pytest.raises(ValueError, match=r"X has 5 features, but SpectralEstimator is expecting 80 features"):
        est.transform(X[:, :5])
    with pytest.raises(ValueError, match=r"X and y: lengths differ"):
        SpectralEstimator().fit(X, y[:-1])
    Xn = X[:100].copy()
    Xn[3, 3] = np.nan
    with pytest.raises(ValueError, match=r"X: non-finite value in row 3"):
        SpectralEstimator().fit(Xn, y[:100])


def test_tiny_dimensions():
    """d = 1, 2, 3: the eigenvalues are those of the naive T, the rows orthonormal, and x_0 (the only
    direction y depends on) is the one found."""
    rng = np.random.default_rng(0)
    for d in (1, 2, 3):
        X = rng.standard_normal((2000, d))
        y = X[:, 0] ** 2 - 1
        est = SpectralEstimator(max_components=5).fit(X, y)
        T = naive.spectral_matrix_einsum(X, naive.tau("saturating", y))
        assert np.all(np.abs(est.spectrum_[:, None] - np.linalg.eigvalsh(T)[None, :]).min(axis=1) < 1e-12)
        C = est.components_
        assert C.shape == (est.n_components_, d) and np.allclose(C @ C.T, np.eye(len(C)), atol=1e-12)
        assert est.n_components_ >= 1 and abs(C[0, 0]) > 0.99


# scikit-learn's own checks: every one applies and passes.


def test_sklearn_check_estimator():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_estimator

    est = SpectralEstimator(n_components=2, max_components=3)
    results = check_estimator(est, on_fail=None)
    failed = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 40, sklearn.__version__
