"""The paper's Figures 1–3 and the threshold figure, each with its data file and summary.

Every figure function runs its experiment (resumable where it is long),
writes its outputs under one naming scheme (:class:`~hmi_fast._plotting.FigureRun`)::

    OUT/fig1.png  OUT/fig1_data.csv  OUT/fig1_summary.json  OUT/fig1/<link>/   (resumable runs)
    OUT/fig2.png  OUT/fig2_data.npz  OUT/fig2_summary.json
    OUT/fig3.png  OUT/fig3_data.csv  OUT/fig3_summary.json
    OUT/thresholds.png  OUT/thresholds_data.csv  OUT/thresholds_summary.json  OUT/thresholds/

and returns the summary (also in the JSON file, with the provenance record).
``quick=True`` runs the smaller sizes of :data:`SIZES` (docs/figures.md gives
the measured times). ``log`` (a callable, e.g. ``print``) receives the plan
with an estimated time before long work; ``progress`` shows progress bars on
stderr. One process writes into ``OUT`` at a time.
"""

from __future__ import annotations

import numpy as np

from . import _outputs, theory
from ._plotting import FigureRun, plt as _plt
from .experiments import (
    CurveConfig,
    RunInterrupted,
    calibrate,
    empirical_thresholds,
    fit_slope,
    format_seconds,
    mean_curve,
    plan,
    run_curve,
    spectra,
)
from .model import HMIModel

#: The theory drawn on the figures: the exact finite-α predictions (docs/theory.md), with the large-α
#: formulas beside them where a figure compares the two.
THEORY_REGIME = "exact"

FIG2_ALPHAS = (5.0, 164.0, 611.0, 1638.0)
FIG1_LINKS = ("he2", "he2_he4", "abs", "relu")


def _grid(lo: float, hi: float, num: int) -> tuple:
    return tuple(float(round(a, 4)) for a in np.geomspace(lo, hi, num))


#: Sizes of each figure, full (the paper's) and quick.
SIZES = {
    "fig1": {"full": dict(d=1000, seeds=70, alphas=_grid(2, 2000, 16)),
             "quick": dict(d=100, seeds=4, alphas=_grid(2, 2000, 13))},
    "fig2": {"full": dict(d=1000), "quick": dict(d=200)},
    "fig3": {"full": dict(d=1000), "quick": dict(d=200)},
    "thresholds": {"full": dict(d=1000, seeds=10, m_star=8, alphas=_grid(2, 3000, 32)),
                   "quick": dict(d=150, seeds=4, m_star=6, alphas=_grid(2, 3000, 20))},
}


def _size(name: str, quick: bool) -> dict:
    return SIZES[name]["quick" if quick else "full"]


def _seeds(seeds, default: int) -> tuple:
    if seeds is None:
        return tuple(range(default))
    if isinstance(seeds, (int, np.integer)):
        return tuple(range(int(seeds)))
    return tuple(int(s) for s in seeds)


def _announce(log, what: str, configs: dict, threads) -> None:
    """Log the work left in several learning-curve folders, with one estimate of the time."""
    if log is None:
        return
    plans = {name: plan(cfg, out) for name, (cfg, out) in configs.items()}
    todo = [p for p in plans.values() if p.todo]
    cfg0 = next(iter(configs.values()))[0]
    runs = sum(len(p.statuses) for p in plans.values())
    left = sum(len(p.todo) for p in plans.values())
    head = (f"{what}: {len(configs)} x {len(cfg0.seeds)} = {runs} instances (d={cfg0.d}, m*={cfg0.m_star}, "
            f"{len(cfg0.alphas)} values of alpha up to {max(cfg0.alphas):g}: {cfg0.checkpoints()[-1]:,} rows each)")
    if not todo:
        log(f"{head}; all done already, nothing to compute")
        return
    rate, t_an = calibrate(todo[0].config, threads)
    rows = sum(p.rows for p in todo)
    seconds = sum(p.seconds(rate, t_an) for p in todo)
    done = f"{runs - left} done already, " if left < runs else ""
    log(f"{head}; {done}{left} to compute: {rows:,} rows and {sum(p.analyses for p in todo)} spectra, about "
        f"{format_seconds(seconds)} (measured here: {rate:,.0f} rows/s, {t_an:.2f} s per spectrum). "
        "Interrupt any time and rerun the same command to resume.")


