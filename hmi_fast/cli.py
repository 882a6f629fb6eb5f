"""The ``hmi-fast`` command.

Exit status: 0 on success, 2 for a bad argument (argparse's convention; the
message names the option and the format), 1 when the work cannot be done
(another run holds the output folder, a damaged run folder), 130 after Ctrl-C.
Plans, notes and progress bars go to stderr; the result table goes to stdout,
and the full summary (with its provenance record) to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import sys
import time

LINKS = ("he2", "he2_he4", "abs", "relu")
PREPROCESS = ("saturating", "identity", "sign", "clip")
FIGURES = ("1", "2", "3", "thresholds", "risk", "gd")
MULTI_SEED = ("1", "thresholds", "risk")  # figures averaged over --seeds; the others use --seed


# ------------------------------------------------------------------ argument types
def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _real(text: str) -> float:
    return _number(text, "a finite number")


def _nonnegative(text: str) -> float:
    value = _number(text, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _threads(text: str) -> int:
    value = _positive_int(text)
    import numba

    top = numba.config.NUMBA_NUM_THREADS
    if value > top:
        raise argparse.ArgumentTypeError(f"expected an integer between 1 and {top} (this machine), got {value}")
    return value


ALPHAS_FORMAT = "comma-separated numbers > 0 (e.g. 5,20,100) or geom:LO:HI:NUM (e.g. geom:2:1000:10)"


def parse_alphas(text: str) -> list[float]:
    """``"5,20,100"`` or ``"geom:LO:HI:NUM"`` (NUM log-spaced values from LO to HI) as a list of floats."""
    import numpy as np

    bad = argparse.ArgumentTypeError(f"expected {ALPHAS_FORMAT}, got {text!r}")
    if text.startswith("geom:"):
        parts = text[5:].split(":")
        if len(parts) != 3:
            raise bad
        try:
            lo, hi, num = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise bad from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi and num >= 2):
            raise argparse.ArgumentTypeError(
                f"geom:LO:HI:NUM needs 0 < LO < HI (finite) and NUM >= 2, got {text!r}")
        return [float(v) for v in np.geomspace(lo, hi, num)]
    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise bad from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"every alpha must be a finite number > 0, got {part.strip()!r}; "
                                             f"expected {ALPHAS_FORMAT}")
        out.append(value)
    return out


class _Version(argparse.Action):
    """``--version``: the package version and, in a checkout, the git commit (computed only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from ._outputs import version_string

        print(version_string())
        parser.exit()


# ------------------------------------------------------------------ helpers
def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _out_folder(args) -> None:
    """Refuse an --out that is a file or cannot be created or written, before any work."""
    from ._outputs import check_output_folder

    try:
        check_output_folder(args.out)
    except ValueError as exc:
        args.parser.error(f"argument --out: {exc}")


_OPTION = {"d": "--d", "m_star": "--m-star", "alphas": "--alphas", "seeds": "--seeds", "gamma": "--gamma",
           "noise": "--noise", "max_components": "--max-components", "preprocess": "--preprocess",
           "link": "--link"}


def _usage_error(args, exc: Exception):
    """Turn a ``name: message`` validation error into argparse's ``argument --option: message``."""
    name, _, rest = str(exc).partition(": ")
    if name in _OPTION:
        args.parser.error(f"argument {_OPTION[name]}: {rest}")
    args.parser.error(str(exc))


def _table(header, rows) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(["  " + lines[0], "  " + "  ".join("-" * w for w in widths)] + ["  " + x for x in lines[1:]])


def _g(x, digits=4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _files(summary: dict) -> str:
    f = summary["files"]
    return "files: " + ", ".join([f["figure"], *f["data"], f["summary"]])


# ------------------------------------------------------------------ demo
def _demo(args) -> int:
    import numpy as np

    from . import HMIModel, accumulate, metrics, select_components, threads, topk_eigh
    from ._config import describe
    from ._outputs import version_string
    from .experiments import MAX_ROWS

    if args.m_star > args.d:
        args.parser.error(f"argument --m-star: must be at most --d ({args.d}), got {args.m_star}")
    n = int(round(args.alpha * args.d))
    if not 1 <= n <= MAX_ROWS:
        args.parser.error(f"argument --alpha: n = alpha*d = {args.alpha * args.d:.3g} rows at --d {args.d}; "
                          f"use alpha between {1 / args.d:.3g} and {MAX_ROWS / args.d:.3g}")
    model = HMIModel(args.d, args.m_star, args.gamma, link=args.link, seed=args.seed)
    per_end = max(1, min(args.m_star + 10, args.d // 2))
    args.dtype = args.dtype or "float64"
    print(f"hmi-fast demo ({version_string()}): {model}")
    print(f"  n = {n:,} samples (alpha = n/d = {args.alpha:g}), preprocess = {args.preprocess}, dtype = {args.dtype}")
    with threads(args.threads):
        t0 = time.perf_counter()
        # compile (or load from the cache) the kernels of this dtype and τ, so the stage below times the work only
        accumulate(HMIModel(8, 1, 1.0), n=64, preprocess=args.preprocess, dtype=np.dtype(args.dtype))
        t1 = time.perf_counter()
        _log(f"streaming {n:,} rows ...")
        acc = accumulate(model, n=n, preprocess=args.preprocess, dtype=np.dtype(args.dtype))
        T = acc.finalize()
        t2 = time.perf_counter()
        res = topk_eigh(T, 2 * per_end, which="BE") if args.d >= 2 else topk_eigh(T, 1)
        t3 = time.perf_counter()
        sel = select_components(res.values, d=args.d, n=n, weights=acc.weight_sketch)
        W_hat = res.vectors[:, sel.index].T
        q = metrics.recovery(W_hat, model.W)
        mse = metrics.weighted_mse(W_hat, model.W, model.a)
        t4 = time.perf_counter()
    info = describe()
    blas = info["blas"][0] if info["blas"] else {"internal_api": "?", "architecture": "?"}
    print(f"  BLAS: {blas['internal_api']} {blas['architecture']}, "
          f"threads: numba {info['numba_threads']} ({info['numba_threading_layer']})")
    print(f"  compile/load kernels   {t1 - t0:7.2f} s")
    print(f"  stream + build T       {t2 - t1:7.2f} s   ({n / (t2 - t1):,.0f} rows/s)")
    print(f"  top-{2 * per_end} eigenpairs ({res.method})  {t3 - t2:7.2f} s")
    print(f"  selection + metrics    {t4 - t3:7.2f} s")
    top = res.values[: min(args.top, len(res.values))]
    print("  top eigenvalues: " + " ".join(f"{v:.4f}" for v in top))
    print(f"  bulk: center {sel.bulk_center:.4f}, edges ({sel.bulk_edges[0]:.4f}, {sel.bulk_edges[1]:.4f})")
    print(f"  k_hat = {sel.n_components} (gap rule; edge rule: {sel.n_components_edge})")
    print("  recovery q_k of each true direction: " + " ".join(f"{v:.2f}" for v in q))
    print(f"  MSE_gamma = {mse:.4f}")
    return 0


# ------------------------------------------------------------------ figure
def _report_figure(which: str, s: dict) -> None:
    """The short human table of a figure's summary, on stdout."""
    if which == "1":
        print(f"Figure 1 (d={s['d']}, m*={s['m_star']}): MSE_gamma slope in the discovery window against the "
              f"theory curves' (exact finite-alpha and large-alpha), predicted exponent {s['predicted_exponent']:.3f}")
        print(_table(["link", "seeds", "fit window (alpha)", "slope", "exact theory", "large-alpha theory",
                      "max |theory - sim| / sim"],
                     [[k, v["seeds"], f"{v['fit_range'][0]:.3g}-{v['fit_range'][1]:.3g}", _g(v["slope"], 3),
                       _g(v["theory_slope"], 3), _g(v["large_alpha_slope"], 3),
                       f"{v['max_relative_theory_error']:.0%}"]
                      for k, v in s["links"].items()]))
    elif which == "2":
        print(f"Figure 2 (d={s['d']}, m*={s['m_star']}, seed {s['seed']}): spectrum of T against the theory")
        print(_table(["alpha", "outside bulk", "predicted", "top eigenvalues", "predicted outliers"],
                     [[a, v["outside_bulk"], v["predicted_outliers"],
                       " ".join(f"{x:.3f}" for x in v["top_eigenvalues"][:3]),
                       " ".join(f"{x:.3f}" for x in v["predicted_top"][:3]) or "-"]
                      for a, v in s["alpha"].items()]))
    elif which == "3":
        print(f"Figure 3 (d={s['d']}, alpha={s['alpha']:g}, seed {s['seed']}): selected directions")
        print(_table(["gap rule k_hat", "edge rule k_hat", "predicted outliers", "selected with q > 1/2",
                      "gap threshold"],
                     [[s["k_hat_gap"], s["k_hat_edge"], s["predicted_outliers"], s["n_recovered_q>1/2"],
                       _g(s["threshold"] * s["edge_scale"], 3)]]))
    elif which == "thresholds":
        print(f"Thresholds (d={s['d']}, m*={s['m_star']}, {s['seeds']} seeds): alpha where q_k crosses 1/2")
        print(_table(["k", "simulation", "s.e.", "exact theory", "difference", "large-alpha 2 alpha_k",
                      "seeds reaching"],
                     [[k + 1, _g(m), _g(e, 2), _g(t), f"{r:+.0%}" if not math.isnan(r) else "-", _g(t2), c]
                      for k, (m, e, t, r, t2, c) in enumerate(zip(
                          s["empirical_crossing"], s["empirical_crossing_se"], s["theory_crossing"],
                          s["relative_difference"], s["theory_crossing_large_alpha"], s["seeds_reaching"]))]))
    elif which == "risk":
        print(f"Excess risk (d={s['d']}, m*={s['m_star']}, {s['seeds']} seeds); relative to Var f*")
        print(_table(["alpha", "k_hat", "spectral net", "oracle", "random features", "MSE_gamma", "theory"],
                     [[_g(a), _g(k, 3), _g(r, 3), _g(o, 2), _g(f, 3), _g(m, 3), _g(t, 3)]
                      for a, k, r, o, f, m, t in zip(s["alphas"], s["mean_k_hat"], s["mean_risk_spectral"],
                                                     s["mean_risk_oracle"], s["mean_risk_random_features"],
                                                     s["mean_mse_gamma"], s["theory_mse_gamma"])]))
        print(f"  slopes in the discovery window: excess risk {_g(s['slope_risk_spectral'], 3)}, MSE_gamma "
              f"{_g(s['slope_mse_gamma'], 3)}, theory curve {_g(s['slope_mse_gamma_theory'], 3)}; predicted "
              f"exponent {s['predicted_exponent']:.3f}")
    else:
        print(f"Gradient descent view (d={s['d']}, alpha={s['alpha']:g}, lr={s['lr']:.3g})")
        print(_table(["run", "steps", "final overlap", "first step > 0.9", "max |GD - power it.|", "final ||U||"],
                     [[k, v["steps"], _g(v["final_overlap"], 3), v["first_step_overlap_above_0.9"] or "-",
                       _g(v["max_gap_to_power_iteration_while_norm_below_0.01"], 2), _g(v["final_weight_norm"], 2)]
                      for k, v in s["runs"].items()]))
    print(f"  {_files(s)}; took {s['provenance']['timings_s'].get('total', 0):.1f} s")


def _figure(args) -> int:
    from . import figures

    if args.seeds is not None and args.which not in MULTI_SEED:
        args.parser.error(f"argument --seeds: figure {args.which} runs one seed; give --seed S instead")
    if args.workers != 1 and args.which not in ("1", "thresholds"):
        args.parser.error("argument --workers: only figures 1 and thresholds run seeds in parallel")
    if args.dtype == "float32" and args.which in ("risk", "gd"):
        args.parser.error(f"argument --dtype: figure {args.which} computes in float64 only")
    if args.dtype is None:
        args.dtype = "float64" if args.which in ("risk", "gd") else "float32"
    if args.max_components is not None and args.which != "3":
        args.parser.error(f"argument --max-components: only figure 3 takes it (figure {args.which} does not)")
    _out_folder(args)
    seeds = None if args.seeds is None else range(args.seeds)
    # --quick runs small problems on one thread unless told otherwise: on a 2-core machine shared with other
    # work, a second thread was measured 1.5-10x slower there (docs/figures.md)
    threads = args.threads if args.threads is not None or not args.quick else 1
    common = dict(quick=args.quick, progress=not args.no_progress, log=_log, command=args.command)
    engine = dict(dtype=args.dtype, threads=threads)
    if (args.scheduler is not None or args.dask_local is not None) and args.which not in ("1", "thresholds"):
        args.parser.error("argument --scheduler/--dask-local: only figures 1 and thresholds run on a cluster")
    if args.which == "1":
        with _dask_client(args) as client:
            summary = figures.figure1(args.out, seeds=seeds, workers=args.workers, client=client, **engine, **common)
    elif args.which == "2":
        summary = figures.figure2(args.out, seed=args.seed, **engine, **common)
    elif args.which == "3":
        summary = figures.figure3(args.out, seed=args.seed, max_components=args.max_components or 40, **engine,
                                  **common)
    elif args.which == "thresholds":
        with _dask_client(args) as client:
            summary = figures.figure_thresholds(args.out, seeds=seeds, workers=args.workers, client=client, **engine,
                                                **common)
    else:
        from . import network_figures
        from ._config import threads as thread_limit

        with thread_limit(threads):
            if args.which == "risk":
                summary = network_figures.figure_risk(args.out, seeds=seeds, **common)
            else:
                summary = network_figures.figure_gd(args.out, seed=args.seed, **common)
    _report_figure(args.which, summary)
    return 0


# ------------------------------------------------------------------ curve
def _curve(args) -> int:
    import numpy as np

    from . import _outputs
    from .experiments import CurveConfig, fit_slope, mean_curve, run_curve
    from .theory import discovery_slopes, mse_curve, scaling_law

    try:
        cfg = CurveConfig(d=args.d, m_star=args.m_star, gamma=args.gamma, link=args.link, noise=args.noise,
                          preprocess=args.preprocess, alphas=tuple(args.alphas),
                          seeds=tuple(range(args.seed, args.seed + args.seeds)), dtype=args.dtype or "float32",
                          center=args.center, max_components=args.max_components)
    except (ValueError, TypeError) as exc:
        _usage_error(args, exc)
    _out_folder(args)
    t0 = time.time()
    with _dask_client(args) as client:
        res = run_curve(cfg, args.out, workers=args.workers, progress=not args.no_progress, threads=args.threads,
                        desc="curve, seeds", log=_log, command=args.command, client=client)
    a, mean, se = mean_curve(res)
    model = cfg.model(args.seed)
    law = scaling_law(args.gamma, args.m_star)
    try:  # the exact finite-alpha prediction of what the estimator measures here (gap rule at this d)
        pred = mse_curve(model, args.preprocess, a, center=args.center, d=cfg.d, selection="gap")
        window = discovery_slopes(model, args.preprocess, center=args.center, d=cfg.d).window
        exact, large = pred.mse, pred.mse_large_alpha
    except ValueError as exc:  # an unbounded tau (identity) has no exact finite-alpha limit
        _log(f"exact theory not available ({exc}); showing the large-alpha curve only")
        pred = mse_curve(model, args.preprocess, a, center=args.center, regime="large_alpha")
        th = pred.thresholds.alpha
        window = (2 * th[0], th[-1])
        exact, large = np.full(len(a), np.nan), pred.mse
    lo, hi = max(window[0], a[0]), min(window[1], a[-1])
    slope, theory_slope, large_slope = (fit_slope(a, v, lo, hi) for v in (mean, exact, large))
    print(f"Learning curve (d={cfg.d}, m*={cfg.m_star}, {cfg.link}, {len(cfg.seeds)} seeds): MSE_gamma")
    print(_table(["alpha", "MSE_gamma", "s.e.", "exact theory", "large-alpha theory"],
                 [[f"{x:.4g}", f"{m:.4f}", _g(e, 2), _g(p, 4), _g(q, 4)]
                  for x, m, e, p, q in zip(a, mean, se, exact, large)]))
    print(f"  slope in the discovery window alpha in [{lo:.3g}, {hi:.3g}]: {_g(slope, 3)}; exact theory there: "
          f"{_g(theory_slope, 3)}; large-alpha theory: {_g(large_slope, 3)}; asymptotic exponent "
          f"{law.exponent:.3f} ({law.regime})")
    summary = {"config": cfg.key(), "seeds": list(cfg.seeds), "alphas": a, "mse_gamma_mean": mean,
               "mse_gamma_se": se, "mse_gamma_theory": exact, "mse_gamma_theory_large_alpha": large,
               "fit_window_alpha": [lo, hi], "slope": slope,
               "theory_slope": theory_slope, "large_alpha_slope": large_slope, "predicted_exponent": law.exponent,
               "skipped_seeds": res.skipped, "repaired": res.problems,
               "provenance": _outputs.provenance(command=args.command, seeds=cfg.seeds, started=t0)}
    path = _outputs.write_json(res.out_dir / "curve_summary.json", summary)
    print(f"  files: {res.out_dir / 'curve.csv'}, {res.out_dir / 'recovery.csv'}, {res.out_dir / 'meta.json'}, "
          f"{path}")
    return 0


# ------------------------------------------------------------------ theory
def _theory(args) -> int:
    import numpy as np

    from . import HMIModel
    from .theory import discovery_slopes, moments, predict, scaling_law, thresholds

    model = HMIModel(max(args.m_star, 1), args.m_star, args.gamma, link=args.link, noise=args.noise)
    regime = args.regime
    mo = moments(model, args.preprocess)
    if regime == "exact" and args.preprocess == "identity":
        args.parser.error("argument --regime: the exact finite-alpha spectrum has no limit for an unbounded tau "
                          "(identity); use --regime large_alpha, or a bounded --preprocess")
    large = thresholds(model, args.preprocess, center=args.center, regime="large_alpha")
    th = thresholds(model, args.preprocess, center=args.center, regime=regime)
    half = thresholds(model, args.preprocess, center=args.center, regime=regime, level=0.5)
    print(f"model: m*={args.m_star}, gamma={args.gamma}, link={args.link}, noise={args.noise}; "
          f"preprocess={args.preprocess}{' (centered)' if args.center else ''}; regime={regime} "
          "(d large, n/d = alpha fixed)")
    print(f"  E tau = {mo.mean:.5f} ± {mo.mean_se:.1e}, E tau^2 = {mo.second_moment:.5f}, Var tau = {mo.variance:.5f}")
    print(_table(["k", "a_k", "theta_k", "leaves the bulk at alpha", "q_k = 1/2 at alpha", "large-alpha alpha_k"],
                 [[k, f"{a:.4f}", f"{t:.5f}", _g(al, 4), _g(h, 4), _g(la, 4)]
                  for k, (a, t, al, h, la) in enumerate(zip(model.a, large.theta, th.alpha, half.alpha, large.alpha),
                                                        start=1)]))
    law = scaling_law(args.gamma, args.m_star)
    print(f"  scaling law: {law.description}")
    if args.preprocess != "identity":
        slopes = discovery_slopes(model, args.preprocess, center=args.center)
        print(f"  MSE_gamma slope in the discovery window alpha in [{slopes.window[0]:.3g}, {slopes.window[1]:.3g}]: "
              f"exact {_g(slopes.exact, 3)}, large-alpha {_g(slopes.large_alpha, 3)}; predicted exponent "
              f"-(1 - 1/(2 gamma)) = {slopes.predicted_exponent:.3f}")
    rows = []
    for alpha in args.alphas:
        p = predict(model, args.preprocess, alpha, center=args.center, regime=regime)
        rows.append([_g(alpha, 4), int(np.sum(np.isfinite(p.outliers))), f"{float(p.mse):.4f}",
                     f"({p.bulk_edges[0]:.4f}, {p.bulk_edges[1]:.4f})"])
    print(_table(["alpha", "outliers", "MSE_gamma", "bulk edges"], rows))
    return 0


# ------------------------------------------------------------------ Dask
def _cluster_options(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help=f"{what} run as tasks on the Dask cluster at ADDRESS (e.g. tcp://10.0.0.5:8786); this "
                        "process writes the results (needs the dask extra: pip install 'hmi_fast[dask]')")
    g.add_argument("--dask-local", type=_positive_int, default=None, metavar="N",
                   help=f"{what} run on a Dask LocalCluster of N worker processes started for this run")


@contextlib.contextmanager
def _dask_client(args):
    """The Dask client asked for on the command line (None when none was), closed on exit."""
    scheduler, local = getattr(args, "scheduler", None), getattr(args, "dask_local", None)
    if scheduler is None and local is None:
        yield None
        return
    option = "--scheduler" if scheduler is not None else "--dask-local"
    if args.workers != 1:
        args.parser.error(f"argument --workers: not with {option} (the cluster's workers run the seeds)")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        args.parser.error(f"argument {option}: needs Dask; install the extra: pip install 'hmi_fast[dask]'")
    if local is not None:
        with LocalCluster(n_workers=local, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            _log(f"Dask: a local cluster of {local} worker processes ({client.dashboard_link})")
            yield client
        return
    try:
        client = Client(scheduler)  # waits as long as Dask's distributed.comm.timeouts.connect says (30 s)
    except (OSError, ValueError, TypeError) as exc:
        args.parser.error(f"argument --scheduler: cannot reach a Dask scheduler at {scheduler!r} ({exc})")
    with client:
        n = len(client.scheduler_info().get("workers", {}))
        _log(f"Dask: scheduler {scheduler}, {n} workers")
        yield client


# ------------------------------------------------------------------ parser
def _engine_options(p: argparse.ArgumentParser, dtype_help: str) -> None:
    p.add_argument("--dtype", choices=["float64", "float32"], default=None,
                   help="precision of the block products (sums are float64 either way; " + dtype_help + ")")
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="numba and BLAS threads (default: all cores)")


def _model_options(p: argparse.ArgumentParser, d=True) -> None:
    if d:
        p.add_argument("--d", type=_positive_int, default=500, help="input dimension (default 500)")
    p.add_argument("--m-star", type=_positive_int, default=10, help="number of hidden directions (default 10)")
    p.add_argument("--gamma", type=_real, default=1.3, help="decay exponent, a_k ∝ k^-gamma (default 1.3)")
    p.add_argument("--link", choices=LINKS, default="he2_he4", help="link function g (default he2_he4)")
    p.add_argument("--noise", type=_nonnegative, default=0.0, help="label noise variance Delta >= 0 (default 0)")
    p.add_argument("--preprocess", choices=PREPROCESS, default="saturating",
                   help="weights tau(y): saturating y/(1+|y|), identity, sign, clip (default saturating)")
    p.add_argument("--center", action="store_true", help="center the weights: tau(y) - E tau (docs/theory.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmi-fast",
        description="Spectral learning of hierarchical multi-index models: streaming spectral matrices, "
        "theory and the paper's experiments.",
    )
    parser.add_argument("--version", action=_Version, help="print the package version (and git commit) and exit")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="stream a model, build T, print timings and the top eigenvalues",
        description="Stream n = alpha*d samples from a hierarchical multi-index model, build the spectral "
        "matrix T in one pass, and print the time of each stage and the top eigenvalues.",
    )
    demo.add_argument("--d", type=_positive_int, default=500, help="input dimension (default 500)")
    demo.add_argument("--m-star", type=_positive_int, default=10, help="number of hidden directions (default 10)")
    demo.add_argument("--gamma", type=_real, default=1.3, help="decay exponent, a_k ∝ k^-gamma (default 1.3)")
    demo.add_argument("--alpha", type=_positive, default=400.0, help="sample complexity n/d (default 400)")
    demo.add_argument("--link", choices=LINKS, default="he2_he4", help="link function g (default he2_he4)")
    demo.add_argument("--preprocess", choices=PREPROCESS, default="saturating",
                      help="weights tau(y) (default saturating)")
    demo.add_argument("--top", type=_positive_int, default=12, help="how many top eigenvalues to print (default 12)")
    demo.add_argument("--seed", type=_seed, default=0, help="seed of the model and its data stream (default 0)")
    _engine_options(demo, "default float64")
    demo.set_defaults(func=_demo, parser=demo)

    fig = sub.add_parser(
        "figure", help="reproduce one of the paper's figures (writes the PNG, its data and a summary)",
        description="Run the experiment behind a figure and write OUT/NAME.png, OUT/NAME_data.csv (or .npz) and "
        "OUT/NAME_summary.json, NAME = fig1, fig2, fig3, thresholds, risk or gd. "
        "1: MSE_gamma against alpha for four links (d=1000, m*=10, 70 seeds; about 3 h on 2 cores); "
        "2: spectrum histograms at alpha = 5, 164, 611, 1638 (d=1000, m*=20); 3: top eigenvalues and gaps; "
        "thresholds: predicted against empirical alpha_k; risk: excess risk of the two-stage network against "
        "alpha with random-feature and oracle baselines; gd: gradient descent on the first layer against the "
        "top eigenvectors of T. The plan and an estimated time are printed first; figures 1 and thresholds "
        "resume where an interrupted run stopped (rerun the same command).",
    )
    fig.add_argument("which", choices=FIGURES, help="which figure")
    fig.add_argument("--quick", action="store_true",
                     help="smaller d and fewer seeds, one thread unless --threads is given: each figure in under "
                     "a minute on a shared 2-core machine (docs/figures.md)")
    fig.add_argument("--out", default="hmi_fast_out", help="output folder (default ./hmi_fast_out)")
    fig.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                     help="number of seeds, 0..N-1, for figures 1, thresholds and risk (default: 70, 10, 10; "
                     "4, 4, 3 with --quick)")
    fig.add_argument("--seed", type=_seed, default=0, help="the seed of figures 2, 3 and gd (default 0)")
    fig.add_argument("--max-components", type=_positive_int, default=None, metavar="K",
                     help="figure 3: how many top eigenvalues to compute (default 40)")
    fig.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                     help="figures 1 and thresholds: seeds run in this many processes (default 1)")
    fig.add_argument("--no-progress", action="store_true", help="no progress bars (the plan is still printed)")
    _cluster_options(fig, "figures 1 and thresholds: seeds")
    _engine_options(fig, "default float32 for figures 1, 2, 3 and thresholds, measured to change no k_hat and "
                         "MSE_gamma by < 2e-7 at 1.4x the speed (docs/figures.md); risk and gd: float64 only")
    fig.set_defaults(func=_figure, parser=fig)

    curve = sub.add_parser(
        "curve", help="learning curve on a custom alpha grid (resumable tables)",
        description="Stream each seed once through all alphas (checkpoints), fit the spectral estimator at each, "
        "and write curve.csv, recovery.csv, meta.json and curve_summary.json into --out. Rerunning the same "
        "command resumes an interrupted run; damaged pieces are recomputed.",
    )
    _model_options(curve)
    curve.add_argument("--alphas", type=parse_alphas, default=parse_alphas("geom:2:1000:10"),
                       help=f"sample ratios n/d: {ALPHAS_FORMAT} (default geom:2:1000:10)")
    curve.add_argument("--seed", type=_seed, default=0, help="first seed (default 0)")
    curve.add_argument("--seeds", type=_positive_int, default=4, metavar="N",
                       help="number of seeds, from --seed on (default 4)")
    curve.add_argument("--max-components", type=_positive_int, default=None, metavar="K",
                       help="eigenpairs computed at each end of the spectrum (default m*+10)")
    curve.add_argument("--out", default="hmi_fast_out/curve", help="output folder (default ./hmi_fast_out/curve)")
    curve.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="seeds run in this many processes (default 1)")
    curve.add_argument("--no-progress", action="store_true", help="no progress bar (the plan is still printed)")
    _cluster_options(curve, "seeds")
    _engine_options(curve, "default float32, see docs/figures.md")
    curve.set_defaults(func=_curve, parser=curve)

    th = sub.add_parser(
        "theory", help="print the theory's predictions (no simulation, no d)",
        description="Moments of tau(y), spike strengths theta_k, the alpha at which each direction leaves the bulk "
        "and at which its overlap reaches 1/2, the MSE_gamma slope against the scaling law, and the spectrum at "
        "given alphas, all computed without d: exact in the proportional limit (d, n large, n/d = alpha), or "
        "its large-alpha expansion (docs/theory.md).",
    )
    _model_options(th, d=False)
    th.add_argument("--regime", choices=["exact", "large_alpha"], default="exact",
                    help="exact finite-alpha predictions (default) or the large-alpha formulas")
    th.add_argument("--alphas", type=parse_alphas, default=parse_alphas("5,164,611,1638"),
                    help=f"sample ratios for predictions: {ALPHAS_FORMAT} (default 5,164,611,1638)")
    th.set_defaults(func=_theory, parser=th)
    return parser


def _interrupted_message(args) -> str:
    if getattr(args, "command_name", None) == "figure" and args.which in ("1", "thresholds") or \
            getattr(args, "command_name", None) == "curve":
        return "interrupted; rerun the same command to resume"
    return "interrupted; this command keeps no partial results: rerun it to start again"


def main(argv=None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.command = shlex.join(["hmi-fast", *(sys.argv[1:] if argv is None else argv)])
        return args.func(args)
    except KeyboardInterrupt as exc:
        from .experiments import RunInterrupted

        message = str(exc) if isinstance(exc, RunInterrupted) else _interrupted_message(args)
        print(f"\n{message}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (one line, no traceback, for the failures a user can act on)
        from ._outputs import FolderBusy

        if args is None or not hasattr(args, "parser"):
            raise
        if isinstance(exc, FolderBusy):
            print(f"{args.parser.prog}: error: argument --out: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, (ValueError, TypeError, OSError)):
            print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
