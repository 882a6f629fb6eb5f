"""Where the time of "stream + build T" goes, float64 against float32 (docs/model.md, "Precision").

Streams a model's latent rows into a ``SpectralAccumulator`` (what ``accumulate(model, ...)``
and the experiments do) and times each stage by wrapping it: generation
(``fill_normals``), labels, packing, the rank-k updates (``dsyrk``/``ssyrk``)
and, for float32, adding each block's product to the float64 sum. Stages
the engine no longer has are skipped.

Usage::

    python -m benchmarks.profile_stream_dtype [d] [m_star] [alpha] [threads]

With one thread the CPU time of each stage is reported (robust on a shared
machine); with more, wall-clock time (CPU time would count spinning threads).
"""

from __future__ import annotations

import collections
import sys
import time

import numpy as np

import hmi_fast
import hmi_fast.accumulator as A
import hmi_fast.model as M
from hmi_fast import HMIModel, _config
from hmi_fast.accumulator import SpectralAccumulator


def main(d=500, m_star=10, alpha=400.0, threads=1, reps=3):
    clock = time.process_time if threads == 1 else time.perf_counter
    spent = collections.Counter()

    def wrap(mod, name, key):
        f = getattr(mod, name, None)
        if f is None:
            return

        def timed(*a, **k):
            t0 = clock()
            try:
                return f(*a, **k)
            finally:
                spent[key] += clock() - t0

        setattr(mod, name, timed)

    wrap(M, "fill_normals", "generate rows (fill_normals)")
    wrap(M, "combine", "labels")
    wrap(A, "_pack_rows", "pack (scale, split by sign)")
    wrap(A, "_add_upper", "add float32 block product to the sum")
    wrap(A.blas, "dsyrk", "rank-k updates (syrk)")
    wrap(A.blas, "ssyrk", "rank-k updates (syrk)")
    model = HMIModel(d, m_star, 1.3, link="he2_he4", seed=0)
    n = int(alpha * d)
    best = {}
    with hmi_fast.threads(threads):
        for dt in (np.float64, np.float32):  # compile outside the timing
            _run(HMIModel(8, 1, 1.0), 64, dt)
        for _ in range(reps):
            for dt in (np.float64, np.float32):
                spent.clear()
                t0 = clock()
                _run(model, n, dt)
                spent["total"] = clock() - t0
                name = np.dtype(dt).name
                if name not in best or spent["total"] < best[name]["total"]:
                    best[name] = dict(spent)
    blas = _config.blas_info()
    print(f"d={d}, m*={m_star}, n={n:,} (alpha={alpha:g}), threads={threads}, "
          f"{'CPU' if threads == 1 else 'wall'} seconds, best of {reps}; BLAS "
          + ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}" for b in blas))
    keys = [k for k in best["float64"] if k != "total"] + [k for k in best["float32"] if k not in best["float64"]]
    print("| stage | float64 | float32 | ratio |\n|---|---|---|---|")
    for k in keys + ["total"]:
        a, b = best["float64"].get(k, 0.0), best["float32"].get(k, 0.0)
        print(f"| {k} | {a:.3f} | {b:.3f} | {a / b:.2f} |" if a and b else f"| {k} | {a:.3f} | {b:.3f} | |")


def _run(model, n, dtype):
    acc = SpectralAccumulator(model.d, dtype=dtype)
    bs = acc.block_size
    buf = np.empty((min(bs, n), model.d), dtype=dtype)
    for lo in range(0, n, bs):
        hi = min(n, lo + bs)
        G, y = model.latent_rows(lo, hi, out=buf[: hi - lo])
        acc.update(G, y)
    return model.rotate(acc.finalize())


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    kw = dict(zip(("d", "m_star", "alpha", "threads"), args))
    main(**{k: (int(v) if k != "alpha" else v) for k, v in kw.items()})
