"""Figures for the two-stage network (docs/network.md): excess risk against α, and the GD view.

Each function runs its experiment, writes a PNG and its data next to it, and
returns a summary dict (printed by the CLI). ``quick=True`` shrinks d and the
number of seeds so that each figure takes under a minute on two cores.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from . import theory
from .model import HMIModel
from .network import SpectralTwoLayer, excess_risk, gd_first_layer, random_directions
from ._plotting import plt as _plt, save as _save

RISK_COLUMNS = ("seed", "alpha", "n", "k_hat", "mse_gamma", "mse_gamma_theory", "risk_spectral", "risk_oracle",
                "risk_random_features", "target_variance")


def _mse_gamma(components: np.ndarray, model: HMIModel) -> float:
    """MSE_γ = Σ_k a_k² (1 − ||P̂ w_k||²) of the spectral stage (docs/selection.md)."""
    from .metrics import weighted_mse

    return float(weighted_mse(components, model.W, model.a))


# ------------------------------------------------------------------ excess risk against α
def risk_config(quick: bool) -> dict:
    if quick:
        return dict(d=150, m_star=10, seeds=(0, 1, 2), alphas=tuple(np.geomspace(4, 1500, 9).round(3)),
                    n_test=20_000)
    return dict(d=1000, m_star=10, seeds=tuple(range(10)), alphas=tuple(np.geomspace(4, 2000, 13).round(3)),
                n_test=100_000)


def figure_risk(out_dir, *, quick=False, seeds=None, d=None, m_star=None, gamma=1.3, link="he2_he4", noise=0.0,
                alphas=None, split=0.5, hermite_degree=4, n_test=None, progress=False) -> dict:
    """Excess risk of the spectral network against α, beside MSE_γ, the theory curve and two baselines.

    For each seed and α (n = α·d samples, the first ``split·n`` for the
    spectral stage, the rest for the readout):

    * ``spectral``: :class:`~hmi_fast.network.SpectralTwoLayer` with the
      Hermite readout (degree ``hermite_degree``) on the selected directions;
    * ``oracle``: the same readout on the true directions ``W`` (same rows);
    * ``random features``: ``p = m*·hermite_degree`` random unit directions
      in R^d, relu, ridge readout (same rows, no spectral step);
    * MSE_γ of the spectral stage and the predicted ``theory.mse_curve``
      evaluated at the spectral stage's own ratio ``split·α``.

    With ``noise = 0`` (the paper's setting) the oracle's readout is exact
    (its risk is at rounding level); label noise Δ > 0 gives it the readout's
    own variance ≈ Δ·p/n_readout.

    Excess risks are relative (divided by Var f* on the test rows, which are
    ``TEST_START + seed·2**32 + [0, n_test)``), so that all curves start near 1.
    Writes ``risk.png`` and ``risk_data.csv``; returns the mean curves and the
    fitted log-log slopes of excess risk and MSE_γ in the discovery regime
    (total α between ``α_2/split`` and ``α_{m*}/split``, from the theory thresholds).
    """
    cfg = risk_config(quick)
    d = cfg["d"] if d is None else int(d)
    m_star = cfg["m_star"] if m_star is None else int(m_star)
    seeds = cfg["seeds"] if seeds is None else tuple(int(s) for s in seeds)
    alphas = np.asarray(cfg["alphas"] if alphas is None else alphas, dtype=float)
    n_test = cfg["n_test"] if n_test is None else int(n_test)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    from .estimator import SpectralEstimator
    from .experiments import fit_slope

    th_model = HMIModel(d, m_star, gamma, link=link, noise=noise, seed=0)
    curve = theory.mse_curve(th_model, "saturating", split * alphas)
    thresholds = curve.thresholds.alpha
    p_rf = m_star * hermite_degree
    rows = []
    for seed in seeds:
        model = HMIModel(d, m_star, gamma, link=link, noise=noise, seed=seed)
        for i, alpha in enumerate(alphas):
            n = max(2, int(round(alpha * d)))
            spectral = SpectralEstimator(max_components=min(m_star + 10, d // 2), random_state=seed)
            net = SpectralTwoLayer(readout="hermite", hermite_degree=hermite_degree, split=split,
                                   spectral=spectral, seed=seed).fit_stream(model, n=n)
            oracle = SpectralTwoLayer(readout="hermite", hermite_degree=hermite_degree, split=split,
                                      spectral=model.W).fit_stream(model, n=n)
            rf = SpectralTwoLayer(activation="relu", split=split,
                                  spectral=random_directions(p_rf, d, seed)).fit_stream(model, n=n)
            risks = excess_risk(model, [net, oracle, rf, lambda X: np.zeros(len(X))], n_test=n_test, seed=seed)
            var = float(risks[3])
            rows.append(dict(seed=seed, alpha=float(alpha), n=n, k_hat=net.n_hidden_,
                             mse_gamma=_mse_gamma(net.spectral_.components_, model),
                             mse_gamma_theory=float(curve.mse[i]), risk_spectral=risks[0] / var,
                             risk_oracle=risks[1] / var, risk_random_features=risks[2] / var, target_variance=var))
            if progress:
                print(f"seed {seed} α={alpha:g}: k̂={net.n_hidden_} MSE_γ={rows[-1]['mse_gamma']:.3g} "
                      f"risk={rows[-1]['risk_spectral']:.3g}", flush=True)
    with open(out / "risk_data.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RISK_COLUMNS)
        w.writeheader()
        w.writerows(rows)

    def mean(col):
        v = np.array([[r[col] for r in rows if r["seed"] == s] for s in seeds])
        return v.mean(axis=0), v.std(axis=0, ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else 0 * v[0]

    fin = thresholds[np.isfinite(thresholds)]
    lo = float(fin[min(1, fin.size - 1)] / split) if fin.size else None
    hi = float(fin[-1] / split) if fin.size else None
    curves = {c: mean(c) for c in ("risk_spectral", "risk_oracle", "risk_random_features", "mse_gamma", "k_hat")}
    slopes = {c: fit_slope(alphas, curves[c][0], lo, hi) for c in ("risk_spectral", "mse_gamma")}
    slopes["mse_gamma_theory"] = fit_slope(alphas, curve.mse, lo, hi)
    law = theory.scaling_law(gamma, m_star)

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.6, 4.8))
    styles = [("risk_spectral", "o-", "C0", "spectral network: excess risk / Var f*"),
              ("mse_gamma", "s--", "C1", "spectral stage: MSE_γ"),
              ("risk_oracle", "^-", "C2", "oracle (true W, same readout)"),
              ("risk_random_features", "v-", "C3", f"random features (p={p_rf}, relu)")]
    shown = np.concatenate([curves[c][0] for c in ("risk_spectral", "mse_gamma")] + [curve.mse])
    floor = float(np.min(shown[shown > 0])) / 4 if np.any(shown > 0) else 1e-6
    for col, fmt, color, label in styles:
        m, se = curves[col]
        if col == "risk_oracle" and np.all(m < floor):  # exact readout (no label noise): show it on the floor
            label += f", all < {max(float(m.max()), 1e-300):.0e}: drawn at the floor"
            m, se = np.full_like(m, floor), 0 * m
        ax.errorbar(alphas, m, yerr=se, fmt=fmt, color=color, ms=4, capsize=2, label=label)
    ax.plot(alphas, curve.mse, "k:", label=f"theory MSE_γ at α·{split:g} (docs/theory.md)")
    if lo is not None and hi is not None and hi > lo:
        ax.axvspan(lo, hi, color="0.92", zorder=0, label="discovery regime (fit window)")
        mid = np.sqrt(lo * hi)
        ref = 0.5 * float(np.interp(np.log(mid), np.log(alphas), curves["mse_gamma"][0]))
        ax.plot([lo, hi], [ref * (lo / mid) ** law.exponent, ref * (hi / mid) ** law.exponent],
                color="0.4", lw=1, label=f"slope {law.exponent:.3f} = −(1 − 1/2γ)")
    ax.set_ylim(floor / 1.5, 2.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("α = n / d (spectral stage and readout together)")
    ax.set_ylabel("relative excess risk  /  MSE_γ")
    ax.set_title(f"Two-stage network, {link}, γ={gamma}, d={d}, m*={m_star}, {len(seeds)} seeds, split={split}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, out / "risk.png")
    return {
        "figure": str(out / "risk.png"), "data": str(out / "risk_data.csv"), "d": d, "m_star": m_star,
        "gamma": gamma, "link": link, "noise": noise, "seeds": len(seeds), "split": split,
        "alphas": [float(a) for a in alphas],
        "mean_risk_spectral": [float(v) for v in curves["risk_spectral"][0]],
        "mean_risk_oracle": [float(v) for v in curves["risk_oracle"][0]],
        "mean_risk_random_features": [float(v) for v in curves["risk_random_features"][0]],
        "mean_mse_gamma": [float(v) for v in curves["mse_gamma"][0]],
        "mean_k_hat": [float(v) for v in curves["k_hat"][0]],
        "theory_mse_gamma": [float(v) for v in curve.mse],
        "fit_window_alpha": [lo, hi],
        "slope_risk_spectral": slopes["risk_spectral"], "slope_mse_gamma": slopes["mse_gamma"],
        "slope_mse_gamma_theory": slopes["mse_gamma_theory"], "predicted_exponent": law.exponent,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ------------------------------------------------------------------ gradient descent view
def figure_gd(out_dir, *, quick=False, seed=0, d=None, m_star=3, gamma=1.0, link="he2_he4", alpha=None,
              units=(1, 2, 3), steps=None, lr_factor=0.05, init_scale=1e-10, compare_relu=True) -> dict:
    """GD on the first layer from a small initialisation tracks power iteration on T (τ = identity).

    Data: ``n = α·d`` rows of an HMI model. For each number of hidden units p
    in ``units``, full-batch GD with σ(z) = z²/2, readout weights 1 and
    ``lr = lr_factor / λ_1(T)`` (see :func:`~hmi_fast.network.gd_first_layer`);
    plotted against the step: the overlap of span(U) with the top-p
    eigenvectors of ``T = (1/n) Σ y x xᵀ``, the same for power iteration with
    ``I + lr·T`` (the small-weight limit of §7), and ``||U||_F``. With
    ``compare_relu`` the largest p is also run with a relu activation, whose
    gradient at small weights is not ``T u`` (run for a third of the steps:
    it plateaus early). Writes ``gd.png`` and
    ``gd_data.csv``.
    """
    from .engine import spectral_matrix

    d = (200 if quick else 1000) if d is None else int(d)
    alpha = (50.0 if quick else 100.0) if alpha is None else float(alpha)
    steps = (500 if quick else 900) if steps is None else int(steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = HMIModel(d, m_star, gamma, link=link, seed=seed)
    X, y = model.sample(int(round(alpha * d)))
    evals = np.linalg.eigvalsh(spectral_matrix(X, y, preprocess="identity"))[::-1]
    lr = lr_factor / float(evals[0])
    every = max(1, steps // 120)
    runs = {}
    for p in units:
        runs[f"quadratic p={p}"] = gd_first_layer(X, y, p, steps, lr, seed, init_scale=init_scale,
                                                  record_every=every, W_star=model.W[:p])
    if compare_relu:
        p = max(units)
        runs[f"relu p={p}"] = gd_first_layer(X, y, p, max(1, steps // 3), lr, seed, init_scale=1e-6, activation="relu",
                                             record_every=every, W_star=model.W[:p])
    with open(out / "gd_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "overlap_top_eigvecs", "overlap_power_iteration", "overlap_true_directions",
                    "weight_norm"])
        for name, tr in runs.items():
            for row in zip(tr.steps, tr.overlap, tr.overlap_power, tr.overlap_star, tr.norm):
                w.writerow([name, *row])

    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    fig.subplots_adjust(wspace=0.3)
    for i, (name, tr) in enumerate(runs.items()):
        relu = name.startswith("relu")
        color = "C3" if relu else f"C{i}"
        ax.plot(tr.steps, tr.overlap, color=color, ls=":" if relu else "-", label=f"GD, {name}")
        if not relu:
            ax.plot(tr.steps, tr.overlap_power, color="k", lw=0.8, ls="--")
        ax2.semilogy(tr.steps, tr.norm, color=color, ls=":" if relu else "-", label=name)
    ax.plot([], [], "k--", lw=0.8, label="power iteration with I + lr·T")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("overlap of span(U) with top-p eigenvectors of T")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(f"T = (1/n) Σ y x xᵀ; {link}, γ={gamma}, d={d}, m*={m_star}, α={alpha:g}, lr={lr:.3g}", fontsize=8)
    ax2.set_xlabel("gradient step")
    ax2.set_ylabel("||U||_F")
    ax2.legend(fontsize=7)
    ax2.set_title("weights stay small while the quadratic net aligns", fontsize=8)
    _save(fig, out / "gd.png")

    summary = {"figure": str(out / "gd.png"), "data": str(out / "gd_data.csv"), "d": d, "m_star": m_star,
               "alpha": alpha, "lr": lr, "steps": steps,
               "top_eigenvalues": [float(v) for v in evals[: max(units) + 2]], "runs": {}}
    for name, tr in runs.items():
        above = np.nonzero(tr.overlap > 0.9)[0]
        small = tr.norm < 1e-2 if name.startswith("quadratic") else np.zeros_like(tr.norm, bool)
        summary["runs"][name] = {
            "final_overlap": float(tr.overlap[-1]), "max_overlap": float(tr.overlap.max()),
            "first_step_overlap_above_0.9": int(tr.steps[above[0]]) if above.size else None,
            "final_overlap_true_directions": float(tr.overlap_star[-1]),
            "max_gap_to_power_iteration_while_norm_below_0.01":
                float(np.max(np.abs(tr.overlap - tr.overlap_power)[small])) if small.any() else None,
            "final_weight_norm": float(tr.norm[-1]),
        }
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary
