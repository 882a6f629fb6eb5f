"""T on a Dask cluster: the same numbers as one process, whatever the workers, and through a killed worker.

A ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` is
started once for the module. Skipped where dask/distributed are not installed.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import dask  # noqa: E402

import hmi_fast  # noqa: E402
from hmi_fast import HMIModel, SpectralAccumulator, SpectralEstimator, spectral_matrix  # noqa: E402
from hmi_fast import distributed as hd  # noqa: E402
from hmi_fast.experiments import CurveConfig, run_curve  # noqa: E402

from . import naive  # noqa: E402

MODEL = HMIModel(d=24, m_star=3, gamma=1.0, link="he2_he4", seed=5)
N = 6000


def rel_err(A, B):
    return np.abs(A - B).max() / np.abs(B).max()


@pytest.fixture(scope="module")
def cluster():
    for dtype in (np.float64, np.float32):  # compile once here: the workers then load numba's cache
        spectral_matrix(MODEL, n=300, dtype=dtype)
        hmi_fast.accumulate(MODEL, n=300, dtype=dtype, center=True, moments=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2500, 12))
    y = 2.0 * rng.standard_normal(2500)
    return X, y


@pytest.fixture(scope="module")
def shards(tmp_path_factory, data):
    """X and y split into three .npy shards of unequal length."""
    X, y = data
    root = tmp_path_factory.mktemp("shards")
    cuts = [0, 700, 1800, 2500]
    xs, ys = [], []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        xs.append(str(root / f"X{i}.npy"))
        ys.append(str(root / f"y{i}.npy"))
        np.save(xs[-1], X[a:b])
        np.save(ys[-1], y[a:b])
    return xs, ys


# ------------------------------------------------------------------ agreement with one process
@pytest.mark.parametrize("center", [False, True, 0.25])
def test_model_matches_single_process(client, center):
    acc = hd.accumulate(MODEL, n=N, client=client, center=center, partition_size=1000)
    ref = hmi_fast.accumulate(MODEL, n=N, center=center)
    assert acc.n == N and acc.frame == MODEL.frame
    assert rel_err(acc.finalize(), ref.finalize()) < 1e-12
    assert acc.weight_mean == pytest.approx(ref.weight_mean, rel=1e-12, abs=1e-15)
    assert acc.weight_sq_mean == pytest.approx(ref.weight_sq_mean, rel=1e-12)
    assert np.array_equal(acc.weight_law()[1].round(12), ref.weight_law()[1].round(12))


def test_model_moments_match(client):
    acc = hd.accumulate(MODEL, n=N, client=client, moments=True, partition_size=1500)
    ref = hmi_fast.accumulate(MODEL, n=N, moments=True).moments()
    got = acc.moments()
    for key in ("mean", "gram", "weighted_sum"):
        assert np.allclose(got[key], ref[key], rtol=1e-12, atol=1e-14)


def test_model_checkpoints_from_one_pass(client):
    cps = [300, 1000, 2500, N]
    got = hd.spectral_matrix(MODEL, n=N, client=client, checkpoints=cps, partition_size=700)
    ref = spectral_matrix(MODEL, n=N, checkpoints=cps)
    assert len(got) == len(cps)
    for a, b in zip(got, ref):
        assert rel_err(a, b) < 1e-12
    steps = list(hd.iter_accumulate(MODEL, n=N, client=client, checkpoints=[1000, 2000], partition_size=700))
    assert [(n_j, acc.n) for n_j, acc in steps] == [(1000, 1000), (2000, 2000)]


def test_dask_array_with_numpy_labels(client, data):
    X, y = data
    Xd = da.from_array(X, chunks=(400, -1))
    T = hd.spectral_matrix(Xd, y, client=client, preprocess="identity")
    assert rel_err(T, spectral_matrix(X, y, preprocess="identity")) < 1e-12
    assert rel_err(T, naive.spectral_matrix_loop(X, naive.tau("identity", y))) < 1e-12


def test_dask_array_with_dask_labels_in_other_chunks(client, data):
    X, y = data
    Xd, yd = da.from_array(X, chunks=(600, -1)), da.from_array(y, chunks=(1000,))
    acc = hd.accumulate(Xd, yd, client=client, center=True)
    ref = hmi_fast.accumulate(X, y, center=True)
    assert rel_err(acc.finalize(), ref.finalize()) < 1e-12
    assert acc.shift == pytest.approx(ref.shift, rel=1e-12)


def test_dask_array_float32_same_blocks(client, data):
    X, y = data
    X32 = X.astype(np.float32)
    T = hd.spectral_matrix(da.from_array(X32, chunks=(500, -1)), y, client=client, block_size=250)
    assert rel_err(T, spectral_matrix(X32, y, block_size=250)) < 1e-12


def test_dask_array_checkpoints_cut_chunks(client, data):
    X, y = data
    cps = [150, 1000, 1234, 2500]
    got = hd.spectral_matrix(da.from_array(X, chunks=(400, -1)), y, client=client, checkpoints=cps)
    for a, b in zip(got, spectral_matrix(X, y, checkpoints=cps)):
        assert rel_err(a, b) < 1e-12


def test_dask_array_first_n_rows(client, data):
    X, y = data
    T = hd.spectral_matrix(da.from_array(X, chunks=(400, -1)), y, client=client, n=1111)
    assert rel_err(T, spectral_matrix(X[:1111], y[:1111])) < 1e-12


@pytest.mark.parametrize("labels", ["files", "array"])
def test_shards(client, data, shards, labels):
    X, y = data
    xs, ys = shards
    yy = ys if labels == "files" else y
    T = hd.spectral_matrix(xs, yy, client=client, partition_size=500)
    assert rel_err(T, spectral_matrix(X, y)) < 1e-12
    cps = [100, 700, 2000]
    for a, b in zip(hd.spectral_matrix(xs, yy, client=client, checkpoints=cps), spectral_matrix(X, y, checkpoints=cps)):
        assert rel_err(a, b) < 1e-12


def test_result_is_an_independent_accumulator(client, data):
    X, y = data
    acc = hd.accumulate(da.from_array(X[:1000], chunks=(300, -1)), y[:1000], client=client)
    acc.merge(hd.accumulate(da.from_array(X[1000:], chunks=(300, -1)), y[1000:], client=client))
    assert rel_err(acc.finalize(), spectral_matrix(X, y)) < 1e-12
    acc.update(X[:5], y[:5])
    assert acc.n == len(y) + 5


def test_merge_task_leaves_its_inputs_unchanged():
    params = hd._model_params(MODEL)
    opts = {"preprocess": "saturating", "center": True, "moments": True, "dtype": "float64", "block_size": None}
    a, b = hd._model_part(params, 0, 500, opts, 1), hd._model_part(params, 500, 900, opts, 1)
    before = [x.state() for x in (a, b)]
    merged = hd._merge(a, b)
    assert merged.n == 900 and merged is not a
    for x, old in zip((a, b), before):
        new = x.state()
        assert all(np.array_equal(new[k], old[k]) for k in old)


# ------------------------------------------------------------------ the same bits whatever the workers
def test_bitwise_same_with_1_2_3_workers(client, cluster, data):
    X, y = data
    Xd = da.from_array(X, chunks=(300, -1))

    def both(c):
        return (hd.spectral_matrix(MODEL, n=N, client=c, partition_size=500, center=True),
                hd.spectral_matrix(Xd, y, client=c))

    two = both(client)
    assert all(np.array_equal(a, b) for a, b in zip(two, both(client)))
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as one_client:
        one = both(one_client)
    cluster.scale(3)
    try:
        client.wait_for_workers(3, timeout=120)
        three = both(client)
    finally:
        cluster.scale(2)
    for a, b, c in zip(one, two, three):
        assert np.array_equal(a, b) and np.array_equal(b, c)


# ------------------------------------------------------------------ the estimator
def test_estimator_on_dask_array_equals_in_memory_fit(client):
    model = HMIModel(d=30, m_star=2, gamma=1.0, link="he2", seed=0)
    X, y = model.sample(20_000)
    for whiten in (False, True):
        params = dict(max_components=4, random_state=0, whiten=whiten, center=True)
        ref = SpectralEstimator(**params).fit(X, y)
        est = hd.fit_estimator(SpectralEstimator(**params), da.from_array(X, chunks=(3000, -1)), y, client=client)
        assert est.n_components_ == ref.n_components_ > 0
        assert est.n_samples_seen_ == 20_000
        assert np.allclose(est.eigenvalues_, ref.eigenvalues_, rtol=1e-10, atol=1e-12)
        assert np.allclose(est.projector(), ref.projector(), atol=1e-8)


def test_estimator_on_model(client):
    est = hd.fit_estimator(SpectralEstimator(max_components=5, random_state=0), MODEL, n=N, client=client,
                           partition_size=2000)
    ref = SpectralEstimator(max_components=5, random_state=0).fit_stream(MODEL, n=N)
    assert np.allclose(est.spectrum_, ref.spectrum_, rtol=1e-10, atol=1e-12)


def test_estimator_refusals(client, data):
    X, y = data
    Xd = da.from_array(X, chunks=(500, -1))
    with pytest.raises(ValueError, match=r"resid: residual pHd needs the raw data"):
        hd.fit_estimator(SpectralEstimator(resid=True), Xd, y, client=client)
    with pytest.raises(TypeError, match=r"estimator: expected a SpectralEstimator"):
        hd.fit_estimator(object(), Xd, y, client=client)


# ------------------------------------------------------------------ threads
def test_each_task_runs_within_its_thread_budget(client):
    def probe(k):
        import numba
        from threadpoolctl import threadpool_info

        import hmi_fast

        def blas():
            return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

        before = blas()
        with hmi_fast.threads(k):
            inside = numba.get_num_threads(), blas()
        return before, inside

    top = client.run(lambda: __import__("numba").config.NUMBA_NUM_THREADS)
    k = min(top.values())
    for budget in sorted({1, k}):
        before, (numba_threads, blas) = client.submit(probe, budget, pure=False).result()
        assert numba_threads == budget  # the BLAS: the budget, capped by the worker's own limit (the nanny's is 1)
        assert blas == [min(budget, before[0])] and len(before) == 1
    with pytest.raises(ValueError, match=r"threads: n must be between 1 and"):
        hd.spectral_matrix(MODEL, n=1000, client=client, threads=k + 1)


# ------------------------------------------------------------------ experiments on a cluster
CURVE = CurveConfig(d=30, m_star=2, gamma=1.0, alphas=(5.0, 20.0, 60.0), seeds=(0, 1, 2), max_components=4,
                    dtype="float64")


def _close_rows(a, b):
    """Rows of two passes that differ only in block alignment: equal counts, numbers within rounding."""
    assert [r["n"] for r in a] == [r["n"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["k_hat"] == rb["k_hat"]
        assert np.allclose(ra["eigenvalues"], rb["eigenvalues"], rtol=1e-10, atol=1e-12)


def test_curve_task_rows_equal_a_local_run(tmp_path):
    one = CurveConfig(**{**CURVE.__dict__, "seeds": (1,)})
    written = run_curve(one, tmp_path, progress=False, announce=False).rows
    got = hd.curve_task(CURVE, 1)
    assert got["done"] and got["n"] == CURVE.checkpoints()[-1]
    assert json.loads(json.dumps(got["rows"])) == [{k: v for k, v in r.items() if k != "check"} for r in written]


def test_curve_task_resumed_from_a_state():
    whole = hd.curve_task(CURVE, 0)
    first = hd.curve_task(CURVE, 0, checkpoints=CURVE.checkpoints()[:1])
    assert not first["done"] and [r["n"] for r in first["rows"]] == [150]
    saved = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in first["state"].items()}
    rest = hd.curve_task(CURVE, 0, state=saved, have=[150, 600])  # rows 150 and 600 were written before the stop
    assert [r["n"] for r in rest["rows"]] == [1800] and rest["done"]
    _close_rows(rest["rows"], whole["rows"][2:])
    again = hd.curve_task(CURVE, 0, state=saved)  # a state saved before its row was written: analysed again
    assert [r["n"] for r in again["rows"]] == [150, 600, 1800]
    assert again["rows"][0] == whole["rows"][0]
    with pytest.raises(ValueError, match=r"checkpoints: \[7\] are not checkpoints of the config"):
        hd.curve_task(CURVE, 0, checkpoints=[7])


def test_curve_results_on_the_cluster(client):
    ref = {s: hd.curve_task(CURVE, s)["rows"] for s in CURVE.seeds}
    resumed = hd.curve_task(CURVE, 2, checkpoints=[150])
    seen = {s: [] for s in CURVE.seeds}
    for res in hd.curve_results(client, CURVE, CURVE.seeds, resume={2: (resumed["state"], [150])}):
        seen[res["seed"]].extend(res["rows"])
        assert res["done"] == (res["n"] == 1800)
    assert seen[0] == ref[0] and seen[1] == ref[1]  # one task per seed: the rows of a local run
    assert seen[2] == hd.curve_task(CURVE, 2, state=resumed, have=[150])["rows"]
    chained = list(hd.curve_results(client, CURVE, [0], per_checkpoint=True))
    assert [r["n"] for r in chained] == [150, 600, 1800] and [r["done"] for r in chained] == [False, False, True]
    _close_rows([r for res in chained for r in res["rows"]], ref[0])


# ------------------------------------------------------------------ bad input
def test_run_curve_on_the_cluster_writes_what_a_local_run_writes(client, tmp_path):
    """run_curve(client=): the client is the only writer; tables equal a local run's byte for byte, also when
    resuming a folder a local run left half done (a seed interrupted after its first checkpoint)."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    run_curve(CURVE, local, progress=False, announce=False)
    first = CurveConfig(**{**CURVE.__dict__, "seeds": (0,)})
    run_curve(first, remote, progress=False, announce=False)  # seed 0 done here, the rest on the cluster
    rows = remote / "rows" / "seed_0.jsonl"
    rows.write_text(rows.read_text().splitlines(keepends=True)[0])  # cut after the first checkpoint
    (remote / "rows" / "seed_0.done").unlink()
    res = run_curve(CURVE, remote, progress=False, announce=False, client=client)
    assert (remote / "curve.csv").read_bytes() == (local / "curve.csv").read_bytes()
    assert (remote / "recovery.csv").read_bytes() == (local / "recovery.csv").read_bytes()
    assert {t["seed"] for t in res.timings if not t.get("skipped")} == set(CURVE.seeds)
    assert not list((remote / "state").glob("*.npz"))  # states are dropped once a seed is done


