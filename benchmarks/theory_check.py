"""The exact finite-α theory against simulation: the tables of docs/theory.md §9.

Simulates T = (1/n) Σ τ(y_i) x_i x_iᵀ in the latent frame of the model (where
w_k is the k-th coordinate, so overlaps are read off the eigenvectors), at
several α from one pass per seed, and keeps per (seed, α): the whole
spectrum's ends, the overlaps of the top eigenvectors with each w_k, and the
recovery q_k of the spectral estimator with the exact-bulk selection rules
(``select_components(..., weights=τ(y))``).

    nice python -m benchmarks.theory_check run --setting issue --seeds 16 --out theory_check
    python -m benchmarks.theory_check report --out theory_check

``run`` appends to ``<out>/<setting>.jsonl`` (one line per seed, resumable);
``report`` prints the tables against ``hmi_fast.theory``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from hmi_fast import HMIModel, SpectralAccumulator
from hmi_fast.preprocess import resolve_preprocess
from hmi_fast.selection import select_components

SETTINGS = {
    # the setting of the issue: d=400, m*=8, γ=1.2, he2_he4, saturating
    "issue": dict(d=400, m_star=8, gamma=1.2, link="he2_he4",
                  alphas=[2, 3, 4, 5, 7, 10, 14, 20, 28, 40, 57, 80, 113, 160, 226, 320]),
    # Figure 1's model at d = 400 (m* = 10, γ = 1.3) for each link, α from 2 to 2000
    "fig1_he2_he4": dict(d=400, m_star=10, gamma=1.3, link="he2_he4", alphas=list(np.geomspace(2, 2000, 13))),
    "fig1_he2": dict(d=400, m_star=10, gamma=1.3, link="he2", alphas=list(np.geomspace(2, 2000, 13))),
    "fig1_abs": dict(d=400, m_star=10, gamma=1.3, link="abs", alphas=list(np.geomspace(2, 2000, 13))),
    "fig1_relu": dict(d=400, m_star=10, gamma=1.3, link="relu", alphas=list(np.geomspace(2, 2000, 13))),
    # the setting on a fine grid of α (ratio 1.12): where q_k crosses 1/2
    "crossings": dict(d=400, m_star=8, gamma=1.2, link="he2_he4", alphas=list(np.geomspace(2, 400, 47))),
    # Figure 2's model (d = 1000, m* = 20): the selection rules
    "fig2": dict(d=1000, m_star=20, gamma=1.3, link="he2_he4", alphas=[3, 5, 10, 20, 164]),
}
KEEP_TOP = 30  # eigenpairs kept per end


def simulate(setting: dict, seed: int, preprocess="saturating") -> dict:
    d, m = setting["d"], setting["m_star"]
    model = HMIModel(d, m, setting["gamma"], link=setting["link"], seed=seed)
    tau = resolve_preprocess(preprocess)
    ns = sorted({int(round(a * d)) for a in setting["alphas"]})
    acc = SpectralAccumulator(d, preprocess=preprocess, dtype=np.float32 if ns[-1] > 200_000 else np.float64)
    weights = np.empty(ns[-1])
    out = {"seed": seed, "rows": []}
    lo = 0
    for n in ns:
        while lo < n:
            hi = min(n, lo + acc.block_size)
            G, y = model.latent_rows(lo, hi)
            acc.update(G, y)
            weights[lo:hi] = tau(y)
            lo = hi
        T = acc.finalize()  # latent frame: w_k = e_k
        with threadpool_limits(1):  # a small eigh is 10-50x slower when its BLAS threads contend with others
            ev, V = np.linalg.eigh(T)
        ov = V[:m, :] ** 2  # (m, d): overlap of eigenvector j with w_k
        row = {"n": n, "alpha": n / d, "ev_top": ev[::-1][:KEEP_TOP].tolist(), "ev_bottom": ev[:KEEP_TOP].tolist(),
               "ov_top": ov[:, ::-1][:, :KEEP_TOP].T.tolist()}
        for rule in ("gap", "edge"):
            s = select_components(ev, d=d, n=n, rule=rule, which="BE", weights=weights[:n])
            q = ov[:, s.index].sum(axis=1)
            row[f"k_{rule}"] = int(s.n_components)
            row[f"q_{rule}"] = q.tolist()
            row[f"mse_{rule}"] = float(np.sum(model.a**2 * (1 - q)))
        s = select_components(ev, d=d, n=n, rule="gap", which="BE", tau_mean=float(weights[:n].mean()),
                              tau_sq_mean=float(np.mean(weights[:n] ** 2)))
        row["k_gap_semicircle"] = int(s.n_components)
        row["k_edge_semicircle"] = int(s.n_components_edge)
        row["weight_mean"] = float(weights[:n].mean())
        out["rows"].append(row)
    return out


def run(args):
    setting = SETTINGS[args.setting]
    path = Path(args.out) / f"{args.setting}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if path.exists():
        done = {json.loads(line)["seed"] for line in path.read_text().splitlines() if line.strip()}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if seed in done:
            continue
        t0 = time.perf_counter()
        res = simulate(setting, seed)
        with open(path, "a") as f:
            f.write(json.dumps(res) + "\n")
        print(f"{args.setting} seed {seed}: {time.perf_counter() - t0:.1f} s", flush=True)


def load(out, name):
    path = Path(out) / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    r.add_argument("--seeds", type=int, default=16)
    r.add_argument("--first-seed", type=int, default=0)
    r.add_argument("--out", default="theory_check")
    r.set_defaults(func=run)
    rep = sub.add_parser("report")
    rep.add_argument("--out", default="theory_check")
    rep.set_defaults(func=lambda a: __import__("benchmarks.theory_report", fromlist=["report"]).report(a.out))
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
