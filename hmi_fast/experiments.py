"""Learning-curve experiments: one streamed pass per seed for a whole α grid.

A run writes into one folder::

    OUT/
      config.json        what was asked (the run refuses to mix configs)
      meta.json          versions, BLAS kernel, threads, per-seed timings
      rows/seed_S.jsonl  one JSON line per checkpoint α of seed S (appended, fsynced)
      rows/seed_S.done   marker: seed S finished
      state/seed_S.npz   accumulator state at the last checkpoint (deleted when S is done)
      curve.csv          tidy table: one row per (seed, α)
      recovery.csv       tidy table: one row per (seed, α, direction k)

Interrupting a run loses at most the work since the last checkpoint of each
running seed: rerunning the same command skips finished seeds, resumes the
others from their saved accumulator (the stream is random access by row
index), and never writes a row twice. Seeds can run in parallel processes.
"""

from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _config
from .accumulator import SpectralAccumulator
from .eigen import topk_eigh
from .metrics import matrix_mse, recovery
from .model import HMIModel
from .selection import select_components


@dataclass(frozen=True)
class CurveConfig:
    """What a learning-curve run computes (the defaults are the paper's Figure 1 setting)."""

    d: int = 1000
    m_star: int = 10
    gamma: float = 1.3
    link: str = "he2_he4"
    noise: float = 0.0
    preprocess: str = "saturating"
    center: bool = False
    alphas: tuple = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
    seeds: tuple = tuple(range(70))
    dtype: str = "float64"
    block_size: int | None = None
    max_components: int | None = None  # default m_star + 10
    directions: str = "orthogonal"

    def checkpoints(self) -> list[int]:
        ns = sorted({max(1, int(round(a * self.d))) for a in self.alphas})
        return ns

    def model(self, seed: int) -> HMIModel:
        return HMIModel(self.d, self.m_star, self.gamma, link=self.link, noise=self.noise, seed=seed,
                        directions=self.directions)

    def per_end(self) -> int:
        k = self.max_components if self.max_components is not None else self.m_star + 10
        return max(1, min(k, self.d // 2))

    def key(self) -> dict:
        """The fields that define the results (seeds may be extended between runs)."""
        out = asdict(self)
        out.pop("seeds")
        out["alphas"] = [float(a) for a in self.alphas]
        return out


def analyse(T: np.ndarray, acc: SpectralAccumulator, model: HMIModel, per_end: int) -> dict:
    """Eigenpairs at both ends, both selection rules, and the error measures for one T."""
    d = T.shape[0]
    if d >= 2:
        res = topk_eigh(T, 2 * per_end, which="BE")
        values, vectors = res.values, res.vectors
    else:
        values, vectors = np.linalg.eigh(T)
    sel = {}
    for rule in ("gap", "edge"):
        sel[rule] = select_components(
            values, d=d, n=acc.n, rule=rule, which="BE",
            tau_mean=acc.weight_mean, tau_sq_mean=acc.weight_sq_mean,
        )
    out = {}
    for rule, s in sel.items():
        W_hat = vectors[:, s.index].T
        q = recovery(W_hat, model.W)
        suffix = "" if rule == "gap" else "_edge"
        out["k_hat" + suffix] = int(s.n_components)
        out["mse_gamma" + suffix] = float(np.sum(model.a**2 * (1.0 - q)))
        out["matrix_mse" + suffix] = float(matrix_mse(W_hat, model.W))
        out["q" + suffix] = [float(v) for v in q]
    # the top-m* eigenvectors (by distance from the bulk centre), whatever the selection says
    order = np.argsort(-np.abs(values - acc.weight_mean))[: model.m_star]
    q_top = recovery(vectors[:, np.sort(order)].T, model.W)
    out["q_top_m"] = [float(v) for v in q_top]
    out["n_recovered"] = int(np.sum(np.asarray(out["q"]) > 0.5))
    out["eigenvalues"] = [float(v) for v in values]
    out["bulk_center"] = float(sel["gap"].bulk_center)
    out["bulk_edges"] = [float(v) for v in sel["gap"].bulk_edges]
    out["gap_threshold"] = float(sel["gap"].threshold)
    out["sigma"] = float(sel["gap"].sigma)
    return out


def _paths(out: Path, seed: int):
    return out / "rows" / f"seed_{seed}.jsonl", out / "rows" / f"seed_{seed}.done", out / "state" / f"seed_{seed}.npz"


def _read_rows(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interruption
                    break
    return rows


def run_seed(config: CurveConfig, seed: int, out_dir, threads: int | None = None) -> dict:
    """Run (or resume) one seed; returns its timing summary."""
    out = Path(out_dir)
    rows_path, done_path, state_path = _paths(out, seed)
    if done_path.exists():
        return {"seed": seed, "skipped": True}
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    have = {r["n"] for r in _read_rows(rows_path)}
    # rewrite the rows file without a possibly truncated last line
    _rewrite_rows(rows_path)
    model = config.model(seed)
    cps = config.checkpoints()
    per_end = config.per_end()
    t_start = time.perf_counter()
    with _config.threads(threads):
        if state_path.exists():
            acc = SpectralAccumulator.from_state(np.load(state_path))
        else:
            acc = SpectralAccumulator(model.d, preprocess=config.preprocess, dtype=config.dtype,
                                      center=config.center, block_size=config.block_size)
        bs = acc.block_size
        buf = np.empty((bs, model.d), dtype=acc.dtype)
        timings = {"stream_s": 0.0, "analysis_s": 0.0}
        for n_j in cps:
            if n_j <= acc.n:
                continue
            t0 = time.perf_counter()
            row = acc.n
            while row < n_j:
                hi = min(n_j, row + bs)
                G, yb = model.latent_rows(row, hi, out=buf[: hi - row])
                acc.update(G, yb)
                row = hi
            t1 = time.perf_counter()
            if n_j not in have:
                T = model.rotate(acc.finalize())
                res = analyse(T, acc, model, per_end)
                res.update(seed=seed, n=n_j, alpha=n_j / model.d)
                with open(rows_path, "a") as f:
                    f.write(json.dumps(res) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            _save_state(acc, state_path)
            t2 = time.perf_counter()
            timings["stream_s"] += t1 - t0
            timings["analysis_s"] += t2 - t1
    done_path.write_text(json.dumps({"seconds": time.perf_counter() - t_start, **timings}))
    state_path.unlink(missing_ok=True)
    return {"seed": seed, "skipped": False, "seconds": time.perf_counter() - t_start, **timings}


def _rewrite_rows(path: Path) -> None:
    if not path.exists():
        return
    rows = _read_rows(path)
    seen = set()
    keep = []
    for r in rows:
        if r["n"] not in seen:
            seen.add(r["n"])
            keep.append(r)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _save_state(acc: SpectralAccumulator, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **acc.state())
    os.replace(tmp, path)


@dataclass
class CurveResult:
    """Paths of the tables and the rows, in memory."""

    out_dir: Path
    rows: list = field(default_factory=list)
    timings: list = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.rows])


def _check_config(out: Path, config: CurveConfig) -> None:
    path = out / "config.json"
    key = config.key()
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(key)):
            diff = sorted(k for k in key if old.get(k) != json.loads(json.dumps(key)).get(k))
            raise ValueError(
                f"out_dir: {str(out)!r} holds a run with another configuration (differs in {diff}); "
                "use a new folder or the same settings"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(key, indent=2))


def run_curve(config: CurveConfig, out_dir, *, workers: int = 1, progress: bool = True,
              threads: int | None = None) -> CurveResult:
    """Run every seed of ``config`` (resuming what a previous run left) and write the tables.

    Parameters
    ----------
    config : CurveConfig
    out_dir : path
        Folder of the run; created if missing.
    workers : int
        Seeds run in this many processes at once (each with ``threads`` or
        cores/workers threads).
    progress : bool
        Show a progress bar (tqdm) over seeds.
    """
    out = Path(out_dir)
    _check_config(out, config)
    seeds = list(config.seeds)
    todo = [s for s in seeds if not _paths(out, s)[1].exists()]
    timings = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc="seeds", unit="seed")
    t0 = time.perf_counter()
    if workers <= 1 or len(todo) <= 1:
        for s in todo:
            timings.append(run_seed(config, s, out, threads))
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing as mp

        per = threads or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_seed, config, s, str(out), per) for s in todo]
            for fut in as_completed(futures):
                timings.append(fut.result())
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    result = collect(out, seeds)
    result.timings = timings
    _write_meta(out, config, timings, time.perf_counter() - t0)
    return result


