"""Learning-curve experiments: resumable, one writer per folder, nothing dropped or duplicated on resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hmi_fast import _outputs, _runfolder, experiments
from hmi_fast.experiments import CurveConfig, RunInterrupted, collect, run_curve

CFG = CurveConfig(d=60, m_star=3, gamma=1.3, alphas=(3.0, 10.0, 40.0, 120.0), seeds=(0, 1, 2), max_components=6)
NS = [180, 600, 2400, 7200]


def _table(path):
    return (path / "curve.csv").read_text(), (path / "recovery.csv").read_text()


def _counting(monkeypatch):
    """Record every (seed, n) analysed from now on."""
    real = experiments.analyse
    calls = []

    def counting(T, acc, model, per_end):
        calls.append((model.seed, acc.n))
        return real(T, acc, model, per_end)

    monkeypatch.setattr(experiments, "analyse", counting)
    return calls


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    res = run_curve(CFG, out, progress=False)
    return out, res


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A folder left by Ctrl-C during seed 1 at its second checkpoint (seed 0 done, seed 1 has a state at n=180)."""
    out = tmp_path_factory.mktemp("interrupted")
    real = experiments.analyse

    def flaky(T, acc, model, per_end):
        if model.seed == 1 and acc.n == 600:
            raise KeyboardInterrupt
        return real(T, acc, model, per_end)

    experiments.analyse = flaky
    try:
        with pytest.raises(RunInterrupted, match=r"^interrupted; rerun the same command to resume from seed 2/3$"):
            run_curve(CFG, out, progress=False)
    finally:
        experiments.analyse = real
    return out


def _copy(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def test_tables_columns_rows_and_meta(clean_run):
    out, res = clean_run
    assert len(res.rows) == len(CFG.seeds) * len(CFG.alphas)
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == experiments.CURVE_COLUMNS
    assert [(int(r["seed"]), int(r["n"])) for r in rows] == [(s, n) for s in CFG.seeds for n in NS]
    with open(out / "recovery.csv") as f:
        rec = list(csv.DictReader(f))
    assert tuple(rec[0]) == experiments.RECOVERY_COLUMNS
    assert len(rec) == len(rows) * CFG.m_star
    for r in res.rows:
        assert 0.0 <= r["mse_gamma"] <= 1.0
        assert len(r["q"]) == CFG.m_star
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(meta["seeds"]) == ["0", "1", "2"] and all("seconds" in v for v in meta["seeds"].values())
    prov = meta["provenance"]
    assert prov["version"] and prov["blas"] and prov["seeds"] == [0, 1, 2] and prov["command"]
    assert {"numpy", "numba", "scipy"} <= set(prov["versions"]) and prov["threads"]["numba"] >= 1
    assert meta["config"]["d"] == CFG.d and meta["runs"][-1]["computed"] == [0, 1, 2]
    a, mean, _ = experiments.mean_curve(res)
    assert np.all(np.diff(a) > 0) and mean[-1] < mean[0]
    assert not (out / ".lock").exists() and not list(out.rglob("*.tmp"))


def test_rerun_skips_finished_seeds(clean_run, tmp_path, monkeypatch):
    out = _copy(clean_run[0], tmp_path)
    before = _table(out)
    calls = _counting(monkeypatch)
    res = run_curve(CFG, out, progress=False)
    assert calls == []
    assert res.skipped == [0, 1, 2] and res.problems == []
    assert _table(out) == before
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runs"][-1]["computed"] == [] and meta["runs"][-1]["skipped"] == [0, 1, 2]
    assert sorted(meta["seeds"]) == ["0", "1", "2"]


def test_interrupted_run_resumes_without_recomputing(interrupted, clean_run, tmp_path, monkeypatch):
    out = _copy(interrupted, tmp_path)
    assert (out / "rows" / "seed_0.done").exists() and (out / "state" / "seed_1.npz").exists()
    calls = _counting(monkeypatch)
    logged = []
    res = run_curve(CFG, out, progress=False, log=logged.append, announce=False)
    # seed 0 is not touched; seed 1 restarts at its interrupted checkpoint; seed 2 runs in full
    assert calls == [(1, 600), (1, 2400), (1, 7200)] + [(2, n) for n in NS]
    assert res.skipped == [0] and res.problems == []
    assert _table(out) == _table(clean_run[0])
    assert "1 already done (skipped: 0)" in logged[0] and "resuming seed 1 at alpha=10" in logged[0]


def test_config_mismatch_refused(clean_run):
    other = CurveConfig(d=61, m_star=3, gamma=1.3, alphas=CFG.alphas, seeds=(0,), max_components=6)
    with pytest.raises(ValueError, match=r"out_dir: .* holds a run with another configuration \(differs in \['d'\]\)"):
        run_curve(other, clean_run[0], progress=False)


# ------------------------------------------------------------------ damaged or missing pieces
def _cut_mid_line(out):
    p = out / "rows" / "seed_1.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # the second line cut in the middle, the rest gone
    return "rows/seed_1.jsonl line 2: cut or damaged", [(1, n) for n in NS[1:]]


def _delete_rows_of_done_seed(out):
    (out / "rows" / "seed_2.jsonl").unlink()  # the .done marker stays
    return "rows/seed_2.done: marks seed 2 finished but rows for n=180, 600, 2400, 7200 are missing", \
        [(2, n) for n in NS]


def _duplicate_and_foreign_lines(out):
    p = out / "rows" / "seed_0.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    foreign = json.loads(lines[0])
    foreign["config"] = "0" * 16
    foreign["check"] = _runfolder.row_check(foreign)
    p.write_text("".join(lines + [lines[1], json.dumps(foreign) + "\n"]))
    return "rows/seed_0.jsonl line 5: n=600 written twice", []


def _flip_a_digit(out):
    p = out / "rows" / "seed_0.jsonl"
    text = p.read_text()
    i = text.index('"mse_gamma": 0.') + len('"mse_gamma": 0.')
    p.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:])
    return "rows/seed_0.jsonl line 1: cut or damaged", [(0, 180)]


