"""Learning-curve experiments: one streamed pass per seed for a whole α grid.

A run writes into one folder::

    OUT/
      .lock              held while a run writes here (one writer per folder)
      config.json        what was asked (the run refuses to mix configurations)
      meta.json          provenance, and the timings of every seed in the tables
      rows/seed_S.jsonl  one JSON line per checkpoint α of seed S, with a checksum
      rows/seed_S.done   marker: seed S finished (its timings)
      state/seed_S.npz   accumulator at the last checkpoint, with a checksum (deleted when S is done)
      curve.csv          tidy table: one row per (seed, α)
      recovery.csv       tidy table: one row per (seed, α, direction k)

Interrupting a run loses at most the work since the last checkpoint of each
running seed: rerunning the same command skips finished seeds, resumes the
others from their saved accumulator (the stream is random access by row
index) and gives the same tables, bit for bit, as an uninterrupted run.

Nothing is dropped or counted twice. Each row line and each state file
carries a checksum and the digest of the configuration; on resume, a line cut
by a kill, a damaged or foreign line, a duplicate, a rows file deleted while
its state remains, a ``.done`` marker without its rows, a truncated or
altered state file are all detected, reported by file name, and the rows
they concern are recomputed (from the start of the seed's stream when the
saved state is beyond them). :func:`collect` then checks that every
(seed, checkpoint) is present exactly once before it writes the tables, and
fails loudly otherwise.

A second run on the same folder is refused while the first holds the lock
(:class:`~hmi_fast._outputs.FolderBusy`, naming the pid). Seeds can run in
worker processes (``workers``); they write only their own seed's files, under
the lock of the process that started them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _config, _outputs, _runfolder
from ._validation import check_bool, check_dtype, check_finite_float, check_positive_int
from .accumulator import SpectralAccumulator
from .engine import accumulate, iter_accumulate
from .eigen import topk_eigh
from .metrics import matrix_mse, recovery
from .model import HMIModel
from .selection import select_components

#: most rows one stream may have (row counts stay exact in float64).
MAX_ROWS = 2**53

CURVE_COLUMNS = ("seed", "alpha", "n", "k_hat", "k_hat_edge", "n_recovered", "mse_gamma", "mse_gamma_edge",
                 "matrix_mse", "matrix_mse_edge", "bulk_center", "sigma", "gap_threshold")
RECOVERY_COLUMNS = ("seed", "alpha", "n", "direction", "q", "q_edge", "q_top_m")


@dataclass(frozen=True)
class CurveConfig:
    """What a learning-curve run computes (the defaults are the paper's Figure 1 setting).

    Every field is checked on construction; ``alphas`` must give distinct
    sample counts ``n = round(α·d)`` between 1 and ``2**53``.
    """

    d: int = 1000
    m_star: int = 10
    gamma: float = 1.3
    link: str = "he2_he4"
    noise: float = 0.0
    preprocess: str = "saturating"
    center: bool = False
    alphas: tuple = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
    seeds: tuple = tuple(range(70))
    dtype: str = "float32"  # block products; float64 sums (measured: same k_hat, MSE_gamma within 2e-7; docs/figures.md)
    block_size: int | None = None
    max_components: int | None = None  # default m_star + 10
    directions: str = "orthogonal"

    def __post_init__(self):
        d = check_positive_int(self.d, "d")
        m = check_positive_int(self.m_star, "m_star")
        if m > d:
            raise ValueError(f"m_star: must be at most d={d}, got {m}")
        set_ = object.__setattr__
        set_(self, "d", d)
        set_(self, "m_star", m)
        set_(self, "gamma", check_finite_float(self.gamma, "gamma"))
        set_(self, "noise", check_finite_float(self.noise, "noise"))
        if self.noise < 0:
            raise ValueError(f"noise: the variance must be >= 0, got {self.noise!r}")
        set_(self, "center", check_bool(self.center, "center"))
        set_(self, "alphas", check_alphas(self.alphas, d))
        if isinstance(self.seeds, (int, np.integer)) or not len(tuple(self.seeds)):
            raise TypeError(f"seeds: must be a non-empty sequence of integers >= 0, got {self.seeds!r}")
        seeds = tuple(check_positive_int(s, "seeds", minimum=0) for s in self.seeds)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: must be distinct, got {list(seeds)}")
        set_(self, "seeds", seeds)
        set_(self, "dtype", check_dtype(self.dtype).name)
        if self.block_size is not None:
            set_(self, "block_size", check_positive_int(self.block_size, "block_size"))
        if self.max_components is not None:
            set_(self, "max_components", check_positive_int(self.max_components, "max_components"))

    def checkpoints(self) -> list[int]:
        """The sample counts ``n = round(α·d)``, increasing."""
        return sorted(int(round(a * self.d)) for a in self.alphas)

    def model(self, seed: int) -> HMIModel:
        return HMIModel(self.d, self.m_star, self.gamma, link=self.link, noise=self.noise, seed=seed,
                        directions=self.directions)

    def per_end(self) -> int:
        k = self.max_components if self.max_components is not None else self.m_star + 10
        return max(1, min(k, self.d // 2))

    def key(self) -> dict:
        """The fields that define the results (seeds may be extended between runs)."""
        out = json.loads(json.dumps(asdict(self)))
        out.pop("seeds")
        return out

    def digest(self) -> str:
        """Short hash of :meth:`key`, stored in every row and state file of a run."""
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:16]


def check_alphas(alphas, d: int) -> tuple:
    """α values as a tuple of floats, each finite and > 0, giving distinct ``n = round(α·d)`` in [1, 2**53]."""
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__len__") or not len(alphas):
        raise TypeError(f"alphas: must be a non-empty sequence of numbers > 0, got {alphas!r}")
    out = tuple(check_finite_float(a, "alphas", positive=True) for a in alphas)
    seen: dict[int, float] = {}
    for a in out:
        n = round(a * d)
        if n < 1:
            raise ValueError(f"alphas: {a:g} gives n = alpha*d = {a * d:g} < 1 row at d={d}; "
                             f"use alpha >= {1 / d:.3g}")
        if n > MAX_ROWS:
            raise ValueError(f"alphas: {a:g} gives n = alpha*d = {a * d:.3g} rows at d={d}, beyond the "
                             f"2**53 rows a stream can have; use alpha <= {MAX_ROWS / d:.3g}")
        if n in seen:
            raise ValueError(f"alphas: {seen[n]:g} and {a:g} give the same n = {n} at d={d}; keep one of them")
        seen[n] = a
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
    for rule in ("gap", "edge"):  # the bulk of this data's own weight law (docs/selection.md)
        sel[rule] = select_components(values, d=d, n=acc.n, rule=rule, which="BE", weights=acc.weight_sketch)
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


# ------------------------------------------------------------------ streaming
def _new_accumulator(config: CurveConfig) -> SpectralAccumulator:
    return SpectralAccumulator(config.d, preprocess=config.preprocess, dtype=config.dtype, center=config.center,
                               block_size=config.block_size)


def _advance(model: HMIModel, acc: SpectralAccumulator, stop: int, on_rows=None) -> None:
    """Stream rows ``acc.n .. stop`` of the model into ``acc`` through the engine (latent frame, carried by acc)."""
    if stop > acc.n:
        accumulate(model, n=stop - acc.n, start=acc.n, accumulator=acc, on_rows=on_rows)


def _T(model: HMIModel, acc: SpectralAccumulator) -> np.ndarray:
    """T of x (the accumulator knows its frame)."""
    return acc.finalize()


def _through(model: HMIModel, acc: SpectralAccumulator, checkpoints, on_rows=None):
    """Stream ``model`` into ``acc`` (one engine pass) and yield each checkpoint not behind ``acc.n`` once reached."""
    cps = sorted(c for c in checkpoints if c >= acc.n)
    if cps and cps[0] == acc.n:
        yield cps.pop(0)
    if not cps:
        return
    for n_j, _ in iter_accumulate(model, n=cps[-1] - acc.n, start=acc.n, accumulator=acc, checkpoints=cps,
                                  on_rows=on_rows):
        yield n_j


def run_seed(config: CurveConfig, seed: int, out_dir, threads: int | None = None, on_rows=None) -> dict:
    """Run, resume or repair one seed of a run folder; returns what was done and its timings.

    Call it under the folder's lock (:func:`run_curve` does). ``on_rows(k)``
    is called as rows of the stream are added (progress).
    """
    out = Path(out_dir)
    t_start = time.perf_counter()
    st = _runfolder.survey(config, seed, out)
    rows_path, done_path, state_path = _runfolder.paths(out, seed)
    report = {"seed": seed, "problems": st.problems, "resumed_from": st.start, "computed": []}
    if st.rewrite:
        _runfolder.rewrite_rows(rows_path, st.rows)
    if not st.missing:
        if not st.done_marker:
            _outputs.write_json(done_path, {"seed": seed, "note": "marker written on resume; timings not kept"})
        state_path.unlink(missing_ok=True)
        return {**report, "skipped": True}
    done_path.unlink(missing_ok=True)
    model = config.model(seed)
    per_end = config.per_end()
    timings = {"stream_s": 0.0, "analysis_s": 0.0}
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    last = st.missing[-1]
    with _config.threads(threads):
        acc = st.acc if st.acc is not None else _new_accumulator(config)
        t0 = time.perf_counter()
        for n_j in _through(model, acc, [c for c in config.checkpoints() if c <= last], on_rows):
            t1 = time.perf_counter()
            if n_j in st.missing:
                res = analyse(_T(model, acc), acc, model, per_end)
                res.update(seed=seed, n=n_j, alpha=n_j / model.d, config=config.digest())
                with open(rows_path, "a") as f:
                    f.write(_runfolder.row_line(res))
                    f.flush()
                    os.fsync(f.fileno())
                report["computed"].append(n_j)
            if st.start < n_j < last:
                _runfolder.save_state(acc, state_path, config, seed)
            t2 = time.perf_counter()
            timings["stream_s"] += t1 - t0
            timings["analysis_s"] += t2 - t1
            t0 = t2
    seconds = time.perf_counter() - t_start
    _outputs.write_json(done_path, {"seed": seed, "seconds": round(seconds, 3),
                                    **{k: round(v, 3) for k, v in timings.items()},
                                    "resumed_from": st.start, "rows_computed": report["computed"],
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    state_path.unlink(missing_ok=True)
    return {**report, "skipped": False, "seconds": seconds, **timings}


# ------------------------------------------------------------------ a whole run
class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``str(exc)`` says how to resume."""

    def __init__(self, message: str, done: int = 0, total: int = 0):
        super().__init__(message)
        self.message, self.done, self.total = message, done, total

    def __str__(self) -> str:
        return self.message


@dataclass
class CurveResult:
    """The rows of a run (in memory) and where its tables are."""

    out_dir: Path
    rows: list = field(default_factory=list)
    timings: list = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.rows])

    @property
    def skipped(self) -> list:
        """Seeds that were complete before this run."""
        return [t["seed"] for t in self.timings if t.get("skipped")]

    @property
    def problems(self) -> list:
        """Damaged or missing pieces found (and repaired) by this run, with file names."""
        return [p for t in self.timings for p in t.get("problems", [])]


