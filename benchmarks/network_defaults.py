"""Which defaults of ``SpectralTwoLayer`` learn every built-in link? (docs/network.md, "Defaults").

For each link, model seed and α, the spectral stage is fitted once per split
(``SpectralEstimator()`` defaults on the first ``round(split·n)`` rows) and every
readout candidate is then fitted on the same later rows with that first stage
(``spectral=components_``: identical rows and directions, only the readout
differs). The excess risk is measured on 20 000 test rows of the model's
stream and divided by Var f* on the same rows (``relative=True``).

Usage::

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.network_defaults OUT.json \
        [--splits 0.5,0.7,0.8] [--readouts hermite-4,hermite-2]
"""

from __future__ import annotations

import json
import time

import numpy as np

from hmi_fast import HMIModel
from hmi_fast.estimator import SpectralEstimator
from hmi_fast.network import SpectralTwoLayer, excess_risk

LINKS = ("he2", "he2_he4", "abs", "relu")
ALPHAS = (20.0, 80.0, 320.0)
SEEDS = range(5)
SPLITS = (0.5, 0.7, 0.8)
#: readout candidates: name -> SpectralTwoLayer parameters (spectral and split are set per run)
READOUTS = {
    "relu-ridge (old default)": dict(readout="ridge", activation="relu"),
    "hermite-2": dict(readout="hermite", hermite_degree=2),
    "hermite-3": dict(readout="hermite", hermite_degree=3),
    "hermite-4": dict(readout="hermite", hermite_degree=4),
    "hermite-6": dict(readout="hermite", hermite_degree=6),
    "relu-ridge n_hidden=100": dict(readout="ridge", activation="relu", n_hidden=100),
}


def run(d=200, m_star=4, gamma=1.0, n_test=20_000):
    """One record per (link, seed, α, split, readout)."""
    records = []
    for link in LINKS:
        for seed in SEEDS:
            model = HMIModel(d, m_star, gamma, link=link, seed=seed)
            for alpha in ALPHAS:
                n = int(alpha * d)
                for split in SPLITS:
                    n1 = int(np.floor(split * n + 0.5))
                    est = SpectralEstimator(random_state=seed).fit_stream(model, n=n1)
                    W = est.components_
                    nets = []
                    for name, params in READOUTS.items():
                        if W.shape[0] == 0:
                            nets.append(lambda X: np.zeros(len(X)))  # nothing found: the best constant is 0
                            continue
                        net = SpectralTwoLayer(spectral=W, split=split, random_state=seed, **params)
                        nets.append(net.fit_stream(model, n=n))
                    risks = excess_risk(model, nets, n_test=n_test, relative=True)
                    for name, r in zip(READOUTS, risks):
                        records.append(dict(link=link, seed=seed, alpha=alpha, split=split, readout=name,
                                            k_hat=int(W.shape[0]), risk=float(r)))
            print(f"{link} seed {seed} done", flush=True)
    return records


def table(records):
    lines = ["| readout | split | α | " + " | ".join(LINKS) + " |", "|---|---|---|" + "---|" * len(LINKS)]
    for name in READOUTS:
        for split in SPLITS:
            for alpha in ALPHAS:
                cells = []
                for link in LINKS:
                    r = np.array([x["risk"] for x in records if x["readout"] == name and x["split"] == split
                                  and x["alpha"] == alpha and x["link"] == link])
                    cells.append(f"{r.mean():.3f} ({r.max():.3f})")
                lines.append(f"| {name} | {split} | {alpha:g} | " + " | ".join(cells) + " |")
    ks = ["| split | α | " + " | ".join(LINKS) + " |", "|---|---|" + "---|" * len(LINKS)]
    for split in SPLITS:
        for alpha in ALPHAS:
            cells = []
            for link in LINKS:
                k = [x["k_hat"] for x in records if x["readout"] == name and x["split"] == split
                     and x["alpha"] == alpha and x["link"] == link]
                cells.append(" ".join(str(v) for v in k))
            ks.append(f"| {split} | {alpha:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nk̂ per seed:\n\n" + "\n".join(ks)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="network_defaults.json")
    parser.add_argument("--splits", default=None)
    parser.add_argument("--readouts", default=None)
    args = parser.parse_args()
    if args.splits:
        SPLITS = tuple(float(s) for s in args.splits.split(","))
    if args.readouts:
        READOUTS = {k: READOUTS[k] for k in args.readouts.split(",")}
    t0 = time.perf_counter()
    recs = run()
    with open(args.out, "w") as f:
        json.dump(dict(records=recs, seconds=time.perf_counter() - t0), f, indent=1)
    print(table(recs))
