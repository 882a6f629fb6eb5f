"""Threading setup and start-up cost, each measured in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from . import threading_layers
from .conftest import FULL

FIRST_CALL = (
    "import numpy as np, hmi_fast; m = hmi_fast.HMIModel(50, 3, 1.3); "
    "X, y = m.sample(500); hmi_fast.spectral_matrix(X, y); hmi_fast.spectral_matrix(m, n=500)"
)


def _run(env):
    subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True)


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_import_and_first_call(benchmark, tmp_path, cache):
    """Fresh process: import plus first calls, with numba's on-disk cache empty (cold) or filled (warm)."""
    benchmark.group = "startup|import+first call"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    if cache == "warm":
        _run(env)  # fills the cache

        benchmark.pedantic(_run, args=(env,), rounds=3 if FULL else 1, iterations=1)
    else:
        counter = iter(range(100))

        def setup():
            return (dict(env, NUMBA_CACHE_DIR=str(tmp_path / f"cold-{next(counter)}")),), {}

        benchmark.pedantic(_run, setup=setup, rounds=2 if FULL else 1, iterations=1)


def test_threading_layers(benchmark):
    """Medians of the streaming and the eigensolver workloads under each numba threading setting.

    Ratios to the package default in extra_info (``engine:<setting>``, ``eigen:<setting>``).
    """
    benchmark.group = "threading"
    n, d, d_eig = (400_000, 1000, 2000) if FULL else (4096, 64, 300)
    res = benchmark.pedantic(threading_layers.run, args=(n, d, d_eig, 5 if FULL else 1), rounds=1, iterations=1)
    for name, v in res.items():
        benchmark.extra_info[f"engine:{name}"] = round(v["engine_ratio"], 3)
        benchmark.extra_info[f"eigen:{name}"] = round(v["eigen_ratio"], 3)
        assert v["engine_s"] > 0 and v["eigen_s"] > 0


PEAK_RSS = (
    "import resource, sys, hmi_fast; n, d = int(sys.argv[1]), int(sys.argv[2]); "
    "m = hmi_fast.HMIModel(d, 20, 1.3, link='he2_he4', seed=0); hmi_fast.spectral_matrix(m, n=n); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)


def peak_rss_mb(n, d, env=None):
    import os

    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(n), str(d)], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def test_stream_peak_rss(benchmark):
    """Peak resident memory of a fresh process streaming T from a model (Figure 2 at α = 1638).

    Memory is bounded by the block, not by n: eight times the rows (with small blocks, so that they would
    show: the rows themselves are 8·n·d bytes) must not raise the peak by more than a few MB.
    """
    benchmark.group = "memory|stream from model"
    n, d = (1_638_000, 1000) if FULL else (8192, 200)
    peak_mb = benchmark.pedantic(peak_rss_mb, args=(n, d), rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_MB"] = round(peak_mb, 1)
    small = {"HMI_FAST_BLOCK_SIZE": "512"}
    few, many = peak_rss_mb(4096, 200, small), peak_rss_mb(8 * 4096, 200, small)
    benchmark.extra_info["peak_rss_growth_MB_for_8x_rows"] = round(many - few, 1)
    assert many - few < 0.2 * (8 * 4096 * 200 * 8) / 2**20  # far below the 52 MB the rows would take