def test_dask_array_not_chunked_by_rows_only(client, data):
    X, y = data
    with pytest.raises(ValueError, match=r"X: must be chunked by rows only .* rechunk it with X.rechunk\(\{1: -1\}\)"):
        hd.spectral_matrix(da.from_array(X, chunks=(500, 5)), y, client=client)


def test_dask_array_chunks_of_inconsistent_width(client, data):
    X, y = data
    pieces = [da.from_delayed(dask.delayed(X[:1000]), shape=(1000, 12), dtype=X.dtype),
              da.from_delayed(dask.delayed(X[1000:2000, :11]), shape=(1000, 12), dtype=X.dtype)]
    Xd = da.concatenate(pieces, axis=0)
    with pytest.raises(ValueError, match=r"X: chunk 1 \(rows 1000..1999\) holds an array of shape \(1000, 11\) "
                                         r"but the dask array's chunks say \(1000, 12\)"):
        hd.spectral_matrix(Xd, y[:2000], client=client)
    unknown = da.from_array(X, chunks=(500, -1))[da.from_array(y > 0, chunks=500)]
    with pytest.raises(ValueError, match=r"X: has chunks of unknown size; call X.compute_chunk_sizes\(\) first"):
        hd.spectral_matrix(unknown, y, client=client)


def test_dask_array_labels(client, data):
    X, y = data
    Xd = da.from_array(X, chunks=(500, -1))
    with pytest.raises(ValueError, match=r"y: required when X is a dask array"):
        hd.spectral_matrix(Xd, client=client)
    with pytest.raises(ValueError, match=r"X and y: lengths differ \(2500 rows in X, 2499 labels in y\)"):
        hd.spectral_matrix(Xd, y[:-1], client=client)
    with pytest.raises(ValueError, match=r"partition_size: a dask array is partitioned by its chunks"):
        hd.spectral_matrix(Xd, y, client=client, partition_size=100)
    with pytest.raises(TypeError, match=r"X: unsupported dtype complex128"):
        hd.spectral_matrix(Xd.astype(complex), y, client=client)


