"""The model's sampler: blocks the caller owns against one reused buffer, and NumPy's generator.

Same rows, same run (``benchmark.group = "stream|n=…,d=…,dtype"``):
- ``owned``: ``model.stream(n, block_size)`` (the default: a new array per block);
- ``reuse_buffer``: ``model.stream(n, block_size, reuse_buffer=True)`` (one buffer, overwritten);
- ``latent``: ``model.latent_rows`` into one buffer (what the engine streams: no rotation x = Q g);
- ``numpy``: ``rng.standard_normal((b, d))`` per block, what a user would otherwise write
  (covariates only: no labels, not reproducible block by block).

``extra_info`` holds the ratio of each variant to ``reuse_buffer`` and the BLAS kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

from hmi_fast import HMIModel, _config

from .conftest import FULL

SIZES = [(100_000, 1000), (400_000, 200)] if FULL else [(2000, 50)]
BLOCK = 4096
_TIMES: dict = {}


def run_stream(model, n, dtype, reuse):
    s = 0.0
    for Xb, yb in model.stream(n, block_size=BLOCK, dtype=dtype, reuse_buffer=reuse):
        s += float(Xb[0, 0]) + float(yb[0])
    return s


def run_latent(model, n, dtype):
    buf = np.empty((BLOCK, model.d), dtype=dtype)
    s = 0.0
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        G, y = model.latent_rows(lo, hi, out=buf[: hi - lo])
        s += float(G[0, 0]) + float(y[0])
    return s


def run_numpy(rng, n, d, dtype):
    s = 0.0
    for lo in range(0, n, BLOCK):
        Xb = rng.standard_normal((min(BLOCK, n - lo), d), dtype=dtype)
        s += float(Xb[0, 0])
    return s


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"n={s[0]},d={s[1]}")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("impl", ["reuse_buffer", "owned", "latent", "numpy"])
def test_stream(benchmark, size, dtype, impl):
    n, d = size
    model = HMIModel(d, 20 if d >= 1000 else 10, 1.3, seed=0)
    benchmark.group = f"stream|n={n},d={d},{np.dtype(dtype).name}"
    warm = min(n, 2 * BLOCK)  # the warm-up keeps compilation out of the timing
    if impl == "numpy":
        func, args, first = run_numpy, (np.random.default_rng(0), n, d, dtype), (np.random.default_rng(1), warm, d, dtype)
    elif impl == "latent":
        func, args, first = run_latent, (model, n, dtype), (model, warm, dtype)
    else:
        reuse = impl == "reuse_buffer"
        func, args, first = run_stream, (model, n, dtype, reuse), (model, warm, dtype, reuse)
    func(*first)
    benchmark.extra_info["blas"] = [b["internal_api"] + " " + str(b["architecture"]) for b in _config.blas_info()]
    benchmark.pedantic(func, args=args, rounds=5 if FULL else 1, iterations=1)
    if benchmark.stats is not None:
        key = benchmark.group
        _TIMES.setdefault(key, {})[impl] = benchmark.stats.stats.median
        if impl != "reuse_buffer" and "reuse_buffer" in _TIMES[key]:
            benchmark.extra_info["ratio_to_reuse_buffer"] = round(_TIMES[key][impl] / _TIMES[key]["reuse_buffer"], 3)


def test_owned_and_reused_blocks_are_the_same_rows():
    """What the benchmark compares is the same data (checked at the default size)."""
    model = HMIModel(30, 3, 1.3, seed=0)
    a = np.concatenate([x for x, _ in model.stream(5000, block_size=BLOCK)])
    b = np.concatenate([x.copy() for x, _ in model.stream(5000, block_size=BLOCK, reuse_buffer=True)])
    assert np.array_equal(a, b)
