"""topk_eigh against np.linalg.eigh: eigenvalues, sign-free eigenvectors, residuals, edge cases, validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.sparse.linalg import LinearOperator, aslinearoperator
from threadpoolctl import threadpool_limits

import hmi_fast.eigen as eigen_mod
from hmi_fast.eigen import ConvergenceWarning, EighResult
from hmi_fast.eigen import topk_eigh as _topk_eigh


def topk_eigh(*args, **kwargs):
    """These tests exercise the Lanczos path: the small matrices here would go to LAPACK under method="auto"."""
    kwargs.setdefault("method", "lanczos")
    return _topk_eigh(*args, **kwargs)


from . import naive

RTOL = 1e-10  # eigenvalues, relative to max |lambda|


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Small matrices: one BLAS thread is faster and immune to a busy machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def planted(d, spikes, bulk="semicircle", seed=0):
    """Spikes on a GOE (semicircle of radius 2) or Wishart (Marchenko-Pastur, ratio 1/4) bulk."""
    rng = np.random.default_rng(seed)
    if bulk == "semicircle":
        G = rng.standard_normal((d, d))
        B = (G + G.T) / np.sqrt(2.0 * d)
    else:
        X = rng.standard_normal((4 * d, d))
        B = X.T @ X / (4 * d)
    V = np.linalg.qr(rng.standard_normal((d, len(spikes))))[0]
    return B + (V * np.asarray(spikes, dtype=float)) @ V.T


def with_spectrum(values, seed=0):
    """Symmetric matrix with the given eigenvalues and random eigenvectors."""
    values = np.asarray(values, dtype=float)
    U = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(values), len(values))))[0]
    A = (U * values) @ U.T
    return (A + A.T) / 2


def check(res, A, k, which="LA", rtol=RTOL, residual_tol=None):
    """Values to rtol, orthonormal vectors, residuals, and eigenvectors through projectors.

    Residuals: at most ``residual_tol`` (relative) when the call asked for it;
    otherwise at most ``sqrt(2 rtol)``, what an eigenvalue error bound
    ``r^2 / gap <= rtol`` implies (gap <= 2 ||A||). Eigenvectors: within
    ``r / gap`` of their eigenspace (Davis-Kahan), with ``r`` the residual.
    """
    A = np.asarray(A, dtype=np.float64)
    d = A.shape[0]
    lam, _ = naive.topk_eigh_dense(A, k, which)
    w_all = np.linalg.eigvalsh(A)
    scale = max(float(np.abs(w_all).max()), 1e-300)
    assert isinstance(res, EighResult)
    assert res.values.shape == (k,) and res.vectors.shape == (d, k)
    assert res.vectors.dtype == np.float64 and res.values.dtype == np.float64
    assert np.abs(res.values - lam).max() <= rtol * scale + 1e-300
    V = res.vectors
    assert np.abs(V.T @ V - np.eye(k)).max() <= 1e-10
    R = np.linalg.norm((A / scale) @ V - V * (res.values / scale), axis=0) * scale  # no over/underflow
    assert np.allclose(res.residuals, R, rtol=1e-6, atol=1e-12 * scale)
    rmax = float(R.max())
    if residual_tol is not None:
        assert rmax <= residual_tol * scale + 1e-300
    else:
        assert rmax <= np.sqrt(2 * rtol) * scale + 1e-300
    # sign/rotation-free eigenvectors: each returned group lies in its eigenspace,
    # and equals it when the whole (near-)degenerate eigenspace was returned
    cl = 1e-8 * scale
    for value in np.unique(np.round(res.values / max(cl, 1e-300)) * cl):
        mine = np.abs(res.values - value) <= 2 * cl
        space = np.abs(w_all - value) <= 2 * cl
        others = w_all[~space]
        gap = np.abs(others - value).min() if others.size else scale
        bound = np.sqrt(mine.sum()) * (rmax + 1e-8 * scale) / max(gap, 1e-300) + 1e-9
        P = naive.eigenspace_projector(A, value, 2 * cl)
        Vg = V[:, mine]
        assert np.linalg.norm(P @ Vg - Vg) <= bound
        if mine.sum() == space.sum():
            assert np.linalg.norm(Vg @ Vg.T - P) <= np.sqrt(2) * bound


# ---------------------------------------------------------------- planted spectra


@pytest.mark.parametrize("which", ["LA", "SA", "BE"])
def test_planted_semicircle(which):
    A = planted(300, [6.0, 4.0, 3.0, 2.6, -5.0, -3.2])
    res = topk_eigh(A, 12, which=which, seed=1)
    assert res.method == "lanczos" and res.converged
    check(res, A, 12, which)


@pytest.mark.parametrize("which", ["LA", "SA", "BE"])
def test_residual_tol_gives_accurate_vectors(which):
    # residual_tol below 1e-6 runs in float64 throughout and bounds every residual
    A = planted(300, [6.0, 4.0, 3.0, 2.6, -5.0, -3.2])
    res = topk_eigh(A, 12, which=which, seed=1, residual_tol=1e-10)
    assert res.method == "lanczos" and res.converged
    check(res, A, 12, which, residual_tol=1e-10)
    loose = topk_eigh(A, 12, which=which, seed=1)
    assert loose.residuals.max() > 10 * res.residuals.max()  # the default stops at the eigenvalue accuracy


def test_float32_products_hand_over_to_float64():
    # the top pair sits 1e-9 (relative) from a run of 30 eigenvalues spaced by 1e-10: float32
    # products (error ~1e-7 ||A||) cannot certify it, so the float64 steps must take over
    d = 300
    run = 5.0 + 1e-9 * np.arange(30)
    values = np.concatenate([[10.0, 9.0, 8.0], run, np.linspace(-3.0, 4.0, d - 33)])
    A = with_spectrum(values, seed=9)
    res = topk_eigh(A, 6)
    assert res.converged
    check(res, A, 6)
    w = np.sort(values)[::-1][:6]
    assert np.abs(res.values - w).max() <= 1e-10 * 10.0


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_extreme_magnitudes(scale):
    # the float32 copy is scaled by a power of two: no underflow or overflow
    A = planted(200, [4.0, 3.0, -3.5]) * scale
    res = topk_eigh(A, 4, which="BE")
    assert res.converged
    check(res, A, 4, "BE")


def test_planted_marchenko_pastur():
    A = planted(250, [4.0, 3.0, 2.5], bulk="mp", seed=3)
    res = topk_eigh(A, 10, seed=0)
    assert res.method == "lanczos"
    check(res, A, 10)


def test_real_spectral_matrix():
    from hmi_fast import HMIModel, spectral_matrix

    d = 200
    T = spectral_matrix(HMIModel(d, m_star=20, gamma=1.3, link="he2_he4", seed=0), n=164 * d)
    for which in ("LA", "BE"):
        res = topk_eigh(T, 20, which=which)
        assert res.method == "lanczos"
        check(res, T, 20, which)


def test_tight_cluster():
    # four eigenvalues within 1e-5 relative among the wanted ones (ARPACK with a
    # small subspace can return the wrong set here, scipy issue 26112)
    d = 300
    values = np.concatenate(
        [[5.0, 4.0], 3.0 * (1 + 1e-5 * np.array([0.0, 0.3, 0.7, 1.0])), [2.9999], np.linspace(-2, 2, d - 7)]
    )
    A = with_spectrum(values, seed=4)
    res = topk_eigh(A, 7)
    assert res.converged
    check(res, A, 7)


def test_negative_spikes():
    A = planted(300, [-6.0, -4.5, -3.0, 2.5])
    res = topk_eigh(A, 4, which="SA")
    check(res, A, 4, "SA")
    assert res.values[0] < res.values[-1]  # ascending
    res = topk_eigh(A, 6, which="BE")
    check(res, A, 6, "BE")
    assert res.values[0] > res.values[2] and res.values[3] < res.values[5]


def test_repeated_eigenvalues():
    d = 200
    values = np.concatenate([[3.0, 3.0, 3.0, 2.0, 2.0], np.linspace(-1, 1, d - 5)])
    A = with_spectrum(values, seed=5)
    for k in (2, 3, 5, 6):
        res = topk_eigh(A, k)
        assert res.method == "lanczos"
        check(res, A, k)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("d", [1, 2, 3])
def test_tiny(d):
    A = with_spectrum(np.arange(1.0, d + 1.0), seed=d)
    for which in ("LA", "SA"):
        for k in range(1, d + 1):
            res = topk_eigh(A, k, which=which)
            assert res.method == "dense" and res.converged and res.n_iter == 0
            check(res, A, k, which)
    if d >= 2:
        check(topk_eigh(A, 2, which="BE"), A, 2, "BE")


def test_zero_matrix():
    A = np.zeros((150, 150))
    res = topk_eigh(A, 5)
    assert res.method == "lanczos" and res.converged
    assert np.all(res.values == 0) and np.all(res.residuals == 0)
    assert np.abs(res.vectors.T @ res.vectors - np.eye(5)).max() < 1e-12


def test_k_close_to_d_uses_dense():
    A = planted(120, [3.0])
    res = topk_eigh(A, 100)
    assert res.method == "dense" and res.n_matvec == 0
    check(res, A, 100)
    check(topk_eigh(A, 100, which="BE"), A, 100, "BE")


def test_linear_operator():
    A = planted(200, [4.0, -3.0])
    calls = {"n": 0}

    def matvec(x):
        calls["n"] += 1
        return A @ x

    op = LinearOperator(A.shape, matvec=matvec, dtype=np.float64)
    res = topk_eigh(op, 5, which="BE")
    check(res, A, 5, "BE")
    assert res.n_matvec == calls["n"]  # a block of b vectors counts b
    check(topk_eigh(aslinearoperator(A), 5), A, 5)
    check(topk_eigh(sp.csr_matrix(A), 5), A, 5)

    class MatrixFree:  # only shape and matvec
        shape = A.shape

        def matvec(self, x):
            return A @ x

    check(topk_eigh(MatrixFree(), 5, which="SA"), A, 5, "SA")


def test_operator_dense_fallback():
    A = planted(30, [3.0])
    res = topk_eigh(aslinearoperator(A), 4)
    assert res.method == "dense"
    check(res, A, 4)


def test_float32_computed_in_float64():
    A32 = planted(200, [4.0, 3.0]).astype(np.float32)
    res = topk_eigh(A32, 5)
    assert res.values.dtype == np.float64 and res.vectors.dtype == np.float64
    check(res, A32.astype(np.float64), 5)


def test_determinism():
    A = planted(200, [4.0, 3.0, -3.0])
    r1 = topk_eigh(A, 6, which="BE", seed=7)
    r2 = topk_eigh(A, 6, which="BE", seed=7)
    assert np.array_equal(r1.values, r2.values) and np.array_equal(r1.vectors, r2.vectors)
    assert r1.n_matvec == r2.n_matvec
    r3 = topk_eigh(A, 6, which="BE", seed=8)
    assert np.allclose(r1.values, r3.values, rtol=0, atol=1e-10 * np.abs(r1.values).max())
    # seed=None is a fixed default
    assert np.array_equal(topk_eigh(A, 3).values, topk_eigh(A, 3).values)


def test_start_vectors():
    A = planted(200, [4.0, 3.0])
    _, U = naive.topk_eigh_dense(A, 2)
    res = topk_eigh(A, 2, v0=U[:, 0])
    check(res, A, 2)
    check(topk_eigh(A, 2, v0=U, block_size=2), A, 2)


def test_not_converged_warns():
    A = planted(300, [3.0, 2.5])
    with pytest.warns(ConvergenceWarning, match=r"topk_eigh: \d+ of 10 eigenpairs converged to tol=1e-10 in 2 block products \(max_iter reached\)") as rec:
        res = topk_eigh(A, 10, max_iter=2, block_size=8)
    assert rec[0].filename == __file__  # points at the caller
    assert not res.converged
    assert res.values.shape == (10,) and np.isfinite(res.values).all()
    assert issubclass(ConvergenceWarning, UserWarning)


def test_converged_run_is_silent():
    A = planted(200, [4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        topk_eigh(A, 3)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "A, k, kwargs, exc, match",
    [
        (np.zeros(5), 1, {}, ValueError, r"^A: must be a square 2-D array, got an array with 1 dimension"),
        (np.zeros((3, 4)), 1, {}, ValueError, r"^A: must be square, got shape \(3, 4\)"),
        (np.zeros((3, 3), dtype=complex), 1, {}, TypeError, r"^A: unsupported dtype complex128"),
        (np.triu(np.ones((4, 4))), 1, {}, ValueError, r"^A: is not symmetric: max\|A - A\^T\| / max\|A\| = 1 exceeds 1e-08"),
        (np.diag([1.0, np.nan, 2.0]), 1, {}, ValueError, r"^A: contains 1 NaN or inf entries"),
        (np.diag([1.0, np.inf, 2.0]), 1, {}, ValueError, r"^A: contains 1 NaN or inf entries"),
        (np.eye(4), 0, {}, ValueError, r"^k: must be between 1 and d=4, got 0"),
        (np.eye(4), 5, {}, ValueError, r"^k: must be between 1 and d=4, got 5"),
        (np.eye(4), 2.0, {}, TypeError, r"^k: must be an integer"),
        (np.eye(5), 5, {"which": "BE"}, ValueError, r"^k: with which='BE', ceil\(k/2\)=3 .* use k <= 4"),
        (np.eye(4), 1, {"tol": 0.0}, ValueError, r"^tol: must be a positive finite number"),
        (np.eye(4), 1, {"tol": -1e-3}, ValueError, r"^tol: must be a positive finite number"),
        (np.eye(4), 1, {"which": "LM"}, ValueError, r"^which: must be one of \('LA', 'SA', 'BE'\), got 'LM'"),
        (np.eye(4), 1, {"v0": np.ones(3)}, ValueError, r"^v0: must have shape \(4,\) or \(4, c\)"),
        (np.eye(4), 1, {"v0": np.ones((4, 1, 1))}, ValueError, r"^v0: must have shape"),
        (np.eye(4), 1, {"v0": np.full(4, np.nan)}, ValueError, r"^v0: contains NaN"),
        (np.eye(4), 1, {"block_size": 0}, ValueError, r"^block_size: must be a positive integer"),
        (np.eye(4), 1, {"max_iter": 0}, ValueError, r"^max_iter: must be a positive integer"),
    ],
)
def test_validation(A, k, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        topk_eigh(A, k, **kwargs)


def test_symmetry_tolerance_by_dtype():
    A = planted(80, [3.0])
    E = np.zeros_like(A)
    E[0, 1] = 1e-6 * np.abs(A).max()
    with pytest.raises(ValueError, match=r"^A: is not symmetric: .* exceeds 1e-08 for float64"):
        topk_eigh(A + E, 2)
    topk_eigh((A + E).astype(np.float32), 2)  # within float32's 1e-5
    with pytest.raises(ValueError, match=r"^A: is not symmetric: .* exceeds 1e-05 for float32"):
        topk_eigh((A + 1e3 * E).astype(np.float32), 2)


def test_operator_validation():
    with pytest.raises(ValueError, match=r"^A: must be a square 2-D operator, got shape \(3, 4\)"):
        topk_eigh(LinearOperator((3, 4), matvec=lambda x: x[:3], dtype=float), 1)
    bad = LinearOperator((100, 100), matvec=lambda x: np.full(100, np.nan), dtype=float)
    with pytest.raises(ValueError, match=r"^A: the operator returned NaN or inf"):
        topk_eigh(bad, 2)


# ---------------------------------------------------------------- properties


def symmetric(draw_shape):
    return arrays(np.float64, draw_shape, elements=st.floats(-1e3, 1e3, allow_nan=False))


@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_property_dense_path(data):
    d = data.draw(st.integers(1, 8))
    M = data.draw(symmetric((d, d)))
    A = (M + M.T) / 2
    which = data.draw(st.sampled_from(["LA", "SA", "BE"]))
    kmax = 2 * (d // 2) if which == "BE" else d
    if kmax < 1:
        return
    k = data.draw(st.integers(1, kmax))
    res = topk_eigh(A, k, which=which)
    lam, _ = naive.topk_eigh_dense(A, k, which)
    scale = max(np.abs(np.linalg.eigvalsh(A)).max(), 1e-300)
    assert np.abs(res.values - lam).max() <= 1e-10 * scale + 1e-300
    assert np.abs(res.vectors.T @ res.vectors - np.eye(k)).max() <= 1e-10


@settings(deadline=None, max_examples=15)
@given(data=st.data())
def test_property_lanczos_path(data, monkeypatch_dense):
    d = data.draw(st.integers(24, 32))
    M = data.draw(symmetric((d, d)))
    A = (M + M.T) / 2
    which = data.draw(st.sampled_from(["LA", "SA", "BE"]))
    k = data.draw(st.integers(1, 3))
    if which == "BE":
        k = max(k, 2)
    lam, _ = naive.topk_eigh_dense(A, k, which)
    scale = max(np.abs(np.linalg.eigvalsh(A)).max(), 1e-300)
    for residual_tol in (None, 1e-9):
        res = topk_eigh(A, k, which=which, block_size=4, residual_tol=residual_tol)
        assert res.method == "lanczos"
        assert np.abs(res.values - lam).max() <= 1e-9 * scale + 1e-300
        assert np.abs(res.vectors.T @ res.vectors - np.eye(k)).max() <= 1e-10
        assert res.residuals.max() <= (residual_tol or np.sqrt(2e-10)) * scale + 1e-300


@pytest.fixture(scope="module")
def monkeypatch_dense():
    """Let small matrices go through Lanczos (the public threshold sends d <= 64 to the dense solver)."""
    old = eigen_mod.DENSE_MAX_D
    eigen_mod.DENSE_MAX_D = 0
    yield
    eigen_mod.DENSE_MAX_D = old


def test_auto_method_picks_lapack_below_the_crossover():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((300, 300))
    A = (G + G.T) / 2
    auto = _topk_eigh(A, 6, which="BE")
    lz = topk_eigh(A, 6, which="BE")
    assert auto.method == "dense" and lz.method == "lanczos"
    assert np.allclose(auto.values, lz.values, rtol=0, atol=1e-10 * np.abs(auto.values).max())
    assert _topk_eigh(A, 6, method="dense").method == "dense"
    # the crossover grows with the pairs wanted at one end: 25 per pair, at least DENSE_AUTO_D
    B = planted(1100, [4.0, 3.0, -3.0])
    assert _topk_eigh(B, 20).method == "lanczos"
    assert _topk_eigh(B, 40).method == "lanczos"
    assert _topk_eigh(B, 50).method == "dense"  # 50 pairs at the top: LAPACK below d = 1250
    assert _topk_eigh(B, 50, which="BE").method == "lanczos"  # 25 per end
    with pytest.raises(ValueError, match=r"method: must be 'auto', 'lanczos' or 'dense'"):
        _topk_eigh(A, 6, method="arpack")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, m", [(1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 5), (64, 64), (257, 130)])
@pytest.mark.parametrize("b", [1, 3, 4, 5, 8, 13])
def test_dot_rows_matches_numpy(n, m, b, dtype):
    """The block product of the iteration, Yt = scale * Xt @ A.T: every row/vector remainder, both precisions."""
    from hmi_fast._operator import _dot_rows

    rng = np.random.default_rng(n * 1000 + m * 10 + b)
    A = rng.standard_normal((n, m)).astype(dtype)
    Xt = rng.standard_normal((b, m)).astype(dtype)
    Y = np.full((b, n), np.nan)
    _dot_rows(A, Xt, Y, 0.25)
    ref = 0.25 * (Xt.astype(np.float64) @ A.astype(np.float64).T)
    # sums of m products in any order: |error| <= (m + 1) eps |x| |a| (rounding of each product
    # and each addition); a wrong index or a skipped remainder is off by O(|x| |a|)
    bound = 0.25 * (m + 1) * np.finfo(dtype).eps * (np.abs(Xt).astype(np.float64) @ np.abs(A).T)
    assert Y.dtype == np.float64 and np.isfinite(Y).all()
    assert np.all(np.abs(Y - ref) <= bound + 1e-300)


@pytest.mark.parametrize("b, d", [(1, 5), (4, 50), (8, 300)])
def test_cholqr2_orthonormal_rows_same_span(b, d):
    from hmi_fast._ritz import _cholqr2

    rng = np.random.default_rng(b + d)
    W = rng.standard_normal((b, d)) * np.logspace(0, 2, b)[:, None]  # rows of different norms
    P = np.empty_like(W)
    assert _cholqr2(W, P, 1.0)
    assert np.abs(P @ P.T - np.eye(b)).max() < 1e-14
    # same span: projecting W onto the rows of P loses nothing; triangular: row p uses rows <= p
    assert np.abs(W - (W @ P.T) @ P).max() < 1e-12 * np.abs(W).max()
    assert np.abs(np.triu(W @ P.T, 1)).max() < 1e-12 * np.abs(W).max()


def test_cholqr2_refuses_ill_conditioned_blocks():
    from hmi_fast._ritz import _cholqr2, _orthonormalize

    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 100))
    W[3] = W[0] + 1e-9 * rng.standard_normal(100)  # nearly dependent rows
    assert not _cholqr2(W, np.empty_like(W), 1.0)
    Z = np.zeros((3, 100))  # an invariant subspace was hit
    assert not _cholqr2(Z, np.empty_like(Z), 1.0)
    # the caller falls back to pivoted QR and still returns orthonormal rows
    P = _orthonormalize(W, np.zeros((0, 100)), rng, 1.0)
    assert np.abs(P @ P.T - np.eye(4)).max() < 1e-14


@pytest.mark.parametrize("d", [1, 63, 64, 65, 200])
def test_validation_pass_makes_the_float32_copy(d):
    """The float32 copy comes from the symmetry scan's pass; the scan still finds asymmetry anywhere."""
    from hmi_fast._operator import _as_operator

    A = planted(d, [3.0], seed=d)
    op = _as_operator(A, float32_copy=True)
    assert op.lowp is not None and op.lowp.dtype == np.float32 and op.lowp.flags.c_contiguous
    assert np.array_equal(op.lowp, A.astype(np.float32))
    assert _as_operator(A).lowp is None  # made on demand otherwise
    assert _as_operator(1e30 * A, float32_copy=True).lowp is None  # out of the unscaled range: make_lowp scales
    if d > 1:
        B = A.copy()
        B[d - 1, 0] += 1e-3 * np.abs(A).max()  # last row, first column: the far corner of the tiling
        with pytest.raises(ValueError, match=r"A: is not symmetric: max\|A - A\^T\| / max\|A\| = 0.001"):
            _as_operator(B, float32_copy=True)