def test_non_finite_rows_are_numbered_in_the_whole_data(client, data, tmp_path):
    X, y = data
    Xb = X.copy()
    Xb[1234, 3] = np.nan
    with pytest.raises(ValueError, match=r"X: non-finite value in row 1234;"):
        hd.spectral_matrix(da.from_array(Xb, chunks=(500, -1)), y, client=client)
    yb = y.copy()
    yb[777] = np.inf
    with pytest.raises(ValueError, match=r"y: non-finite value at row 777;"):
        hd.spectral_matrix(da.from_array(X, chunks=(500, -1)), yb, client=client)
    np.save(tmp_path / "bad.npy", Xb[1000:])
    with pytest.raises(ValueError, match=r"X: non-finite value in row 234; .*\(source\[0\], '.*bad.npy'"):
        hd.spectral_matrix([str(tmp_path / "bad.npy")], y[1000:], client=client, partition_size=100)


def test_missing_or_mismatched_shard(client, shards, tmp_path):
    xs, ys = shards
    with pytest.raises(FileNotFoundError, match=r"source\[1\]: no such file '.*nowhere.npy' on the workers"):
        hd.spectral_matrix([xs[0], str(tmp_path / "nowhere.npy"), xs[2]], ys, client=client)
    np.save(tmp_path / "narrow.npy", np.ones((10, 11)))
    with pytest.raises(ValueError, match=r"source\[1\]: '.*narrow.npy' has 11 columns but source\[0\] has 12"):
        hd.spectral_matrix([xs[0], str(tmp_path / "narrow.npy")], [ys[0], ys[1]], client=client)
    with pytest.raises(ValueError, match=r"y\[2\]: '.*y1.npy' holds 1100 labels but source\[2\] has 700 rows"):
        hd.spectral_matrix(xs, [ys[0], ys[1], ys[1]], client=client)
    with pytest.raises(ValueError, match=r"y: a list of labels must hold one .npy path per shard \(3\), got 2"):
        hd.spectral_matrix(xs, ys[:2], client=client)


