"""Which numba threading setup serves both the engine and the eigensolver?

Two workloads pull opposite ways. The engine (stream T from a model: a numba
generate/pack kernel, then a BLAS syrk, per block) wants numba's workers
off the cores when the BLAS starts; the eigensolver (``topk_eigh`` on a
dense T, a numba product every few tenths of a millisecond) wants them
awake. Each setting runs both in a fresh process and this prints the
medians and their ratios to the package default::

    python -m benchmarks.threading_layers [--n N] [--d D] [--d-eig D] [--repeat R]

Settings: the package default (``GOMP_SPINCOUNT=10000``, set by
``import hmi_fast``), ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once),
``OMP_WAIT_POLICY=ACTIVE`` (OpenMP's busy-wait), a longer spin, and numba's
workqueue layer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import hmi_fast
from hmi_fast._config import describe
n, d, d_eig, repeat = map(int, sys.argv[1:5])
model = hmi_fast.HMIModel(d, 20, 1.3, seed=0)
hmi_fast.spectral_matrix(model, n=4096)
ts = []
for _ in range(repeat):
    t = time.perf_counter(); hmi_fast.spectral_matrix(model, n=n); ts.append(time.perf_counter() - t)
T = hmi_fast.spectral_matrix(hmi_fast.HMIModel(d_eig, 20, 1.3, seed=0), n=20 * d_eig)
hmi_fast.topk_eigh(T, 20, method="lanczos")
te = []
for _ in range(3 * repeat):
    t = time.perf_counter(); hmi_fast.topk_eigh(T, 20, method="lanczos"); te.append(time.perf_counter() - t)
info = describe()
print(json.dumps({"engine_s": float(np.median(ts)), "eigen_s": float(np.median(te)),
                  "layer": info["numba_threading_layer"], "policy": info["omp_wait_policy"],
                  "spin": info["gomp_spincount"], "blas": info["blas"][0]["architecture"]}))
"""

SETTINGS = {
    "default (GOMP_SPINCOUNT=10000)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "GOMP_SPINCOUNT=60000": {"GOMP_SPINCOUNT": "60000"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue", "OMP_WAIT_POLICY": "PASSIVE"},
}


def run(n: int, d: int, d_eig: int, repeat: int) -> dict:
    out = {}
    for name, extra in SETTINGS.items():
        env = dict(os.environ)
        for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER"):
            env.pop(key, None)
        env.update(extra)
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(d), str(d_eig), str(repeat)],
            env=env, capture_output=True, text=True, check=True,
        )
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    base = out["default (GOMP_SPINCOUNT=10000)"]
    for v in out.values():
        v["engine_ratio"] = v["engine_s"] / base["engine_s"]
        v["eigen_ratio"] = v["eigen_s"] / base["eigen_s"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--d-eig", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    res = run(args.n, args.d, args.d_eig, args.repeat)
    for name, v in res.items():
        print(f"{name:32s} engine {v['engine_s']:.3f} s ({v['engine_ratio']:.2f})  "
              f"eigen {1e3 * v['eigen_s']:.1f} ms ({v['eigen_ratio']:.2f})  "
              f"(layer {v['layer']}, policy {v['policy']}, spin {v['spin']}, BLAS {v['blas']})")


if __name__ == "__main__":
    main()