# ------------------------------------------------------------------ Figure 1
def figure1_config(quick: bool, link: str, seeds=None, dtype="float32") -> CurveConfig:
    size = _size("fig1", quick)
    return CurveConfig(d=size["d"], m_star=10, gamma=1.3, link=link, preprocess="saturating",
                       alphas=size["alphas"], seeds=_seeds(seeds, size["seeds"]), dtype=dtype)


def figure1(out_dir, *, quick=False, seeds=None, links=FIG1_LINKS, workers=1, dtype="float32", threads=None,
            progress=True, log=None, command=None, client=None) -> dict:
    """MSE_γ against α for several links, with the theory curve and the predicted exponent.

    ``seeds``: a count or a sequence (default: the paper's 70, 4 with
    ``quick``). Each link's learning curve is a resumable run in
    ``OUT/fig1/<link>/``; ``client`` (a Dask client) runs the seeds on a
    cluster (:func:`~hmi_fast.experiments.run_curve`).
    """
    configs = {link: figure1_config(quick, link, seeds, dtype) for link in links}
    run = FigureRun(out_dir, "fig1", command=command, seeds=configs[links[0]].seeds)
    out = run.out
    with _outputs.exclusive(_outputs.check_output_folder(out)):
        with run.stage("plan"):
            _announce(log, "figure 1", {k: (c, run.path("") / k) for k, c in configs.items()}, threads)
        results = {}
        with run.stage("learning_curves"):
            for i, (link, cfg) in enumerate(configs.items()):
                try:
                    results[link] = run_curve(cfg, run.path("") / link, workers=workers, progress=progress,
                                              threads=threads, desc=f"figure 1, {link}", log=log, announce=False,
                                              command=command, client=client)
                except RunInterrupted as exc:
                    done = f" ({', '.join(links[:i])} done)" if i else ""
                    raise RunInterrupted(f"interrupted; rerun the same command to resume from seed "
                                         f"{min(exc.done + 1, exc.total)}/{exc.total} of {link}{done}",
                                         exc.done, exc.total) from None
        law = theory.scaling_law(1.3, 10)
        fig, ax = _plt().subplots(figsize=(6.4, 4.6))
        summary = {"d": configs[links[0]].d, "m_star": 10, "gamma": 1.3, "preprocess": "saturating",
                   "predicted_exponent": law.exponent, "links": {}}
        rows = []
        for i, (link, res) in enumerate(results.items()):
            cfg = configs[link]
            alphas, mean, se = mean_curve(res)
            # the exact finite-α prediction of what the estimator measures at this d (gap rule included),
            # and the large-α curve beside it
            pred = theory.mse_curve(cfg.model(0), "saturating", alphas, d=cfg.d, selection="gap")
            window = theory.discovery_slopes(cfg.model(0), "saturating", d=cfg.d).window
            lo, hi = max(window[0], alphas[0]), min(window[1], alphas[-1])
            color = f"C{i}"
            ax.errorbar(alphas, mean, yerr=se, fmt="o", ms=3.5, color=color, label=f"g = {link}")
            ax.plot(alphas, pred.mse, "-", color=color, lw=1)
            ax.plot(alphas, pred.mse_large_alpha, "--", color=color, lw=0.8, alpha=0.7)
            summary["links"][link] = {
                "slope": fit_slope(alphas, mean, lo, hi), "theory_slope": fit_slope(alphas, pred.mse, lo, hi),
                "large_alpha_slope": fit_slope(alphas, pred.mse_large_alpha, lo, hi),
                "fit_range": [float(lo), float(hi)], "max_alpha": float(alphas[-1]),
                "mse_at_max_alpha": float(mean[-1]), "theory_at_max_alpha": float(pred.mse[-1]),
                "max_relative_theory_error": float(np.max(np.abs(pred.mse - mean) / mean)),
                "seeds": len(cfg.seeds), "run_folder": str(res.out_dir),
            }
            rows += [[link, a, m, s_, p, pl, len(cfg.seeds)]
                     for a, m, s_, p, pl in zip(alphas, mean, se, pred.mse, pred.mse_large_alpha)]
        a_ref = np.geomspace(20, 2000, 10)
        ax.plot(a_ref, 0.5 * (a_ref / 20) ** law.exponent, "k:", lw=1.2,
                label=rf"$\alpha^{{{law.exponent:.3f}}}$ (predicted exponent)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\alpha = n / d$")
        ax.set_ylabel(r"$\mathrm{MSE}_\gamma$ (weighted subspace error)")
        n_seeds = len(configs[links[0]].seeds)
        ax.set_title(rf"Figure 1: spectral estimator, $\tau = y/(1+|y|)$, $\gamma$ = 1.3, d = {summary['d']}, "
                     f"m* = 10, {n_seeds} seeds\npoints: simulation (mean ± s.e.); lines: exact finite-α theory, "
                     "dashed: large-α theory", fontsize=9)
        ax.legend(fontsize=8)
        data = _outputs.write_csv(run.path("_data.csv"), ["link", "alpha", "mse_gamma_mean", "mse_gamma_se",
                                                          "mse_gamma_theory", "mse_gamma_theory_large_alpha",
                                                          "seeds"], rows)
        return run.finish(fig, summary, [data])


