"""Streaming SIR and SAVE: per-slice moments, merge seam, state, matrices against statsmodels, estimators."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hmi_fast import (
    SAVE,
    HMIModel,
    SlicedAccumulator,
    SlicedAverageVarianceEstimation,
    SlicedInverseReg,
    SliceResidualAccumulator,
    select_sliced,
    slice_edges,
    sliced_matrix,
)

from . import naive_sliced as naive


def _data(n=600, d=5, seed=0, scale=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if scale:
        X = X @ rng.standard_normal((d, d)) + 3.0
    y = X[:, 0] ** 2 + X[:, 1] + 0.3 * rng.standard_normal(n)
    return X, y


def _acc(X, y, H=10, per_slice=True, block=None, dtype=np.float64, step=None):
    acc = SlicedAccumulator(X.shape[1], slice_edges(y, H), per_slice=per_slice, dtype=dtype, block_size=block)
    step = step or len(y)
    for lo in range(0, len(y), step):
        acc.update(X[lo : lo + step], y[lo : lo + step])
    return acc


def _same_state(a, b):
    sa, sb = a.state(), b.state()
    same = [np.array_equal(sa[k], sb[k], equal_nan=np.asarray(sa[k]).dtype.kind == "f") for k in sa]
    return sa.keys() == sb.keys() and all(same)


def _proj(B):
    """Orthogonal projector onto the span of the rows of B."""
    Q = np.linalg.qr(np.asarray(B).T)[0]
    return Q @ Q.T


# ---------------------------------------------------------------- slicing


def test_slice_edges_are_array_split_without_ties():
    rng = np.random.default_rng(1)
    for n, H in [(1000, 10), (1003, 7), (50, 50), (11, 2)]:
        y = rng.standard_normal(n)
        e = slice_edges(y, H)
        counts = np.bincount(np.searchsorted(e, y), minlength=H)
        assert counts.tolist() == [len(a) for a in np.array_split(np.sort(y), H)]
        assert np.array_equal(naive.slices_of(y, e), np.searchsorted(e, y))


def test_slice_edges_keep_ties_together():
    y = np.r_[np.zeros(500), np.arange(1, 501)]
    e = slice_edges(y, 10)
    counts = np.bincount(np.searchsorted(e, y))
    assert counts[0] == 500 and len(counts) == 10 and counts[1:].min() >= 55
    assert slice_edges([0, 0, 0, 1, 1, 1], 4).tolist() == [0.5]
    assert slice_edges([2.0, 2.0, 2.0], 2).size == 0


def test_slice_edges_bad_input():
    with pytest.raises(ValueError, match="n_slices: must be an integer >= 2, got 1"):
        slice_edges([1.0, 2.0], 1)
    with pytest.raises(ValueError, match=r"n_slices: must be at most the number of labels \(2\), got 3"):
        slice_edges([1.0, 2.0], 3)
    with pytest.raises(ValueError, match="y: non-finite value at row 1"):
        slice_edges([1.0, np.nan, 2.0], 2)
    with pytest.raises(TypeError, match="y: unsupported dtype complex128"):
        slice_edges(np.ones(3, dtype=complex), 2)


# ---------------------------------------------------------------- moments against the naive loop


@pytest.mark.parametrize("per_slice", [True, False])
@pytest.mark.parametrize("order", ["C", "F"])
def test_moments_equal_naive(per_slice, order):
    X, y = _data(n=700, d=6)
    X = np.asarray(X, order=order)
    e = slice_edges(y, 7)
    counts, means, covs = naive.slice_moments(X, y, e)
    acc = _acc(X, y, H=7, per_slice=per_slice, block=64, step=150)
    assert acc.counts.tolist() == counts.tolist() and acc.n == 700
    assert np.allclose(acc.slice_means(), means, rtol=0, atol=1e-12)
    assert np.allclose(acc.mean(), X.mean(axis=0), atol=1e-12)
    C = np.cov(X.T, bias=True)
    assert np.allclose(acc.covariance(), C, rtol=1e-12, atol=1e-12)
    if per_slice:
        for h in range(7):
            assert np.allclose(acc.slice_covariance(h), covs[h], rtol=1e-11, atol=1e-11)


def test_float32_products_are_close():
    X, y = _data(n=2000, d=6)
    a64 = _acc(X, y)
    a32 = _acc(X.astype(np.float32), y, dtype=np.float32)
    assert a32.dtype == np.float32
    for h in range(10):
        ref = a64.slice_covariance(h)
        assert np.abs(a32.slice_covariance(h) - ref).max() < 1e-5 * np.abs(ref).max()


@settings(deadline=None, max_examples=25)
@given(
    X=hnp.arrays(np.float64, st.tuples(st.integers(8, 40), st.integers(1, 4)),
                 elements=st.floats(-1e3, 1e3, allow_nan=False, width=64)),
    H=st.integers(2, 5),
    step=st.integers(1, 17),
    block=st.integers(1, 9),
)
def test_moments_property(X, H, step, block):
    rng = np.random.default_rng(len(X))
    y = rng.standard_normal(len(X))
    e = slice_edges(y, H)
    counts, means, covs = naive.slice_moments(X, y, e)
    acc = _acc(X, y, H=H, block=block, step=step)
    assert acc.counts.tolist() == counts.tolist()
    scale = 1.0 + np.abs(X).max()
    live = counts > 0
    assert np.allclose(acc.slice_means()[live], means[live], atol=1e-9 * scale)
    for h in np.flatnonzero(live):
        assert np.allclose(acc.slice_covariance(h), covs[h], atol=1e-9 * scale**2)


def test_block_size_and_chunking_invariance():
    X, y = _data(n=900, d=5)
    ref = _acc(X, y)
    for block, step in [(7, 900), (900, 13), (64, 100)]:
        other = _acc(X, y, block=block, step=step)
        for h in range(10):
            assert np.allclose(other.slice_covariance(h), ref.slice_covariance(h), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- merge seam


def test_merge_order_and_grouping_invariance():
    X, y = _data(n=1200, d=5)
    e = slice_edges(y, 8)
    parts = [(X[i::3], y[i::3]) for i in range(3)]

    def acc_of(i):
        return SlicedAccumulator(5, e).update(*parts[i])

    ref = SlicedAccumulator(5, e).update(X, y)
    a = acc_of(0).merge(acc_of(1)).merge(acc_of(2))
    b = acc_of(2).merge(acc_of(1).merge(acc_of(0)))
    c = SlicedAccumulator(5, e).merge(acc_of(1)).merge(acc_of(0)).merge(SlicedAccumulator(5, e)).merge(acc_of(2))
    for m in ("sir", "save"):
        M = ref.finalize(m).matrix
        for other in (a, b, c):
            assert other.n == ref.n and np.array_equal(other.counts, ref.counts)
            assert np.allclose(other.finalize(m).matrix, M, rtol=0, atol=1e-11)


def test_merge_leaves_other_unchanged_and_self_merge_doubles():
    X, y = _data()
    e = slice_edges(y, 5)
    a = SlicedAccumulator(5, e).update(X[:300], y[:300])
    b = SlicedAccumulator(5, e).update(X[300:], y[300:])
    before = b.state()
    a.merge(b)
    assert all(np.array_equal(before[k], b.state()[k]) for k in before)
    c = b.copy().merge(b)
    assert c.n == 2 * b.n and np.allclose(c.covariance(), b.covariance(), atol=1e-12)


def test_merge_bad_input():
    X, y = _data()
    e = slice_edges(y, 5)
    a = SlicedAccumulator(5, e)
    with pytest.raises(TypeError, match="other: expected a SlicedAccumulator, got int"):
        a.merge(3)
    with pytest.raises(ValueError, match=r"other: d differs \(4 vs 5\)"):
        a.merge(SlicedAccumulator(4, e))
    with pytest.raises(ValueError, match="other: built with different slice edges"):
        a.merge(SlicedAccumulator(5, e[:-1]))
    with pytest.raises(ValueError, match="other: per_slice differs"):
        a.merge(SlicedAccumulator(5, e, per_slice=False))


# ---------------------------------------------------------------- state


def test_state_roundtrip_dict_npz_pickle(tmp_path):
    X, y = _data()
    acc = _acc(X, y, H=6, step=200)
    path = tmp_path / "acc.npz"
    np.savez(path, **acc.state())
    for other in (SlicedAccumulator.from_state(acc.state()), SlicedAccumulator.from_state(path),
                  pickle.loads(pickle.dumps(acc)), acc.copy()):
        assert _same_state(other, acc)
        other.update(X[:50], y[:50])  # still usable
    empty = SlicedAccumulator.from_state(SlicedAccumulator(5, [0.0]).state())
    assert empty.n == 0 and empty.shift is None


def test_from_state_validates():
    X, y = _data()
    good = _acc(X, y, H=4).state()

    def bad(**change):
        s = dict(good)
        s.update(change)
        return s

    with pytest.raises(ValueError, match=r"state: missing \['grams'\]"):
        SlicedAccumulator.from_state({k: v for k, v in good.items() if k != "grams"})
    with pytest.raises(ValueError, match="state: holds a 'slice_residual' accumulator, not 'sliced'"):
        SlicedAccumulator.from_state(bad(kind="slice_residual"))
    with pytest.raises(ValueError, match=r"state: 'grams' has shape \(4, 5, 4\)"):
        SlicedAccumulator.from_state(bad(grams=good["grams"][:, :, :4]))
    with pytest.raises(ValueError, match="state: 'counts' must hold non-negative integers"):
        SlicedAccumulator.from_state(bad(counts=-good["counts"]))
    with pytest.raises(ValueError, match=r"state: 'n' \(7\) differs from the sum of 'counts' \(600\)"):
        SlicedAccumulator.from_state(bad(n=7))
    with pytest.raises(ValueError, match="state: 'sums' holds NaN or inf"):
        SlicedAccumulator.from_state(bad(sums=good["sums"] * np.nan))
    with pytest.raises(ValueError, match="state: 'shift' must be finite once rows have been seen"):
        SlicedAccumulator.from_state(bad(shift=np.full(5, np.nan)))
    with pytest.raises(ValueError, match="edges: must be strictly increasing"):
        SlicedAccumulator.from_state(bad(edges=good["edges"][::-1]))
    with pytest.raises(TypeError, match="state: expected a dict or an .npz path, got int"):
        SlicedAccumulator.from_state(3)


# ---------------------------------------------------------------- bad input and atomicity


def test_update_bad_input_messages():
    X, y = _data()
    acc = SlicedAccumulator(5, slice_edges(y, 4))
    with pytest.raises(ValueError, match=r"X: expected 5 columns \(the accumulator's d\), got 4"):
        acc.update(X[:, :4], y)
    with pytest.raises(ValueError, match=r"X and y: lengths differ \(600 rows in X, 599 labels in y\)"):
        acc.update(X, y[:-1])
    with pytest.raises(ValueError, match="edges: must be strictly increasing"):
        SlicedAccumulator(5, [1.0, 0.0])
    with pytest.raises(ValueError, match="edges: contain NaN or inf"):
        SlicedAccumulator(5, [np.inf])
    with pytest.raises(ValueError, match="edges: expected a non-empty 1-D array"):
        SlicedAccumulator(5, [])
    with pytest.raises(ValueError, match="finalize: no rows seen yet"):
        acc.finalize()
    with pytest.raises(ValueError, match="method: must be one of"):
        acc.update(X, y).finalize("phd")
    with pytest.raises(ValueError, match="ddof: must be 0 or 1, got 2"):
        acc.finalize("save", ddof=2)
    with pytest.raises(ValueError, match="ddof, correction: apply to SAVE only"):
        acc.finalize("sir", ddof=1)
    with pytest.raises(TypeError, match="correction: bias-corrected SAVE needs a SliceResidualAccumulator"):
        acc.finalize("save_bc")
    with pytest.raises(ValueError, match="method: SAVE needs one Gram per slice"):
        SlicedAccumulator(5, [0.0], per_slice=False).update(X, y).finalize("save")
    Xc = X.copy()
    Xc[:, 2] = 1.0
    with pytest.raises(ValueError, match="X: the covariance of the 5 features over 600 rows is singular"):
        SlicedAccumulator(5, [0.0]).update(Xc, y).finalize()


@pytest.mark.parametrize("where", [3, 450])
def test_failed_update_leaves_state_unchanged(where):
    X, y = _data(n=600)
    acc = _acc(X, y, H=5, block=100, step=200)
    for res in (acc, acc.residual_accumulator().update(X, y)):
        before = pickle.dumps(res.state())
        Xb = X.copy()
        Xb[where, 3] = np.nan
        with pytest.raises(ValueError, match=f"X: non-finite value in row {res.n + where}"):
            res.update(Xb, y)  # 6 chunks of 100: the bad row is found before the first is added
        yb = y.copy()
        yb[where] = np.inf
        with pytest.raises(ValueError, match=f"y: non-finite value at row {res.n + where}"):
            res.update(X, yb)
        assert pickle.dumps(res.state()) == before
    fresh = SlicedAccumulator(5, [0.0])
    Xb = X.copy()
    Xb[0, 0] = np.inf
    with pytest.raises(ValueError, match="X: non-finite value in row 0"):
        fresh.update(Xb, y)
    assert fresh.n == 0 and fresh.shift is None and not fresh.counts.any()


def test_user_arrays_are_not_modified():
    X, y = _data()
    X0, y0 = X.copy(), y.copy()
    SAVE(bias_correction=True, max_components=3).fit(X, y)
    SlicedInverseReg().fit(X, y).transform(X)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)


# ---------------------------------------------------------------- matrices: naive and statsmodels


def test_matrices_equal_naive():
    X, y = _data(n=500, d=4)
    e = slice_edges(y, 6)
    acc = SlicedAccumulator(4, e).update(X, y)
    assert np.allclose(acc.finalize("sir").matrix, naive.sir_matrix(X, y, e), atol=1e-12)
    for ddof in (0, 1):
        assert np.allclose(acc.finalize("save", ddof=ddof).matrix, naive.save_matrix(X, y, e, ddof), atol=1e-11)


@pytest.fixture(scope="module")
def sm_data():
    rng = np.random.default_rng(7)
    n, d = 800, 6
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 2.0
    y = X[:, 0] ** 2 + np.tanh(X[:, 1]) + 0.2 * rng.standard_normal(n)
    return X, y


def _sm_whitened(model, H):
    """statsmodels' own whitened slices (its _prep), to form its matrices."""
    model._prep(H)
    return model._split_wexog


