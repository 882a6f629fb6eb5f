"""The paper's Figures 1–3 and the threshold figure, each with its data file.

Every figure function runs its experiment (resumable where it is long),
writes ``figN.png`` and its data next to it, and returns a summary dict that
the CLI prints. ``quick=True`` shrinks d and the number of seeds so that each
figure takes under a minute on two cores.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from . import theory
from .experiments import CurveConfig, empirical_thresholds, fit_slope, mean_curve, run_curve, spectra
from .model import HMIModel
from ._plotting import plt as _plt, save as _save

FIG2_ALPHAS = (5.0, 164.0, 611.0, 1638.0)
FIG1_LINKS = ("he2", "he2_he4", "abs", "relu")


# ------------------------------------------------------------------ Figure 1
def figure1_config(quick: bool, link: str, seeds=None, dtype="float64") -> CurveConfig:
    if quick:
        d, n_seeds, alphas = 200, 6, np.geomspace(2, 2000, 13)
    else:
        d, n_seeds, alphas = 1000, 70, np.geomspace(2, 2000, 16)
    seeds = tuple(range(n_seeds)) if seeds is None else tuple(seeds)
    return CurveConfig(d=d, m_star=10, gamma=1.3, link=link, preprocess="saturating",
                       alphas=tuple(float(round(a, 4)) for a in alphas), seeds=seeds, dtype=dtype)


def figure1(out_dir, *, quick=False, seeds=None, links=FIG1_LINKS, workers=1, dtype="float64",
            threads=None, progress=True) -> dict:
    """MSE_γ against α for several links, with the theory curve and the predicted exponent."""
    out = Path(out_dir)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    summary = {"figure": str(out / "fig1.png"), "links": {}}
    law = theory.scaling_law(1.3, 10)
    rows = []
    for i, link in enumerate(links):
        cfg = figure1_config(quick, link, seeds, dtype)
        res = run_curve(cfg, out / "fig1" / link, workers=workers, progress=progress, threads=threads)
        alphas, mean, se = mean_curve(res)
        model = cfg.model(0)
        pred = theory.mse_curve(model, "saturating", alphas)
        th = pred.thresholds.alpha
        # discovery regime: between the first and the last threshold crossed on the grid
        lo, hi = th[0] * 2, min(th[-1], alphas[-1])
        slope = fit_slope(alphas, mean, lo, hi)
        color = f"C{i}"
        ax.errorbar(alphas, mean, yerr=se, fmt="o", ms=3.5, color=color, label=f"g = {link}")
        ax.plot(alphas, pred.mse, "--", color=color, lw=1)
        summary["links"][link] = {"slope": slope, "fit_range": [float(lo), float(hi)],
                                  "mse_at_max_alpha": float(mean[-1]), "theory_at_max_alpha": float(pred.mse[-1]),
                                  "seeds": len(cfg.seeds)}
        rows += [[link, a, m, s, p] for a, m, s, p in zip(alphas, mean, se, pred.mse)]
    a_ref = np.geomspace(20, 2000, 10)
    ax.plot(a_ref, 0.5 * (a_ref / 20) ** law.exponent, "k:", lw=1.2, label=f"α^{law.exponent:.3f} (predicted)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("α = n / d")
    ax.set_ylabel("MSE_γ")
    d = figure1_config(quick, links[0]).d
    ax.set_title(f"Figure 1: spectral estimator, τ = y/(1+|y|), γ = 1.3, d = {d}, m* = 10\n"
                 "points: simulation (mean ± s.e.), dashed: theory", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, out / "fig1.png")
    with open(out / "fig1_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["link", "alpha", "mse_gamma_mean", "mse_gamma_se", "mse_gamma_theory"])
        w.writerows(rows)
    summary["predicted_exponent"] = law.exponent
    return summary


# ------------------------------------------------------------------ Figure 2
def figure2(out_dir, *, quick=False, seed=0, dtype="float64", threads=None, alphas=FIG2_ALPHAS) -> dict:
    """Histograms of the spectrum of T at four α, predicted bulk edges and outliers marked."""
    from ._config import threads as thread_limit

    out = Path(out_dir)
    d = 300 if quick else 1000
    model = HMIModel(d, 20, 1.3, link="he2_he4", seed=seed)
    t0 = time.perf_counter()
    with thread_limit(threads):
        spec = spectra(model, alphas, dtype=dtype)
    elapsed = time.perf_counter() - t0
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    summary = {"figure": str(out / "fig2.png"), "d": d, "seconds": elapsed, "alpha": {}}
    data = {}
    for ax, (alpha, ev) in zip(axes.ravel(), sorted(spec.items())):
        pred = theory.predict(model, "saturating", alpha)
        lo, hi = pred.bulk_edges
        ax.hist(ev, bins=80, density=True, color="0.55")
        for e in (lo, hi):
            ax.axvline(e, color="C3", ls="--", lw=1)
        outl = pred.outliers[np.isfinite(pred.outliers)]
        for o in outl:
            ax.axvline(o, color="C0", lw=0.8, alpha=0.8)
        ax.set_yscale("log")
        ax.set_title(f"α = {alpha:g}: {int(np.sum((ev > hi) | (ev < lo)))} eigenvalues outside the predicted bulk, "
                     f"{len(outl)} predicted", fontsize=8)
        ax.set_xlabel("eigenvalue of T")
        summary["alpha"][f"{alpha:g}"] = {
            "outside_bulk": int(np.sum((ev > hi) | (ev < lo))), "predicted_outliers": int(len(outl)),
            "top_eigenvalues": [round(float(v), 4) for v in ev[::-1][:5]],
            "predicted_top": [round(float(v), 4) for v in np.sort(outl)[::-1][:5]],
            "bulk_edges_predicted": [round(float(lo), 4), round(float(hi), 4)],
        }
        data[f"alpha_{alpha:g}"] = ev
    fig.suptitle(f"Figure 2: spectrum of T, g = He₂/2 + He₄/48, γ = 1.3, d = {d}, m* = 20 "
                 "(red: predicted bulk edges, blue: predicted outliers)", fontsize=9)
    fig.tight_layout()
    _save(fig, out / "fig2.png")
    np.savez(out / "fig2_data.npz", **data)
    return summary


# ------------------------------------------------------------------ Figure 3
def figure3(out_dir, *, quick=False, seed=0, dtype="float64", threads=None, alpha=1638.0, max_components=40) -> dict:
    """The top eigenvalues of T and their gaps (log scale), with the selection threshold."""
    from ._config import threads as thread_limit
    from .eigen import topk_eigh
    from .engine import accumulate
    from .metrics import recovery
    from .selection import select_components

    out = Path(out_dir)
    d = 300 if quick else 1000
    model = HMIModel(d, 20, 1.3, link="he2_he4", seed=seed)
    n = int(round(alpha * d))
    with thread_limit(threads):
        acc = accumulate(model, n=n, dtype=dtype)
        T = acc.finalize()
        res = topk_eigh(T, max_components, which="LA")
    sel = select_components(res.values, d=d, n=n, rule="gap", which="LA",
                            tau_mean=acc.weight_mean, tau_sq_mean=acc.weight_sq_mean)
    sel_edge = select_components(res.values, d=d, n=n, rule="edge", which="LA",
                                 tau_mean=acc.weight_mean, tau_sq_mean=acc.weight_sq_mean)
    q = recovery(res.vectors[:, sel.index].T, model.W)
    ev = res.values
    gaps = ev[:-1] - ev[1:]
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    idx = np.arange(1, len(ev) + 1)
    a1.plot(idx, ev, "o", ms=3.5)
    a1.axhline(sel.bulk_edges[1], color="C3", ls="--", lw=1, label="estimated bulk edge")
    a1.axvline(sel.n_components + 0.5, color="k", ls=":", lw=1, label=f"k̂ = {sel.n_components} (gap rule)")
    a1.set_xlabel("rank i")
    a1.set_ylabel("λ_i")
    a1.legend(fontsize=8)
    a2.semilogy(idx[:-1], gaps, "o", ms=3.5)
    a2.axhline(sel.threshold * sel.sigma, color="C3", ls="--", lw=1, label="threshold σ̂ d^(-1/3)")
    a2.axvline(sel.n_components + 0.5, color="k", ls=":", lw=1)
    a2.set_xlabel("i")
    a2.set_ylabel("λ_i − λ_{i+1}")
    a2.legend(fontsize=8)
    fig.suptitle(f"Figure 3: top eigenvalues of T and their gaps, α = {alpha:g}, d = {d}, m* = 20", fontsize=9)
    fig.tight_layout()
    _save(fig, out / "fig3.png")
    with open(out / "fig3_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "eigenvalue", "gap_to_next"])
        for i, v in enumerate(ev):
            w.writerow([i + 1, v, gaps[i] if i < len(gaps) else ""])
    return {"figure": str(out / "fig3.png"), "d": d, "alpha": alpha, "k_hat_gap": int(sel.n_components),
            "k_hat_edge": int(sel_edge.n_components), "threshold": float(sel.threshold),
            "n_recovered_q>1/2": int(np.sum(q > 0.5)), "top_gaps": [float(g) for g in gaps[:25]]}


# ---------------------------------------------------------- thresholds figure
def thresholds_config(quick: bool, seeds=None, dtype="float64") -> CurveConfig:
    if quick:
        d, n_seeds, m, alphas = 200, 6, 6, np.geomspace(2, 3000, 24)
    else:
        d, n_seeds, m, alphas = 1000, 10, 8, np.geomspace(2, 3000, 32)
    seeds = tuple(range(n_seeds)) if seeds is None else tuple(seeds)
    return CurveConfig(d=d, m_star=m, gamma=1.3, link="he2_he4", alphas=tuple(float(round(a, 4)) for a in alphas),
                       seeds=seeds, dtype=dtype)


def figure_thresholds(out_dir, *, quick=False, seeds=None, workers=1, dtype="float64", threads=None,
                      progress=True) -> dict:
    """Predicted against empirical k-critical thresholds α_k (q_k > 1/2), error bars over seeds."""
    out = Path(out_dir)
    cfg = thresholds_config(quick, seeds, dtype)
    res = run_curve(cfg, out / "thresholds", workers=workers, progress=progress, threads=threads)
    level = 0.5
    mean, se, count = empirical_thresholds(res, level)
    pred = theory.thresholds(cfg.model(0), "saturating")
    crossing = pred.alpha / (1.0 - level)  # large-α theory: q_k = 1 − α_k/α reaches the level here
    k = np.arange(1, cfg.m_star + 1)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    ax.errorbar(k, mean, yerr=se, fmt="o", label="simulation: α where q_k crosses 1/2")
    ax.plot(k, crossing, "s--", mfc="none", label="theory: 2 α_k (q_k = 1 − α_k/α = 1/2)")
    ax.plot(k, pred.alpha, ":", color="0.5", label="theory: α_k = E[τ²]/θ_k² (emergence)")
    ax.set_yscale("log")
    ax.set_xlabel("direction k")
    ax.set_ylabel("k-critical threshold")
    ax.set_title(f"Thresholds, he2_he4, γ = 1.3, d = {cfg.d}, {len(cfg.seeds)} seeds", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, out / "thresholds.png")
    with open(out / "thresholds_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["direction", "crossing_empirical_mean", "crossing_empirical_se", "seeds_reaching",
                    "crossing_theory", "alpha_k_theory"])
        for row in zip(k, mean, se, count, crossing, pred.alpha):
            w.writerow(row)
    rel = (mean - crossing) / crossing
    return {"figure": str(out / "thresholds.png"), "d": cfg.d, "level": level,
            "empirical_crossing": [round(float(v), 2) for v in mean],
            "theory_crossing": [round(float(v), 2) for v in crossing],
            "theory_alpha_k": [round(float(v), 2) for v in pred.alpha],
            "relative_difference": [round(float(v), 3) for v in rel], "seeds_reaching": [int(c) for c in count]}


def write_summary(out_dir, name: str, summary: dict) -> Path:
    path = Path(out_dir) / f"{name}_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=float))
    return path
