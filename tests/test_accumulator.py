"""The accumulator's guarantees: atomic updates, frames, validated states, overflow, threads, sketch, moments."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hmi_fast
from hmi_fast import HMIModel, SpectralAccumulator, SpectralEstimator, accumulate, spectral_matrix
from hmi_fast.accumulator import STATE_FORMAT

from . import naive


def rel_err(A, B):
    return np.abs(A - B).max() / max(np.abs(B).max(), 1e-300)


def fields(acc):
    """Every piece of state, for bit-for-bit comparisons."""
    st_ = acc.state()
    return {k: np.array(v, copy=True) for k, v in st_.items()} | {"frame_obj": acc.frame}


def same_state(a, b):
    fa, fb = fields(a), fields(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if k == "frame_obj":
            assert fa[k] == fb[k]
        else:
            assert np.array_equal(fa[k], fb[k], equal_nan=fa[k].dtype.kind == "f"), k


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((900, 12)), rng.standard_normal(900)


# ------------------------------------------------------------------ atomicity
@pytest.mark.parametrize("center", [False, 0.2, True])
@pytest.mark.parametrize("moments", [False, True])
def test_failed_update_leaves_state_unchanged(data, center, moments):
    X, y = data
    acc = SpectralAccumulator(12, center=center, moments=moments, block_size=100).update(X[:300], y[:300])
    before = acc.copy()
    Xb = X[300:].copy()
    Xb[450, 3] = np.nan  # in a later chunk of a multi-chunk update
    with pytest.raises(ValueError, match=r"^X: non-finite value in row 750"):
        acc.update(Xb, y[300:])
    same_state(acc, before)
    yb = y[300:].copy()
    yb[-1] = np.inf
    with pytest.raises(ValueError, match=r"^y: non-finite value at row 899"):
        acc.update(X[300:], yb)
    same_state(acc, before)
    # and it still gives the right answer afterwards
    acc.update(X[300:], y[300:])
    assert rel_err(acc.finalize(), SpectralAccumulator(12, center=center).update(X, y).finalize()) < 1e-12


def test_failed_partial_fit_leaves_the_estimator_unchanged(data):
    X, y = data
    est = SpectralEstimator(max_components=3).partial_fit(X[:500], y[:500])
    T0, comp = est._acc.finalize(), est.components_.copy()
    Xb = X[500:].copy()
    Xb[-1, 0] = np.nan
    with pytest.raises(ValueError, match=r"X: non-finite value in row 899"):
        est.partial_fit(Xb, y[500:])
    assert np.array_equal(est._acc.finalize(), T0) and np.array_equal(est.components_, comp)
    assert est.n_samples_seen_ == 500


def test_partial_fit_refuses_changed_parameters(data):
    X, y = data
    est = SpectralEstimator(max_components=3).partial_fit(X[:300], y[:300])
    est.set_params(preprocess="identity")
    with pytest.raises(ValueError, match=r"^partial_fit: preprocess changed since the data seen so far was added "
                                         r"\(was 'saturating', now 'identity'\); call fit to start again"):
        est.partial_fit(X[300:], y[300:])
    est.fit(X, y)  # fit starts again with the new value
    assert est.n_samples_seen_ == 900


# ------------------------------------------------------------------ frames
def test_frames_model_stream_then_x_rows():
    """fit_stream(model) then partial_fit(X, y): the latent-frame sums are turned into x before x rows join."""
    model = HMIModel(30, 3, 1.0, seed=2)
    X, y = model.sample(4000)
    est = SpectralEstimator(max_components=4).fit_stream(model, n=2500)
    assert est._acc.frame == model.frame
    est.partial_fit(X[2500:], y[2500:])
    assert est._acc.frame is None
    ref = naive.spectral_matrix_einsum(X, naive.tau("saturating", y))
    assert rel_err(est._acc.finalize(), ref) < 1e-12


def test_frames_merge_and_resume_state(tmp_path):
    m1, m2 = HMIModel(20, 2, 1.0, seed=1), HMIModel(20, 2, 1.0, seed=2)
    a, b = accumulate(m1, n=800), accumulate(m2, n=600)
    X1, y1 = m1.sample(800)
    X2, y2 = m2.sample(600)
    merged = a.copy().merge(b)  # different frames: both brought into x
    assert merged.frame is None
    ref = naive.spectral_matrix_einsum(np.vstack([X1, X2]), naive.tau("saturating", np.concatenate([y1, y2])))
    assert rel_err(merged.finalize(), ref) < 1e-12
    # a state keeps its frame: resuming the stream from a saved state gives the one-pass result
    np.savez(tmp_path / "s.npz", **a.state())
    back = SpectralAccumulator.from_state(tmp_path / "s.npz")
    assert back.frame == m1.frame
    accumulate(m1, n=700, start=800, accumulator=back)
    assert np.array_equal(back.finalize(), spectral_matrix(m1, n=1500, block_size=back.block_size)) or \
        rel_err(back.finalize(), spectral_matrix(m1, n=1500)) < 1e-13
    with pytest.raises(ValueError, match=r"^frame: these rows are in LatentFrame\(d=20, m_star=2, seed=2\) but the "
                                         r"accumulator holds sums in the x frame"):
        SpectralAccumulator(20).update(X1[:5], y1[:5]).update(X2[:5], y2[:5], frame=m2.frame)


def test_engine_continues_an_x_frame_accumulator_with_model_rows():
    model = HMIModel(16, 2, 1.0, seed=4)
    X, y = model.sample(1000)
    acc = SpectralAccumulator(16).update(X[:400], y[:400])
    accumulate(model, n=600, start=400, accumulator=acc)  # the engine streams x rows for an x-frame accumulator
    assert acc.frame is None
    assert rel_err(acc.finalize(), spectral_matrix(X, y)) < 1e-12


# ------------------------------------------------------------------ state validation
def good_state(data):
    X, y = data
    return SpectralAccumulator(12, center=0.1, moments=True).update(X, y).state()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s.pop("n"), r"^state: missing entries \['n'\]"),
        (lambda s: s.pop("format"), r"^state: no 'format' entry"),
        (lambda s: s.update(format="other/1"), r"^state: format 'other/1' is not"),
        (lambda s: s.update(sum=s["sum"][0]), r"^state: 'sum' must be a float array of shape \(12, 12\), got .* shape \(12,\)"),
        (lambda s: s.update(n=-5), r"^state: 'n' must be >= 0, got -5"),
        (lambda s: s.update(n=3.9), r"^state: 'n' must be an integer, got 3.9"),
        (lambda s: s.update(n=True), r"^state: 'n' must be a number"),
        (lambda s: s.update(n=0), r"^state: n is 0 but the sums are not zero"),
        (lambda s: s.update(sum=np.full((12, 12), np.nan)), r"^state: 'sum' holds NaN or inf"),
        (lambda s: s.update(preprocess="tanh"), r"^state: unknown preprocess 'tanh'"),
        (lambda s: s.update(preprocess="clip", param=-3.0), r"^preprocess: the clip level must be a positive"),
        (lambda s: s.update(dtype="int8"), r"^state: 'dtype' must be 'float32' or 'float64'"),
        (lambda s: s.update(w2sum=-1.0), r"^state: 'wsum', 'w2sum' must be finite with w2sum >= 0"),
        (lambda s: s.update(wsum=1e9), r"^state: inconsistent weight moments"),
        (lambda s: s.update(gram=-np.eye(12)), r"^state: 'gram' has a negative diagonal entry"),
        (lambda s: s.update(frame="{bad json"), r"^state: 'frame' is not valid JSON"),
        (lambda s: s.update(sketch_counts=s["sketch_counts"] * 2), r"^sketch_counts: must be non-negative and add up to n=900"),
        (lambda s: s.update(center="maybe"), r"^state: 'center' must be 'none', 'value' or 'exact'"),
    ],
)
def test_from_state_validates_meaning(data, change, match):
    s = dict(good_state(data))
    change(s)
    with pytest.raises((ValueError, TypeError), match=match):
        SpectralAccumulator.from_state(s)


def test_from_state_files(tmp_path, data):
    s = good_state(data)
    path = tmp_path / "acc.npz"
    np.savez(path, **s)
    back = SpectralAccumulator.from_state(path)
    assert back.n == 900 and rel_err(back.finalize(), SpectralAccumulator.from_state(s).finalize()) == 0
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match=r"^state: '.*cut.npz' is not a readable accumulator state .*delete it to recompute"):
        SpectralAccumulator.from_state(tmp_path / "cut.npz")
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"flip.npz"):
        SpectralAccumulator.from_state(tmp_path / "flip.npz")
    with pytest.raises(FileNotFoundError, match=r"^state: no such file"):
        SpectralAccumulator.from_state(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match=r"^state: expected a dict"):
        SpectralAccumulator.from_state(42)
    assert s["format"] == STATE_FORMAT


def test_pickle_roundtrip(data):
    import pickle

    X, y = data
    acc = SpectralAccumulator(12, center=True).update(X, y)
    back = pickle.loads(pickle.dumps(acc))
    same_state(acc, back)


# ------------------------------------------------------------------ overflow and underflow
def test_float32_large_values_are_scaled_not_inf():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((300, 6)) * 1e30).astype(np.float32)
    y = rng.standard_normal(300)
    T = spectral_matrix(X, y, preprocess="identity")
    ref = naive.spectral_matrix_einsum(X.astype(np.float64), y)
    assert np.isfinite(T).all() and rel_err(T, ref) < 1e-5


def test_float32_tiny_values_do_not_underflow():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((300, 6)) * 1e-25).astype(np.float32)
    y = rng.standard_normal(300)
    T = spectral_matrix(X, y, preprocess="identity")
    ref = naive.spectral_matrix_einsum(X.astype(np.float64), y)
    assert np.abs(T).max() > 0 and rel_err(T, ref) < 1e-5


def test_cancelling_huge_rows_give_zero_not_nan():
    X = np.array([[1e200, 1e200], [1e200, 1e200]])
    y = np.array([1.0, -1.0])
    assert np.array_equal(spectral_matrix(X, y, preprocess="sign"), np.zeros((2, 2)))


def test_overflow_is_an_error_and_leaves_state_unchanged():
    acc = SpectralAccumulator(3, preprocess="identity").update(np.ones((4, 3)), np.ones(4))
    before = acc.copy()
    with pytest.raises(ValueError, match=r"^X: values too large: the sums of T overflow float64 .* rescale X, e.g. X / np.abs\(X\).max\(\)"):
        acc.update(np.full((5, 3), 1e300), np.ones(5))
    same_state(acc, before)


# ------------------------------------------------------------------ threads
def test_concurrent_updates_give_the_serial_result(data):
    X, y = data
    acc = SpectralAccumulator(12, block_size=64)
    chunks = [(X[i:i + 30], y[i:i + 30]) for i in range(0, 900, 30)]

    def work(k):
        for Xb, yb in chunks[k::4]:
            acc.update(Xb, yb)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert acc.n == 900
    assert rel_err(acc.finalize(), spectral_matrix(X, y)) < 1e-12


# ------------------------------------------------------------------ weight sketch
def test_weight_law_matches_the_weights(data):
    X, y = data
    acc = SpectralAccumulator(12, center=True, block_size=128).update(X, y)
    values, probs = acc.weight_law()
    w = naive.tau("saturating", y)
    w = w - w.mean()
    assert probs.sum() == pytest.approx(1.0)
    assert np.sum(values * probs) == pytest.approx(0.0, abs=1e-12)
    assert np.sum(values**2 * probs) == pytest.approx(np.mean(w**2), rel=1e-2)
    # bins at the mean of their values, and the exact extremes as atoms
    assert values.min() == w.min() and values.max() == w.max()


def test_weight_sketch_of_atoms_is_exact():
    acc = SpectralAccumulator(2, preprocess="sign").update(np.ones((5, 2)), np.array([2.0, -1.0, 0.0, 3.0, 4.0]))
    values, probs = acc.weight_law()
    assert sorted(set(values.tolist())) == [-1.0, 0.0, 1.0]
    for v, p in ((-1.0, 0.2), (0.0, 0.2), (1.0, 0.6)):
        assert probs[values == v].sum() == pytest.approx(p)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.integers(0, 3))
def test_merge_any_partition_equals_one_pass(sizes, seed):
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    X, y = rng.standard_normal((n, 4)), rng.standard_normal(n)
    whole = SpectralAccumulator(4, center=True, moments=True).update(X, y)
    parts, lo = [], 0
    for s in sizes:
        parts.append(SpectralAccumulator(4, center=True, moments=True).update(X[lo:lo + s], y[lo:lo + s]))
        lo += s
    merged = parts[-1]
    for p in parts[:-1]:
        merged.merge(p)
    assert rel_err(merged.finalize(), whole.finalize()) < 1e-12
    assert np.array_equal(merged.weight_sketch.counts, whole.weight_sketch.counts)
    mw, mm = whole.moments(), merged.moments()
    for k in ("mean", "gram", "weighted_sum"):
        assert np.allclose(mm[k], mw[k], rtol=1e-11, atol=1e-13)


# ------------------------------------------------------------------ moments, whitening, residuals
def test_moments_against_numpy(data):
    X, y = data
    acc = SpectralAccumulator(12, preprocess="identity", moments=True).update(X, y)
    m = acc.moments()
    assert np.allclose(m["mean"], X.mean(0), rtol=1e-12, atol=1e-15)
    assert np.allclose(m["gram"], X.T @ X / 900, rtol=1e-12)
    assert np.allclose(m["weighted_sum"], X.T @ y / 900, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"^moments: this accumulator was built with moments=False"):
        SpectralAccumulator(12).update(X, y).moments()


def test_whitening_is_invariant_to_linear_maps():
    model = HMIModel(12, 2, 1.0, link="he2", seed=3)
    X, y = model.sample(40_000)
    A = np.random.default_rng(5).standard_normal((12, 12)) + 3 * np.eye(12)
    est = SpectralEstimator(n_components=2, max_components=4, whiten=True, preprocess="identity").fit(X, y)
    mapped = SpectralEstimator(n_components=2, max_components=4, whiten=True, preprocess="identity").fit(X @ A + 7.0, y)
    # rows x' = Aᵀx: a direction β of x is A β' for the direction β' of x'
    back = np.linalg.qr(A @ mapped.directions_.T)[0].T
    assert np.allclose(back.T @ back, est.components_.T @ est.components_, atol=1e-8)
    assert np.allclose(est.eigenvalues_, mapped.eigenvalues_, rtol=1e-8)


def test_whitened_phd_matches_its_definition():
    rng = np.random.default_rng(2)
    n, d = 5000, 6
    X = rng.standard_normal((n, d)) @ np.diag([1, 2, 3, 1, 0.5, 1.5]) + 1.0
    y = (X[:, 0] - 1) ** 2 + 0.1 * rng.standard_normal(n)
    est = SpectralEstimator(preprocess="identity", n_components=6, max_components=None, whiten=True).fit(X, y)
    xc = X - X.mean(0)
    cov = xc.T @ xc / n
    ev, U = np.linalg.eigh(cov)
    S = U @ np.diag(ev ** -0.5) @ U.T
    Z = xc @ S
    ref = np.linalg.eigvalsh(Z.T @ (Z * y[:, None]) / n)
    assert np.allclose(np.sort(est.eigenvalues_), ref, rtol=1e-9, atol=1e-12)


def test_residual_phd_two_passes_and_one_shot_refused():
    model = HMIModel(10, 2, 1.0, link="relu", seed=1)
    X, y = model.sample(20_000)
    est = SpectralEstimator(preprocess="identity", resid=True, n_components=2, max_components=4).fit(X, y)
    beta, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(y)), X]), y, rcond=None)
    r = y - beta[0] - X @ beta[1:]
    ref = SpectralEstimator(preprocess="identity", n_components=2, max_components=4).fit(X, r)
    assert np.allclose(est.eigenvalues_, ref.eigenvalues_, rtol=1e-9)
    streamed = SpectralEstimator(preprocess="identity", resid=True, n_components=2, max_components=4)
    streamed.fit_stream(model, n=20_000)
    assert np.allclose(streamed.eigenvalues_, ref.eigenvalues_, rtol=1e-8)
    blocks = iter([(X[:100], y[:100])])
    with pytest.raises(ValueError, match=r"^source: resid=True needs two passes over the data, but a one-shot iterator"):
        SpectralEstimator(resid=True).fit_stream(blocks)


def test_whiten_refuses_a_singular_covariance():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 4))
    X[:, 3] = X[:, 0] + X[:, 1]
    with pytest.raises(ValueError, match=r"^X: its sample covariance has rank 3 < d = 4, so it cannot be whitened"):
        SpectralEstimator(whiten=True).fit(X, rng.standard_normal(500))


# ------------------------------------------------------------------ user data is never changed
def test_copy_on_write_memmap_keeps_the_callers_edits(tmp_path, data):
    X, y = data
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="c")
    mm[:, 2] = 1.0  # an edit that lives only in this process's private pages
    T = spectral_matrix(mm, y, block_size=64)
    assert np.all(mm[:, 2] == 1.0)
    edited = X.copy()
    edited[:, 2] = 1.0
    assert rel_err(T, spectral_matrix(edited, y)) < 1e-13


def test_inputs_are_not_modified(data):
    X, y = data
    Xc, yc = X.copy(), y.copy()
    SpectralEstimator(whiten=True, center=True, max_components=3).fit(X, y)
    spectral_matrix(X, y, center=True)
    assert np.array_equal(X, Xc) and np.array_equal(y, yc)


# ------------------------------------------------------------------ inputs converted or refused, by name
def test_big_endian_and_lists_are_converted(data):
    X, y = data
    ref = spectral_matrix(X, y)
    assert rel_err(spectral_matrix(X.astype(">f8"), y.astype(">f8")), ref) < 1e-14
    assert rel_err(spectral_matrix(X[:50].tolist(), y[:50].tolist()), spectral_matrix(X[:50], y[:50])) < 1e-14


def test_npy_v3_and_big_endian_files(tmp_path, data):
    X, y = data
    path = tmp_path / "v3.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, X.astype(">f8"), version=(3, 0))
    assert rel_err(spectral_matrix(path, y, block_size=100), spectral_matrix(X, y)) < 1e-14


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda X, y: spectral_matrix(X, y, center="yes"), TypeError, r"^center: must be True, False or a finite number, got 'yes'"),
        (lambda X, y: spectral_matrix(X, y, center=np.nan), ValueError, r"^center: must be a finite number"),
        (lambda X, y: spectral_matrix(X, y, preprocess=("clip", "a")), TypeError, r"^preprocess: the clip level must be a positive finite number, e.g."),
        (lambda X, y: spectral_matrix(X, y, checkpoints=10), TypeError, r"^checkpoints: must be a sequence of increasing sample counts"),
        (lambda X, y: spectral_matrix(X, 3.0), ValueError, r"^y: expected a 1-D array of shape \(n_samples,\), got an array with 0 dimension"),
        (lambda X, y: spectral_matrix([(X[:5], 3.0)]), ValueError, r"^y: expected a 1-D array"),
        (lambda X, y: spectral_matrix(np.ma.masked_array(X), y), TypeError, r"^X: masked arrays are not supported"),
        (lambda X, y: spectral_matrix(X, np.ma.masked_array(y)), TypeError, r"^y: masked arrays are not supported .* y\[~y.mask\]"),
        (lambda X, y: spectral_matrix(X.astype(object), y), TypeError, r"^X: object array"),
        (lambda X, y: spectral_matrix(X, y, n=0), ValueError, r"^n: must be an integer >= 1, got 0"),
        (lambda X, y: spectral_matrix(X, y, n="5"), TypeError, r"^n: must be an integer >= 1, got '5'"),
        (lambda X, y: accumulate(X, y, start=-1), ValueError, r"^start: must be an integer >= 0, got -1"),
        (lambda X, y: accumulate(iter([(X, y)]), start=5), ValueError, r"^start: an iterable cannot skip rows"),
        (lambda X, y: accumulate(X, y, accumulator=SpectralAccumulator(12), preprocess="sign"), ValueError, r"^accumulator: it already fixes \['preprocess'\]"),
        (lambda X, y: accumulate(X, y, accumulator=SpectralAccumulator(5)), ValueError, r"^X: has 12 columns but the accumulator has d=5"),
        (lambda X, y: SpectralAccumulator(12, moments="yes"), TypeError, r"^moments: must be True or False"),
        (lambda X, y: SpectralAccumulator(12, frame="latent"), TypeError, r"^frame: expected None or a LatentFrame"),
        (lambda X, y: SpectralAccumulator(12).merge(SpectralAccumulator(12, center=True)), ValueError, r"^other: center differs"),
        (lambda X, y: SpectralAccumulator(12).merge(SpectralAccumulator(12, moments=True)), ValueError, r"^other: moments=True but moments=False here"),
    ],
)
def test_bad_input_names_the_argument(data, call, exc, match):
    X, y = data
    with pytest.raises(exc, match=match):
        call(X, y)


def test_sparse_input_is_refused(data):
    sparse = pytest.importorskip("scipy.sparse")
    X, y = data
    with pytest.raises(TypeError, match=r"^X: sparse matrices are not supported; pass a dense array, e.g. X.toarray\(\)"):
        spectral_matrix(sparse.csr_matrix(X), y)


def test_jitted_preprocess_that_does_not_compile(data):
    import numba

    @numba.njit
    def word(v):
        return "a"

    X, y = data
    with pytest.raises(TypeError, match=r"^preprocess: the jitted function 'word' must take a float label and return a float"):
        spectral_matrix(X, y, preprocess=word)


def test_spectral_matrices_checks_before_the_first_row(data):
    X, y = data
    with pytest.raises(ValueError, match=r"^X and y: lengths differ"):
        hmi_fast.spectral_matrices(X, y[:-1], checkpoints=[10])  # no next() needed