def test_closed_or_missing_client(cluster):
    c = distributed.Client(cluster)
    c.close()
    with pytest.raises(ValueError, match=r"client: the client is closed, not running; pass an open"):
        hd.spectral_matrix(MODEL, n=100, client=c)
    with pytest.raises(TypeError, match=r"client: expected a dask.distributed.Client, got str"):
        hd.spectral_matrix(MODEL, n=100, client="tcp://127.0.0.1:8786")


def test_model_and_option_errors(client):
    with pytest.raises(ValueError, match=r"n: required when the source is an HMIModel"):
        hd.spectral_matrix(MODEL, client=client)
    with pytest.raises(ValueError, match=r"y: must be None when the source is an HMIModel"):
        hd.spectral_matrix(MODEL, np.ones(10), n=10, client=client)
    with pytest.raises(ValueError, match=r"preprocess: a cluster ships accumulator states, which hold only a built-in"):
        hd.spectral_matrix(MODEL, n=100, client=client, preprocess=np.tanh)
    with pytest.raises(ValueError, match=r"partition_size: must be an integer >= 1, got 0"):
        hd.spectral_matrix(MODEL, n=100, client=client, partition_size=0)
    with pytest.raises(ValueError, match=r"checkpoints: the last one \(200\) is beyond the 100 rows"):
        hd.spectral_matrix(MODEL, n=100, client=client, checkpoints=[50, 200])
    with pytest.raises(TypeError, match=r"source: unsupported type ndarray on a cluster"):
        hd.spectral_matrix(np.ones((10, 3)), np.ones(10), client=client)


