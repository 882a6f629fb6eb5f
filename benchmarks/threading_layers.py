"""Which numba threading setup lets BLAS keep both cores after a numba kernel?

Runs the same workload (stream T from a model: a numba generate/pack kernel,
then a BLAS syrk, per block) in fresh processes under each setting and
prints the median times and their ratio to the package default::

    python -m benchmarks.threading_layers [--n N] [--d D] [--repeat R]

Settings: the package default (OMP_WAIT_POLICY=PASSIVE set by hmi_fast),
OMP_WAIT_POLICY=ACTIVE (OpenMP's busy-wait), and numba's workqueue layer.
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
n, d, repeat = map(int, sys.argv[1:4])
model = hmi_fast.HMIModel(d, 20, 1.3, seed=0)
hmi_fast.spectral_matrix(model, n=4096)
ts = []
for _ in range(repeat):
    t = time.perf_counter(); hmi_fast.spectral_matrix(model, n=n); ts.append(time.perf_counter() - t)
info = describe()
print(json.dumps({"median_s": float(np.median(ts)), "layer": info["numba_threading_layer"],
                  "policy": info["omp_wait_policy"], "blas": info["blas"][0]["architecture"]}))
"""

SETTINGS = {
    "default (PASSIVE)": {},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}


def run(n: int, d: int, repeat: int) -> dict:
    out = {}
    for name, extra in SETTINGS.items():
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("NUMBA_THREADING_LAYER", None)
        env.update(extra)
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(d), str(repeat)], env=env, capture_output=True, text=True, check=True
        )
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    base = out["default (PASSIVE)"]["median_s"]
    for v in out.values():
        v["ratio_to_default"] = v["median_s"] / base
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    res = run(args.n, args.d, args.repeat)
    for name, v in res.items():
        print(f"{name:26s} median {v['median_s']:.3f} s  ratio {v['ratio_to_default']:.2f}  "
              f"(layer {v['layer']}, policy {v['policy']}, BLAS {v['blas']})")


if __name__ == "__main__":
    main()
