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


def test_jitted_link_that_is_not_numeric_is_refused():
    import numba

    @numba.njit
    def word(z):
        return "a"

    @numba.njit
    def broken(z):
        return z.nonexistent

    with pytest.raises(TypeError, match=r"link: the numba function 'word' returned str for 0.5; it must return a float"):
        HMIModel(5, 1, 1.0, link=word)
    with pytest.raises(TypeError, match=r"link: the numba function 'broken' does not compile for a float64 argument"):
        HMIModel(5, 1, 1.0, link=broken)


def test_noise_added():
    clean = HMIModel(d=10, m_star=2, gamma=1.0, seed=7)
    noisy = HMIModel(d=10, m_star=2, gamma=1.0, seed=7, noise=0.25)
    X, y0 = clean.sample(50_000)
    X1, y1 = noisy.sample(50_000)
    assert np.array_equal(X, X1)
    r = y1 - y0
    assert abs(r.var() - 0.25) < 5 * 0.25 * math.sqrt(2 / len(r))


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((0, 1, 1.0), {}, ValueError, r"d: must be an integer >= 1, got 0"),
    ((3.0, 1, 1.0), {}, TypeError, r"d: must be an integer >= 1, got 3.0"),
    ((3, 4, 1.0), {}, ValueError, r"m_star: must be at most d=3, got 4"),
    ((3, 1, float("nan")), {}, ValueError, r"gamma: must be a finite number, got nan"),
    ((3, 1, "1.3"), {}, TypeError, r"gamma: must be a finite number, got '1.3'"),
    ((3, 1, 1.0), dict(noise=-1), ValueError, r"noise: must be a finite number >= 0, got -1.0"),
    ((3, 1, 1.0), dict(noise=None), TypeError, r"noise: must be a finite number >= 0, got None"),
    ((3, 1, 1.0), dict(seed=-2), ValueError, r"seed: must be an integer between 0 and 2\*\*64 - 1, got -2"),
    ((3, 1, 1.0), dict(seed=2**64), ValueError, r"seed: must be an integer between 0 and 2\*\*64 - 1"),
    ((3, 1, 1.0), dict(seed=1.0), TypeError, r"seed: must be an integer between 0 and 2\*\*64 - 1, got 1.0"),
    ((3, 1, 1.0), dict(seed=True), TypeError, r"seed: must be an integer"),
    ((3, 1, 1.0), dict(directions="random"), ValueError, r"directions: must be one of"),
    ((3, 1, 1.0), dict(link="cos"), ValueError, r"link: unknown name 'cos'"),
    ((3, 1, 1.0), dict(link=3), TypeError, r"link: expected a name or a callable, got int"),
    ((5, 3, 1.0), dict(link=["he2", "abs"]), ValueError, r"link: got 2 links for m_star=3"),
])
def test_model_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        HMIModel(*args, **kwargs)


def test_data_method_validation():
    model = HMIModel(3, 1, 1.0)
    with pytest.raises(TypeError, match=r"dtype: unsupported dtype int64"):
        model.sample(10, dtype=np.int64)
    with pytest.raises(ValueError, match=r"n: must be an integer between 1 and 2\*\*63 \(rows are numbered by a 64-bit"):
        model.sample(0)
    with pytest.raises(ValueError, match=r"X: expected shape \(n, 3\)"):
        model.target(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"X: expected a 2-D array"):
        model.target(np.ones(3))
    with pytest.raises(TypeError, match=r"X: unsupported dtype complex128"):
        model.target(np.ones((2, 3), dtype=complex))
    with pytest.raises(ValueError, match=r"n: must be an integer between 1 and 2\*\*63"):
        model.stream(-1)
    with pytest.raises(ValueError, match=r"start: must be an integer between 0 and 2\*\*63 - n = 2\*\*63 - 10"):
        model.stream(10, start=2**63 - 5)
    with pytest.raises(TypeError, match=r"reuse_buffer: must be True or False, got 1"):
        model.stream(10, reuse_buffer=1)
    with pytest.raises(ValueError, match=r"block_size: must be an integer >= 1, got 0"):
        model.stream(10, block_size=0)


# ------------------------------------------------------------------ out= and row ranges (memory safety)
D = 30


def _ro():
    a = np.zeros((5, D))
    a.flags.writeable = False
    return a


