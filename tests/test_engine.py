"""The spectral-matrix engine against the naive references, and its invariances."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import hmi_fast
from hmi_fast import SpectralAccumulator, spectral_matrices, spectral_matrix

from . import naive

EPS32 = float(np.finfo(np.float32).eps)


def rel_err(A, B):
    return np.abs(A - B).max() / max(np.abs(B).max(), 1e-300)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    X = rng.standard_normal((1500, 23))
    y = 2.0 * rng.standard_normal(1500)
    return X, y


# ------------------------------------------------------------------ agreement
@pytest.mark.parametrize("name", ["saturating", "identity", "sign", "clip"])
def test_agrees_with_python_loop(data, name):
    X, y = data
    T = spectral_matrix(X, y, preprocess=name, block_size=256)
    ref = naive.spectral_matrix_loop(X, naive.tau(name, y))
    assert rel_err(T, ref) < 1e-12
    assert T.dtype == np.float64 and T.flags.c_contiguous


def test_clip_level(data):
    X, y = data
    T = spectral_matrix(X, y, preprocess=("clip", 0.5))
    assert rel_err(T, naive.spectral_matrix_einsum(X, naive.tau("clip", y, 0.5))) < 1e-12
    assert np.array_equal(T, spectral_matrix(X, y, preprocess=hmi_fast.clip(0.5)))


matrices = st.integers(1, 40).flatmap(
    lambda n: st.integers(1, 9).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3, allow_nan=False)),
            arrays(np.float64, (n,), elements=st.floats(-1e3, 1e3, allow_nan=False)),
            st.integers(1, n + 3),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_property_agrees_with_einsum(args):
    X, y, bs = args
    T = spectral_matrix(X, y, preprocess="identity", block_size=bs)
    ref = naive.spectral_matrix_einsum(X, y)
    # each entry is a sum of n products: bound the rounding error by the sum of their magnitudes
    scale = naive.spectral_matrix_einsum(np.abs(X), np.abs(y))
    assert np.all(np.abs(T - ref) <= 1e-12 * scale + 1e-300)
    assert np.array_equal(T, T.T)


@settings(max_examples=30, deadline=None)
@given(matrices)
def test_property_float32_within_stated_bound(args):
    X, y, bs = args
    X32 = X.astype(np.float32)
    T = spectral_matrix(X32, y, preprocess="saturating", block_size=bs)
    w = naive.tau("saturating", y)
    ref = naive.spectral_matrix_einsum(X32.astype(np.float64), w)
    # Stated bound: within a block the float32 products and sums of m <= block_size terms
    # err by at most gamma_{m+3} = (m+3)u/(1-(m+3)u) times the sum of |terms|; blocks add in float64.
    m = min(bs, X.shape[0]) + 3
    gamma = m * EPS32 / (1 - m * EPS32)
    scale = naive.spectral_matrix_einsum(np.abs(X32.astype(np.float64)), np.abs(w))
    assert np.all(np.abs(T - ref) <= gamma * scale + 1e-30)


def test_float32_relative_frobenius(data):
    X, y = data
    T64 = spectral_matrix(X, y)
    T32 = spectral_matrix(X.astype(np.float32), y)
    assert np.linalg.norm(T32 - T64) / np.linalg.norm(T64) < 1e-5
    # asking for float32 products on float64 data gives the same path
    assert np.linalg.norm(spectral_matrix(X, y, dtype=np.float32) - T64) / np.linalg.norm(T64) < 1e-5


# ---------------------------------------------------------------- invariances
def test_symmetric_exactly(data):
    X, y = data
    T = spectral_matrix(X, y)
    assert np.array_equal(T, T.T)


@pytest.mark.parametrize("bs", [1, 7, 100, 1499, 1500, 5000])
def test_block_size_invariance(data, bs):
    X, y = data
    assert rel_err(spectral_matrix(X, y, block_size=bs), spectral_matrix(X, y)) < 1e-13


def test_block_order_invariance(data):
    X, y = data
    perm = np.random.default_rng(1).permutation(len(y))
    assert rel_err(spectral_matrix(X[perm], y[perm]), spectral_matrix(X, y)) < 1e-13


def test_thread_count_invariance(data):
    X, y = data
    with hmi_fast.threads(1):
        assert numba.get_num_threads() == 1
        T1 = spectral_matrix(X, y)
    T2 = spectral_matrix(X, y)
    assert rel_err(T1, T2) < 1e-13


def test_threads_restored_on_exception():
    before = numba.get_num_threads()
    with pytest.raises(RuntimeError):
        with hmi_fast.threads(1):
            raise RuntimeError("boom")
    assert numba.get_num_threads() == before


@pytest.mark.parametrize(
    "env, pre, status",
    [
        ({}, "", r"^GOMP_SPINCOUNT=10000 applied when libgomp loaded$"),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "", r"^left to the user's OMP_WAIT_POLICY/GOMP_SPINCOUNT$"),
        ({"GOMP_SPINCOUNT": "500"}, "", r"^left to the user's"),
        ({"HMI_FAST_THREAD_TUNING": "0"}, "", r"^off \(HMI_FAST_THREAD_TUNING=0\)$"),
        ({}, "from numba.np.ufunc import parallel; parallel._launch_threads(); ",
         r"^not applied: libgomp was loaded before hmi_fast$"),
    ],
)
def test_openmp_spin_applied_at_import_and_not_inherited(env, pre, status):
    """import hmi_fast bounds the OpenMP workers' spin (~0.3 ms) when it can take effect, leaves a user's
    choice alone, and leaves no variable behind for child processes."""
    import json
    import os
    import re
    import subprocess
    import sys

    keys = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "HMI_FAST_THREAD_TUNING")
    base = {k: v for k, v in os.environ.items() if k not in keys}
    code = (
        f"import os, json, subprocess, sys; {pre}import hmi_fast; "
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"GOMP_SPINCOUNT\"))'], "
        "capture_output=True, text=True).stdout.strip(); "
        "print(json.dumps({'status': hmi_fast._config.describe()['openmp_spin'], 'child': child, "
        "'env': os.environ.get('GOMP_SPINCOUNT')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert re.search(status, got["status"]), got
    assert got["env"] == env.get("GOMP_SPINCOUNT")  # the process's environment is as the user left it
    assert got["child"] == str(env.get("GOMP_SPINCOUNT"))  # so children inherit only the user's own setting


def test_blas_limits_nest_across_threads():
    """Two overlapping limits from two Python threads (or two overlapping solves) leave the BLAS as it was."""
    import threading

    from threadpoolctl import threadpool_info

    def counts():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    before = counts()
    entered, release = threading.Barrier(2), threading.Event()

    def hold(n):
        with hmi_fast.threads(n):
            entered.wait()
            release.wait()

    a = threading.Thread(target=hold, args=(1,))
    a.start()
    with hmi_fast._config.blas_threads(1):
        entered.wait()  # thread a is inside its limit too
        assert max(counts()) == 1
    # a is still inside: the limit stays
    assert max(counts()) == 1
    release.set()
    a.join()
    assert counts() == before
    # overlapping solves from two threads
    rng = np.random.default_rng(0)
    M = rng.standard_normal((300, 300))
    M = M + M.T
    ts = [threading.Thread(target=hmi_fast.topk_eigh, args=(M, 4), kwargs={"method": "lanczos"}) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert counts() == before


def test_linear_in_weights(data):
    X, y = data
    y2 = np.cos(y)
    lhs = spectral_matrix(X, y - 3.0 * y2, preprocess="identity")
    rhs = spectral_matrix(X, y, preprocess="identity") - 3.0 * spectral_matrix(X, y2, preprocess="identity")
    assert rel_err(lhs, rhs) < 1e-12


def test_merge_associative(data):
    X, y = data
    parts = [(X[:400], y[:400]), (X[400:900], y[400:900]), (X[900:], y[900:])]
    accs = [SpectralAccumulator(X.shape[1]).update(*p) for p in parts]
    left = accs[0].copy().merge(accs[1]).merge(accs[2])
    right = accs[0].copy().merge(accs[1].copy().merge(accs[2]))
    whole = SpectralAccumulator(X.shape[1]).update(X, y)
    assert left.n == right.n == whole.n == len(y)
    assert rel_err(left.finalize(), whole.finalize()) < 1e-13
    assert rel_err(right.finalize(), whole.finalize()) < 1e-13


def test_checkpoints_equal_separate_runs(data):
    X, y = data
    cps = [1, 300, 301, 1024, 1500]
    Ts = spectral_matrix(X, y, checkpoints=cps, block_size=128)
    assert len(Ts) == len(cps)
    for c, T in zip(cps, Ts):
        assert rel_err(T, spectral_matrix(X[:c], y[:c])) < 1e-13
    got = [c for c, _ in spectral_matrices(X, y, checkpoints=cps, block_size=1000)]
    assert got == cps


def test_n_uses_first_rows(data):
    X, y = data
    assert rel_err(spectral_matrix(X, y, n=700), spectral_matrix(X[:700], y[:700])) < 1e-14


# -------------------------------------------------------------------- sources
def test_layouts_and_views(data):
    X, y = data
    ref = spectral_matrix(X, y)
    assert rel_err(spectral_matrix(np.asfortranarray(X), y), ref) < 1e-13
    V = X[::2, 1::3]
    assert rel_err(spectral_matrix(V, y[::2]), naive.spectral_matrix_einsum(V, naive.tau("saturating", y[::2]))) < 1e-12


def test_npy_path_and_memmap(tmp_path, data):
    X, y = data
    ref = spectral_matrix(X, y)
    px, py = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(px, X)
    np.save(py, y)
    assert rel_err(spectral_matrix(px, py, block_size=333), ref) < 1e-13
    assert rel_err(spectral_matrix(str(px), y), ref) < 1e-13
    mm = np.load(px, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    assert rel_err(spectral_matrix(mm, y, block_size=100), ref) < 1e-13
    np.save(tmp_path / "F.npy", np.asfortranarray(X))
    assert rel_err(spectral_matrix(tmp_path / "F.npy", y), ref) < 1e-13


def test_iterable_source(data):
    X, y = data
    blocks = [(X[i : i + 200], y[i : i + 200]) for i in range(0, len(y), 200)]
    assert rel_err(spectral_matrix(iter(blocks)), spectral_matrix(X, y)) < 1e-13
    assert rel_err(spectral_matrix(blocks, n=450), spectral_matrix(X[:450], y[:450])) < 1e-13


def test_model_source_matches_sample():
    model = hmi_fast.HMIModel(40, 3, 1.3, seed=3)
    X, y = model.sample(2000)
    assert rel_err(spectral_matrix(model, n=2000, block_size=300), spectral_matrix(X, y)) < 1e-13


def test_integer_input_is_converted(data):
    X, y = data
    Xi = np.round(X * 3).astype(np.int32)
    assert rel_err(spectral_matrix(Xi, y), spectral_matrix(Xi.astype(np.float64), y)) < 1e-14


# ------------------------------------------------------ preprocessing options
def test_user_preprocess_python_and_numba(data):
    X, y = data

    def tanh(v):
        return np.tanh(v)

    ref = naive.spectral_matrix_einsum(X, np.tanh(y))
    assert rel_err(spectral_matrix(X, y, preprocess=tanh), ref) < 1e-12

    @numba.njit
    def tanh_jit(v):
        return np.tanh(v)

    assert rel_err(spectral_matrix(X, y, preprocess=tanh_jit), ref) < 1e-12


def test_center_float_and_exact_mean(data):
    X, y = data
    w = naive.tau("saturating", y)
    T = spectral_matrix(X, y, center=0.25)
    assert rel_err(T, naive.spectral_matrix_einsum(X, w - 0.25)) < 1e-12
    ref = naive.spectral_matrix_einsum(X, w - w.mean())
    # the exact mean of tau over all rows, whatever the path: labels known first (array, file) ...
    assert rel_err(spectral_matrix(X, y, center=True, block_size=500), ref) < 1e-12
    # ... a one-shot iterable (Gram kept beside T), and blocks fed one at a time to an accumulator
    blocks = ((X[i:i + 300], y[i:i + 300]) for i in range(0, len(y), 300))
    assert rel_err(spectral_matrix(blocks, center=True), ref) < 1e-12
    acc = SpectralAccumulator(X.shape[1], center=True)
    for i in range(0, len(y), 400):
        acc.update(X[i:i + 400], y[i:i + 400])
    assert rel_err(acc.finalize(), ref) < 1e-12
    assert acc.shift == pytest.approx(w.mean(), rel=1e-12)
    assert acc.weight_mean == 0.0 and acc.weight_sq_mean == pytest.approx(w.var(), rel=1e-12)
    # checkpoints: each T centred by the mean over its own rows
    for c, T in zip([500, 1500], spectral_matrix(X, y, center=True, checkpoints=[500, 1500], block_size=128)):
        assert rel_err(T, naive.spectral_matrix_einsum(X[:c], w[:c] - w[:c].mean())) < 1e-12


def test_center_exact_for_models_and_merges():
    model = hmi_fast.HMIModel(30, 2, 1.0, seed=5)
    X, y = model.sample(3000)
    w = naive.tau("saturating", y)
    ref = naive.spectral_matrix_einsum(X, w - w.mean())
    assert rel_err(spectral_matrix(model, n=3000, center=True, block_size=700), ref) < 1e-12
    parts = [SpectralAccumulator(30, center=True).update(X[a:b], y[a:b]) for a, b in ((0, 100), (100, 2000), (2000, 3000))]
    merged = parts[2].copy().merge(parts[0]).merge(parts[1])
    assert rel_err(merged.finalize(), ref) < 1e-12
    assert merged.weight_sq_mean == pytest.approx(w.var(), rel=1e-10)


# ----------------------------------------------------------------- bad input
def test_errors_name_the_argument(tmp_path, data):
    X, y = data
    with pytest.raises(ValueError, match=r"X: expected a 2-D array"):
        spectral_matrix(X[0], y)
    with pytest.raises(ValueError, match=r"X and y: lengths differ \(1500 rows in X, 1499 labels"):
        spectral_matrix(X, y[:-1])
    with pytest.raises(ValueError, match=r"X: has no rows"):
        spectral_matrix(X[:0], y[:0])
    with pytest.raises(ValueError, match=r"X: has no columns"):
        spectral_matrix(X[:, :0], y)
    with pytest.raises(TypeError, match=r"X: unsupported dtype complex128"):
        spectral_matrix(X.astype(complex), y)
    with pytest.raises(TypeError, match=r"dtype: unsupported dtype float16"):
        spectral_matrix(X, y, dtype=np.float16)
    Xn = X.copy()
    Xn[700, 3] = np.nan
    with pytest.raises(ValueError, match=r"X: non-finite value in row 700"):
        spectral_matrix(Xn, y, block_size=256)
    Xn = np.asfortranarray(X)
    Xn[901, 5] = np.inf
    with pytest.raises(ValueError, match=r"X: non-finite value in row 901"):
        spectral_matrix(Xn, y)
    yn = y.copy()
    yn[33] = np.inf
    with pytest.raises(ValueError, match=r"y: non-finite value at row 33"):
        spectral_matrix(X, yn)
    with pytest.raises(ValueError, match=r"checkpoints: must be strictly increasing"):
        spectral_matrix(X, y, checkpoints=[10, 10])
    with pytest.raises(ValueError, match=r"checkpoints: the last one \(2000\) is beyond the 1500 rows"):
        spectral_matrix(X, y, checkpoints=[10, 2000])
    with pytest.raises(ValueError, match=r"block_size: must be an integer >= 1, got 0"):
        spectral_matrix(X, y, block_size=0)
    with pytest.raises(FileNotFoundError, match=r"X: no such file"):
        spectral_matrix(tmp_path / "missing.npy", y)
    np.save(tmp_path / "v.npy", y)
    with pytest.raises(ValueError, match=r"X: .* holds an array of shape \(1500,\); expected 2-D"):
        spectral_matrix(tmp_path / "v.npy", y)
    np.save(tmp_path / "c.npy", X.astype(np.complex64))
    with pytest.raises(TypeError, match=r"X: .* holds dtype complex64; save it as float32 or float64"):
        spectral_matrix(tmp_path / "c.npy", y)
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    with pytest.raises(ValueError, match=r"X: .* is not a readable .npy file"):
        spectral_matrix(tmp_path / "junk.npy", y)
    with pytest.raises(ValueError, match=r"y: required when X is an array"):
        spectral_matrix(X)
    with pytest.raises(ValueError, match=r"n: required when the source is an HMIModel"):
        spectral_matrix(hmi_fast.HMIModel(5, 1, 1.0))
    with pytest.raises(ValueError, match=r"n: asked for 2000 rows from row 0 but the data has only 1500 rows"):
        spectral_matrix(X, y, n=2000)
    with pytest.raises(TypeError, match=r"source: unsupported type int"):
        spectral_matrix(3, y)


def test_preprocess_errors(data):
    X, y = data
    with pytest.raises(ValueError, match=r"preprocess: unknown name 'satur'"):
        spectral_matrix(X, y, preprocess="satur")
    with pytest.raises(ValueError, match=r"preprocess: 'bad' returned a non-finite value at row 0"):

        def bad(v):
            return np.where(v > 1e300, 0.0, np.nan)

        spectral_matrix(X, y, preprocess=bad)
    with pytest.raises(ValueError, match=r"preprocess: 'short' returned shape \(3,\)"):

        def short(v):
            return v[:3]

        spectral_matrix(X, y, preprocess=short)
    with pytest.raises(ValueError, match=r"preprocess: the clip level must be a positive"):
        hmi_fast.clip(-1)

    @numba.njit
    def nan_jit(v):
        return np.nan

    with pytest.raises(ValueError, match=r"preprocess: 'nan_jit' returned a non-finite value at row 0"):
        spectral_matrix(X, y, preprocess=nan_jit)


def test_accumulator_errors():
    acc = SpectralAccumulator(4)
    with pytest.raises(ValueError, match=r"finalize: no rows seen yet"):
        acc.finalize()
    with pytest.raises(ValueError, match=r"X: expected 4 columns"):
        acc.update(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match=r"other: d differs"):
        acc.merge(SpectralAccumulator(5))
    with pytest.raises(ValueError, match=r"other: built with preprocess 'sign', not 'saturating'"):
        acc.merge(SpectralAccumulator(4, preprocess="sign"))
    with pytest.raises(ValueError, match=r"threads: n must be between 1 and"):
        with hmi_fast.threads(0):
            pass


def test_weight_moments_and_state_roundtrip(tmp_path, data):
    X, y = data
    acc = SpectralAccumulator(X.shape[1], center=0.1).update(X[:1000], y[:1000])
    w = naive.tau("saturating", y[:1000]) - 0.1
    assert np.isclose(acc.weight_mean, w.mean(), rtol=1e-12)
    assert np.isclose(acc.weight_sq_mean, np.mean(w**2), rtol=1e-12)
    np.savez(tmp_path / "state.npz", **acc.state())
    back = SpectralAccumulator.from_state(tmp_path / "state.npz")
    back.update(X[1000:], y[1000:])
    whole = SpectralAccumulator(X.shape[1], center=0.1).update(X, y)
    assert back.n == whole.n
    assert rel_err(back.finalize(), whole.finalize()) < 1e-13
    assert np.isclose(back.weight_sq_mean, whole.weight_sq_mean, rtol=1e-12)


def test_file_and_iterable_errors(tmp_path, data):
    X, y = data
    path = tmp_path / "X.npy"
    np.save(path, X)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # the header promises 1500 rows
    with pytest.raises(ValueError, match=r"X: .* is truncated \(\d+ bytes, the header needs \d+ for shape \(1500, 23\)\); save it again"):
        spectral_matrix(path, y)
    with pytest.raises(ValueError, match=r"y: required when X is a file path"):
        spectral_matrix(path)
    with pytest.raises(ValueError, match=r"n: the source ended after 200 rows, fewer than n=500"):
        spectral_matrix([(X[:200], y[:200])], n=500)
    with pytest.raises(TypeError, match=r"source: an iterable source must yield \(X_block, y_block\) pairs"):
        spectral_matrix([X[:10]])
    with pytest.raises(ValueError, match=r"X and y: lengths differ \(1500 rows in X, 10 labels in y\)"):
        spectral_matrix(X, y[:10])