# ------------------------------------------------------------------ Figure 2
def figure2(out_dir, *, quick=False, seed=0, dtype="float32", threads=None, alphas=FIG2_ALPHAS, progress=True,
            log=None, command=None) -> dict:
    """Histograms of the spectrum of T at four α, predicted bulk edges and outliers marked."""
    from ._config import threads as thread_limit

    d = _size("fig2", quick)["d"]
    model = HMIModel(d, 20, 1.3, link="he2_he4", seed=seed)
    run = FigureRun(out_dir, "fig2", command=command, seeds=[seed])
    with _outputs.exclusive(_outputs.check_output_folder(run.out)):
        n = int(round(max(alphas) * d))
        if log is not None:
            with run.stage("plan"):
                cfg = CurveConfig(d=d, m_star=20, gamma=1.3, link="he2_he4", alphas=tuple(alphas), seeds=(seed,),
                                  dtype=dtype)
                rate, _ = calibrate(cfg, threads, analysis=False)
                log(f"figure 2: one stream of {n:,} rows at d={d} and {len(alphas)} full spectra, about "
                    f"{format_seconds(n / rate + len(alphas) * (d / 1000) ** 3)} (measured here: {rate:,.0f} rows/s)")
        with run.stage("stream_and_spectra"), thread_limit(threads):
            spec = spectra(model, alphas, dtype=dtype, progress=progress, desc="figure 2, rows")
        fig, axes = _plt().subplots(2, 2, figsize=(9, 7.2))
        summary = {"d": d, "m_star": 20, "gamma": 1.3, "link": "he2_he4", "seed": seed, "alpha": {}}
        data = {}
        crowded, merged = [], []
        for ax, (alpha, ev) in zip(axes.ravel(), sorted(spec.items())):
            pred = theory.predict(model, "saturating", alpha, d=d)
            bulk = theory.bulk_density(model, "saturating", alpha, d=d)
            lo, hi = pred.bulk_edges
            ax.hist(ev, bins=80, density=True, color="0.7")
            shown = bulk.density > 0
            ax.plot(bulk.x[shown], bulk.density[shown], color="C1", lw=1.2)
            for e in (lo, hi):
                ax.axvline(e, color="C3", ls="--", lw=1)
            outl = pred.outliers[np.isfinite(pred.outliers)]
            for o in outl:
                ax.axvline(o, color="C0", lw=0.8, alpha=0.8)
            outside = int(np.sum((ev > hi) | (ev < lo)))
            if outside > len(outl) + 3:
                crowded.append(f"{alpha:g}")
            elif outside < len(outl):
                merged.append(f"{alpha:g}")
            ax.set_yscale("log")
            ax.set_title(rf"$\alpha$ = {alpha:g}: {outside} eigenvalues outside the predicted bulk, "
                         f"{len(outl)} predicted", fontsize=8)
            ax.set_xlabel("eigenvalue of T")
            ax.set_ylabel("density (log scale)")
            summary["alpha"][f"{alpha:g}"] = {
                "outside_bulk": outside, "predicted_outliers": int(len(outl)),
                "top_eigenvalues": [round(float(v), 4) for v in ev[::-1][:5]],
                "predicted_top": [round(float(v), 4) for v in np.sort(outl)[::-1][:5]],
                "bulk_edges_predicted": [round(float(lo), 4), round(float(hi), 4)],
            }
            data[f"alpha_{alpha:g}"] = ev
        fig.suptitle(f"Figure 2: spectrum of T, g = He₂/2 + He₄/48, γ = 1.3, d = {d}, m* = 20, seed {seed}\n"
                     "(orange: predicted bulk density, red dashed: its edges, blue: predicted outliers; exact "
                     "finite-α theory)", fontsize=9)
        note = ("Titles: the eigenvalues beyond the red lines, and how many directions the theory predicts out of "
                "the bulk. The bulk is the weighted Marchenko–Pastur law of T at this α (skewed at small α).")
        if crowded:
            note += (f"\nAt α = {', '.join(crowded)} more eigenvalues lie beyond the predicted edges than outliers "
                     f"are predicted: fluctuations of the edge at d = {d} (of order d^(-2/3)).")
        if merged:
            note += (f"\nAt α = {', '.join(merged)} the weakest predicted outliers lie within a fraction of σ of the "
                     f"edge and are not separated from the bulk at d = {d}.")
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7.5, color="0.25", wrap=True)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        data_path = run.path("_data.npz")
        _outputs.write_npz(data_path, **data)
        return run.finish(fig, summary, [data_path])


