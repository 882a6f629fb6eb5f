"""Figures for the two-stage network (docs/network.md): excess risk against α, and the GD view.

Each function runs its experiment and writes, under the naming scheme of
:class:`~hmi_fast._plotting.FigureRun`, ``OUT/risk.png``, ``OUT/risk_data.csv``,
``OUT/risk_summary.json`` (``gd`` likewise); it returns the summary (printed
by the CLI). ``quick=True`` shrinks d and the number of seeds (docs/figures.md
gives the measured times); ``log`` receives the plan with an estimated time,
``progress`` shows a progress bar on stderr.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from . import _outputs, theory
from ._plotting import FigureRun, plt as _plt
from .model import HMIModel
from .gd import gd_first_layer
from .network import SpectralTwoLayer, excess_risk, random_directions

RISK_COLUMNS = ("seed", "alpha", "n", "k_hat", "mse_gamma", "mse_gamma_theory", "risk_spectral", "risk_oracle",
                "risk_random_features", "target_variance")

#: Sizes of each figure, full and quick.
SIZES = {
    "risk": {"full": dict(d=1000, m_star=10, seeds=10, alphas=tuple(np.geomspace(4, 2000, 13).round(3)),
                          n_test=100_000),
             "quick": dict(d=150, m_star=10, seeds=3, alphas=tuple(np.geomspace(4, 1000, 8).round(3)),
                           n_test=10_000)},
    "gd": {"full": dict(d=1000, alpha=100.0, steps=900), "quick": dict(d=150, alpha=50.0, steps=500)},
}


def _mse_gamma(components: np.ndarray, model: HMIModel) -> float:
    """MSE_γ = Σ_k a_k² (1 − ||P̂ w_k||²) of the spectral stage (docs/selection.md)."""
    from .metrics import weighted_mse

    return float(weighted_mse(components, model.W, model.a))


# ------------------------------------------------------------------ excess risk against α
def risk_config(quick: bool) -> dict:
    size = dict(SIZES["risk"]["quick" if quick else "full"])
    size["seeds"] = tuple(range(size["seeds"]))
    return size


def _risk_instance(model, alpha, d, m_star, split, hermite_degree, p_rf, n_test, seed, mse_theory) -> dict:
    from .estimator import SpectralEstimator

    n = max(2, int(round(alpha * d)))
    spectral = SpectralEstimator(max_components=min(m_star + 10, d // 2), random_state=seed)
    with warnings.catch_warnings():  # k̂ = 0 is expected at the smallest α: the table records it (k_hat, risk 1)
        warnings.filterwarnings("ignore", message="SpectralTwoLayer: the spectral stage selected no direction",
                                category=UserWarning)
        net = SpectralTwoLayer(readout="hermite", hermite_degree=hermite_degree, split=split, spectral=spectral,
                               random_state=seed).fit_stream(model, n=n)
    oracle = SpectralTwoLayer(readout="hermite", hermite_degree=hermite_degree, split=split,
                              spectral=model.W).fit_stream(model, n=n)
    rf = SpectralTwoLayer(readout="ridge", activation="relu", split=split,
                          spectral=random_directions(p_rf, d, seed)).fit_stream(model, n=n)
    risks = excess_risk(model, [net, oracle, rf, lambda X: np.zeros(len(X))], n_test=n_test, seed=seed)
    var = float(risks[3])
    return dict(seed=seed, alpha=float(alpha), n=n, k_hat=net.n_hidden_,
                mse_gamma=_mse_gamma(net.spectral_.components_, model), mse_gamma_theory=float(mse_theory),
                risk_spectral=risks[0] / var, risk_oracle=risks[1] / var, risk_random_features=risks[2] / var,
                target_variance=var)


def figure_risk(out_dir, *, quick=False, seeds=None, d=None, m_star=None, gamma=1.3, link="he2_he4", noise=0.0,
                alphas=None, split=0.5, hermite_degree=4, n_test=None, progress=False, log=None,
                command=None) -> dict:
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
    Writes ``risk.png``, ``risk_data.csv`` and ``risk_summary.json``; returns
    the mean curves and the fitted log-log slopes of excess risk and MSE_γ in
    the discovery regime (total α between ``α_2/split`` and ``α_{m*}/split``,
    from the theory thresholds).
    """
    cfg = risk_config(quick)
    d = cfg["d"] if d is None else int(d)
    m_star = cfg["m_star"] if m_star is None else int(m_star)
    if seeds is None:
        seeds = cfg["seeds"]
    elif isinstance(seeds, (int, np.integer)):
        seeds = tuple(range(int(seeds)))
    else:
        seeds = tuple(int(s) for s in seeds)
    alphas = np.asarray(cfg["alphas"] if alphas is None else alphas, dtype=float)
    n_test = cfg["n_test"] if n_test is None else int(n_test)
    run = FigureRun(out_dir, "risk", command=command, seeds=seeds)
    from .experiments import fit_slope, format_seconds

    with _outputs.exclusive(_outputs.check_output_folder(run.out)):
        th_model = HMIModel(d, m_star, gamma, link=link, noise=noise, seed=0)
        # the exact finite-α prediction of the spectral stage's MSE_γ (gap rule at this d)
        curve = theory.mse_curve(th_model, "saturating", split * alphas, d=d, selection="gap")
        thresholds = curve.thresholds.alpha
        p_rf = m_star * hermite_degree
        todo = [(seed, i) for seed in seeds for i in range(len(alphas))]
        work = [3 * alphas[i] * d + n_test for _, i in todo]  # rows streamed per instance (3 fits, one test pass)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="risk, (seed, alpha) instances", unit="fit", file=sys.stderr)
        rows = []
        try:
            with run.stage("fits_and_risks"):
                for j, (seed, i) in enumerate(todo):
                    if j == 0 or seed != todo[j - 1][0]:
                        model = HMIModel(d, m_star, gamma, link=link, noise=noise, seed=seed)
                    t0 = time.perf_counter()
                    rows.append(_risk_instance(model, alphas[i], d, m_star, split, hermite_degree, p_rf, n_test,
                                               seed, curve.mse[i]))
                    if j == min(1, len(todo) - 1) and log is not None:  # the second instance (kernels loaded)
                        rate = work[j] / max(time.perf_counter() - t0, 1e-9)  # measures the speed
                        log(f"risk: {len(seeds)} seeds x {len(alphas)} values of alpha = {len(todo)} instances "
                            f"(d={d}, m*={m_star}, 3 networks each, {n_test:,} test rows); about "
                            f"{format_seconds(sum(work[j + 1:]) / rate)} more (measured on instance {j + 1}: "
                            f"{rate:,.0f} rows/s). This figure does not resume: an interrupted run starts again.")
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        data = _outputs.write_csv(run.path("_data.csv"), RISK_COLUMNS, [[r[c] for c in RISK_COLUMNS] for r in rows])

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

        fig, ax = _plt().subplots(figsize=(6.6, 4.8))
        styles = [("risk_spectral", "o-", "C0", "spectral network: excess risk / Var f*"),
                  ("mse_gamma", "s--", "C1", r"spectral stage: $\mathrm{MSE}_\gamma$"),
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
        ax.plot(alphas, curve.mse, "k:", label=rf"theory $\mathrm{{MSE}}_\gamma$ at $\alpha\cdot${split:g} "
                                               "(docs/theory.md)")
        if lo is not None and hi is not None and hi > lo:
            ax.axvspan(lo, hi, color="0.92", zorder=0, label="discovery regime (fit window)")
            mid = np.sqrt(lo * hi)
            ref = 0.5 * float(np.interp(np.log(mid), np.log(alphas), curves["mse_gamma"][0]))
            ax.plot([lo, hi], [ref * (lo / mid) ** law.exponent, ref * (hi / mid) ** law.exponent],
                    color="0.4", lw=1, label=rf"slope {law.exponent:.3f} $= -(1 - 1/2\gamma)$")
        ax.set_ylim(floor / 1.5, 2.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\alpha = n / d$ (spectral stage and readout together)")
        ax.set_ylabel(r"relative excess risk  /  $\mathrm{MSE}_\gamma$")
        ax.set_title(f"Two-stage network, {link}, γ={gamma}, d={d}, m*={m_star}, {len(seeds)} seeds, split={split}",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        summary = {
            "d": d, "m_star": m_star, "gamma": gamma, "link": link, "noise": noise, "seeds": len(seeds),
            "split": split, "n_test": n_test, "alphas": [float(a) for a in alphas],
            "mean_risk_spectral": [float(v) for v in curves["risk_spectral"][0]],
            "mean_risk_oracle": [float(v) for v in curves["risk_oracle"][0]],
            "mean_risk_random_features": [float(v) for v in curves["risk_random_features"][0]],
            "mean_mse_gamma": [float(v) for v in curves["mse_gamma"][0]],
            "mean_k_hat": [float(v) for v in curves["k_hat"][0]],
            "theory_mse_gamma": [float(v) for v in curve.mse],
            "fit_window_alpha": [lo, hi],
            "slope_risk_spectral": slopes["risk_spectral"], "slope_mse_gamma": slopes["mse_gamma"],
            "slope_mse_gamma_theory": slopes["mse_gamma_theory"], "predicted_exponent": law.exponent,
        }
        return run.finish(fig, summary, [data])


# ------------------------------------------------------------------ gradient descent view
def _plateau_step(steps: np.ndarray, overlap: np.ndarray, tol: float = 0.02) -> int:
    """First recorded step from which the overlap stays within ``tol`` of its final value."""
    off = np.abs(overlap - overlap[-1]) > tol
    last_off = np.flatnonzero(off)
    return int(steps[last_off[-1] + 1]) if last_off.size else int(steps[0])


def figure_gd(out_dir, *, quick=False, seed=0, d=None, m_star=3, gamma=1.0, link="he2_he4", alpha=None,
              units=(1, 2, 3), steps=None, lr_factor=0.05, init_scale=1e-10, compare_relu=True, progress=False,
              log=None, command=None) -> dict:
    """GD on the first layer from a small initialisation tracks power iteration on T (τ = identity).

    Data: ``n = α·d`` rows of an HMI model. For each number of hidden units p
    in ``units``, full-batch GD with σ(z) = z²/2, readout weights 1 and
    ``lr = lr_factor / λ_1(T)`` (see :func:`~hmi_fast.network.gd_first_layer`);
    plotted against the step: the overlap of span(U) with the top-p
    eigenvectors of ``T = (1/n) Σ y x xᵀ``, the same for power iteration with
    ``I + lr·T`` (the small-weight limit of §7), and ``||U||_F``. With
    ``compare_relu`` the largest p is also run with a relu activation, whose
    gradient at small weights is not ``T u``; it is run for a third of the
    steps (its overlap is flat long before), and the legend says from which
    step it is flat. Writes ``gd.png``, ``gd_data.csv`` and ``gd_summary.json``.
    """
    from .engine import spectral_matrix
    from .experiments import format_seconds

    size = SIZES["gd"]["quick" if quick else "full"]
    d = size["d"] if d is None else int(d)
    alpha = size["alpha"] if alpha is None else float(alpha)
    steps = size["steps"] if steps is None else int(steps)
    run = FigureRun(out_dir, "gd", command=command, seeds=[seed])
    with _outputs.exclusive(_outputs.check_output_folder(run.out)):
        model = HMIModel(d, m_star, gamma, link=link, seed=seed)
        with run.stage("sample_and_T"):
            X, y = model.sample(int(round(alpha * d)))
            evals = np.linalg.eigvalsh(spectral_matrix(X, y, preprocess="identity"))[::-1]
        lr = lr_factor / float(evals[0])
        every = max(1, steps // 120)
        plan = [(f"quadratic p={p}", p, steps, "quadratic", init_scale) for p in units]
        if compare_relu:
            plan.append((f"relu p={max(units)}", max(units), max(1, steps // 3), "relu", 1e-6))
        if log is not None:
            with run.stage("plan"):
                t = []
                for k in (1, 5):
                    t0 = time.perf_counter()
                    gd_first_layer(X, y, max(units), k, lr, seed, init_scale=init_scale, record_every=k)
                    t.append(time.perf_counter() - t0)
                per_step, fixed = max((t[1] - t[0]) / 4, 1e-6), max(t[0] - (t[1] - t[0]) / 4, 0.0)
                log(f"gd: {len(plan)} gradient-descent runs on {len(y):,} rows at d={d} "
                    f"({sum(r[2] for r in plan)} steps in all), about "
                    f"{format_seconds(sum(fixed + r[2] * per_step for r in plan))} (measured here: "
                    f"{per_step * 1e3:.1f} ms per step)")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(r[2] for r in plan), desc="gd, steps of " + ", ".join(r[0] for r in plan),
                       unit="step", file=sys.stderr)
        runs = {}
        try:
            with run.stage("gradient_descent"):
                for name, p, n_steps, activation, scale in plan:
                    runs[name] = gd_first_layer(X, y, p, n_steps, lr, seed, init_scale=scale, activation=activation,
                                                record_every=every, W_star=model.W[:p])
                    if bar is not None:
                        bar.update(n_steps)
        finally:
            if bar is not None:
                bar.close()
        data = _outputs.write_csv(
            run.path("_data.csv"),
            ["run", "step", "overlap_top_eigvecs", "overlap_power_iteration", "overlap_true_directions",
             "weight_norm"],
            [[name, *row] for name, tr in runs.items()
             for row in zip(tr.steps, tr.overlap, tr.overlap_power, tr.overlap_star, tr.norm)])

        fig, (ax, ax2) = _plt().subplots(1, 2, figsize=(10, 4.2))
        fig.subplots_adjust(wspace=0.3)
        for i, (name, tr) in enumerate(runs.items()):
            relu = name.startswith("relu")
            color = "C3" if relu else f"C{i}"
            label = f"GD, {name}"
            if relu:
                label += f" ({int(tr.steps[-1])} steps; flat from step {_plateau_step(tr.steps, tr.overlap)})"
            ax.plot(tr.steps, tr.overlap, color=color, ls=":" if relu else "-", label=label)
            if not relu:
                ax.plot(tr.steps, tr.overlap_power, color="k", lw=0.8, ls="--")
            ax2.semilogy(tr.steps, tr.norm, color=color, ls=":" if relu else "-", label=name)
        ax.plot([], [], "k--", lw=0.8, label=r"power iteration with $I + \mathrm{lr}\cdot T$")
        ax.set_xlabel("gradient step")
        ax.set_ylabel("overlap of span(U) with top-p eigenvectors of T")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.set_title(rf"$T = \frac{{1}}{{n}}\sum y\, x x^\top$; {link}, γ={gamma}, d={d}, m*={m_star}, "
                     f"α={alpha:g}, lr={lr:.3g}", fontsize=8)
        ax2.set_xlabel("gradient step")
        ax2.set_ylabel(r"$\|U\|_F$ (log scale)")
        ax2.legend(fontsize=7)
        ax2.set_title("weights stay small while the quadratic net aligns", fontsize=8)
        summary = {"d": d, "m_star": m_star, "alpha": alpha, "seed": seed, "lr": lr, "steps": steps,
                   "top_eigenvalues": [float(v) for v in evals[: max(units) + 2]], "runs": {}}
        for name, tr in runs.items():
            above = np.nonzero(tr.overlap > 0.9)[0]
            small = tr.norm < 1e-2 if name.startswith("quadratic") else np.zeros_like(tr.norm, bool)
            summary["runs"][name] = {
                "steps": int(tr.steps[-1]), "flat_from_step": _plateau_step(tr.steps, tr.overlap),
                "final_overlap": float(tr.overlap[-1]), "max_overlap": float(tr.overlap.max()),
                "first_step_overlap_above_0.9": int(tr.steps[above[0]]) if above.size else None,
                "final_overlap_true_directions": float(tr.overlap_star[-1]),
                "max_gap_to_power_iteration_while_norm_below_0.01":
                    float(np.max(np.abs(tr.overlap - tr.overlap_power)[small])) if small.any() else None,
                "final_weight_norm": float(tr.norm[-1]),
            }
        return run.finish(fig, summary, [data])
