"""Readout normal equations on streamed feature blocks (p = 200): hmi_fast against the floor and NumPy.

Same feature blocks, same run:
- ``hmi_fast``: :class:`hmi_fast.ridge.NormalEquations` — per block one fused
  pack ``[f − c, 1, y − c_y]`` and one dsyrk of width p + 2 (FᵀF, Fᵀy, Σf,
  Σy, yᵀy and n at once); memory O(block · p + p²);
- ``dsyrk-floor``: a bare dsyrk on the same blocks (FᵀF only; the BLAS floor);
- ``numpy-inmemory``: ``F.T @ F`` and ``F.T @ y`` on the whole F held in
  memory (n · p · 8 bytes: 1.6 GB at n = 10⁶), what a user would otherwise write.

The streamed variants cycle over a pool of distinct blocks, so that n can
exceed memory and the timing is the accumulation alone. ``extra_info`` holds
the peak memory (tracemalloc) and, for hmi_fast, the ratio to the floor;
``test_readout_peak_rss`` measures the resident-set peak of a whole
streamed fit in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.linalg import blas

from hmi_fast import _config
from hmi_fast.ridge import NormalEquations

from .conftest import FULL

N = 1_000_000 if FULL else 8192
P = 200
BS = 4096  # rows per block, fixed: the benchmark pre-generates 8 blocks of this size
POOL = 8
_TIMES: dict = {}


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    blocks = [np.maximum(rng.standard_normal((BS, P)), 0.0) for _ in range(POOL)]  # relu-like features
    ys = [rng.standard_normal(BS) for _ in range(POOL)]
    return blocks, ys


def _stream(blocks, ys, n):
    i = 0
    for lo in range(0, n, BS):
        b = min(BS, n - lo)
        yield blocks[i % POOL][:b], ys[i % POOL][:b]
        i += 1


def run_hmi_fast(blocks, ys, n):
    neq = NormalEquations(P, block_size=BS)
    for F, y in _stream(blocks, ys, n):
        neq.update(F, y)
    return neq.solve("gcv")


def run_floor(blocks, ys, n):
    C = np.zeros((P, P), order="F")
    for F, _ in _stream(blocks, ys, n):
        blas.dsyrk(1.0, F.T, beta=1.0, c=C, trans=0, lower=0, overwrite_c=1)
    return C


def run_numpy(F, y):
    return F.T @ F, F.T @ y


@pytest.mark.parametrize("impl", ["dsyrk-floor", "hmi_fast", "numpy-inmemory"])
def test_readout_normal_equations(benchmark, record_peak, pool, impl):
    blocks, ys = pool
    benchmark.group = f"readout|n={N},p={P}"
    if impl == "hmi_fast":
        func, args = run_hmi_fast, (blocks, ys, N)
    elif impl == "dsyrk-floor":
        func, args = run_floor, (blocks, ys, N)
    else:
        F = np.concatenate([b for b, _ in _stream(blocks, ys, N)])
        y = np.concatenate([v for _, v in _stream(blocks, ys, N)])
        func, args = run_numpy, (F, y)
    if impl == "numpy-inmemory":  # warm-up: compilation and first touch stay out of the timing
        func(*args)
    else:
        func(blocks, ys, 2 * BS)
    record_peak(func, *args)
    if impl == "numpy-inmemory":
        benchmark.extra_info["input_MB"] = round(args[0].nbytes / 2**20, 1)
    benchmark.extra_info["blas"] = [b["internal_api"] + " " + str(b["architecture"]) for b in _config.blas_info()]
    benchmark.pedantic(func, args=args, rounds=3 if FULL else 1, iterations=1)
    if benchmark.stats is not None:
        _TIMES[impl] = benchmark.stats.stats.median
        if impl != "dsyrk-floor" and "dsyrk-floor" in _TIMES:
            benchmark.extra_info["ratio_to_floor"] = round(_TIMES[impl] / _TIMES["dsyrk-floor"], 3)


def test_streamed_results_agree(pool):
    """The benchmarked stream gives the in-memory normal equations (checked at the default size)."""
    blocks, ys = pool
    n = 3 * BS + 17
    fit = run_hmi_fast(blocks, ys, n)
    F = np.concatenate([b for b, _ in _stream(blocks, ys, n)])
    y = np.concatenate([v for _, v in _stream(blocks, ys, n)])
    Fc = F - F.mean(0)
    coef = np.linalg.solve(Fc.T @ Fc / n + fit.lam * np.eye(P), Fc.T @ (y - y.mean()) / n)
    assert np.allclose(fit.coef, coef, rtol=1e-8, atol=1e-10)


RSS_SCRIPT = """
import json, numpy as np
from hmi_fast.ridge import NormalEquations

def hwm():  # VmHWM: this process's resident peak (ru_maxrss can carry the forking parent's peak)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

P, BS, N = {p}, {bs}, {n}
rng = np.random.default_rng(0)
blocks = [np.maximum(rng.standard_normal((BS, P)), 0.0) for _ in range(8)]
ys = [rng.standard_normal(BS) for _ in range(8)]
before = hwm()
neq = NormalEquations(P, block_size=BS)
for i, lo in enumerate(range(0, N, BS)):
    b = min(BS, N - lo)
    neq.update(blocks[i % 8][:b], ys[i % 8][:b])
neq.solve("gcv")
after = hwm()
print(json.dumps({{"before_MB": before, "after_MB": after}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc/self/status")
def test_readout_peak_rss(benchmark):
    """Peak resident memory (VmHWM) of fresh processes streaming 2 blocks and N rows through the readout.

    The process's absolute peak is mostly its imports (NumPy, SciPy, Numba, scikit-learn: about 200 MB,
    machine-dependent); what the readout promises is a peak that does not grow with n. The two runs
    differ by ``(n_large - n_small) * p * 8`` bytes of streamed rows; their peaks must not.
    """
    n_small, n_large = 2 * BS, max(N, 16 * BS)
    benchmark.group = f"readout-rss|n={n_large},p={P}"

    def peak(n):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT.format(p=P, bs=BS, n=n)], check=True,
                             capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    small = peak(n_small)
    res = benchmark.pedantic(peak, args=(n_large,), rounds=1, iterations=1)
    streamed_mb = (n_large - n_small) * P * 8 / 2**20
    growth = res["after_MB"] - small["after_MB"]
    benchmark.extra_info.update({k: round(v, 1) for k, v in res.items()})
    benchmark.extra_info.update(streamed_extra_MB=round(streamed_mb, 1), peak_growth_MB=round(growth, 1))
    assert growth < 0.1 * streamed_mb, (small, res, streamed_mb)