@dataclass
class Plan:
    """The work a run still has to do (:func:`plan`)."""

    config: CurveConfig
    statuses: list

    @property
    def todo(self) -> list:
        return [s for s in self.statuses if s.missing]

    @property
    def rows(self) -> int:
        return sum(s.missing[-1] - s.start for s in self.todo)

    @property
    def analyses(self) -> int:
        return sum(len(s.missing) for s in self.todo)

    def seconds(self, rows_per_s: float, analysis_s: float) -> float:
        return self.rows / rows_per_s + self.analyses * analysis_s

    def describe(self) -> str:
        """One line: what is done, what will be resumed, what runs."""
        done = [s.seed for s in self.statuses if not s.missing]
        resumed = [s for s in self.todo if s.start > 0 or s.rows]
        parts = [f"{len(self.statuses)} seeds"]
        if done:
            parts.append(f"{len(done)} already done (skipped: {_seed_list(done)})")
        if resumed:
            parts.append("resuming " + ", ".join(
                f"seed {s.seed} at alpha={s.missing[0] / self.config.d:g}" for s in resumed[:4])
                + (" ..." if len(resumed) > 4 else ""))
        fresh = len(self.todo) - len(resumed)
        if fresh:
            parts.append(f"{fresh} to run")
        return "; ".join(parts)


