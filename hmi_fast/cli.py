"""The ``hmi-fast`` command."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the model and its data stream (default 0)")
    p.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64",
        help="precision of the block products; float32 is about twice as fast (default float64)",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="numba and BLAS threads (default: all cores)")


def _demo(args) -> int:
    from . import HMIModel, accumulate, metrics, select_components, threads, topk_eigh
    from ._config import describe

    n = int(round(args.alpha * args.d))
    model = HMIModel(args.d, args.m_star, args.gamma, link=args.link, seed=args.seed)
    per_end = max(1, min(args.m_star + 10, args.d // 2))
    with threads(args.threads):
        t0 = time.perf_counter()
        accumulate(HMIModel(8, 1, 1.0), n=64)  # compile (or load from the cache)
        t1 = time.perf_counter()
        acc = accumulate(model, n=n, preprocess=args.preprocess, dtype=np.dtype(args.dtype))
        T = acc.finalize()
        t2 = time.perf_counter()
        res = topk_eigh(T, 2 * per_end, which="BE") if args.d >= 2 else topk_eigh(T, 1)
        t3 = time.perf_counter()
        sel = select_components(res.values, d=args.d, n=n, tau_mean=acc.weight_mean, tau_sq_mean=acc.weight_sq_mean)
        W_hat = res.vectors[:, sel.index].T
        q = metrics.recovery(W_hat, model.W)
        mse = metrics.weighted_mse(W_hat, model.W, model.a)
        t4 = time.perf_counter()
    info = describe()
    blas = info["blas"][0] if info["blas"] else {"internal_api": "?", "architecture": "?"}
    print(f"hmi-fast demo: {model}")
    print(f"  n = {n:,} samples (alpha = n/d = {args.alpha:g}), preprocess = {args.preprocess}, dtype = {args.dtype}")
    print(f"  BLAS: {blas['internal_api']} {blas['architecture']}, "
          f"threads: numba {info['numba_threads']} ({info['numba_threading_layer']})")
    print(f"  compile/load kernels   {t1 - t0:7.2f} s")
    print(f"  stream + build T       {t2 - t1:7.2f} s   ({n / (t2 - t1):,.0f} rows/s)")
    print(f"  top-{2 * per_end} eigenpairs ({res.method})  {t3 - t2:7.2f} s")
    print(f"  selection + metrics    {t4 - t3:7.2f} s")
    top = res.values[: min(args.top, len(res.values))]
    print("  top eigenvalues: " + " ".join(f"{v:.4f}" for v in top))
    print(f"  bulk: centre {sel.bulk_center:.4f}, edges ({sel.bulk_edges[0]:.4f}, {sel.bulk_edges[1]:.4f})")
    print(f"  k_hat = {sel.n_components} (gap rule; edge rule: {sel.n_components_edge})")
    print("  recovery q_k of each true direction: " + " ".join(f"{v:.2f}" for v in q))
    print(f"  MSE_gamma = {mse:.4f}")
    return 0


def _print_summary(name: str, summary: dict, out) -> None:
    import json

    from .figures import write_summary

    path = write_summary(out, name, summary)
    print(json.dumps(summary, indent=2, default=float))
    print(f"summary written to {path}")


def _figure(args) -> int:
    from . import figures

    out = args.out
    common = {"quick": args.quick, "dtype": args.dtype, "threads": args.threads}
    t0 = time.perf_counter()
    if args.which == "1":
        seeds = range(args.seeds) if args.seeds else None
        summary = figures.figure1(out, seeds=seeds, workers=args.workers, progress=not args.no_progress, **common)
    elif args.which == "2":
        summary = figures.figure2(out, seed=args.seed, **common)
    elif args.which == "3":
        summary = figures.figure3(out, seed=args.seed, **common)
    elif args.which in ("risk", "gd"):
        from . import network_figures
        from ._config import threads as thread_limit

        with thread_limit(args.threads):
            if args.which == "risk":
                seeds = range(args.seeds) if args.seeds else None
                summary = network_figures.figure_risk(out, quick=args.quick, seeds=seeds,
                                                      progress=not args.no_progress)
            else:
                summary = network_figures.figure_gd(out, quick=args.quick, seed=args.seed)
    else:
        seeds = range(args.seeds) if args.seeds else None
        summary = figures.figure_thresholds(out, seeds=seeds, workers=args.workers, progress=not args.no_progress,
                                            **common)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 2)
    _print_summary(f"figure{args.which}", summary, out)
    print(f"figure written to {summary['figure']}")
    return 0


def _parse_alphas(text: str) -> list[float]:
    if text.startswith("geom:"):
        lo, hi, num = text[5:].split(":")
        return [float(v) for v in np.geomspace(float(lo), float(hi), int(num))]
    return [float(v) for v in text.split(",")]


def _curve(args) -> int:
    from .experiments import CurveConfig, fit_slope, mean_curve, run_curve
    from .theory import mse_curve, scaling_law

    alphas = _parse_alphas(args.alphas)
    cfg = CurveConfig(d=args.d, m_star=args.m_star, gamma=args.gamma, link=args.link, noise=args.noise,
                      preprocess=args.preprocess, alphas=tuple(alphas), seeds=tuple(range(args.seed, args.seed + args.seeds)),
                      dtype=args.dtype, center=args.center)
    res = run_curve(cfg, args.out, workers=args.workers, progress=not args.no_progress, threads=args.threads)
    a, mean, se = mean_curve(res)
    pred = mse_curve(cfg.model(args.seed), args.preprocess, a, centred=args.center)
    print(f"{'alpha':>10} {'MSE_gamma':>10} {'s.e.':>8} {'theory':>8}")
    for row in zip(a, mean, se, pred.mse):
        print(f"{row[0]:10.2f} {row[1]:10.4f} {row[2]:8.4f} {row[3]:8.4f}")
    law = scaling_law(args.gamma, args.m_star)
    th = pred.thresholds.alpha
    lo, hi = 2 * th[0], min(th[-1], a[-1])
    print(f"fitted slope in the discovery regime (alpha in [{lo:.3g}, {hi:.3g}]): {fit_slope(a, mean, lo, hi):.3f}; "
          f"theory curve there: {fit_slope(a, pred.mse, lo, hi):.3f}; asymptotic exponent {law.exponent:.3f} ({law.regime})")
    print(f"tables written to {args.out}/curve.csv and {args.out}/recovery.csv")
    return 0


def _theory(args) -> int:
    from . import HMIModel
    from .theory import moments, predict, scaling_law, thresholds

    model = HMIModel(max(args.m_star, 1), args.m_star, args.gamma, link=args.link, noise=args.noise)
    mo = moments(model, args.preprocess)
    th = thresholds(model, args.preprocess, centred=args.center)
    print(f"model: m*={args.m_star}, gamma={args.gamma}, link={args.link}, noise={args.noise}; "
          f"preprocess={args.preprocess}{' (centred)' if args.center else ''}")
    print(f"  E tau = {mo.mean:.5f} ± {mo.mean_se:.1e}, E tau^2 = {mo.second_moment:.5f}, Var tau = {mo.variance:.5f}")
    print(f"  {'k':>3} {'a_k':>8} {'theta_k':>10} {'alpha_k':>10}")
    for k, (a, t, al) in enumerate(zip(model.a, th.theta, th.alpha), start=1):
        print(f"  {k:3d} {a:8.4f} {t:10.5f} {al:10.2f}")
    law = scaling_law(args.gamma, args.m_star)
    print(f"  scaling law: {law.description}")
    for alpha in _parse_alphas(args.alphas):
        p = predict(model, args.preprocess, alpha, centred=args.center)
        print(f"  alpha={alpha:g}: predicted k_hat={int(p.n_components)}, MSE_gamma={float(p.mse):.4f}, "
              f"bulk edges=({p.bulk_edges[0]:.4f}, {p.bulk_edges[1]:.4f})")
    return 0


def _model_options(p: argparse.ArgumentParser, d=True) -> None:
    if d:
        p.add_argument("--d", type=_positive_int, default=500, help="input dimension (default 500)")
    p.add_argument("--m-star", type=_positive_int, default=10, help="number of hidden directions (default 10)")
    p.add_argument("--gamma", type=float, default=1.3, help="decay exponent, a_k ∝ k^-gamma (default 1.3)")
    p.add_argument("--link", default="he2_he4", help="link function: he2, he2_he4, abs, relu (default he2_he4)")
    p.add_argument("--noise", type=float, default=0.0, help="label noise variance Delta (default 0)")
    p.add_argument("--preprocess", default="saturating",
                   help="tau: saturating, identity, sign, clip (default saturating)")
    p.add_argument("--center", action="store_true", help="centre the weights tau(y) - E tau (docs/theory.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmi-fast",
        description="Spectral learning of hierarchical multi-index models: streaming spectral matrices, "
        "theory and the paper's experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="stream a model, build T, print timings and the top eigenvalues",
        description="Stream n = alpha*d samples from a hierarchical multi-index model, build the spectral "
        "matrix T in one pass, and print the time of each stage and the top eigenvalues.",
    )
    demo.add_argument("--d", type=_positive_int, default=500, help="input dimension (default 500)")
    demo.add_argument("--m-star", type=_positive_int, default=10, help="number of hidden directions (default 10)")
    demo.add_argument("--gamma", type=float, default=1.3, help="decay exponent, a_k ∝ k^-gamma (default 1.3)")
    demo.add_argument("--alpha", type=_positive_float, default=400.0, help="sample complexity n/d (default 400)")
    demo.add_argument("--link", default="he2_he4", help="link function: he2, he2_he4, abs, relu (default he2_he4)")
    demo.add_argument("--preprocess", default="saturating", help="tau: saturating, identity, sign, clip (default saturating)")
    demo.add_argument("--top", type=_positive_int, default=12, help="how many top eigenvalues to print (default 12)")
    _common(demo)
    demo.set_defaults(func=_demo)

    fig = sub.add_parser(
        "figure", help="reproduce one of the paper's figures (writes the PNG, its data and a summary)",
        description="Run the experiment behind a figure and write DIR/figN.png, its data file and "
        "DIR/figureN_summary.json. 1: MSE_gamma against alpha for several links (d=1000, m*=10, 70 seeds); "
        "2: spectrum histograms at alpha = 5, 164, 611, 1638 (d=1000, m*=20); 3: top eigenvalues and gaps; "
        "thresholds: predicted against empirical alpha_k; risk: excess risk of the two-stage network against "
        "alpha with random-feature and oracle baselines; gd: gradient descent on the first layer against the "
        "top eigenvectors of T. Long runs resume where they stopped.",
    )
    fig.add_argument("which", choices=["1", "2", "3", "thresholds", "risk", "gd"], help="which figure")
    fig.add_argument("--quick", action="store_true", help="smaller d and fewer seeds: under a minute")
    fig.add_argument("--out", default="hmi_fast_out", help="output folder (default ./hmi_fast_out)")
    fig.add_argument("--seeds", type=_positive_int, default=None,
                     help="number of seeds for figures 1 and thresholds (default: the paper's 70, or 6 with --quick)")
    fig.add_argument("--workers", type=_positive_int, default=1, help="seeds run in this many processes (default 1)")
    fig.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(fig)
    fig.set_defaults(func=_figure)

    curve = sub.add_parser(
        "curve", help="learning curve on a custom alpha grid (resumable tables)",
        description="Stream each seed once through all alphas (checkpoints), fit the spectral estimator at each, "
        "and write curve.csv / recovery.csv with meta.json. Rerunning resumes an interrupted run.",
    )
    _model_options(curve)
    curve.add_argument("--alphas", default="geom:2:1000:10",
                       help="comma-separated alphas, or geom:LO:HI:NUM for a log grid (default geom:2:1000:10)")
    curve.add_argument("--seeds", type=_positive_int, default=4, help="number of seeds, from --seed on (default 4)")
    curve.add_argument("--out", default="hmi_fast_out/curve", help="output folder (default ./hmi_fast_out/curve)")
    curve.add_argument("--workers", type=_positive_int, default=1, help="seeds run in this many processes")
    curve.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(curve)
    curve.set_defaults(func=_curve)

    th = sub.add_parser(
        "theory", help="print the theory's predictions (no simulation, no d)",
        description="Moments of tau(y), spike strengths theta_k, thresholds alpha_k = E[tau^2]/theta_k^2, "
        "the scaling law and predictions at given alphas, all computed without d.",
    )
    _model_options(th, d=False)
    th.add_argument("--alphas", default="5,164,611,1638", help="alphas for predictions (default 5,164,611,1638)")
    th.set_defaults(func=_theory)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"hmi-fast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
