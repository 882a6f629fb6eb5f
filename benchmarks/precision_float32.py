"""Do float32 block products change what the experiments report? (docs/model.md, "Precision").

For generated data, T is built twice from the same rows in one pass: with
float64 block products (``dsyrk``) and with float32 block products
(``ssyrk``, each block's product added to a float64 sum). The float32 rows
are the float64 rows rounded (exactly what ``HMIModel.stream(dtype=float32)``
yields). At each checkpoint α both matrices go through the experiments'
analysis (``hmi_fast.experiments.analyse``: top eigenpairs at both ends, gap
and edge rules, MSE_γ), and the differences in k̂ and MSE_γ are set beside the
spread of MSE_γ across seeds (the sampling noise the figures average over).

Usage::

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.precision_float32 OUT.json [--quick]
    python -m benchmarks.precision_float32 --table OUT.json      # the table of a saved run

Settings: the Figure-2 model (d = 1000, m* = 20, γ = 1.3, he2_he4,
α = 5, 164, 611, 1638) and the Figure-1 models (d = 1000, m* = 10,
γ = 1.3, links he2, he2_he4, abs, relu, α = 10, 50, 200, 1000), τ = y/(1+|y|).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from hmi_fast import HMIModel, _config
from hmi_fast.accumulator import SpectralAccumulator
from hmi_fast.experiments import analyse

SETTINGS = {
    "figure2": dict(d=1000, m_star=20, gamma=1.3, links=("he2_he4",), alphas=(5.0, 164.0, 611.0, 1638.0)),
    "figure1": dict(d=1000, m_star=10, gamma=1.3, links=("he2", "he2_he4", "abs", "relu"),
                    alphas=(10.0, 50.0, 200.0, 1000.0)),
}
QUICK = {
    "figure2": dict(d=200, m_star=20, gamma=1.3, links=("he2_he4",), alphas=(5.0, 164.0)),
    "figure1": dict(d=200, m_star=10, gamma=1.3, links=("he2", "relu"), alphas=(10.0, 200.0)),
}


def one_seed(d, m_star, gamma, link, seed, alphas):
    """Both precisions from the same rows; one record per checkpoint."""
    model = HMIModel(d, m_star, gamma, link=link, seed=seed)
    per_end = max(1, min(m_star + 10, d // 2))
    cps = sorted({int(round(a * d)) for a in alphas})
    acc64 = SpectralAccumulator(d, dtype=np.float64)
    acc32 = SpectralAccumulator(d, dtype=np.float32)
    bs = acc64.block_size
    buf = np.empty((bs, d))
    buf32 = np.empty((bs, d), dtype=np.float32)
    out, row = [], 0
    for n_j in cps:
        while row < n_j:
            hi = min(n_j, row + bs)
            G, y = model.latent_rows(row, hi, out=buf[: hi - row])
            G32 = buf32[: hi - row]
            G32[...] = G  # the float32 stream's rows: the float64 draws rounded
            acc64.update(G, y)
            acc32.update(G32, y)
            row = hi
        T64 = model.rotate(acc64.finalize())
        T32 = model.rotate(acc32.finalize())
        r64 = analyse(T64, acc64, model, per_end)
        r32 = analyse(T32, acc32, model, per_end)
        rec = dict(link=link, seed=seed, alpha=n_j / d, n=n_j,
                   T_rel_err=float(np.abs(T32 - T64).max() / np.abs(T64).max()),
                   sampling_noise=float(np.sqrt(d / n_j)))
        for key in ("k_hat", "k_hat_edge", "mse_gamma", "mse_gamma_edge", "n_recovered"):
            rec[key + "_64"] = r64[key]
            rec[key + "_32"] = r32[key]
        rec["eig_max_abs_diff"] = float(np.max(np.abs(np.asarray(r64["eigenvalues"]) - r32["eigenvalues"])))
        out.append(rec)
    return out


def summarise(records):
    """Per (setting, link, α): k̂ agreement, max |ΔMSE_γ| and the across-seed std of MSE_γ (float64)."""
    rows = []
    keys = sorted({(r["setting"], r["link"], r["alpha"]) for r in records}, reverse=False)
    for setting, link, alpha in keys:
        rs = [r for r in records if r["setting"] == setting and r["link"] == link and r["alpha"] == alpha]
        mse64 = np.array([r["mse_gamma_64"] for r in rs])
        dmse = np.array([abs(r["mse_gamma_32"] - r["mse_gamma_64"]) for r in rs])
        rows.append(dict(
            setting=setting, link=link, alpha=alpha, seeds=len(rs),
            k_hat_same=sum(r["k_hat_32"] == r["k_hat_64"] for r in rs),
            k_hat_edge_same=sum(r["k_hat_edge_32"] == r["k_hat_edge_64"] for r in rs),
            mse_mean=float(mse64.mean()), mse_sd=float(mse64.std(ddof=1)) if len(rs) > 1 else float("nan"),
            max_dmse=float(dmse.max()),
            max_T_rel_err=max(r["T_rel_err"] for r in rs),
            max_eig_diff=max(r["eig_max_abs_diff"] for r in rs),
            sampling_noise=rs[0]["sampling_noise"],
        ))
    return rows


def table(summary) -> str:
    lines = ["| setting | link | α | seeds | k̂ same (gap) | k̂ same (edge) | MSE_γ mean | MSE_γ sd (seeds) "
             "| max abs ΔMSE_γ | max rel ΔT | √(d/n) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['setting']} | {r['link']} | {r['alpha']:g} | {r['seeds']} | {r['k_hat_same']}/{r['seeds']} | "
                     f"{r['k_hat_edge_same']}/{r['seeds']} | {r['mse_mean']:.4f} | {r['mse_sd']:.4f} | "
                     f"{r['max_dmse']:.1e} | {r['max_T_rel_err']:.1e} | {r['sampling_noise']:.3f} |")
    return "\n".join(lines)


def main(argv):
    if argv and argv[0] == "--table":  # print the table of a saved run
        with open(argv[1]) as f:
            print(table(summarise(json.load(f)["records"])))
        return
    path = argv[0] if argv else "precision_float32.json"
    quick = "--quick" in argv
    seeds = range(2) if quick else range(4)
    settings = QUICK if quick else SETTINGS
    records, t0 = [], time.perf_counter()
    for name, s in settings.items():
        for link in s["links"]:
            for seed in seeds:
                for r in one_seed(s["d"], s["m_star"], s["gamma"], link, seed, s["alphas"]):
                    r["setting"] = name
                    records.append(r)
                print(f"{name} {link} seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)
    result = dict(records=records, summary=summarise(records), machine=_config.describe(),
                  seconds=time.perf_counter() - t0)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result["summary"]))


if __name__ == "__main__":
    main(sys.argv[1:])