@pytest.mark.parametrize("damage", [_cut_mid_line, _delete_rows_of_done_seed, _duplicate_and_foreign_lines,
                                    _flip_a_digit])
def test_damaged_rows_of_a_finished_run_are_recomputed(clean_run, tmp_path, monkeypatch, damage):
    out = _copy(clean_run[0], tmp_path)
    problem, expect = damage(out)
    with pytest.raises(ValueError, match="is incomplete or damaged"):
        collect(out, CFG.seeds)  # collect alone never writes tables from damaged rows
    calls = _counting(monkeypatch)
    with pytest.warns(RuntimeWarning, match="repairing"):
        res = run_curve(CFG, out, progress=False)
    assert any(problem in p for p in res.problems), res.problems
    assert calls == expect
    assert _table(out) == _table(clean_run[0])


def _delete_rows_keep_state(out):
    (out / "rows" / "seed_1.jsonl").unlink()
    return "rows/seed_1.jsonl: missing"


def _truncate_state(out):
    p = out / "state" / "seed_1.npz"
    p.write_bytes(p.read_bytes()[:1000])
    return "state/seed_1.npz: unreadable"


def _flip_a_byte_of_state(out):
    p = out / "state" / "seed_1.npz"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))
    return "state/seed_1.npz: "


def _foreign_state(out):
    p = out / "state" / "seed_1.npz"
    shutil.copy(p, out / "state" / "seed_2.npz")  # seed 1's accumulator where seed 2's would be
    return "state/seed_2.npz: the state of another configuration or seed"


@pytest.mark.parametrize("damage", [_delete_rows_keep_state, _truncate_state, _flip_a_byte_of_state, _foreign_state])
def test_damaged_pieces_of_an_interrupted_run_are_recomputed(interrupted, clean_run, tmp_path, monkeypatch, damage):
    out = _copy(interrupted, tmp_path)
    problem = damage(out)
    calls = _counting(monkeypatch)
    with pytest.warns(RuntimeWarning, match="repairing"):
        res = run_curve(CFG, out, progress=False)
    assert any(problem in p for p in res.problems), res.problems
    assert [c for c in calls if c[0] == 0] == []
    assert _table(out) == _table(clean_run[0])  # seed 1 from its first row: the same numbers


def test_leftover_temporaries_and_stale_lock_are_cleared(interrupted, clean_run, tmp_path):
    out = _copy(interrupted, tmp_path)
    (out / "state" / ".seed_1.npz.123.abcd.tmp").write_bytes(b"half a file")
    (out / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "since": "yesterday"}))  # its process is gone
    run_curve(CFG, out, progress=False)
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
    assert _table(out) == _table(clean_run[0])


def test_collect_verifies_every_seed_and_checkpoint(clean_run, tmp_path):
    out = _copy(clean_run[0], tmp_path)
    assert len(collect(out).rows) == 12  # seeds found in the folder
    p = out / "rows" / "seed_1.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:2] + lines[3:]))
    with pytest.raises(ValueError, match=r"rows/seed_1.jsonl: no row for n=2400\. Rerun the same command"):
        collect(out, CFG.seeds)
    with pytest.raises(ValueError, match=r"rows/seed_7.jsonl: missing"):
        collect(out, (0, 7))
    for p in (out / "rows").glob("seed_2.*"):  # every file of seed 2 gone: meta.json still knows it
        p.unlink()
    with pytest.raises(ValueError, match=r"rows/seed_2.jsonl: missing"):
        collect(out)


