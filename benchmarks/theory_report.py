"""Tables of docs/theory.md §9: the simulations of :mod:`benchmarks.theory_check` against ``hmi_fast.theory``.

    python -m benchmarks.theory_report --out theory_check [--json tables.json]
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
    args = p.parse_args(argv)
    report(args.out, args.json)


if __name__ == "__main__":
    main()
