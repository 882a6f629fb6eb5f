"""T = (1/n) Σ τ(y_i) x_i x_iᵀ: hmi_fast against what a user would otherwise write.

Baselines, on the same inputs in the same run:
- ``numpy``: ``(X * w[:, None]).T @ X / n`` (allocates an n×d temporary);
- ``einsum``: ``np.einsum("i,ij,ik->jk", w, X, X) / n`` (statsmodels style; small sizes only);
- ``dsyrk-floor``: a bare blocked dsyrk on rows already scaled and packed (the BLAS floor).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import blas

import hmi_fast
from hmi_fast.accumulator import _syrk_func

from .conftest import FULL

SIZES = [(20_000, 500), (20_000, 1000), (20_000, 2000), (100_000, 500), (100_000, 1000), (100_000, 2000)] if FULL else [(2000, 100)]
DTYPES = [np.float64, np.float32]


def tau(y):
    return y / (1.0 + np.abs(y))


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"n={s[0]},d={s[1]}")
def problem(request):
    n, d = request.param
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    return n, d, X, y


def floor(P, bs=None):
    """Bare blocked syrk on pre-packed rows (one sign; same flops as T)."""
    d = P.shape[1]
    syrk = _syrk_func(P.dtype)
    bs = bs or hmi_fast._config.block_rows(d, P.dtype)
    C = np.zeros((d, d), dtype=P.dtype, order="F")
    for lo in range(0, P.shape[0], bs):
        syrk(1.0, P[lo : lo + bs].T, beta=1.0, c=C, overwrite_c=1)
    return C


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("impl", ["hmi_fast", "numpy", "einsum", "dsyrk-floor"])
def test_spectral_matrix(benchmark, record_peak, problem, impl, dtype):
    n, d, X64, y = problem
    X = X64.astype(dtype)
    benchmark.group = f"T|n={n},d={d},{np.dtype(dtype).name}"
    if impl == "hmi_fast":
        func, args = hmi_fast.spectral_matrix, (X, y)
    elif impl == "numpy":
        w = tau(y).astype(dtype)

        def func(X, w):
            return (X * w[:, None]).T @ X / n

        args = (X, w)
    elif impl == "einsum":
        if n * d * d > 5e9:
            pytest.skip("einsum is a plain C loop: minutes at this size")
        w = tau(y).astype(dtype)

        def func(X, w):
            return np.einsum("i,ij,ik->jk", w, X, X) / n

        args = (X, w)
    else:
        P = np.ascontiguousarray(X * np.sqrt(np.abs(tau(y)))[:, None].astype(dtype))
        func, args = floor, (P,)
    func(*args)  # warm-up: compilation and first-touch stay out of the timing
    record_peak(func, *args)
    benchmark.pedantic(func, args=args, rounds=3 if FULL else 1, iterations=1)


STREAM_N = 1_638_000 if FULL else 8192
STREAM_D = 1000 if FULL else 200


@pytest.mark.parametrize("impl", ["hmi_fast", "hmi_fast-float32", "numpy-generator", "dsyrk-floor"])
def test_stream_from_model(benchmark, impl):
    """The paper's Figure 2 at α = 1638: d=1000, m*=20, n=1,638,000 streamed rows."""
    d, n = STREAM_D, STREAM_N
    model = hmi_fast.HMIModel(d, m_star=20, gamma=1.3, link="he2_he4", seed=0)
    benchmark.group = f"stream|d={d},n={n}"
    bs = hmi_fast._config.block_rows(d)
    if impl.startswith("hmi_fast"):
        dtype = np.float32 if impl.endswith("float32") else np.float64

        def func():
            return hmi_fast.spectral_matrix(model, n=n, dtype=dtype)

    elif impl == "numpy-generator":
        W, a = model.W, model.a
        from hmi_fast.links import combine

        def func():
            rng = np.random.default_rng(0)
            T = np.zeros((d, d))
            for lo in range(0, n, bs):
                Xb = rng.standard_normal((min(bs, n - lo), d))
                yb = combine(model.links, a, Xb @ W.T)
                T += (Xb * tau(yb)[:, None]).T @ Xb
            return T / n

    else:
        P = np.random.default_rng(0).standard_normal((bs, d))

        def func():
            C = np.zeros((d, d), order="F")
            for lo in range(0, n, bs):
                blas.dsyrk(1.0, P[: min(bs, n - lo)].T, beta=1.0, c=C, overwrite_c=1)
            return C

    func() if not FULL else hmi_fast.spectral_matrix(model, n=4 * bs)  # warm-up
    benchmark.pedantic(func, rounds=3 if FULL else 1, iterations=1)


MOMENT_SIZES = [(100_000, 500), (100_000, 1000)] if FULL else [(2000, 100)]


@pytest.fixture(scope="module", params=MOMENT_SIZES, ids=lambda s: f"n={s[0]},d={s[1]}")
def moment_problem(request):
    n, d = request.param
    rng = np.random.default_rng(1)
    return n, d, rng.standard_normal((n, d)), rng.standard_normal(n)


@pytest.mark.parametrize("impl", ["T", "T+exact-center", "T+moments", "numpy-moments"])
def test_moments_cost(benchmark, record_peak, moment_problem, impl):
    """What exact centering (T plus the Gram) and whitening (T, Gram, Σx, Σwx) cost over T alone, fed block by block.

    Target (issue: whitening and centering in one pass): at most one more rank-k update, ≤ 2.1× ``T``.
    ``numpy-moments`` is the same quantities written with NumPy on the whole array.
    """
    n, d, X, y = moment_problem
    benchmark.group = f"moments|n={n},d={d}"
    bs = hmi_fast._config.block_rows(d)
    opts = {"T": {}, "T+exact-center": {"center": True}, "T+moments": {"moments": True}}
    if impl in opts:
        def func():
            acc = hmi_fast.SpectralAccumulator(d, **opts[impl])
            for lo in range(0, n, bs):
                acc.update(X[lo:lo + bs], y[lo:lo + bs])
            return acc.finalize()
    else:
        def func():
            w = tau(y)
            return (X * w[:, None]).T @ X / n, X.T @ X / n, X.mean(0), X.T @ w / n
    func()
    record_peak(func)
    benchmark.pedantic(func, rounds=3 if FULL else 1, iterations=1)