def test_corrupt_config_json_names_the_file_and_the_fix(clean_run, tmp_path):
    out = _copy(clean_run[0], tmp_path)
    (out / "config.json").write_text('{"d": 60, "m_st')
    with pytest.raises(ValueError, match=r"config\.json: damaged \(.*\); it records the settings of the run in "
                                         r".*delete config\.json and rerun"):
        run_curve(CFG, out, progress=False)


def test_curve_config_checks_its_fields():
    with pytest.raises(ValueError, match=r"alphas: must be a positive finite number, got inf"):
        CurveConfig(d=10, alphas=(1.0, float("inf")), seeds=(0,), m_star=2)
    with pytest.raises(ValueError, match=r"alphas: must be a positive finite number, got -5.0"):
        CurveConfig(d=10, alphas=(-5,), seeds=(0,), m_star=2)
    with pytest.raises(ValueError, match=r"alphas: 0.01 gives n = alpha\*d = 0.1 < 1 row at d=10; use alpha >= 0.1"):
        CurveConfig(d=10, alphas=(0.01,), seeds=(0,), m_star=2)
    with pytest.raises(ValueError, match=r"alphas: 1e\+30 gives n = alpha\*d = 1e\+31 rows at d=10, beyond the 2"):
        CurveConfig(d=10, alphas=(1e30,), seeds=(0,), m_star=2)
    with pytest.raises(ValueError, match=r"alphas: 10 and 10.01 give the same n = 100 at d=10; keep one of them"):
        CurveConfig(d=10, alphas=(10, 10.01), seeds=(0,), m_star=2)
    with pytest.raises(ValueError, match=r"seeds: must be distinct, got \[1, 1\]"):
        CurveConfig(d=10, alphas=(10,), seeds=(1, 1), m_star=2)
    with pytest.raises(ValueError, match=r"seeds: must be an integer >= 0, got -1"):
        CurveConfig(d=10, alphas=(10,), seeds=(-1,), m_star=2)
    with pytest.raises(ValueError, match=r"m_star: must be at most d=10, got 11"):
        CurveConfig(d=10, alphas=(10,), seeds=(0,), m_star=11)
    with pytest.raises(TypeError, match=r"center: must be True or False, got 'yes'"):
        CurveConfig(d=10, alphas=(10,), seeds=(0,), m_star=2, center="yes")


# ------------------------------------------------------------------ more than one process
_RUN = (
    "import sys; from hmi_fast.experiments import CurveConfig, run_curve; "
    "cfg = CurveConfig(d={d}, m_star=3, gamma=1.3, alphas={alphas!r}, seeds={seeds!r}, max_components=6); "
    "run_curve(cfg, sys.argv[1], progress=False, workers=int(sys.argv[2]))"
)


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not path.exists():
        time.sleep(0.005)
    return path.exists()


def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    """Two real processes started together on one folder: one runs, the other is told who holds it."""
    cfg = CurveConfig(d=60, m_star=3, gamma=1.3, alphas=(3.0, 10.0, 40.0, 120.0, 1000.0), seeds=tuple(range(6)),
                      max_components=6)
    code = _RUN.format(d=cfg.d, alphas=cfg.alphas, seeds=cfg.seeds)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "1"], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    if codes == [0, 0]:  # one finished before the other began: nothing to check
        pytest.skip("the runs did not overlap")
    assert sorted(codes) == [0, 1], errs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert (f"FolderBusy: {tmp_path} is being written by another hmi-fast run (pid {procs[winner].pid}, since"
            in errs[loser]), errs[loser]
    res = collect(tmp_path, cfg.seeds)
    assert sorted((r["seed"], r["n"]) for r in res.rows) == [(s, n) for s in cfg.seeds for n in cfg.checkpoints()]


def test_lock_is_reentrant_and_exclusive_across_processes(tmp_path):
    with _outputs.exclusive(tmp_path):
        with _outputs.exclusive(tmp_path):  # the same process may nest
            pass
        assert (tmp_path / ".lock").exists()
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from hmi_fast import _outputs\n"
             "with _outputs.exclusive(sys.argv[1]): pass", str(tmp_path)], capture_output=True, text=True)
        assert probe.returncode == 1 and f"(pid {os.getpid()}, since" in probe.stderr
    assert not (tmp_path / ".lock").exists()


@pytest.mark.slow
def test_workers_give_the_same_tables(clean_run, tmp_path):
    run_curve(CFG, tmp_path, progress=False, workers=2, threads=1)
    assert _table(tmp_path) == _table(clean_run[0])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_resume_matches_clean_run(tmp_path, clean_run, workers):
    """A real kill -9 in the middle of a run, then the same command again."""
    code = _RUN.format(d=CFG.d, alphas=CFG.alphas, seeds=CFG.seeds)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(workers)], start_new_session=True)
    _wait_for(tmp_path / "rows" / "seed_1.jsonl", proc)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too
    proc.wait()
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(workers)], check=True)
    collect(tmp_path, CFG.seeds)
    assert _table(tmp_path) == _table(clean_run[0])