@pytest.mark.parametrize("H", [8, 10])
def test_sir_equals_statsmodels(sm_data, H):
    dimred = pytest.importorskip("statsmodels.regression.dimred")
    X, y = sm_data
    n = len(y)
    wm = sliced_matrix(X, y, method="sir", n_slices=H)
    res = dimred.SlicedInverseReg(y, X.copy()).fit(slice_n=n // H)
    parts = _sm_whitened(dimred.SlicedInverseReg(y, X.copy()), H)
    mn = np.array([z.mean(0) for z in parts])
    ns = np.array([len(z) for z in parts])
    M_sm = mn.T @ (ns[:, None] * mn) / n
    assert np.abs(wm.matrix - M_sm).max() < 1e-10 * np.abs(M_sm).max()
    assert np.allclose(np.sort(np.linalg.eigvalsh(wm.matrix))[::-1], res.eigs, rtol=0, atol=1e-10 * res.eigs[0])
    k = H - 1
    vecs = np.linalg.eigh(wm.matrix)[1][:, ::-1][:, :k]
    B = wm.directions(vecs)
    assert np.allclose(np.abs(B), np.abs(np.asarray(res.params)[:, :k].T), rtol=1e-7, atol=1e-9)
    est = SlicedInverseReg(n_slices=H, n_components=2).fit(X, y)
    assert np.allclose(est.eigenvalues_, res.eigs[:2], rtol=1e-10)


@pytest.mark.parametrize("bc", [False, True])
def test_save_equals_statsmodels(sm_data, bc):
    dimred = pytest.importorskip("statsmodels.regression.dimred")
    X, y = sm_data
    n, H = len(y), 10  # equal slices of 80: statsmodels' 1/H and our n_h/n weights agree
    res = dimred.SAVE(y, X.copy(), bc=bc).fit(slice_n=n // H)
    parts = _sm_whitened(dimred.SAVE(y, X.copy()), H)
    p = X.shape[1]
    if bc:
        wm = sliced_matrix(X, y, method="save_bc", n_slices=H)
        M_sm = _sm_save_bc(parts, n, p)
        scale = 1.0
    else:
        wm = sliced_matrix(X, y, method="save", n_slices=H, ddof=1)
        M_sm = sum(len(z) * (np.eye(p) - np.cov(z.T)) @ (np.eye(p) - np.cov(z.T)) for z in parts) / H
        scale = n / H  # statsmodels divides Σ n_h (I − V_h)² by H, not by n
    assert np.abs(wm.matrix * scale - M_sm).max() < 1e-10 * np.abs(M_sm).max()
    ours = np.sort(np.linalg.eigvalsh(wm.matrix))[::-1] * scale
    assert np.allclose(ours, res.eigs, rtol=0, atol=1e-10 * np.abs(res.eigs).max())
    vecs = np.linalg.eigh(wm.matrix)[1][:, ::-1][:, :3]
    assert np.allclose(_proj(wm.directions(vecs)), _proj(np.asarray(res.params)[:, :3].T), atol=1e-8)
    if bc:
        est = SAVE(n_slices=H, bias_correction=True, n_components=2, max_components=None).fit(X, y)
        assert np.allclose(est.eigenvalues_, res.eigs[:2], rtol=1e-10)


def _sm_save_bc(parts, n, p):
    """statsmodels' bias-corrected SAVE matrix, written out from its source."""
    cv = [np.cov(z.T) for z in parts]
    av = sum(c @ c for c in cv) / len(cv)
    vn = 0
    for x in parts:
        r = x - x.mean(0)
        for u in r:
            m = np.outer(u, u)
            vn = vn + m @ m
    vn = vn / n
    c = np.mean([len(z) for z in parts])
    k1 = c * (c - 1) / ((c - 1) ** 2 + 1)
    k2 = (c - 1) / ((c - 1) ** 2 + 1)
    return np.eye(p) - 2 * sum(cv) / len(cv) + k1 * av - k2 * vn


# ---------------------------------------------------------------- whitening invariance


@pytest.mark.parametrize("method", ["sir", "save", "save_bc"])
def test_invertible_map_leaves_x_subspace_unchanged(method):
    X, y = _data(n=3000, d=5, seed=3)
    A = np.random.default_rng(5).standard_normal((5, 5)) + 3 * np.eye(5)
    shift = np.arange(5.0)
    wm = sliced_matrix(X, y, method=method, n_slices=8)
    wm2 = sliced_matrix(X @ A + shift, y, method=method, n_slices=8)
    l1, V1 = np.linalg.eigh(wm.matrix)
    l2, V2 = np.linalg.eigh(wm2.matrix)
    assert np.allclose(l1, l2, atol=1e-9)
    B1 = wm.directions(V1[:, -2:])
    B2 = wm2.directions(V2[:, -2:]) @ A.T  # β' for x' = Aᵀ x  ⇒  Aβ' spans the same as β
    assert np.allclose(_proj(B1), _proj(B2), atol=1e-8)


# ---------------------------------------------------------------- selection rule


def test_selection_null_and_planted():
    rng = np.random.default_rng(11)
    n, d = 20_000, 60
    X = rng.standard_normal((n, d))
    y0 = rng.standard_normal(n)
    assert SlicedInverseReg().fit(X, y0).n_components_ == 0
    assert SAVE().fit(X, y0).n_components_ == 0
    y = np.tanh(2 * X[:, 0]) + 0.5 * X[:, 1] + X[:, 2] ** 2 + 0.3 * rng.standard_normal(n)
    sir = SlicedInverseReg().fit(X, y)
    save = SAVE().fit(X, y)
    assert sir.n_components_ == 2 and save.n_components_ == 3
    assert (sir.components_[:, :2] ** 2).sum(axis=0).min() > 0.8  # x_1, x_2 in the SIR subspace
    assert (save.components_[:, :3] ** 2).sum(axis=0).min() > 0.9
    sel = save.selection_
    assert sel.bulk_edges[0] < sel.bulk_mean < sel.bulk_edges[1] < sel.threshold < save.eigenvalues_[-1]


def test_select_sliced_bad_input():
    c = np.array([5, 5, 0])
    with pytest.raises(ValueError, match="method: must be one of"):
        select_sliced([1.0], method="phd", d=3, slice_counts=c, trace=1.0)
    with pytest.raises(ValueError, match="slice_counts: need at least 2 non-empty slices, got 1"):
        select_sliced([1.0], method="sir", d=3, slice_counts=[10, 0], trace=1.0)
    with pytest.raises(ValueError, match="slice_counts: expected a 1-D array of non-negative integers"):
        select_sliced([1.0], method="sir", d=3, slice_counts=[1.5, 2.0], trace=1.0)
    with pytest.raises(ValueError, match="trace: must be a finite number"):
        select_sliced([1.0], method="sir", d=3, slice_counts=c, trace=np.nan)
    with pytest.raises(ValueError, match="eigenvalues: contain NaN or inf"):
        select_sliced([np.nan], method="sir", d=3, slice_counts=c, trace=1.0)


# ---------------------------------------------------------------- estimators and sources


@pytest.fixture(scope="module")
def model():
    return HMIModel(d=40, m_star=2, gamma=0.5, link="he2", noise=0.1, seed=3)


def test_fit_stream_equals_fit(model, tmp_path):
    X, y = model.sample(8000)
    ref = SAVE(max_components=6).fit(X, y)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    blocks = [(X[lo : lo + 1000], y[lo : lo + 1000]) for lo in range(0, 8000, 1000)]
    others = [
        SAVE(max_components=6).fit_stream(model, n=8000),
        SAVE(max_components=6, block_size=700).fit_stream(tmp_path / "X.npy", tmp_path / "y.npy"),
        SAVE(max_components=6).fit_stream(blocks),
        SAVE(max_components=6).fit_stream(np.load(tmp_path / "X.npy", mmap_mode="r"), y),
    ]
    part = SAVE(max_components=6, edges=ref.edges_)
    for Xb, yb in blocks:
        part.partial_fit(Xb, yb)
    for other in others + [part]:
        assert other.n_components_ == ref.n_components_ == 2
        assert np.array_equal(other.edges_, ref.edges_)
        assert np.allclose(other.eigenvalues_, ref.eigenvalues_, rtol=1e-9)
        assert np.allclose(other.projector(), ref.projector(), atol=1e-9)


def test_one_shot_iterator_needs_edges(model):
    X, y = model.sample(4000)

    def gen():
        for lo in range(0, 4000, 1000):
            yield X[lo : lo + 1000], y[lo : lo + 1000]

    with pytest.raises(ValueError, match="source: a one-shot iterator cannot be read twice"):
        SlicedInverseReg().fit_stream(gen())
    e = slice_edges(y, 10)
    a = SlicedInverseReg(edges=e).fit_stream(gen())
    b = SlicedInverseReg().fit(X, y)
    assert np.allclose(a.eigenvalues_, b.eigenvalues_, rtol=1e-10)
    with pytest.raises(ValueError, match="bias-corrected SAVE reads the rows twice"):
        SAVE(edges=e, bias_correction=True).fit_stream(gen())


def test_full_spectrum_and_transform(model):
    X, y = model.sample(6000)
    sir = SlicedInverseReg(max_components=None).fit(X, y)
    assert sir.spectrum_.shape == (40,) and np.all(sir.spectrum_[10:] == 0)
    save = SAVE(max_components=None).fit(X, y)
    full = np.linalg.eigvalsh(sliced_matrix(X, y, method="save").matrix)[::-1]
    assert np.allclose(save.spectrum_, full, atol=1e-12)
    top = SAVE(max_components=5).fit(X, y)
    assert np.allclose(top.spectrum_, full[:5], rtol=1e-9)
    Z = save.transform(X)
    assert Z.shape == (6000, save.n_components_)
    assert np.allclose(np.corrcoef(Z.T), np.eye(save.n_components_), atol=1e-10)  # sufficient predictors
    assert np.allclose(np.linalg.norm(save.directions_, axis=1), 1.0)
    assert np.allclose(save.components_ @ save.components_.T, np.eye(save.n_components_), atol=1e-12)
    assert save.transform(X[:3].astype(np.float32)).dtype == np.float32
    assert np.allclose(save.fit_transform(X, y), Z)


def test_estimator_bad_params(model):
    X, y = model.sample(500)
    with pytest.raises(ValueError, match="n_slices: must be an integer >= 2, got 1"):
        SlicedInverseReg(n_slices=1).fit(X, y)
    with pytest.raises(ValueError, match="n_components: must be 'auto' or an integer >= 0, got 'gap'"):
        SAVE(n_components="gap").fit(X, y)
    with pytest.raises(ValueError, match=r"max_components: must be None \(full spectrum\) or an integer >= 1, got 0"):
        SAVE(max_components=0).fit(X, y)
    with pytest.raises(ValueError, match="n_components: 5 components asked for, but only 3 eigenvectors"):
        SAVE(n_components=5, max_components=3).fit(X, y)
    with pytest.raises(ValueError, match="bias_correction: must be True or False"):
        SAVE(bias_correction="yes").fit(X, y)
    with pytest.raises(ValueError, match="y: all labels are equal"):
        SAVE().fit(X, np.ones(500))
    with pytest.raises(ValueError, match=r"y: all 500 rows fall in one slice; give edges inside the range of y"):
        SlicedInverseReg(edges=[1e9]).fit(X, y)
    with pytest.raises(ValueError, match="y: SlicedInverseReg requires y to be passed"):
        SlicedInverseReg().fit(X, None)
    with pytest.raises(ValueError, match="n: required when the source is an HMIModel"):
        SAVE().fit_stream(model)
    assert not hasattr(SAVE(bias_correction=True), "partial_fit")


def test_alias_and_names():
    assert SAVE is SlicedAverageVarianceEstimation
    assert repr(SAVE(bias_correction=True)) == "SlicedAverageVarianceEstimation(bias_correction=True)"


@pytest.mark.parametrize("est", [SlicedInverseReg(n_components=1),
                                 SAVE(n_components=2, max_components=3),
                                 SAVE(n_components=1, bias_correction=True, n_slices=3)],
                         ids=["sir", "save", "save_bc"])
def test_sklearn_check_estimator(est):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None)
    failed = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_sir_with_more_slices_than_features():
    X, y = _data(n=3000, d=5, seed=2)
    e = slice_edges(y, 150)
    ref = np.linalg.eigvalsh(naive.sir_matrix(X, y, e))[::-1]
    full = SlicedInverseReg(n_slices=150, max_components=None).fit(X, y)
    top = SlicedInverseReg(n_slices=150, max_components=3).fit(X, y)
    assert np.allclose(full.spectrum_, ref, atol=1e-12) and np.allclose(top.spectrum_, ref[:3], atol=1e-12)


@pytest.mark.slow
def test_selection_validation_grid_quick(capsys):
    """The validation of docs/sliced.md on its quick grid: the default rule right in almost every fit."""
    from benchmarks import sliced_selection

    table = sliced_selection.main(["--quick"])
    for method in ("sir", "save", "save_bc"):
        c = table[(method, "edge, tw=2 (default)")]
        assert c["right"] >= 0.9 * c["cases"] and c["null: k > 0"] == 0, (method, dict(c))


@pytest.mark.parametrize("Est", [SlicedInverseReg, SlicedAverageVarianceEstimation])
def test_masked_and_sparse_input_refused_by_the_estimators(Est):
    """A mask would be dropped by np.asarray: the estimators refuse it, as SpectralEstimator does."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((400, 4)), rng.standard_normal(400)
    cases = [
        ((np.ma.masked_array(X, mask=X > 2), y), r"^X: masked arrays are not supported \(the mask would be ignored\)"),
        ((X, np.ma.masked_array(y, mask=y > 1)), r"^y: masked arrays are not supported .* y\[~y.mask\]"),
        ((sp.csr_matrix(X), y), r"^X: sparse input is not supported; pass a dense array, e.g. X.toarray\(\)"),
    ]
    for args, msg in cases:
        with pytest.raises(TypeError, match=msg):
            Est().fit(*args)
    est = Est().fit(X, y)
    with pytest.raises(TypeError, match=r"^X: masked arrays are not supported"):
        est.transform(np.ma.masked_array(X))
    assert np.allclose(Est().fit(X, y[:, None]).directions_, est.directions_)  # y of shape (n, 1)
