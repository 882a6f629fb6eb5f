"""Principal Hessian directions against statsmodels' PrincipalHessianDirections (a test-only dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from hmi_fast import SpectralEstimator

dimred = pytest.importorskip("statsmodels.regression.dimred")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n, d = 4000, 7
    A = rng.standard_normal((d, d)) + 2 * np.eye(d)
    X = rng.standard_normal((n, d)) @ A + rng.standard_normal(d)  # correlated, not centred
    z = X @ np.linalg.solve(A, np.eye(d)[:, 0])
    y = z**2 + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


@pytest.mark.parametrize("resid", [False, True])
def test_phd_equals_statsmodels(data, resid):
    """statsmodels: eigenpairs of Σ̂⁻¹ (1/n) Σ (y − ȳ)(x − x̄)(x − x̄)ᵀ, Σ̂ = np.cov (ddof 1); y its OLS residual
    with resid=True. Ours: identity τ, exact centering, whitening (ddof 0): our eigenvalues are n/(n − 1) times theirs."""
    X, y = data
    n, d = X.shape
    ref = dimred.PrincipalHessianDirections(y, X).fit(resid=resid)
    ref_eigs = np.real(ref.eigs)
    est = SpectralEstimator(preprocess="identity", center=True, whiten=True, resid=resid, n_components=d,
                            max_components=None).fit(X, y)
    ours = est.eigenvalues_ * (n - 1) / n
    order = np.argsort(-np.abs(ours))
    assert np.allclose(ours[order], ref_eigs, rtol=1e-10, atol=1e-12 * np.abs(ref_eigs).max())
    # the directions: statsmodels' eigenvectors of Σ̂⁻¹M are Σ̂^{-1/2} v, ours too (directions_, unit norm)
    B = np.real(ref.params)
    B = B / np.linalg.norm(B, axis=0)
    for k in range(2):
        assert abs(abs(B[:, k] @ est.directions_[order[k]]) - 1) < 1e-9
