"""Benchmark configuration: record the BLAS kernel and threading next to every number.

Default sizes are small so that the test run (``--benchmark-disable``) only
checks that each benchmark still works; ``HMI_FAST_BENCH_FULL=1`` selects the
sizes quoted in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("HMI_FAST_BENCH_FULL") == "1"


def pytest_benchmark_update_machine_info(config, machine_info):
    import hmi_fast._config as cfg

    machine_info["hmi_fast"] = cfg.describe()


def tracemalloc_peak(func, *args, **kwargs):
    """Peak bytes allocated (through Python and NumPy) while ``func`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        func(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.fixture
def record_peak(benchmark):
    def record(func, *args, **kwargs):
        benchmark.extra_info["peak_MB"] = round(tracemalloc_peak(func, *args, **kwargs) / 2**20, 1)

    return record