def collect(out_dir, seeds=None) -> CurveResult:
    """Read the rows of a run folder and (re)write ``curve.csv`` and ``recovery.csv``."""
    out = Path(out_dir)
    if seeds is None:
        seeds = sorted(int(p.stem.split("_")[1]) for p in (out / "rows").glob("seed_*.jsonl"))
    rows = []
    for s in seeds:
        rows.extend(_read_rows(_paths(out, s)[0]))
    rows.sort(key=lambda r: (r["seed"], r["n"]))
    summary = ["seed", "alpha", "n", "k_hat", "k_hat_edge", "n_recovered", "mse_gamma", "mse_gamma_edge",
               "matrix_mse", "matrix_mse_edge", "bulk_center", "sigma", "gap_threshold"]
    with open(out / "curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(summary)
        for r in rows:
            w.writerow([r[c] for c in summary])
    with open(out / "recovery.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "alpha", "n", "direction", "q", "q_edge", "q_top_m"])
        for r in rows:
            for k, (q, qe, qt) in enumerate(zip(r["q"], r["q_edge"], r["q_top_m"]), start=1):
                w.writerow([r["seed"], r["alpha"], r["n"], k, q, qe, qt])
    return CurveResult(out, rows)


def _write_meta(out: Path, config: CurveConfig, timings, seconds) -> None:
    path = out / "meta.json"
    meta = json.loads(path.read_text()) if path.exists() else {"runs": []}
    meta["config"] = json.loads(json.dumps(asdict(config)))
    meta["environment"] = _config.describe()
    meta["runs"].append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": seconds, "seeds": timings})
    path.write_text(json.dumps(meta, indent=2))


# ------------------------------------------------------------ summaries
def mean_curve(result: CurveResult, column: str = "mse_gamma"):
    """α grid, mean and standard error over seeds of a column."""
    alphas = np.array(sorted({r["alpha"] for r in result.rows}))
    mean, se = [], []
    for a in alphas:
        v = np.array([r[column] for r in result.rows if r["alpha"] == a], dtype=float)
        mean.append(v.mean())
        se.append(v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan)
    return alphas, np.array(mean), np.array(se)


def empirical_thresholds(result: CurveResult, level: float = 0.5, column: str = "q_top_m"):
    """Per direction k: the α at which q_k first exceeds ``level``; mean and s.e. over seeds.

    Within a seed, the crossing is interpolated linearly in (log α, q)
    between the last grid point below the level and the first above it, so
    the estimate is not biased up by the grid spacing. Seeds that never reach
    the level within the grid are left out of the mean: read ``count``
    (seeds used per direction) before trusting a value. The large-α theory
    predicts the crossing at ``α_k / (1 − level)`` (``q_k = 1 − α_k/α``).
    """
    seeds = sorted({r["seed"] for r in result.rows})
    m = len(result.rows[0][column])
    first = np.full((len(seeds), m), np.nan)
    for i, s in enumerate(seeds):
        rs = sorted((r for r in result.rows if r["seed"] == s), key=lambda r: r["n"])
        la = np.log([r["alpha"] for r in rs])
        q = np.array([r[column] for r in rs])
        for k in range(m):
            above = np.flatnonzero(q[:, k] > level)
            if not len(above):
                continue
            j = above[0]
            if j == 0:
                first[i, k] = np.exp(la[0])
            else:
                q0, q1 = q[j - 1, k], q[j, k]
                t = (level - q0) / (q1 - q0) if q1 > q0 else 1.0
                first[i, k] = np.exp(la[j - 1] + t * (la[j] - la[j - 1]))
    count = np.sum(~np.isnan(first), axis=0)
    mean = np.full(m, np.nan)
    se = np.full(m, np.nan)
    for k in range(m):
        v = first[~np.isnan(first[:, k]), k]
        if len(v):
            mean[k] = v.mean()
            se[k] = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return mean, se, count


def fit_slope(alphas, values, lo=None, hi=None) -> float:
    """Least-squares slope of log(values) against log(α) on [lo, hi]."""
    alphas = np.asarray(alphas, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = (values > 0) & np.isfinite(values)
    if lo is not None:
        keep &= alphas >= lo
    if hi is not None:
        keep &= alphas <= hi
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(alphas[keep]), np.log(values[keep]), 1)[0])


def spectra(model: HMIModel, alphas, *, preprocess="saturating", dtype="float64", block_size=None):
    """Full spectrum of T at each α, from one pass: ``{alpha: eigenvalues}`` (ascending)."""
    from .engine import spectral_matrices

    d = model.d
    cps = sorted({int(round(a * d)) for a in alphas})
    out = {}
    for n_j, T in spectral_matrices(model, n=cps[-1], checkpoints=cps, preprocess=preprocess,
                                    dtype=np.dtype(dtype), block_size=block_size):
        out[n_j / d] = np.linalg.eigvalsh(T)
    return out
