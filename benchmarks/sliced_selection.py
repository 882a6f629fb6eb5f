"""Validate the dimension rules for SIR and SAVE on planted models (docs/sliced.md).

For each model (d, n, link, m*, γ, noise, seed) and number of slices H, the
SIR, SAVE and bias-corrected SAVE matrices are formed and fully diagonalised;
eigenvector j of the x-space directions counts as *informative* when its
squared overlap with span(W*) exceeds 0.5 and as *noise* below 0.1 (chance
is m*/d). A rule's count k is right when it keeps every informative one and
no noise one: ``#{> 0.5} <= k <= #{> 0.1}``. Pure-noise data (y independent
of x) must give k = 0.

    python -m benchmarks.sliced_selection            # the grid of docs/sliced.md (about an hour on one core)
    python -m benchmarks.sliced_selection --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import collections
import math

import numpy as np
from scipy.stats import chi2

from hmi_fast import HMIModel, SlicedAccumulator, select_components, select_sliced, slice_edges


def tanh2(z):
    return np.tanh(2 * z)


LINKS = {"tanh": tanh2, "relu": "relu", "he2": "he2", "abs": "abs"}


def spectra(d, n, link, m_star, gamma, noise, seed, slices):
    """Yield one record per (H, method): eigenvalues, trace, counts, informativeness."""
    if link == "null":
        rng = np.random.default_rng(seed)
        X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
        P = np.zeros((d, d))
    else:
        model = HMIModel(d=d, m_star=m_star, gamma=gamma, link=LINKS[link], noise=noise, seed=seed + 10)
        X, y = model.sample(n)
        P = model.W.T @ model.W
    for H in slices:
        acc = SlicedAccumulator(d, slice_edges(y, H)).update(X, y)
        res = acc.residual_accumulator().update(X, y)
        for method in ("sir", "save", "save_bc"):
            wm = acc.finalize(method, correction=res if method == "save_bc" else None)
            lam, V = np.linalg.eigh(wm.matrix)
            lam, V = lam[::-1], V[:, ::-1]
            B = wm.directions(V[:, :30])
            B /= np.linalg.norm(B, axis=1, keepdims=True)
            inf = np.einsum("ij,jk,ik->i", B, P, B)
            yield dict(d=d, n=n, H=H, link=link, method=method, lam=lam, trace=float(np.trace(wm.matrix)),
                       counts=acc.counts.copy(), inf=inf)


def k_edge(r, tw=2.0):
    return select_sliced(r["lam"], method=r["method"], d=r["d"], slice_counts=r["counts"], trace=r["trace"],
                         tw=tw).n_components


def k_chi2(r, alpha=0.01):
    """Li (1991) for SIR, Shao, Cook & Weisberg (2007) for SAVE: sequential trace tests under normal x."""
    lam, n, d = r["lam"], r["n"], r["d"]
    H = int(np.count_nonzero(r["counts"]))
    cs = np.concatenate([[0.0], np.cumsum(lam)])
    for k in range(min(d, 30)):
        if r["method"] == "sir":
            df, stat = (d - k) * (H - k - 1), n * (r["trace"] - cs[k])
        else:
            df, stat = (H - 1) * (d - k) * (d - k + 1) / 2, n * (r["trace"] - cs[k]) / 2
        if df <= 0 or stat <= chi2.ppf(1 - alpha, df):
            return k
    return k


def k_largest_gap(r):
    """``sliced``'s n_directions='auto': the directions before the largest gap."""
    H = int(np.count_nonzero(r["counts"]))
    lam = r["lam"][: H - 1] if r["method"] == "sir" else r["lam"]
    return int(np.argmax(np.abs(np.diff(lam)))) + 1


def k_gap_rule(r):
    """The spectral matrix's gap rule (hmi_fast.selection) on the full spectrum: median and IQR bulk."""
    return select_components(r["lam"], d=r["d"], n=r["n"], which="LA").n_components


RULES = {
    "edge, tw=2 (default)": k_edge,
    "edge, tw=0": lambda r: k_edge(r, 0.0),
    "edge, tw=3": lambda r: k_edge(r, 3.0),
    "chi-squared trace tests, 1%": k_chi2,
    "largest gap (sliced's auto)": k_largest_gap,
    "gap rule of selection.py": k_gap_rule,
}


def grid(quick):
    if quick:
        sizes, links, shapes, noises, seeds, slices = [(100, 10_000), (200, 40_000)], ["tanh", "he2"], \
            [(1, 0.0), (3, 0.5)], [0.5], [0], (10,)
    else:
        sizes = [(100, 10_000), (200, 20_000), (200, 100_000), (400, 40_000), (400, 200_000)]
        links, shapes, noises, seeds, slices = list(LINKS), [(1, 0.0), (3, 0.5), (6, 1.0)], [0.0, 0.5], [0, 1], (5, 10, 20)
    for d, n in sizes:
        for link in links:
            for m_star, gamma in shapes:
                for noise in noises:
                    for seed in seeds:
                        yield (d, n, link, m_star, gamma, noise, seed, slices)
    for seed in seeds:
        yield (200, 40_000, "null", 1, 0.0, 1.0, seed, slices)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    table = collections.defaultdict(collections.Counter)
    for cfg in grid(args.quick):
        for r in spectra(*cfg):
            k_lo, k_hi = int((r["inf"] > 0.5).sum()), int((r["inf"] > 0.1).sum())
            if r["link"] == "null":
                k_lo = k_hi = 0
            for name, rule in RULES.items():
                k = rule(r)
                c = table[(r["method"], name)]
                c["cases"] += 1
                c["right" if k_lo <= k <= k_hi else ("too many" if k > k_hi else "too few")] += 1
                if r["link"] == "null":
                    c["null cases"] += 1
                    c["null: k > 0"] += k > 0
    print("| method | rule | right | too many | too few | pure noise: k > 0 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (method, name), c in table.items():
        print(f"| {method} | {name} | {c['right']}/{c['cases']} | {c['too many']} | {c['too few']} | "
              f"{c['null: k > 0']}/{c['null cases']} |")
    return table


if __name__ == "__main__":
    main()