# ------------------------------------------------------------------ a worker killed mid-reduction
def test_worker_killed_inside_a_task_costs_a_retry(client, data, tmp_path):
    """One chunk's loader kills its own worker process the first time it runs (os.kill of its pid)."""
    X, y = data
    marker = str(tmp_path / "killed-once")

    def load_or_die(lo, hi):
        import os
        import signal

        if lo == 1500 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return X[lo:hi]

    pieces = [da.from_delayed(dask.delayed(load_or_die, pure=True)(lo, lo + 250), shape=(250, 12), dtype=X.dtype)
              for lo in range(0, 2500, 250)]
    before = set(client.run(os.getpid).values())
    T = hd.spectral_matrix(da.concatenate(pieces, axis=0), y, client=client)
    assert os.path.exists(marker)
    client.wait_for_workers(2, timeout=120)
    assert set(client.run(os.getpid).values()) != before  # the nanny started a new worker process
    assert rel_err(T, spectral_matrix(X, y)) < 1e-12


def test_worker_killed_by_pid_during_a_model_reduction(client):
    """The test kills a worker process (SIGKILL) while the reduction's tasks are running."""
    model = HMIModel(d=120, m_star=3, gamma=1.0, seed=9)
    n = 60_000
    ref = spectral_matrix(model, n=n)
    client.wait_for_workers(2, timeout=120)
    pids = client.run(os.getpid)
    steps = hd.iter_accumulate(model, n=n, checkpoints=[n // 2, n], client=client, partition_size=1500)

    parts = n // 1500

    def finished_parts(dask_scheduler):  # partitions run so far (finished ones are merged and forgotten)
        pending = sum(ts.state in ("released", "waiting", "queued", "processing", "no-worker")
                      for k, ts in dask_scheduler.tasks.items() if "_model_part" in str(k))
        return parts - pending if dask_scheduler.tasks else 0

    deadline = time.monotonic() + 120
    done = 0
    while done < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        done = client.run_on_scheduler(finished_parts)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    assert 2 <= done < parts  # killed in the middle of the pass
    got = list(steps)
    assert [(n_j, acc.n) for n_j, acc in got] == [(n // 2, n // 2), (n, n)]
    assert rel_err(got[-1][1].finalize(), ref) < 1e-12
    client.wait_for_workers(2, timeout=120)
