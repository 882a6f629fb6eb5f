"""Learning-curve experiments: resumable, no duplicated rows, the same numbers after an interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hmi_fast import experiments
from hmi_fast.experiments import CurveConfig, collect, run_curve

CFG = CurveConfig(d=60, m_star=3, gamma=1.3, alphas=(3.0, 10.0, 40.0, 120.0), seeds=(0, 1, 2), max_components=6)


def _table(path):
    return (path / "curve.csv").read_text(), (path / "recovery.csv").read_text()


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    res = run_curve(CFG, out, progress=False)
    return out, res


def test_rows_and_columns(clean_run):
    out, res = clean_run
    assert len(res.rows) == len(CFG.seeds) * len(CFG.alphas)
    assert sorted({r["alpha"] for r in res.rows}) == list(CFG.alphas)
    for r in res.rows:
        assert 0.0 <= r["mse_gamma"] <= 1.0
        assert len(r["q"]) == CFG.m_star
    meta = json.loads((out / "meta.json").read_text())
    assert meta["environment"]["blas"] and meta["config"]["d"] == CFG.d
    # the error shrinks with alpha on average
    a, mean, _ = experiments.mean_curve(res)
    assert mean[-1] < mean[0]


def test_rerun_skips_finished_seeds(clean_run, monkeypatch):
    out, _ = clean_run
    before = _table(out)
    calls = []
    monkeypatch.setattr(experiments, "analyse", lambda *a, **k: calls.append(1))
    res = run_curve(CFG, out, progress=False)
    assert calls == []
    assert all(t["skipped"] for t in res.timings) or res.timings == []
    assert _table(out) == before


def test_interrupted_run_resumes_without_recomputing(tmp_path, clean_run, monkeypatch):
    clean_out, _ = clean_run
    real = experiments.analyse
    calls = []

    def flaky(T, acc, model, per_end):
        calls.append((model.seed, acc.n))
        if model.seed == 1 and acc.n == int(10.0 * CFG.d):
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during seed 1
        return real(T, acc, model, per_end)

    monkeypatch.setattr(experiments, "analyse", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_curve(CFG, tmp_path, progress=False)
    assert (tmp_path / "rows" / "seed_0.done").exists()
    assert (tmp_path / "state" / "seed_1.npz").exists()
    calls.clear()
    monkeypatch.setattr(experiments, "analyse", real)
    counted = []

    def counting(T, acc, model, per_end):
        counted.append((model.seed, acc.n))
        return real(T, acc, model, per_end)

    monkeypatch.setattr(experiments, "analyse", counting)
    run_curve(CFG, tmp_path, progress=False)
    # seed 0 is not touched; seed 1 restarts at its interrupted checkpoint; seed 2 runs in full
    assert [c for c in counted if c[0] == 0] == []
    assert [c[1] for c in counted if c[0] == 1] == [600, 2400, 7200]
    assert len([c for c in counted if c[0] == 2]) == len(CFG.alphas)
    assert _table(tmp_path) == _table(clean_out)


def test_config_mismatch_refused(clean_run):
    out, _ = clean_run
    other = CurveConfig(d=61, m_star=3, gamma=1.3, alphas=CFG.alphas, seeds=(0,), max_components=6)
    with pytest.raises(ValueError, match=r"out_dir: .* holds a run with another configuration \(differs in \['d'\]\)"):
        run_curve(other, out, progress=False)


def test_truncated_and_duplicated_lines_are_repaired(tmp_path, clean_run):
    clean_out, res = clean_run
    run_curve(CurveConfig(**{**CFG.__dict__, "seeds": (0,)}), tmp_path, progress=False)
    rows = tmp_path / "rows" / "seed_0.jsonl"
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join(lines + [lines[1], lines[2][:20]]) + "\n")  # a duplicate and a cut line
    (tmp_path / "rows" / "seed_0.done").unlink()
    (tmp_path / "config.json").unlink()
    run_curve(CurveConfig(**{**CFG.__dict__, "seeds": (0,)}), tmp_path, progress=False)
    ns = [json.loads(x)["n"] for x in rows.read_text().splitlines()]
    assert ns == sorted(set(ns)) and len(ns) == len(CFG.alphas)


@pytest.mark.slow
def test_sigkill_then_resume_matches_clean_run(tmp_path, clean_run):
    """A real kill -9 in the middle of a run, then the same command again."""
    clean_out, _ = clean_run
    code = (
        "import sys; from hmi_fast.experiments import CurveConfig, run_curve; "
        f"cfg = CurveConfig(d={CFG.d}, m_star=3, gamma=1.3, alphas={CFG.alphas!r}, seeds={CFG.seeds!r}, "
        "max_components=6); run_curve(cfg, sys.argv[1], progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "rows" / "seed_1.jsonl").exists():
            break
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    collect(tmp_path, CFG.seeds)
    assert _table(tmp_path) == _table(clean_out)