def _spin_in_thread():
    """A thread that keeps a core busy without holding the GIL (like an idle OpenBLAS worker) until stopped.

    It runs short GIL-free chunks until the returned event is set: no calibration against the clock, so a
    slow or loaded machine cannot end the spin early.
    """
    import threading

    import numba

    @numba.njit(nogil=True, cache=False)
    def work(n):
        x = 0.0
        for i in range(n):
            x += np.sqrt(i + x * 1e-9)
        return x

    work(10)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            work(200_000)

    th = threading.Thread(target=spin)
    th.start()
    return th, stop


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="needs /proc (Linux)")
def test_busy_core_narrows_the_solve_without_changing_results():
    """While another thread runs, a solve starts on one numba thread; results do not depend on it."""
    import numba

    from hmi_fast._operator import _busy_threads, _Cores

    A = planted(400, [6.0, 5.0, 4.5])
    quiet = topk_eigh(A, 6)
    top = numba.get_num_threads()
    th, stop = _spin_in_thread()
    try:
        assert _busy_threads() >= 1
        if top > 1:
            cores = _Cores()
            assert cores.narrow and numba.get_num_threads() == 1
            cores.restore()
            assert numba.get_num_threads() == top
        busy = topk_eigh(A, 6)
    finally:
        stop.set()
        th.join()
    assert numba.get_num_threads() == top  # restored after the solve
    assert np.array_equal(busy.values, quiet.values) and np.array_equal(busy.vectors, quiet.vectors)


def test_operators_whose_products_disagree_with_their_shape():
    from scipy.sparse.linalg import LinearOperator

    M = planted(120, [4.0, 3.0])
    wrong_length = LinearOperator((100, 100), matvec=lambda v: M @ v, dtype=float)
    with pytest.raises(ValueError, match=r"^A: the operator's product failed for a block of shape \(100, \d+\) .*"
                                         r"make matvec/matmat accept vectors of length 100$"):
        topk_eigh(wrong_length, 2, method="lanczos")

    class Transposed:
        shape = (120, 120)

        def matmat(self, X):
            return (M @ X).T  # (b, d): must not be reshaped into wrong eigenvalues

    with pytest.raises(ValueError, match=r"^A: the operator returned shape \(\d+, 120\) for a block of shape \(120, \d+\); "
                                         r"it must return \(120, \d+\)"):
        topk_eigh(Transposed(), 2, method="lanczos")
