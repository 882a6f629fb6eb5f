"""Valid and invalid arguments mixed at random: every call either gives the reference answer or raises a
TypeError/ValueError whose message starts with the name of an argument. Never a wrong answer, never a crash."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmi_fast import SpectralAccumulator, SpectralEstimator, spectral_matrix, topk_eigh

from . import naive

NAMED = re.compile(r"^(X|y|n|start|preprocess|center|block_size|dtype|checkpoints|source|A|k|which|tol|seed|"
                   r"max_iter|method|residual_tol|v0|n_components|max_components|whiten|resid|moments|"
                   r"X and y)\b")

rng = np.random.default_rng(0)
X0 = rng.standard_normal((60, 5))
Y0 = rng.standard_normal(60)

good_X = st.sampled_from(["ok", "f32", "fortran", "int", "list", "bigendian"])
bad_X = st.sampled_from(["nan", "1d", "complex", "object", "empty_rows", "no_cols", "masked", "str", "f16"])
good_y = st.sampled_from(["ok", "list", "int"])
bad_y = st.sampled_from(["short", "nan", "2d", "scalar", "str", "masked"])


def make_X(kind):
    return {
        "ok": X0, "f32": X0.astype(np.float32), "fortran": np.asfortranarray(X0), "int": np.round(3 * X0).astype(int),
        "list": X0.tolist(), "bigendian": X0.astype(">f8"),
        "nan": np.where(np.arange(5) == 2, np.nan, X0), "1d": X0[:, 0], "complex": X0.astype(complex),
        "object": X0.astype(object), "empty_rows": X0[:0], "no_cols": X0[:, :0], "masked": np.ma.masked_array(X0),
        "str": "not a file.npy", "f16": X0.astype(np.float16),
    }[kind]


def make_y(kind):
    return {
        "ok": Y0, "list": Y0.tolist(), "int": np.round(Y0).astype(int), "short": Y0[:-1],
        "nan": np.where(np.arange(60) == 7, np.inf, Y0), "2d": np.column_stack([Y0, Y0]), "scalar": 1.5,
        "str": "labels", "masked": np.ma.masked_array(Y0),
    }[kind]


options = st.fixed_dictionaries({}, optional={
    "preprocess": st.sampled_from(["saturating", "identity", "sign", ("clip", 0.5), "nope", ("clip", -1), ("clip", "a"), 3]),
    "center": st.sampled_from([False, True, 0.1, "yes", float("nan"), None]),
    "block_size": st.sampled_from([7, 64, 0, -3, 2.5, "8"]),
    "dtype": st.sampled_from([np.float64, np.float32, np.float16, "int32", "nonsense"]),
    "n": st.sampled_from([1, 30, 60, 0, 61, -1, 3.0]),
})


def reference(X, y, opts):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = opts.get("n", len(y))
    X, y = X[:n], y[:n]
    pre = opts.get("preprocess", "saturating")
    w = naive.tau(pre[0], y, pre[1]) if isinstance(pre, tuple) else naive.tau(pre, y)
    c = opts.get("center", False)
    if c is True:
        w = w - w.mean()
    elif c is not False:
        w = w - c
    return naive.spectral_matrix_einsum(X, w)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(good_X, bad_X), st.one_of(good_y, bad_y), options)
def test_spectral_matrix_is_right_or_names_the_argument(xk, yk, opts):
    X, y = make_X(xk), make_y(yk)
    try:
        T = spectral_matrix(X, y, **opts)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        assert NAMED.match(str(exc)), f"message does not name the argument: {exc!r}"
        return
    unused_bad_label = yk == "nan" and opts.get("n", 60) <= 7  # the inf sits in row 7, beyond the n rows used
    assert xk in ("ok", "f32", "fortran", "int", "list", "bigendian"), (xk, yk, opts)
    assert yk in ("ok", "list", "int") or unused_bad_label, (xk, yk, opts)
    if unused_bad_label:
        y = Y0
    ref = reference(X, y, opts)
    tol = 1e-5 if (xk == "f32" or opts.get("dtype") in (np.float32,)) else 1e-11
    assert np.abs(T - ref).max() <= tol * max(np.abs(ref).max(), 1e-300)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["ok", "nan", "asym", "1d", "rect", "int", "f32", "empty"]),
    st.sampled_from([1, 3, 0, 40, 2.0, True, "2"]),
    st.sampled_from(["LA", "SA", "BE", "XX"]),
    st.sampled_from(["auto", "lanczos", "dense", "fast"]),
    st.sampled_from([1e-10, 0.0, -1.0, float("nan")]),
)
def test_topk_eigh_is_right_or_names_the_argument(ak, k, which, method, tol):
    r = np.random.default_rng(1)
    M = r.standard_normal((30, 30))
    M = M + M.T
    A = {"ok": M, "nan": np.where(np.eye(30) > 0, np.nan, M), "asym": M + np.triu(np.ones((30, 30)), 1),
         "1d": M[0], "rect": M[:, :20], "int": np.round(M).astype(int), "f32": M.astype(np.float32),
         "empty": np.zeros((0, 0))}[ak]
    try:
        res = topk_eigh(A, k, which=which, method=method, tol=tol)
    except (TypeError, ValueError) as exc:
        assert NAMED.match(str(exc)), f"message does not name the argument: {exc!r}"
        return
    ref = np.linalg.eigvalsh(np.asarray(A, dtype=np.float64))
    k = int(k)
    want = {"LA": ref[::-1][:k], "SA": ref[:k], "BE": np.concatenate([ref[::-1][:(k + 1) // 2], ref[:k // 2]])}[which]
    assert np.allclose(np.sort(res.values), np.sort(want), atol=1e-8 * np.abs(ref).max())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={
    "n_components": st.sampled_from(["gap", "edge", 2, 0, -1, "max", 2.5]),
    "max_components": st.sampled_from([3, None, 0, -2, "all"]),
    "which": st.sampled_from(["BE", "LA", "SA", "top"]),
    "center": st.sampled_from([False, True, 0.3, "yes"]),
    "whiten": st.sampled_from([False, True, 1]),
    "resid": st.sampled_from([False, True, "no"]),
    "preprocess": st.sampled_from(["saturating", "identity", "bogus"]),
}))
def test_estimator_is_right_or_names_the_argument(params):
    est = SpectralEstimator(**params)
    try:
        est.fit(X0, Y0)
    except (TypeError, ValueError) as exc:
        assert NAMED.match(str(exc)), f"message does not name the argument: {exc!r}"
        assert not hasattr(est, "components_")  # a failed fit leaves nothing behind
        return
    C = est.components_
    assert C.shape[1] == 5 and np.allclose(C @ C.T, np.eye(C.shape[0]), atol=1e-10)
    assert np.isfinite(est.eigenvalues_).all()


def test_accumulator_state_survives_every_failed_call():
    acc = SpectralAccumulator(5).update(X0, Y0)
    before = acc.finalize()
    for X, y in ((X0[:, :4], Y0), (make_X("nan"), Y0), (X0, make_y("nan")), (X0, Y0[:-1]), (make_X("complex"), Y0)):
        with pytest.raises((TypeError, ValueError)):
            acc.update(X, y)
    assert acc.n == 60 and np.array_equal(acc.finalize(), before)