def _seed_list(seeds) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds[:8])) + (" ..." if len(seeds) > 8 else "")


def plan(config: CurveConfig, out_dir) -> Plan:
    """What :func:`run_curve` would do in ``out_dir`` now (reads the folder, writes nothing)."""
    out = Path(out_dir)
    return Plan(config, [_runfolder.survey(config, s, out) for s in config.seeds])


def calibrate(config: CurveConfig, threads: int | None = None, seconds: float = 0.3,
              analysis: bool = True) -> tuple[float, float]:
    """Rows per second of the stream and seconds per analysis at this configuration, measured briefly.

    ``analysis=False`` measures the stream only (the second number is then 0).
    """
    model = config.model(config.seeds[0])
    with _config.threads(threads):
        acc = _new_accumulator(config)
        stop = config.checkpoints()[-1]
        _advance(model, acc, min(64, stop))  # compile or load the kernels
        n0, t0 = acc.n, time.perf_counter()
        bs = acc.block_size
        while acc.n < stop and (time.perf_counter() - t0 < seconds or acc.n - n0 < bs):
            _advance(model, acc, min(stop, acc.n + bs))
        rate = (acc.n - n0) / max(time.perf_counter() - t0, 1e-9)
        if not analysis:
            return max(rate, 1.0), 0.0
        T = _T(model, acc)
        analyse(T, acc, model, config.per_end())  # compile or load the eigensolver
        t1 = time.perf_counter()
        analyse(T, acc, model, config.per_end())
        return max(rate, 1.0), time.perf_counter() - t1


