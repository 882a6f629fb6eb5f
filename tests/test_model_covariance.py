"""HMIModel with a non-identity input covariance: AR(1) ``rho=`` and ``covariance=``; whitening end to end."""

from __future__ import annotations

import numpy as np
import pytest

from hmi_fast import SAVE, HMIModel, SlicedInverseReg, SpectralEstimator, spectral_matrix
from hmi_fast.model import LatentFrame


def _spd(d, seed=0):
    A = np.random.default_rng(seed).standard_normal((d, d))
    return A @ A.T / d + 0.5 * np.eye(d)


MODELS = {
    "ar1": dict(rho=0.9),
    "ar1-negative": dict(rho=-0.5),
    "matrix": dict(covariance=_spd(30)),
}


@pytest.mark.parametrize("kw", MODELS.values(), ids=MODELS.keys())
def test_rows_have_the_covariance_and_the_labels(kw):
    m = HMIModel(d=30, m_star=2, gamma=0.5, link="he2", seed=1, **kw)
    assert m.frame is None
    X, y = m.sample(60_000)
    Sigma = m.input_covariance()
    assert np.abs(np.cov(X.T, bias=True) - Sigma).max() < 6 * np.sqrt(2 / 60_000) * np.abs(Sigma).max()
    assert np.allclose(y, m.target(X), rtol=1e-12, atol=1e-12)  # noise 0: z_k = <w_k, x>
    if "rho" in kw:
        i = np.arange(30)
        assert np.allclose(Sigma, kw["rho"] ** np.abs(i[:, None] - i[None, :]))


@pytest.mark.parametrize("kw", MODELS.values(), ids=MODELS.keys())
def test_stream_is_a_function_of_the_row_index(kw):
    m = HMIModel(d=30, m_star=3, gamma=1.0, noise=0.2, seed=4, **kw)
    X, y = m.sample(3000)
    Xb, yb = m.rows(1234, 2000)
    assert np.array_equal(Xb, X[1234:2000]) and np.array_equal(yb, y[1234:2000])
    X32, y32 = m.sample(3000, dtype=np.float32)
    assert np.array_equal(X32, X.astype(np.float32)) and np.array_equal(y32, y.astype(np.float32))
    G, yl = m.latent_rows(0, 3000)  # frame None: the latent rows are rows of x
    assert np.array_equal(G, X) and np.array_equal(yl, y)
    T1 = spectral_matrix(m, n=3000, block_size=256)
    T2 = spectral_matrix(m, n=3000, block_size=1000)
    assert np.allclose(T1, T2, rtol=1e-12, atol=1e-14)  # the same rows, summed in other blocks
    assert np.allclose(T1, spectral_matrix(X, y), rtol=1e-12, atol=1e-14)


def test_isotropic_path_unchanged():
    iso = HMIModel(d=20, m_star=2, gamma=1.0, seed=3)
    zero = HMIModel(d=20, m_star=2, gamma=1.0, seed=3, rho=0.0)
    assert isinstance(iso.frame, LatentFrame) and zero.frame == iso.frame and zero.rho is None
    assert np.array_equal(iso.sample(500)[0], zero.sample(500)[0])
    assert np.array_equal(iso.input_covariance(), np.eye(20))


def test_bad_covariance_messages():
    with pytest.raises(ValueError, match="rho, covariance: give one input covariance, not both"):
        HMIModel(5, 1, 1.0, rho=0.5, covariance=np.eye(5))
    with pytest.raises(ValueError, match=r"rho: the AR\(1\) correlation must satisfy \|rho\| < 1, got 1.0"):
        HMIModel(5, 1, 1.0, rho=1.0)
    with pytest.raises(TypeError, match="rho: must be a number"):
        HMIModel(5, 1, 1.0, rho="0.5")
    with pytest.raises(ValueError, match=r"covariance: expected shape \(5, 5\), got \(4, 4\)"):
        HMIModel(5, 1, 1.0, covariance=np.eye(4))
    with pytest.raises(ValueError, match="covariance: must be symmetric"):
        HMIModel(3, 1, 1.0, covariance=np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="covariance: must be positive definite"):
        HMIModel(3, 1, 1.0, covariance=np.ones((3, 3)))
    with pytest.raises(ValueError, match="covariance: contains NaN or inf"):
        HMIModel(2, 1, 1.0, covariance=np.array([[1.0, np.nan], [np.nan, 1.0]]))


def _recovery(components, W):
    P = W.T @ np.linalg.solve(W @ W.T, W)
    return np.einsum("ij,jk,ik->i", components, P, components)


def test_whitening_end_to_end_on_correlated_inputs():
    """On AR(1) inputs the x-space subspace is span(W): SAVE and whitened pHd find it, raw pHd does not.

    SIR finds the direction of E[x | y] (for this additive monotone target, one
    combination of the two; its second direction is weak).
    """
    m = HMIModel(d=40, m_star=2, gamma=0.5, link="relu", noise=0.05, seed=5, rho=0.9)
    X, y = m.sample(40_000)
    sir = SlicedInverseReg(n_components=2).fit(X, y)
    save = SAVE(n_components=2, max_components=5).fit(X, y)
    white = SpectralEstimator(preprocess="identity", center=True, whiten=True, n_components=2, max_components=5)
    raw = SpectralEstimator(preprocess="identity", center=True, n_components=2, max_components=5)
    assert _recovery(sir.components_, m.W)[0] > 0.99
    for est in (save, white.fit(X, y)):
        assert _recovery(est.components_, m.W).min() > 0.9, type(est).__name__
    assert _recovery(raw.fit(X, y).components_, m.W).max() < 0.5