OUT_CASES = [  # (out, dtype, error, message); each is refused before anything is written
    (np.zeros((5000, D)), None, ValueError, r"out: has shape \(5000, 30\); pass an array of shape \(5, 30\)"),
    (np.zeros((7, D)), None, ValueError, r"out: has shape \(7, 30\); pass an array of shape \(5, 30\)"),
    (np.zeros((4, D)), None, ValueError, r"out: has shape \(4, 30\)"),
    (np.zeros((5, D - 1)), None, ValueError, r"out: has shape \(5, 29\)"),
    (np.zeros((5, D + 1)), None, ValueError, r"out: has shape \(5, 31\)"),
    (np.zeros(5 * D), None, ValueError, r"out: has shape \(150,\)"),
    (np.zeros((5, D), dtype=np.int64), None, TypeError, r"out: unsupported dtype int64; use np.float32 or np.float64"),
    (np.zeros((5, D), dtype=np.float16), None, TypeError, r"out: unsupported dtype float16"),
    (np.zeros((5, D)), np.float32, TypeError, r"out: has dtype float64; pass a float32 array"),
    (np.zeros((5, D), dtype=np.float32), np.float64, TypeError, r"out: has dtype float32; pass a float64 array"),
    (np.zeros((D, 5)).T, None, ValueError, r"out: is not C-contiguous; pass np.empty\(\(5, 30\)\)"),
    (np.zeros((5, 2 * D))[:, ::2], None, ValueError, r"out: is not C-contiguous"),
    (_ro(), None, ValueError, r"out: is read-only; pass a writeable array"),
    (np.ma.zeros((5, D)), None, TypeError, r"out: must be a NumPy array \(not masked\), got MaskedArray"),
    ([[0.0] * D] * 5, None, TypeError, r"out: must be a NumPy array, got list"),
]


@pytest.mark.parametrize("method", ["latent_rows", "rows"])
@pytest.mark.parametrize("out, dtype, error, match", OUT_CASES)
def test_out_is_checked_before_any_write(method, out, dtype, error, match):
    model = HMIModel(D, 3, 1.0, seed=1)
    before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
    with pytest.raises(error, match=match):
        getattr(model, method)(0, 5, dtype=dtype, out=out)
    if before is not None:
        assert np.array_equal(np.asarray(out), before)  # untouched


@pytest.mark.parametrize("method", ["latent_rows", "rows"])
def test_out_may_not_overlap_the_model(method):
    model = HMIModel(D, 3, 1.0, seed=1)
    W = model.W.copy()
    with pytest.raises(ValueError, match=r"out: shares memory with the model's own arrays; pass a separate array"):
        getattr(model, method)(0, 3, out=model.W)
    assert np.array_equal(model.W, W)


@pytest.mark.parametrize("method", ["latent_rows", "rows"])
@pytest.mark.parametrize("start, stop, error, match", [
    (-5, 5, ValueError, r"start: must be an integer between 0 and 2\*\*63 \(rows are numbered by a 64-bit counter\), got -5"),
    (5, 3, ValueError, r"stop: must be an integer between start=5 and 2\*\*63 .*, got 3"),
    (0, 2**63 + 1, ValueError, r"stop: must be an integer between start=0 and 2\*\*63"),
    (2**64 - 2, 2**64, ValueError, r"start: must be an integer between 0 and 2\*\*63"),
    (0.0, 5, TypeError, r"start: must be an integer between 0 and 2\*\*63 .*, got 0.0"),
    (0, 5.0, TypeError, r"stop: must be an integer"),
    (True, 5, TypeError, r"start: must be an integer"),
    (0, np.float64(3), TypeError, r"stop: must be an integer"),
])
def test_row_range_is_checked(method, start, stop, error, match):
    with pytest.raises(error, match=match):
        getattr(HMIModel(4, 1, 1.0), method)(start, stop)


def test_valid_out_and_ranges():
    model = HMIModel(D, 3, 1.0, noise=0.2, seed=1)
    X, y = model.sample(12)
    buf = np.full((20, D), np.nan, dtype=np.float32)
    X32, y32 = model.rows(2, 9, out=buf[3:10])  # a slice of rows of a bigger buffer; dtype from out
    assert X32.base is buf and X32.dtype == y32.dtype == np.float32
    assert np.array_equal(X32, X[2:9].astype(np.float32)) and np.isnan(buf[:3]).all() and np.isnan(buf[10:]).all()
    G, yg = model.latent_rows(2, 9, out=np.empty((7, D)))
    assert np.array_equal(yg, y[2:9]) and yg.dtype == np.float64
    G32, _ = model.latent_rows(2, 9, dtype=np.float32)
    assert np.array_equal(G32, G.astype(np.float32))
    assert model.rows(4, 4)[0].shape == (0, D) and np.array_equal(model.rows(np.int64(2), np.uint8(9))[1], y[2:9])
    top, _ = model.rows(2**63 - 2, 2**63)  # the last rows of the counter
    assert top.shape == (2, D) and np.isfinite(top).all()
    assert np.array_equal(model.stream(2, start=2**63 - 2).__iter__().__next__()[0], top)