def format_seconds(s: float) -> str:
    """``42 s``, ``3.5 min``, ``2.9 h``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _check_config(out: Path, config: CurveConfig) -> None:
    key = config.key()
    old = _runfolder.load_config(out)
    if old is None:
        _outputs.write_json(out / "config.json", key)
    elif old != key:
        diff = sorted(k for k in set(key) | set(old) if old.get(k) != key.get(k))
        raise ValueError(
            f"out_dir: {str(out)!r} holds a run with another configuration (differs in {diff}); "
            "use a new folder or the same settings"
        )


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinating process's to handle


def _run_seed_args(args):
    """One seed in a worker process; it stops if the coordinating process (holder of the lock) is gone."""
    config, seed, out, threads, parent = args

    def parent_alive(_rows):
        if os.getppid() != parent:
            raise SystemExit(f"seed {seed}: the coordinating process {parent} is gone; stopping")

    return run_seed(config, seed, out, threads, parent_alive)


def _append_rows(path: Path, rows) -> None:
    """Append rows (checksummed lines) and make them durable."""
    with open(path, "a") as f:
        for row in rows:
            f.write(_runfolder.row_line(row))
        f.flush()
        os.fsync(f.fileno())


def _run_on_cluster(client, config: CurveConfig, out: Path, statuses, threads, bar) -> list:
    """The seeds still to run, as tasks on a Dask cluster; this process is the only writer.

    Each seed is one task (one engine pass from its saved state, the rows of a
    local run bit for bit: :func:`hmi_fast.distributed.curve_results`); the
    rows, markers and states it returns are written here as they arrive.
    """
    from . import distributed  # the only place the experiments touch Dask

    resume = {}
    for st in statuses:
        rows_path, done_path, state_path = _runfolder.paths(out, st.seed)
        if st.rewrite:
            _runfolder.rewrite_rows(rows_path, st.rows)
        done_path.unlink(missing_ok=True)
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        resume[st.seed] = (None if st.acc is None else st.acc.state(), tuple(sorted(st.rows)))
    report = {st.seed: {"seed": st.seed, "problems": st.problems, "resumed_from": st.start, "computed": [],
                        "skipped": False, "seconds": 0.0, "stream_s": 0.0, "analysis_s": 0.0} for st in statuses}
    for res in distributed.curve_results(client, config, list(resume), resume=resume, threads=threads or 1):
        seed = res["seed"]
        rows_path, done_path, state_path = _runfolder.paths(out, seed)
        _append_rows(rows_path, res["rows"])
        r = report[seed]
        r["computed"] += [row["n"] for row in res["rows"]]
        r["stream_s"] += res["stream_s"]
        r["analysis_s"] += res["analysis_s"]
        r["seconds"] = r["stream_s"] + r["analysis_s"]
        if res["done"]:
            _outputs.write_json(done_path, {"seed": seed, "seconds": round(r["seconds"], 3),
                                            "stream_s": round(r["stream_s"], 3), "analysis_s": round(r["analysis_s"], 3),
                                            "resumed_from": r["resumed_from"], "rows_computed": r["computed"],
                                            "on": "a Dask cluster", "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
            state_path.unlink(missing_ok=True)
            if bar is not None:
                bar.update(1)
        else:
            _runfolder.save_state(SpectralAccumulator.from_state(res["state"]), state_path, config, seed)
    return list(report.values())


def run_curve(config: CurveConfig, out_dir, *, workers: int = 1, progress: bool = True, threads: int | None = None,
              desc: str = "seeds", log=None, announce: bool = True, command: str | None = None,
              client=None) -> CurveResult:
    """Run every seed of ``config`` (resuming what a previous run left) and write the tables.

    Parameters
    ----------
    config : CurveConfig
    out_dir : path
        Folder of the run; created if missing. Locked while the run writes
        (a second run on it raises :class:`~hmi_fast._outputs.FolderBusy`).
    workers : int
        Seeds run in this many processes at once (each with ``threads`` or
        cores/workers threads).
    progress : bool
        Show a progress bar (tqdm, on stderr) over the seeds, labelled ``desc``.
    log : callable or None
        Receives the plan (with an estimated time) and the notes of a resumed
        run (what was skipped, what was repaired). ``None``: no plan, and
        repairs are reported as ``RuntimeWarning``.
    announce : bool
        Measure the speed briefly and log the estimated time before the work.
    command : str, optional
        Recorded in ``meta.json`` (default: this process's command line).
    client : distributed.Client, optional
        Run the seeds as tasks on this Dask cluster instead (``workers`` is
        then ignored; ``threads`` is each task's thread count, default 1).
        This process stays the only writer of the folder; the rows are the
        same as a local run's, bit for bit; an interrupted run resumes
        locally or on a cluster alike (docs/distributed.md).

    Returns
    -------
    CurveResult

    Raises
    ------
    RunInterrupted
        On Ctrl-C, after stopping the workers; its message says how far the
        run got. Rerun the same call to resume.
    """
    workers = check_positive_int(workers, "workers")
    out = _outputs.check_output_folder(out_dir)
    started = time.time()
    with _outputs.exclusive(out):
        _check_config(out, config)
        _outputs.remove_temporaries(out)
        pl = plan(config, out)
        if log is not None:
            log(f"{desc}: {pl.describe()}" if pl.todo else
                f"{desc}: all {len(pl.statuses)} seeds already done; nothing to compute")
        if log is not None and announce and pl.todo:
            rate, t_an = calibrate(config, threads)
            log(f"{desc}: {pl.rows:,} rows to stream and {pl.analyses} spectra to analyse, about "
                f"{format_seconds(pl.seconds(rate, t_an))} (measured here: {rate:,.0f} rows/s, "
                f"{t_an:.2f} s per spectrum)")
        for s in pl.statuses:
            for p in s.problems:
                if log is not None:
                    log(f"{desc}: repairing {p}")
                else:
                    warnings.warn(f"{out}: repairing {p}", RuntimeWarning, stacklevel=2)
        # complete seeds: only their markers and files are put right, in this process
        timings = [run_seed(config, s.seed, out) for s in pl.statuses if not s.missing]
        todo = [s.seed for s in pl.todo]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pl.statuses), initial=len(pl.statuses) - len(todo), desc=desc, unit="seed",
                       file=sys.stderr, bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}]")
        pool = None
        try:
            if client is not None and todo:
                timings += _run_on_cluster(client, config, out, pl.todo, threads, bar)
            elif workers <= 1 or len(todo) <= 1:
                for st in pl.todo:
                    span = max(1, st.missing[-1] - st.start)

                    def on_rows(k, span=span):
                        bar.update(k / span)

                    t = run_seed(config, st.seed, out, threads, on_rows if bar is not None else None)
                    timings.append(t)
                    if bar is not None:  # whole seeds on the bar, whatever the fractions added up to
                        bar.n = round(bar.n)
                        bar.refresh()
            else:
                import multiprocessing as mp

                per = threads or max(1, (os.cpu_count() or 1) // workers)
                pool = mp.get_context("spawn").Pool(min(workers, len(todo)), initializer=_worker_init)
                for t in pool.imap_unordered(_run_seed_args, [(config, s, str(out), per, os.getpid()) for s in todo]):
                    timings.append(t)
                    if bar is not None:
                        bar.update(1)
                pool.close()
                pool.join()
                pool = None
        except KeyboardInterrupt:
            if pool is not None:
                pool.terminate()
                pool.join()
            if bar is not None:
                bar.close()
            done = sum(_runfolder.paths(out, s)[1].exists() for s in config.seeds)
            raise RunInterrupted(f"interrupted; rerun the same command to resume from seed "
                                 f"{min(done + 1, len(config.seeds))}/{len(config.seeds)}",
                                 done, len(config.seeds)) from None
        except BaseException:
            if pool is not None:
                pool.terminate()
                pool.join()
            raise
        if bar is not None:
            bar.close()
        result = collect(out, config.seeds)
        result.timings = sorted(timings, key=lambda t: config.seeds.index(t["seed"]))
        _write_meta(out, config, result, started, command)
    return result


def collect(out_dir, seeds=None) -> CurveResult:
    """Check a run folder and (re)write ``curve.csv`` and ``recovery.csv`` from its rows.

    Every (seed, checkpoint) must be present exactly once with a valid
    checksum; otherwise ``ValueError`` lists what is missing or damaged, by
    file, and nothing is written (rerun the same command to repair).
    ``seeds`` defaults to every seed with files in the folder or recorded
    in its ``meta.json``.
    """
    out = Path(out_dir)
    key = _runfolder.load_config(out)
    if key is None:
        raise ValueError(f"out_dir: {out} has no config.json; it is not a learning-curve run folder")
    config = CurveConfig(**{**key, "alphas": tuple(key["alphas"]), "seeds": (0,)})
    if seeds is None:
        found = set()
        for sub in ("rows", "state"):
            for p in (out / sub).glob("seed_*.*"):
                stem = p.name.split(".")[0].split("_")[1]
                if stem.isdigit():
                    found.add(int(stem))
        try:  # seeds a previous run recorded, even if all their files are gone
            found |= {int(k) for k in json.loads((out / "meta.json").read_text()).get("seeds", {})}
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        seeds = sorted(found)
    cps = config.checkpoints()
    problems, rows = [], []
    for s in seeds:
        path = _runfolder.paths(out, s)[0]
        if not path.exists():
            problems.append(f"rows/{path.name}: missing")
            continue
        got, bad, _ = _runfolder.read_rows(path, s, config.digest(), cps)
        problems += [f"rows/{p}" for p in bad]
        missing = [n for n in cps if n not in got]
        if missing:
            problems.append(f"rows/{path.name}: no row for n={', '.join(map(str, missing))}")
        rows += [got[n] for n in sorted(got)]
    if problems:
        raise ValueError(f"out_dir: {out} is incomplete or damaged: " + "; ".join(problems)
                         + ". Rerun the same command to recompute what is missing")
    _outputs.write_csv(out / "curve.csv", CURVE_COLUMNS, [[r[c] for c in CURVE_COLUMNS] for r in rows])
    _outputs.write_csv(out / "recovery.csv", RECOVERY_COLUMNS,
                       [[r["seed"], r["alpha"], r["n"], k, q, qe, qt] for r in rows
                        for k, (q, qe, qt) in enumerate(zip(r["q"], r["q_edge"], r["q_top_m"]), start=1)])
    return CurveResult(out, rows)


def _write_meta(out: Path, config: CurveConfig, result: CurveResult, started: float, command) -> None:
    path = out / "meta.json"
    try:
        meta = json.loads(path.read_text()) if path.exists() else {}
        runs = list(meta.get("runs", []))
    except (ValueError, UnicodeDecodeError):
        runs = []  # a damaged meta.json is rebuilt: the seeds' records live in their .done files
    computed = [t["seed"] for t in result.timings if not t.get("skipped")]
    prov = _outputs.provenance(command=command, seeds=config.seeds,
                               timings={"run": time.time() - started}, started=started)
    runs.append({"started": prov["started"], "finished": prov["finished"], "seconds": prov["timings_s"]["run"],
                 "command": prov["command"], "computed": computed, "skipped": result.skipped,
                 "repaired": result.problems, "git_commit": prov["git_commit"]})
    seeds = {}
    for s in config.seeds:
        try:
            seeds[str(s)] = json.loads(_runfolder.paths(out, s)[1].read_text())
        except (OSError, ValueError):
            seeds[str(s)] = {"seed": s, "note": "no timing record"}
    _outputs.write_json(path, {"config": json.loads(json.dumps(asdict(config))), "provenance": prov,
                               "runs": runs, "seeds": seeds})


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
    (seeds used per direction) before trusting a value. ``column`` names the
    recovery measured: ``"q"`` (the directions the gap rule keeps),
    ``"q_edge"`` (the edge rule's) or ``"q_top_m"`` (the m* eigenvectors
    farthest from the bulk centre, whatever the rule). The exact theory's
    crossing is ``theory.thresholds(model, ..., level=level, d=d,
    selection="gap")``; the large-α one ``α_k / (1 − level)``.
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


def spectra(model: HMIModel, alphas, *, preprocess="saturating", dtype="float64", block_size=None,
            progress: bool = False, desc: str = "rows") -> dict:
    """Full spectrum of T at each α, from one pass: ``{alpha: eigenvalues}`` (ascending).

    ``progress`` shows a bar over the rows streamed (on stderr).
    """
    d = model.d
    alphas = check_alphas(alphas, d)
    cps = sorted(int(round(a * d)) for a in alphas)
    acc = SpectralAccumulator(d, preprocess=preprocess, dtype=dtype, block_size=block_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cps[-1], desc=desc, unit="row", unit_scale=True, file=sys.stderr)
    out = {}
    try:
        for n_j in _through(model, acc, cps, None if bar is None else bar.update):
            out[n_j / d] = np.linalg.eigvalsh(_T(model, acc))
    finally:
        if bar is not None:
            bar.close()
    return out
