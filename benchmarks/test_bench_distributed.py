"""T on a Dask LocalCluster against the single-process engine on the same machine (docs/distributed.md).

- ``stream|...``: the paper's Figure-2 point (d=1000, n=1,638,000 rows from the
  model; ``HMI_FAST_BENCH_FULL=1``), 2 workers × 1 thread against the engine on
  2 threads (``extra_info``: the number of partitions).
- ``overhead|...``: what the cluster adds per task: an empty task's round trip,
  a d×d state sent to a worker and back, one merge of two states.
- ``partition|...``: one partition at the default size, computed here on one
  thread and as a one-partition reduction on the cluster.

Skipped where dask/distributed are not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import hmi_fast  # noqa: E402
from hmi_fast import HMIModel  # noqa: E402
from hmi_fast import distributed as hd  # noqa: E402

from .conftest import FULL  # noqa: E402

D, N = (1000, 1_638_000) if FULL else (100, 8192)
PART = hd.DEFAULT_PARTITION_ROWS if FULL else 1024
ROUNDS = 3 if FULL else 1
OPTIONS = {"preprocess": "saturating", "center": False, "moments": False, "dtype": "float64", "block_size": None}


@pytest.fixture(scope="module")
def client():
    hmi_fast.spectral_matrix(HMIModel(D, m_star=20, gamma=1.3, seed=0), n=300)  # compile once: workers load the cache
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as c:
            c.wait_for_workers(2)
            yield c


def fresh_models():
    """A new seed each round: the cluster cannot hand back a result it still holds (same work, new keys)."""
    seeds = iter(range(1, 10**6))
    return lambda: ((HMIModel(D, m_star=20, gamma=1.3, link="he2_he4", seed=next(seeds)),), {})


@pytest.fixture(scope="module")
def model():
    return HMIModel(D, m_star=20, gamma=1.3, link="he2_he4", seed=0)


@pytest.mark.parametrize("impl", ["engine-2-threads", "dask-2-workers-x-1-thread"])
def test_stream(benchmark, client, model, impl):
    """The whole reduction: T of n streamed rows."""
    benchmark.group = f"stream|d={D},n={N}"
    if impl.startswith("engine"):
        def func(model, n=N):
            with hmi_fast.threads(2):
                return hmi_fast.spectral_matrix(model, n=n)
    else:
        def func(model, n=N):
            return hd.spectral_matrix(model, n=n, client=client, partition_size=PART, threads=1)
    func(model, n=4 * PART)  # warm-up: imports and numba caches on every worker
    benchmark.extra_info["partitions"] = -(-N // PART) if impl.startswith("dask") else 1
    benchmark.pedantic(func, setup=fresh_models(), rounds=ROUNDS, iterations=1)


def _noop(i):
    return i


def _identity(x):
    return x


def test_overhead_empty_task(benchmark, client):
    """Scheduler round trip of an empty task (200 at a time): divide the time by 200."""
    benchmark.group = "overhead|per task"
    client.gather(client.map(_noop, range(200), pure=False))  # warm-up

    def func():
        return client.gather(client.map(_noop, range(200), pure=False))

    benchmark.extra_info["tasks"] = 200
    benchmark.pedantic(func, rounds=5 if FULL else 1, iterations=1)


@pytest.fixture(scope="module")
def states(model):
    params = hd._model_params(model)
    return hd._model_part(params, 0, 512, OPTIONS, 1), hd._model_part(params, 512, 1024, OPTIONS, 1)


def test_overhead_state_round_trip(benchmark, client, states):
    """An accumulator sent to a worker and back (each way: its state, 8·d² bytes, validated on arrival)."""
    a, _ = states
    benchmark.group = f"overhead|state d={D}"
    benchmark.extra_info["state_MB"] = round(sum(np.asarray(v).nbytes for v in a.state().values()) / 2**20, 2)

    def func():
        return client.submit(_identity, a, pure=False).result()

    func()
    benchmark.pedantic(func, rounds=5 if FULL else 1, iterations=1)


def test_overhead_merge(benchmark, states):
    """One merge task: a copy of the first accumulator plus the second."""
    a, b = states
    benchmark.group = f"overhead|state d={D}"
    hd._merge(a, b)
    benchmark.pedantic(hd._merge, args=(a, b), rounds=5 if FULL else 1, iterations=1)


@pytest.mark.parametrize("where", ["here-1-thread", "cluster"])
def test_partition(benchmark, client, model, where):
    """One partition of the default size (rows generated, weighted and accumulated on one thread)."""
    benchmark.group = f"partition|d={D},rows={PART}"
    if where == "cluster":
        def func(model):
            return hd.accumulate(model, n=PART, client=client, partition_size=PART, threads=1)
    else:
        def func(model):
            return hd._model_part(hd._model_params(model), 0, PART, OPTIONS, 1)
    func(model)
    benchmark.pedantic(func, setup=fresh_models(), rounds=ROUNDS, iterations=1)


CURVE_SEEDS = 8
CURVE_D = 500 if FULL else 40


@pytest.mark.parametrize("impl", ["workers-2-processes", "dask-local-2-workers"])
def test_learning_curve(benchmark, client, tmp_path_factory, impl):
    """A learning curve of 8 seeds: ``run_curve(workers=2)`` (a process pool) against ``run_curve(client=)`` on the
    LocalCluster of 2 workers × 1 thread (what ``--workers 2`` and ``--dask-local 2`` run); the tables must be the
    same, byte for byte."""
    from hmi_fast.experiments import CurveConfig, run_curve

    benchmark.group = f"curve|d={CURVE_D},{CURVE_SEEDS} seeds"
    alphas = (2.0, 5.0, 14.0, 37.0, 100.0, 270.0, 500.0) if FULL else (5.0, 20.0)
    rounds = iter(range(10**6))

    def setup():  # a fresh folder and fresh seeds each round: nothing is skipped, nothing cached
        r = next(rounds)
        cfg = CurveConfig(d=CURVE_D, m_star=10, gamma=1.3, alphas=alphas,
                          seeds=tuple(range(100 * r, 100 * r + CURVE_SEEDS)), max_components=20 if FULL else 5)
        return (cfg, tmp_path_factory.mktemp(f"{impl}-{r}")), {}

    def func(cfg, out):
        if impl.startswith("workers"):
            return run_curve(cfg, out, workers=2, threads=1, progress=False, announce=False)
        return run_curve(cfg, out, client=client, threads=1, progress=False, announce=False)

    benchmark.pedantic(func, setup=setup, rounds=ROUNDS, iterations=1)
    # the same seeds through the other path give the same bytes
    cfg, out = setup()[0]
    other = tmp_path_factory.mktemp("other")
    func(cfg, out)
    if impl.startswith("workers"):
        run_curve(cfg, other, client=client, threads=1, progress=False, announce=False)
    else:
        run_curve(cfg, other, workers=2, threads=1, progress=False, announce=False)
    assert (out / "curve.csv").read_bytes() == (other / "curve.csv").read_bytes()
