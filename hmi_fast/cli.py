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
    from . import HMIModel, spectral_matrix, threads
    from ._config import describe

    n = int(round(args.alpha * args.d))
    model = HMIModel(args.d, args.m_star, args.gamma, link=args.link, seed=args.seed)
    with threads(args.threads):
        t0 = time.perf_counter()
        spectral_matrix(HMIModel(8, 1, 1.0), n=64)  # compile (or load from the cache)
        t1 = time.perf_counter()
        T = spectral_matrix(model, n=n, preprocess=args.preprocess, dtype=np.dtype(args.dtype))
        t2 = time.perf_counter()
        evals, evecs = np.linalg.eigh(T)
        t3 = time.perf_counter()
    info = describe()
    print(f"hmi-fast demo: {model}")
    print(f"  n = {n:,} samples (alpha = n/d = {args.alpha:g}), preprocess = {args.preprocess}, dtype = {args.dtype}")
    print(f"  BLAS: {info['blas'][0]['internal_api']} {info['blas'][0]['architecture']}, "
          f"threads: numba {info['numba_threads']} ({info['numba_threading_layer']})")
    print(f"  compile/load kernels {t1 - t0:7.2f} s")
    print(f"  stream + build T     {t2 - t1:7.2f} s   ({n / (t2 - t1):,.0f} rows/s)")
    print(f"  eigendecomposition   {t3 - t2:7.2f} s")
    top = evals[::-1][: args.top]
    print(f"  top {len(top)} eigenvalues: " + " ".join(f"{v:.4f}" for v in top))
    print(f"  bottom eigenvalue: {evals[0]:.4f}")
    q = np.sum((model.W @ evecs[:, ::-1][:, : args.m_star]) ** 2, axis=1)
    print("  overlap of w_k with the top-m* eigenvectors: " + " ".join(f"{v:.2f}" for v in q))
    return 0


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