# ------------------------------------------------------------------ Figure 3
def figure3(out_dir, *, quick=False, seed=0, dtype="float32", threads=None, alpha=1638.0, max_components=40,
            progress=True, log=None, command=None) -> dict:
    """The top eigenvalues of T and their gaps (log scale), with the selection threshold."""
    from ._config import threads as thread_limit
    from .eigen import topk_eigh
    from .experiments import _new_accumulator, _T, _through
    from .metrics import recovery
    from .selection import select_components

    d = _size("fig3", quick)["d"]
    model = HMIModel(d, 20, 1.3, link="he2_he4", seed=seed)
    n = int(round(alpha * d))
    run = FigureRun(out_dir, "fig3", command=command, seeds=[seed])
    cfg = CurveConfig(d=d, m_star=20, gamma=1.3, link="he2_he4", alphas=(alpha,), seeds=(seed,), dtype=dtype,
                      max_components=max_components)
    with _outputs.exclusive(_outputs.check_output_folder(run.out)):
        if log is not None:
            with run.stage("plan"):
                rate, t_an = calibrate(cfg, threads)
                log(f"figure 3: one stream of {n:,} rows at d={d} and the top {max_components} eigenpairs, about "
                    f"{format_seconds(n / rate + t_an)} (measured here: {rate:,.0f} rows/s)")
        bar = None
        if progress:
            import sys

            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="figure 3, rows", unit="row", unit_scale=True, file=sys.stderr)
        try:
            with run.stage("stream"), thread_limit(threads):
                acc = _new_accumulator(cfg)
                for _ in _through(model, acc, [n], None if bar is None else bar.update):
                    pass
                T = _T(model, acc)
        finally:
            if bar is not None:
                bar.close()
        with run.stage("eigenpairs"), thread_limit(threads):
            res = topk_eigh(T, max_components, which="LA")
        sel = select_components(res.values, d=d, n=n, rule="gap", which="LA", weights=acc.weight_sketch)
        sel_edge = select_components(res.values, d=d, n=n, rule="edge", which="LA", weights=acc.weight_sketch)
        q = recovery(res.vectors[:, sel.index].T, model.W)
        q_all = recovery(res.vectors[:, : model.m_star].T, model.W)
        pred = theory.predict(model, "saturating", alpha, d=d)
        outl = np.sort(pred.outliers[np.isfinite(pred.outliers) & (pred.outliers > pred.bulk_edges[1])])[::-1]
        ev = res.values
        gaps = ev[:-1] - ev[1:]
        fig, (a1, a2) = _plt().subplots(1, 2, figsize=(10, 4))
        idx = np.arange(1, len(ev) + 1)
        a1.plot(idx, ev, "o", ms=3.5, label="simulation")
        a1.plot(np.arange(1, len(outl) + 1), outl, "x", color="C2", ms=6, label="predicted outliers")
        a1.axhline(sel.bulk_edges[1], color="C3", ls="--", lw=1, label="bulk edge (the data's weight law)")
        a1.axhline(pred.bulk_edges[1], color="C1", ls=":", lw=1, label="bulk edge (theory)")
        a1.axvline(sel.n_components + 0.5, color="k", ls=":", lw=1, label=rf"$\hat k$ = {sel.n_components} (gap rule)")
        a1.set_xlabel("rank i")
        a1.set_ylabel(r"eigenvalue $\lambda_i$ of T")
        a1.legend(fontsize=8)
        a2.semilogy(idx[:-1], gaps, "o", ms=3.5)
        scale = float(sel.edge_scales[1])
        a2.axhline(sel.threshold * scale, color="C3", ls="--", lw=1,
                   label=r"threshold $s_{\mathrm{edge}}\, d^{-1/3}$")
        a2.axvline(sel.n_components + 0.5, color="k", ls=":", lw=1)
        a2.set_xlabel("rank i")
        a2.set_ylabel(r"gap $\lambda_i - \lambda_{i+1}$ (log scale)")
        a2.legend(fontsize=8)
        fig.suptitle(f"Figure 3: top eigenvalues of T and their gaps, α = {alpha:g}, d = {d}, m* = 20, seed {seed}",
                     fontsize=9)
        fig.tight_layout()
        data = _outputs.write_csv(run.path("_data.csv"), ["rank", "eigenvalue", "gap_to_next"],
                                  [[i + 1, v, gaps[i] if i < len(gaps) else ""] for i, v in enumerate(ev)])
        summary = {"d": d, "m_star": 20, "alpha": alpha, "seed": seed, "n": n, "max_components": max_components,
                   "k_hat_gap": int(sel.n_components), "k_hat_edge": int(sel_edge.n_components),
                   "predicted_outliers": int(len(outl)),
                   "predicted_top": [round(float(v), 5) for v in outl[:10]],
                   "top_eigenvalues": [round(float(v), 5) for v in ev[:10]],
                   "n_recovered_q>1/2": int(np.sum(q > 0.5)),
                   "top_m_star_eigenvectors_q>1/2": int(np.sum(q_all > 0.5)),
                   "threshold": float(sel.threshold), "edge_scale": scale,
                   "top_gaps": [float(g) for g in gaps[:25]]}
        return run.finish(fig, summary, [data])


