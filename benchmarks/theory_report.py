"""Tables of docs/theory.md §9: the simulations of :mod:`benchmarks.theory_check` against ``hmi_fast.theory``.

    python -m benchmarks.theory_report --out theory_check --markdown
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hmi_fast import HMIModel
from hmi_fast import theory as T

from .theory_check import SETTINGS, load


def _model(setting):
    return HMIModel(setting["d"], setting["m_star"], setting["gamma"], link=setting["link"])


def _stack(rows, key):
    return np.array([[r[key] for r in seed["rows"]] for seed in rows], dtype=np.float64)


def _mean_se(x, axis=0):
    x = np.asarray(x, dtype=np.float64)
    n = np.sum(np.isfinite(x), axis=axis)
    return np.nanmean(x, axis=axis), np.nanstd(x, axis=axis, ddof=1) / np.sqrt(np.maximum(n, 1))


def _crossing(alphas, q, level=0.5):
    """First α where the curve q(α) crosses ``level`` (log-linear interpolation), NaN if it does not."""
    above = np.flatnonzero(q >= level)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    i = above[0]
    la, lb = np.log(alphas[i - 1]), np.log(alphas[i])
    t = (level - q[i - 1]) / (q[i] - q[i - 1])
    return float(np.exp(la + t * (lb - la)))


def spectrum_tables(out, name="issue", min_alpha_outliers=10.0):
    """Outliers, per-outlier overlaps, bulk edges and q = 1/2 crossings for one setting."""
    setting = SETTINGS[name]
    rows = load(out, name)
    d, m = setting["d"], setting["m_star"]
    model = _model(setting)
    alphas = np.array([r["alpha"] for r in rows[0]["rows"]])
    ev_top = _stack(rows, "ev_top")  # (seeds, A, K)
    ev_bot = _stack(rows, "ev_bottom")
    ov = _stack(rows, "ov_top")  # (seeds, A, K, m)
    pred = {key: T.predict(model, "saturating", alphas, d=dd) for key, dd in (("d/n", None), ("(d-m)/n", d))}
    p = pred["(d-m)/n"]
    res = {"setting": name, "d": d, "m_star": m, "seeds": len(rows), "alphas": alphas.tolist()}
    # outliers: the k-th largest eigenvalue against direction k's outlier (even link, θ_k > 0, decreasing)
    out_rows = []
    for ia, a in enumerate(alphas):
        for k in range(m):
            if not np.isfinite(p.outliers[ia, k]):
                continue
            sim, se = _mean_se(ev_top[:, ia, k])
            qs, qse = _mean_se(ov[:, ia, k, k])
            out_rows.append({"alpha": float(a), "k": k + 1, "sim": sim, "se": se,
                             "pred": float(p.outliers[ia, k]), "pred_d_over_n": float(pred["d/n"].outliers[ia, k]),
                             "pred_large": float(T.predict(model, "saturating", a, regime="large_alpha").outliers[k]),
                             "q_sim": qs, "q_se": qse, "q_pred": float(p.branch_overlaps[ia, k, k]),
                             "q_large": float(T.predict(model, "saturating", a, regime="large_alpha").overlaps[k])})
    res["outliers"] = out_rows
    # bulk edges: the smallest eigenvalue, and the largest one that is not a predicted outlier
    edge_rows = []
    for ia, a in enumerate(alphas):
        k_out = int(np.sum(np.isfinite(p.outliers[ia])))
        lo, lo_se = _mean_se(ev_bot[:, ia, 0])
        hi, hi_se = _mean_se(ev_top[:, ia, k_out])
        sig = float(p.sigma[ia])
        edge_rows.append({"alpha": float(a), "sigma": sig, "lower_sim": lo, "lower_se": lo_se, "upper_sim": hi,
                          "upper_se": hi_se, "lower_pred": float(p.bulk_edges[ia, 0]),
                          "upper_pred": float(p.bulk_edges[ia, 1]),
                          "lower_pred_d_over_n": float(pred["d/n"].bulk_edges[ia, 0]),
                          "upper_pred_d_over_n": float(pred["d/n"].bulk_edges[ia, 1]),
                          "semicircle": [float(p.bulk_center - 2 * sig), float(p.bulk_center + 2 * sig)],
                          "edge_scales": p.edge_scales[ia].tolist()})
    res["edges"] = edge_rows
    # q_k = 1/2 crossings: the estimator's recovery (gap rule, exact bulk) averaged over seeds
    q_gap = _stack(rows, "q_gap")  # (seeds, A, m)
    half = T.thresholds(model, level=0.5, d=d)
    res["crossings"] = [{"k": k + 1, "sim": _crossing(alphas, q_gap[:, :, k].mean(axis=0)),
                         "sim_top_vector": _crossing(alphas, ov[:, :, k, k].mean(axis=0)),
                         "pred": float(half.alpha[k]), "pred_se": float(half.alpha_se[k]),
                         "large": float(T.thresholds(model, level=0.5, regime="large_alpha").alpha[k])}
                        for k in range(m)]
    res["emergence"] = {"exact": T.thresholds(model, d=d).alpha.tolist(),
                        "large": T.thresholds(model, regime="large_alpha").alpha.tolist()}
    return res


def mse_tables(out, name):
    setting = SETTINGS[name]
    rows = load(out, name)
    d = setting["d"]
    model = _model(setting)
    alphas = np.array([r["alpha"] for r in rows[0]["rows"]])
    res = {"setting": name, "d": d, "m_star": setting["m_star"], "seeds": len(rows), "rows": []}
    exact = T.predict(model, "saturating", alphas, d=d)
    limit = T.predict(model, "saturating", alphas)
    large = T.predict(model, "saturating", alphas, regime="large_alpha")
    for rule in ("gap", "edge"):
        mse, se = _mean_se(_stack(rows, f"mse_{rule}"))
        k, _ = _mean_se(_stack(rows, f"k_{rule}"))
        res[rule] = {"mse": mse.tolist(), "se": se.tolist(), "k_hat": k.tolist()}
    res["alphas"] = alphas.tolist()
    res["pred_exact"] = exact.mse.tolist()
    res["pred_exact_limit"] = limit.mse.tolist()
    res["pred_large"] = large.mse.tolist()
    res["k_pred"] = exact.n_components.tolist()
    th = T.thresholds(model, d=d)
    fin = th.alpha[np.isfinite(th.alpha)]
    lo, hi = 2 * fin[0], min(fin[-1], alphas[-1])
    res["window"] = [float(lo), float(hi)]
    res["slopes"] = {"sim_gap": T.fit_slope(alphas, res["gap"]["mse"], lo, hi),
                     "exact": T.fit_slope(alphas, exact.mse, lo, hi),
                     "large": T.fit_slope(alphas, large.mse, lo, hi),
                     "predicted_exponent": T.scaling_law(setting["gamma"]).exponent}
    dense = T.discovery_slopes(model, d=d)
    res["slopes_dense"] = {"window": list(dense.window), "exact": dense.exact, "large": dense.large_alpha}
    return res


def selection_table(out, name="fig2"):
    setting = SETTINGS[name]
    rows = load(out, name)
    d, m = setting["d"], setting["m_star"]
    model = _model(setting)
    alphas = np.array([r["alpha"] for r in rows[0]["rows"]])
    ov = _stack(rows, "ov_top")  # (seeds, A, K, m)
    p = T.predict(model, "saturating", alphas, d=d)
    res = {"setting": name, "d": d, "seeds": len(rows), "rows": []}
    for ia, a in enumerate(alphas):
        q_all = ov[:, ia].sum(axis=1)  # recovery by the top KEEP_TOP vectors
        r = {"alpha": float(a), "q_gt_half_sim": _mean_se((q_all > 0.5).sum(axis=1))[0],
             "q_gt_half_pred": int(np.sum(p.overlaps[ia] > 0.5)), "outliers_pred": int(p.n_components[ia])}
        for key in ("k_gap", "k_edge", "k_gap_semicircle", "k_edge_semicircle"):
            vals = np.array([seed["rows"][ia][key] for seed in rows])
            r[key] = [int(v) for v in vals]
        res["rows"].append(r)
    return res


def report(out, json_path=None):
    tables = {}
    names = [n for n in SETTINGS if (Path(out) / f"{n}.jsonl").exists()]
    if "issue" in names:
        tables["issue"] = spectrum_tables(out, "issue")
    for n in names:
        if n.startswith("fig1"):
            tables[n] = mse_tables(out, n)
            if n == "fig1_he2_he4":
                tables[n + "_spectrum"] = spectrum_tables(out, n)
    if "fig2" in names:
        tables["fig2"] = selection_table(out)
    text = json.dumps(tables, indent=1, default=float)
    if json_path:
        Path(json_path).write_text(text)
    return tables


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="theory_check")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", action="store_true", help="print the tables of docs/theory.md §9")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(args.out))
    else:
        report(args.out, args.json)



# ---------------------------------------------------------------- markdown for docs/theory.md §9


def _nearest(alphas, wanted):
    return sorted({int(np.argmin(np.abs(np.log(alphas / w)))) for w in wanted})


def markdown(out) -> str:
    """The tables of docs/theory.md §9 from the simulations in ``out``."""
    lines = []
    add = lines.append
    # ---- spectrum: outliers, overlaps, edges (the setting on the fine grid)
    name = "crossings"
    setting = SETTINGS[name]
    rows = load(out, name)
    d, m = setting["d"], setting["m_star"]
    model = _model(setting)
    alphas = np.array([r["alpha"] for r in rows[0]["rows"]])
    ev_top, ev_bot, ov = _stack(rows, "ev_top"), _stack(rows, "ev_bottom"), _stack(rows, "ov_top")
    p = T.predict(model, "saturating", alphas, d=d)
    p0 = T.predict(model, "saturating", alphas)
    pl = T.predict(model, "saturating", alphas, regime="large_alpha")
    add(f"**Outliers** (d = {d}, m* = {m}, γ = {setting['gamma']}, he2_he4, saturating τ, {len(rows)} seeds): "
        "mean k-th largest eigenvalue against direction k's predicted outlier (exact with c = (d − m*)/n; "
        "large-α), relative error in %, for directions with predicted q_k ≥ 1/2 (well outside the bulk).")
    add("")
    add("| α | k | simulated | exact | err % | large-α | err % |")
    add("|---|---|---|---|---|---|---|")
    errs, errs_large, errs_sigma, errs_centre = [], [], [], []
    for ia in _nearest(alphas, [10, 20, 40, 80, 160, 320, 400]):
        for k in range(m):
            if not (np.isfinite(p.outliers[ia, k]) and p.branch_overlaps[ia, k, k] >= 0.5):
                continue
            sim, se = _mean_se(ev_top[:, ia, k])
            e, el = 100 * (p.outliers[ia, k] / sim - 1), 100 * (pl.outliers[ia, k] / sim - 1)
            add(f"| {alphas[ia]:.1f} | {k + 1} | {sim:.4f} ± {se:.4f} | {p.outliers[ia, k]:.4f} | {e:+.1f} | "
                f"{pl.outliers[ia, k]:.4f} | {el:+.1f} |")
    for ia in np.flatnonzero(alphas >= 10):
        for k in range(m):
            if not np.isfinite(p.outliers[ia, k]):
                continue
            sim, _ = _mean_se(ev_top[:, ia, k])
            errs_sigma.append(abs(p.outliers[ia, k] - sim) / p.sigma[ia])
            if p.branch_overlaps[ia, k, k] >= 0.5:
                errs_centre.append(abs(p.outliers[ia, k] - sim) / abs(sim - p.bulk_center))
                errs_large.append((abs(pl.outliers[ia, k] - sim) / abs(sim - p.bulk_center), abs(sim)))
                if abs(sim) >= 0.02:
                    errs.append(abs(p.outliers[ia, k] / sim - 1))
    errs_large = np.array(errs_large)
    add("")
    add(f"Over the (α ≥ 10, k) of the grid with q_k ≥ 1/2 and |λ_k| ≥ 0.02 ({len(errs)} of them; closer to 0 a "
        f"relative error means little): exact within 2 % for {100 * np.mean(np.array(errs) <= 0.02):.0f} %, "
        f"at most {100 * max(errs):.1f} %, mean {100 * np.mean(errs):.1f} %. Relative to the distance from the "
        f"bulk centre E τ, for all {len(errs_centre)} with q_k ≥ 1/2: exact at most {100 * max(errs_centre):.1f} % "
        f"(mean {100 * np.mean(errs_centre):.1f} %), large-α at most {100 * errs_large[:, 0].max():.1f} % "
        f"(mean {100 * errs_large[:, 0].mean():.1f} %). Every predicted outlier (also q_k < 1/2) in units of "
        f"σ: at most {max(errs_sigma):.3f} σ.")
    add("")
    # overlaps
    add("**Overlaps**: recovery of w_k by the top n̂ eigenvectors (n̂ = predicted number of outliers) "
        "against the predicted q_k; and the k-th eigenvector's own overlap against its outlier's.")
    add("")
    add("| α | q_k simulated (subspace) / predicted | own-vector overlap simulated / predicted |")
    add("|---|---|---|")
    dq, dv = [], []
    for ia in range(alphas.size):
        kp = int(p.n_components[ia])
        if kp == 0:
            continue
        qo = ov[:, ia, :kp].sum(axis=1).mean(axis=0)
        qv = np.array([ov[:, ia, k, k].mean() for k in range(kp)])
        for k in range(m):
            dq.append((abs(qo[k] - p.overlaps[ia, k]), p.overlaps[ia, k]))
        for k in range(kp):
            dv.append((abs(qv[k] - p.branch_overlaps[ia, k, k]), p.branch_overlaps[ia, k, k]))
        if ia in _nearest(alphas, [5, 10, 20, 40, 80, 160, 320]):
            add(f"| {alphas[ia]:.1f} | " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(qo[:kp], p.overlaps[ia, :kp]))
                + " | " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(qv, p.branch_overlaps[ia].diagonal()[:kp]))
                + " |")
    dq, dv = np.array(dq), np.array(dv)
    far = dq[:, 1] >= 0.5
    add("")
    add(f"Subspace recovery: |Δq| ≤ 0.03 for {100 * np.mean(dq[far, 0] <= 0.03):.0f} % of the (α, k) with "
        f"q_k ≥ 1/2 (max {dq[far, 0].max():.3f}), for {100 * np.mean(dq[:, 0] <= 0.03):.0f} % of all "
        f"(max {dq[:, 0].max():.3f}, near the thresholds). Own-vector overlaps: |Δq| ≤ 0.03 for "
        f"{100 * np.mean(dv[dv[:, 1] >= 0.5, 0] <= 0.03):.0f} % with q ≥ 1/2 (max {dv[dv[:, 1] >= 0.5, 0].max():.3f}).")
    add("")
    # edges
    add("**Bulk edges**, (predicted − simulated)/σ, σ = √(c E τ²): the smallest eigenvalue and the largest "
        "one that is not a predicted outlier; exact with c = (d − m*)/n, with c = d/n, and the semicircle.")
    add("")
    add("| α | lower: (d−m*)/n | d/n | semicircle | upper: (d−m*)/n | d/n | semicircle | TW unit/σ |")
    add("|---|---|---|---|---|---|---|---|")
    el, eu = [], []
    for ia in range(alphas.size):
        k_out = int(p.n_components[ia])
        lo, hi = ev_bot[:, ia, 0].mean(), ev_top[:, ia, k_out].mean()
        s = p.sigma[ia]
        row = [(p.bulk_edges[ia, 0] - lo) / s, (p0.bulk_edges[ia, 0] - lo) / s, (pl.bulk_edges[ia, 0] - lo) / s,
               (p.bulk_edges[ia, 1] - hi) / s, (p0.bulk_edges[ia, 1] - hi) / s, (pl.bulk_edges[ia, 1] - hi) / s]
        el.append(row[:3])
        eu.append(row[3:])
        if ia in _nearest(alphas, [2, 3, 5, 10, 20, 40, 80, 160, 400]):
            add(f"| {alphas[ia]:.1f} | " + " | ".join(f"{v:+.3f}" for v in row)
                + f" | {p.edge_scales[ia, 1] * d ** (-2 / 3) / s:.3f} |")
    el, eu = np.abs(el), np.abs(eu)
    add("")
    add(f"Over the {alphas.size} values of α in [2, 400]: max |error| lower {el[:, 0].max():.3f} σ ((d − m*)/n), "
        f"{el[:, 1].max():.3f} σ (d/n), {el[:, 2].max():.3f} σ (semicircle); upper {eu[:, 0].max():.3f} σ, "
        f"{eu[:, 1].max():.3f} σ, {eu[:, 2].max():.3f} σ. Mean |error|: (d − m*)/n "
        f"{np.mean(np.r_[el[:, 0], eu[:, 0]]):.3f} σ, d/n {np.mean(np.r_[el[:, 1], eu[:, 1]]):.3f} σ.")
    add("")
    # crossings
    add("**Crossings** of q_k = 1/2 (simulated: log-linear interpolation of the mean recovery on the grid, "
        "s.e. by bootstrap over seeds): the estimator's recovery with the gap rule and with the edge rule "
        "(exact bulk of the weights), and the subspace of all predicted outliers; predicted by "
        "`thresholds(level=0.5, d=d, selection=...)`; large-α: 2 α_k.")
    add("")
    add("| k | gap: sim | pred | err % | edge: sim | pred | err % | outliers: sim | pred | err % | large-α | err % |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    preds = {sel: T.thresholds(model, level=0.5, d=d, selection=sel).alpha for sel in ("gap", "edge", "outliers")}
    large = T.thresholds(model, level=0.5, regime="large_alpha").alpha
    qsel = {"gap": _stack(rows, "q_gap"), "edge": _stack(rows, "q_edge")}
    rng = np.random.default_rng(0)
    for k in range(m):
        cells = []
        for sel in ("gap", "edge", "outliers"):
            if sel == "outliers":
                curve = np.array([ov[:, ia, :int(p.n_components[ia])].sum(axis=1)[:, k] if p.n_components[ia]
                                  else np.zeros(len(rows)) for ia in range(alphas.size)]).T
            else:
                curve = qsel[sel][:, :, k]
            sim = _crossing(alphas, curve.mean(axis=0))
            boot = [_crossing(alphas, curve[rng.integers(0, len(rows), len(rows))].mean(axis=0)) for _ in range(200)]
            cells.append(f"{sim:.2f} ± {np.nanstd(boot):.2f} | {preds[sel][k]:.2f} | {100 * (preds[sel][k] / sim - 1):+.1f}")
            if sel == "gap":
                sim_gap = sim
        add(f"| {k + 1} | " + " | ".join(cells) + f" | {large[k]:.2f} | {100 * (large[k] / sim_gap - 1):+.1f} |")
    add("")
    # ---- MSE
    add("**MSE_γ** of the spectral estimator (gap rule, exact bulk of the weights), Figure 1's model at "
        "d = 400 (m* = 10, γ = 1.3, saturating τ, 16 seeds), against `predict(..., d=400, selection='gap')`, "
        "the prediction that keeps every outlier, and the large-α curve; errors in %.")
    for link in ("he2_he4", "he2", "abs", "relu"):
        nm = f"fig1_{link}"
        if not (Path(out) / f"{nm}.jsonl").exists():
            continue
        st = SETTINGS[nm]
        rows = load(out, nm)
        model = _model(st)
        al = np.array([r["alpha"] for r in rows[0]["rows"]])
        g = T.predict(model, "saturating", al, d=st["d"], selection="gap")
        o = T.predict(model, "saturating", al, d=st["d"])
        la = T.predict(model, "saturating", al, regime="large_alpha")
        mse, se = _mean_se(_stack(rows, "mse_gap"))
        add("")
        add(f"g = {link}:")
        add("")
        add("| α | simulated | gap model | err % | all outliers | err % | large-α | err % |")
        add("|---|---|---|---|---|---|---|---|")
        for i, a in enumerate(al):
            add(f"| {a:.1f} | {mse[i]:.4f} ± {se[i]:.4f} | {g.mse[i]:.4f} | {100 * (g.mse[i] / mse[i] - 1):+.1f} | "
                f"{o.mse[i]:.4f} | {100 * (o.mse[i] / mse[i] - 1):+.1f} | {la.mse[i]:.4f} | "
                f"{100 * (la.mse[i] / mse[i] - 1):+.1f} |")
        th = T.thresholds(model, d=st["d"]).alpha
        lo, hi = 2 * th[0], min(th[-1], al[-1])
        add("")
        add(f"Fitted slopes for α in [2 α_1, α_m*] = [{lo:.3g}, {hi:.3g}]: simulated "
            f"{T.fit_slope(al, mse, lo, hi):.3f}, gap model {T.fit_slope(al, g.mse, lo, hi):.3f}, "
            f"all outliers {T.fit_slope(al, o.mse, lo, hi):.3f}, large-α {T.fit_slope(al, la.mse, lo, hi):.3f}; "
            f"−(1 − 1/(2γ)) = {T.scaling_law(st['gamma']).exponent:.3f}. "
            f"Worst error of the gap model: {100 * np.max(np.abs(g.mse / mse - 1)):.1f} %, "
            f"of the large-α curve: {100 * np.max(np.abs(la.mse / mse - 1)):.1f} %.")
    # ---- selection on Figure 2's model
    if (Path(out) / "fig2.jsonl").exists():
        rows = load(out, "fig2")
        st = SETTINGS["fig2"]
        model = _model(st)
        al = np.array([r["alpha"] for r in rows[0]["rows"]])
        pg = T.predict(model, "saturating", al, d=st["d"], selection="gap")
        pe = T.predict(model, "saturating", al, d=st["d"], selection="edge")
        add("")
        add(f"**Selection** on Figure 2's model (d = {st['d']}, m* = 20, γ = 1.3, he2_he4, saturating τ, "
            f"{len(rows)} seeds, one value per seed): k̂ of both rules with the exact bulk of the weights "
            "(`weights=`) and with the semicircle (moments only), against the number of directions with "
            "q_k > 1/2 (recovery by the gap rule's / edge rule's components) and the predictions.")
        add("")
        add("| α | k̂ gap | k̂ edge | k̂ gap, semicircle | k̂ edge, semicircle | #(q_k > 1/2) gap / edge | "
            "predicted: outliers, k̂ gap, k̂ edge, #(q_k > 1/2) |")
        add("|---|---|---|---|---|---|---|")
        for i, a in enumerate(al):
            get = lambda key: [seed["rows"][i][key] for seed in rows]  # noqa: E731
            ng = [int(np.sum(np.array(q) > 0.5)) for q in get("q_gap")]
            ne = [int(np.sum(np.array(q) > 0.5)) for q in get("q_edge")]
            add(f"| {a:g} | {get('k_gap')} | {get('k_edge')} | {get('k_gap_semicircle')} | "
                f"{get('k_edge_semicircle')} | {ng} / {ne} | {int(pg.n_components[i])}, {pg.n_selected[i]:.1f}, "
                f"{pe.n_selected[i]:.1f}, {int(np.sum(pg.overlaps[i] > 0.5))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