def test_fill_normals_checks_its_arrays():
    from hmi_fast._random import fill_normals, stream_key

    key = stream_key(0)
    X = np.zeros((4, 6))
    with pytest.raises(ValueError, match=r"extra: has shape \(3, 1\); pass an array of shape \(4, 1\)"):
        fill_normals(key, 0, X, np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"head: must be a 2-D float64 array with 4 rows and at most 6 columns"):
        fill_normals(key, 0, X, np.zeros((4, 1)), head=np.zeros((4, 7)))
    with pytest.raises(ValueError, match=r"extra: shares memory with X"):
        fill_normals(key, 0, X, X.reshape(-1)[:4].reshape(4, 1))
    with pytest.raises(ValueError, match=r"row0: must be an integer between 0 and 2\*\*63 - 4"):
        fill_normals(key, 2**63 - 3, X, np.zeros((4, 0)))
    with pytest.raises(TypeError, match=r"X: unsupported dtype int32"):
        fill_normals(key, 0, np.zeros((4, 6), dtype=np.int32), np.zeros((4, 0)))
    with pytest.raises(ValueError, match=r"seed: must be an integer between 0 and 2\*\*64 - 1, got -1"):
        normals(-1, 0, 2, 2)


# ------------------------------------------------------------------ owned blocks
def test_stream_blocks_are_owned_by_the_caller():
    model = HMIModel(d=9, m_star=2, gamma=1.0, seed=3)
    X, y = model.sample(3000)
    assert np.array_equal(np.concatenate([xb for xb, _ in model.stream(3000, block_size=1000)]), X)
    blocks = list(model.stream(3000, block_size=700, dtype=np.float32))
    assert [len(b[0]) for b in blocks] == [700] * 4 + [200]
    assert np.array_equal(np.vstack([b[0] for b in blocks]), X.astype(np.float32))
    assert np.array_equal(np.concatenate([b[1] for b in blocks]), y.astype(np.float32))
    assert not any(np.shares_memory(a[0], b[0]) for a, b in zip(blocks, blocks[1:]))


def test_stream_reuse_buffer_is_one_buffer():
    model = HMIModel(d=9, m_star=2, gamma=1.0, seed=3)
    X, _ = model.sample(30)
    seen = []
    for xb, _ in model.stream(30, block_size=7, reuse_buffer=True):
        assert np.array_equal(xb, X[7 * len(seen):7 * len(seen) + len(xb)])  # right while it is current
        seen.append(xb)
    assert all(np.shares_memory(seen[0], b) for b in seen[1:])


def test_stream_values_are_pinned():
    """The stream is part of every published number: a change to the generator must be deliberate."""
    assert normals(seed=123, row0=0, n=2, d=3).tolist() == [
        [-0.0937252106984323, -1.5515348326431313, -0.3002520608483234],
        [-2.1119223522832122, 0.7473291349350375, 2.008092147358772]]
    assert normals(seed=7, row0=2**62, n=1, d=4).tolist() == [
        [0.918393499331013, 0.86177448963118, 1.9670619265130185, 0.25928188686109555]]
    model = HMIModel(6, 2, 1.3, noise=0.5, seed=5)
    X, y = model.rows(1000, 1002)
    assert np.allclose(X, [[1.4699281724392763, 1.9472834662413967, -0.04863617681854214, -0.8073279791222787,
                            -0.7635159898012015, 1.3489131886608319],
                           [1.7241927726186819, 0.6881530913263616, -0.07842881781231512, 0.6683646254939637,
                            0.8561358116541825, 1.1339551357689452]], rtol=1e-14, atol=1e-15)
    assert np.allclose(y, [1.5172378508610536, 0.3468705026781356], rtol=1e-14)
    G, _ = model.latent_rows(1000, 1002)
    assert G[:, :3].tolist() == [[1.4424492612913387, 0.969410313833053, -0.25532410726886173],
                                 [0.21860463565856011, 1.621264545245533, -0.5047830805246982]]