# ---------------------------------------------------------- thresholds figure
def thresholds_config(quick: bool, seeds=None, dtype="float32") -> CurveConfig:
    size = _size("thresholds", quick)
    return CurveConfig(d=size["d"], m_star=size["m_star"], gamma=1.3, link="he2_he4", alphas=size["alphas"],
                       seeds=_seeds(seeds, size["seeds"]), dtype=dtype)


def figure_thresholds(out_dir, *, quick=False, seeds=None, workers=1, dtype="float32", threads=None,
                      progress=True, log=None, command=None, client=None) -> dict:
    """Predicted against empirical k-critical thresholds α_k (q_k > 1/2), error bars over seeds."""
    cfg = thresholds_config(quick, seeds, dtype)
    run = FigureRun(out_dir, "thresholds", command=command, seeds=cfg.seeds)
    with _outputs.exclusive(_outputs.check_output_folder(run.out)):
        with run.stage("plan"):
            _announce(log, "thresholds", {"he2_he4": (cfg, run.path(""))}, threads)
        with run.stage("learning_curve"):
            res = run_curve(cfg, run.path(""), workers=workers, progress=progress, threads=threads,
                            desc="thresholds, he2_he4", log=log, announce=False, command=command, client=client)
        level = 0.5
        # the estimator's own recovery (directions kept by the gap rule), as the exact theory predicts it
        mean, se, count = empirical_thresholds(res, level, column="q")
        model0 = cfg.model(0)
        # the exact finite-α crossing of q_k = 1/2 (the estimator's own overlap, gap rule at this d), the
        # exact emergence of each outlier, and the large-α crossing 2 α_k for comparison
        exact = theory.thresholds(model0, "saturating", level=level, d=cfg.d, selection="gap")
        crossing = exact.alpha
        emergence = theory.thresholds(model0, "saturating", d=cfg.d).alpha
        large = theory.thresholds(model0, "saturating", regime="large_alpha").alpha / (1.0 - level)
        k = np.arange(1, cfg.m_star + 1)
        fig, ax = _plt().subplots(figsize=(5.6, 4.2))
        ax.errorbar(k, mean, yerr=se, fmt="o", label=r"simulation: $\alpha$ where $q_k$ crosses 1/2 (gap rule)")
        ax.plot(k, crossing, "s-", mfc="none", label=r"exact theory: $q_k = 1/2$ (gap rule at this d)")
        ax.plot(k, large, "^--", mfc="none", color="0.4", ms=4,
                label=r"large-$\alpha$ theory: $2\alpha_k$ ($q_k = 1 - \alpha_k/\alpha$)")
        ax.plot(k, emergence, ":", color="0.5", label="exact theory: the outlier leaves the bulk")
        ax.set_yscale("log")
        ax.set_xlabel("direction k")
        ax.set_ylabel(r"threshold $\alpha = n/d$")
        ax.set_title(f"Thresholds, he2_he4, γ = 1.3, d = {cfg.d}, m* = {cfg.m_star}, {len(cfg.seeds)} seeds",
                     fontsize=9)
        ax.legend(fontsize=8)
        data = _outputs.write_csv(run.path("_data.csv"),
                                  ["direction", "crossing_empirical_mean", "crossing_empirical_se", "seeds_reaching",
                                   "crossing_theory", "crossing_theory_large_alpha", "emergence_theory"],
                                  zip(k, mean, se, count, crossing, large, emergence))
        rel = (mean - crossing) / crossing
        summary = {"d": cfg.d, "m_star": cfg.m_star, "seeds": len(cfg.seeds), "level": level,
                   "empirical_crossing": [round(float(v), 2) for v in mean],
                   "empirical_crossing_se": [round(float(v), 2) for v in se],
                   "theory_crossing": [round(float(v), 2) for v in crossing],
                   "theory_crossing_large_alpha": [round(float(v), 2) for v in large],
                   "theory_emergence": [round(float(v), 2) for v in emergence],
                   "relative_difference": [round(float(v), 3) for v in rel],
                   "seeds_reaching": [int(c) for c in count], "run_folder": str(res.out_dir)}
        return run.finish(fig, summary, [data])
