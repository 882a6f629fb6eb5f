"""The ``hmi-fast`` command: every command at a tiny size, and every bad argument refused with its message."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hmi_fast import cli, figures, network_figures

TINY_CURVE = ["--d", "30", "--m-star", "2", "--alphas", "5,20,80", "--seeds", "2", "--no-progress"]


def _run(capsys, *argv):
    """``hmi-fast ARGV`` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("value, message", [
    ("inf", "argument --alphas: every alpha must be a finite number > 0, got 'inf'"),
    ("nan", "argument --alphas: every alpha must be a finite number > 0, got 'nan'"),
    ("abc", "argument --alphas: expected comma-separated numbers > 0 (e.g. 5,20,100) or geom:LO:HI:NUM "
            "(e.g. geom:2:1000:10), got 'abc'"),
    ("2-1000", "argument --alphas: expected comma-separated numbers > 0 (e.g. 5,20,100) or geom:LO:HI:NUM"),
    ("geom:1:2", "argument --alphas: expected comma-separated numbers > 0 (e.g. 5,20,100) or geom:LO:HI:NUM"),
    ("geom:2:1000", "argument --alphas: expected comma-separated numbers > 0"),
    ("geom:1000:2:5", "argument --alphas: geom:LO:HI:NUM needs 0 < LO < HI (finite) and NUM >= 2, got 'geom:1000:2:5'"),
    ("geom:2:1000:1", "argument --alphas: geom:LO:HI:NUM needs 0 < LO < HI (finite) and NUM >= 2"),
    ("0", "argument --alphas: every alpha must be a finite number > 0, got '0'"),
    ("-5", "argument --alphas: every alpha must be a finite number > 0, got '-5'"),
    ("5,-2", "argument --alphas: every alpha must be a finite number > 0, got '-2'"),
    ("1e30", "argument --alphas: 1e+30 gives n = alpha*d = 3e+31 rows at d=30, beyond the 2**53 rows a stream "
             "can have; use alpha <= 3e+14"),
    ("0.001", "argument --alphas: 0.001 gives n = alpha*d = 0.03 < 1 row at d=30; use alpha >= 0.0333"),
    ("10,10.01", "argument --alphas: 10 and 10.01 give the same n = 300 at d=30; keep one of them"),
])
def test_curve_alphas_refused_with_the_format(capsys, tmp_path, value, message):
    code, out, err = _run(capsys, "curve", "--d", "30", "--m-star", "2", "--alphas", value, "--out", str(tmp_path))
    assert code == 2
    assert message in err, err
    assert err.startswith("usage: hmi-fast curve") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.parametrize("argv, message", [
    (["curve", "--d", "0"], "argument --d: expected an integer >= 1, got 0"),
    (["curve", "--d", "ten"], "argument --d: expected an integer >= 1, got 'ten'"),
    (["curve", "--d", "10", "--m-star", "20"], "argument --m-star: must be at most d=10, got 20"),
    (["curve", "--gamma", "nan"], "argument --gamma: expected a finite number, got 'nan'"),
    (["curve", "--noise", "-1"], "argument --noise: expected a finite number >= 0, got '-1'"),
    (["curve", "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["curve", "--seeds", "0"], "argument --seeds: expected an integer >= 1, got 0"),
    (["curve", "--link", "cubic"], "argument --link: invalid choice: 'cubic'"),
    (["curve", "--threads", "100000"], "argument --threads: expected an integer between 1 and"),
    (["curve", "--max-components", "0"], "argument --max-components: expected an integer >= 1, got 0"),
    (["demo", "--alpha", "0"], "argument --alpha: expected a finite number > 0, got '0'"),
    (["demo", "--alpha", "inf"], "argument --alpha: expected a finite number > 0, got 'inf'"),
    (["demo", "--d", "10", "--alpha", "1e30"], "argument --alpha: n = alpha*d = 1e+31 rows at --d 10; use alpha "
                                               "between 0.1 and 9.01e+14"),
    (["demo", "--d", "10", "--m-star", "11"], "argument --m-star: must be at most --d (10), got 11"),
    (["figure", "4"], "argument which: invalid choice: '4'"),
    (["figure", "2", "--seeds", "3"], "argument --seeds: figure 2 runs one seed; give --seed S instead"),
    (["figure", "gd", "--workers", "2"], "argument --workers: only figures 1 and thresholds run seeds in parallel"),
    (["figure", "risk", "--dtype", "float32"], "argument --dtype: figure risk computes in float64 only"),
    (["figure", "1", "--max-components", "5"], "argument --max-components: only figure 3 takes it"),
    (["theory", "--alphas", "abc"], "argument --alphas: expected comma-separated numbers > 0"),
    (["theory", "--alphas", "-3"], "argument --alphas: every alpha must be a finite number > 0, got '-3'"),
])
def test_bad_arguments_name_the_option(capsys, tmp_path, argv, message):
    code, out, err = _run(capsys, *argv, *(["--out", str(tmp_path / "o")] if argv[0] in ("curve", "figure") else []))
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_refused_before_work(capsys, tmp_path):
    f = tmp_path / "results"
    f.write_text("not a folder")
    for argv in (["curve", *TINY_CURVE], ["figure", "2", "--quick"]):
        t0 = time.perf_counter()
        code, out, err = _run(capsys, *argv, "--out", str(f))
        assert code == 2 and f"argument --out: {f} is a file, not a folder; give a folder path" in err
        assert time.perf_counter() - t0 < 30 and out == ""
    code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(f / "sub"))
    assert code == 2 and f"argument --out: cannot create the folder {f / 'sub'} (" in err
    assert "choose a writable location" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_that_cannot_be_written_is_refused(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(ro / "x"))
    finally:
        ro.chmod(0o700)
    assert code == 2 and "argument --out: cannot create the folder" in err


def test_corrupt_config_json_is_reported_with_the_fix(capsys, tmp_path):
    (tmp_path / "config.json").write_text('{"d": 30, "m_st')
    code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert f"hmi-fast curve: error: {tmp_path / 'config.json'}: damaged (" in err
    assert "delete config.json and rerun" in err


def test_busy_folder_names_the_pid(capsys, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hmi_fast import _outputs\n"
         "with _outputs.exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert (f"hmi-fast curve: error: argument --out: {tmp_path} is being written by another hmi-fast run "
            f"(pid {holder.pid}, since") in err
    code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path))  # the holder is gone
    assert code == 0


def test_version(capsys):
    code, out, err = _run(capsys, "--version")
    assert code == 0 and out.startswith("hmi_fast 0.1.0")


# ------------------------------------------------------------------ each command at a tiny size
def test_curve_tables_summary_and_resume(capsys, tmp_path):
    code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path))
    assert code == 0, err
    header, rows = _csv(tmp_path / "curve.csv")
    assert header[:4] == ["seed", "alpha", "n", "k_hat"] and len(rows) == 6
    header, rows = _csv(tmp_path / "recovery.csv")
    assert header == ["seed", "alpha", "n", "direction", "q", "q_edge", "q_top_m"] and len(rows) == 12
    s = json.loads((tmp_path / "curve_summary.json").read_text())
    assert {"slope", "theory_slope", "predicted_exponent", "mse_gamma_mean", "provenance"} <= set(s)
    assert s["provenance"]["command"].startswith("hmi-fast curve --d 30") and s["provenance"]["seeds"] == [0, 1]
    assert "MSE_gamma" in out and "slope in the discovery window" in out and "curve_summary.json" in out
    assert "curve, seeds: 2 seeds; 2 to run" in err and "rows to stream" in err
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert sorted(meta["seeds"]) == ["0", "1"]
    code, out, err = _run(capsys, "curve", *TINY_CURVE[:-3], "--seeds", "3", "--no-progress", "--out", str(tmp_path))
    assert code == 0
    assert "curve, seeds: 3 seeds; 2 already done (skipped: 0, 1); 1 to run" in err
    assert len(_csv(tmp_path / "curve.csv")[1]) == 9
    assert sorted(json.loads((tmp_path / "meta.json").read_text())["seeds"]) == ["0", "1", "2"]


def test_theory(capsys):
    code, out, err = _run(capsys, "theory", "--m-star", "3", "--alphas", "10,100")
    assert code == 0 and "regime=exact" in out
    assert "q_k = 1/2 at alpha" in out and "large-alpha alpha_k" in out
    assert "MSE_gamma slope in the discovery window" in out and "predicted exponent -(1 - 1/(2 gamma)) = -0.615" in out
    rows = [ln.split() for ln in out.splitlines() if ln.strip().startswith(("10 ", "100 "))]
    assert [r[0] for r in rows] == ["10", "100"] and all(r[1] == "3" for r in rows)  # all 3 outliers out
    code, out, err = _run(capsys, "theory", "--m-star", "3", "--preprocess", "identity")
    assert code == 2 and "argument --regime: the exact finite-alpha spectrum has no limit" in err
    code, out, err = _run(capsys, "theory", "--m-star", "3", "--preprocess", "identity", "--regime", "large_alpha")
    assert code == 0 and "regime=large_alpha" in out


def test_demo(capsys):
    code, out, err = _run(capsys, "demo", "--d", "30", "--m-star", "2", "--alpha", "50", "--top", "3")
    assert code == 0 and "n = 1,500 samples" in out and "MSE_gamma = " in out


@pytest.fixture
def tiny_figures(monkeypatch):
    monkeypatch.setitem(figures.SIZES["fig1"], "quick", dict(d=30, seeds=2, alphas=(5.0, 20.0, 80.0)))
    monkeypatch.setitem(figures.SIZES["fig2"], "quick", dict(d=40))
    monkeypatch.setitem(figures.SIZES["fig3"], "quick", dict(d=40))
    monkeypatch.setitem(figures.SIZES["thresholds"], "quick",
                        dict(d=30, seeds=2, m_star=3, alphas=(2.0, 8.0, 30.0, 120.0)))
    monkeypatch.setitem(network_figures.SIZES["risk"], "quick",
                        dict(d=20, m_star=3, seeds=2, alphas=(10.0, 80.0), n_test=2000))
    monkeypatch.setitem(network_figures.SIZES["gd"], "quick", dict(d=20, alpha=30.0, steps=30))


FIGURE_FILES = {
    "1": ("fig1", "_data.csv", ["link", "alpha", "mse_gamma_mean", "mse_gamma_se", "mse_gamma_theory",
                          "mse_gamma_theory_large_alpha", "seeds"], 12),
    "2": ("fig2", "_data.npz", None, 4),
    "3": ("fig3", "_data.csv", ["rank", "eigenvalue", "gap_to_next"], 10),
    "thresholds": ("thresholds", "_data.csv", ["direction", "crossing_empirical_mean", "crossing_empirical_se",
                                               "seeds_reaching", "crossing_theory", "crossing_theory_large_alpha",
                                               "emergence_theory"], 3),
    "risk": ("risk", "_data.csv", list(network_figures.RISK_COLUMNS), 4),
    "gd": ("gd", "_data.csv", ["run", "step", "overlap_top_eigvecs", "overlap_power_iteration",
                               "overlap_true_directions", "weight_norm"], None),
}
SUMMARY_FIELDS = {"1": {"links", "predicted_exponent"}, "2": {"alpha"}, "3": {"k_hat_gap", "k_hat_edge"},
                  "thresholds": {"empirical_crossing", "theory_crossing"},
                  "risk": {"mean_risk_spectral", "slope_risk_spectral"}, "gd": {"runs", "lr"}}


@pytest.mark.parametrize("which", list(FIGURE_FILES))
def test_figure_outputs(capsys, tmp_path, tiny_figures, which):
    from PIL import Image

    extra = ["--max-components", "10"] if which == "3" else []
    code, out, err = _run(capsys, "figure", which, "--quick", "--no-progress", "--out", str(tmp_path), *extra)
    assert code == 0, err
    stem, data_suffix, columns, n_rows = FIGURE_FILES[which]
    assert sorted(p.name for p in tmp_path.glob(f"{stem}*.*")) == sorted(
        [f"{stem}.png", f"{stem}{data_suffix}", f"{stem}_summary.json"])
    if columns is not None:
        header, rows = _csv(tmp_path / f"{stem}{data_suffix}")
        assert header == columns
        assert n_rows is None or len(rows) == n_rows
    else:
        with np.load(tmp_path / f"{stem}{data_suffix}") as f:
            assert len(f.files) == n_rows
    summary = json.loads((tmp_path / f"{stem}_summary.json").read_text())
    assert SUMMARY_FIELDS[which] <= set(summary)
    prov = summary["provenance"]
    assert prov["version"] == "0.1.0" and prov["command"].startswith(f"hmi-fast figure {which} --quick")
    assert prov["blas"] and prov["versions"]["numpy"] and prov["timings_s"]["total"] > 0 and prov["seeds"]
    png = Image.open(tmp_path / f"{stem}.png")
    assert png.text["Software"].startswith("hmi_fast 0.1.0") and "figure" in png.text["Description"]
    assert f"{stem}_summary.json" in out and "Traceback" not in err
    assert f"{which if which not in ('1', '2', '3') else 'figure ' + which}: " in err  # the plan came first


def test_figure1_resumes_and_says_what_it_skipped(capsys, tmp_path, tiny_figures):
    assert _run(capsys, "figure", "1", "--quick", "--no-progress", "--out", str(tmp_path))[0] == 0
    code, out, err = _run(capsys, "figure", "1", "--quick", "--no-progress", "--out", str(tmp_path))
    assert code == 0 and "figure 1: 4 x 2 = 8 instances" in err and "all done already, nothing to compute" in err


# ------------------------------------------------------------------ Ctrl-C
def _interrupt_after(argv, marker, tmp_path, timeout=120):
    proc = subprocess.Popen([sys.executable, "-m", "hmi_fast.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


CTRL_C_CURVE = ["curve", "--d", "60", "--m-star", "3", "--alphas", "geom:2:1000:10", "--seeds", "4", "--no-progress"]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_prints_one_line_exits_130_and_resumes(tmp_path, workers):
    out_dir = tmp_path / "run"
    argv = [*CTRL_C_CURVE, "--workers", str(workers), "--out", str(out_dir)]
    code, out, err = _interrupt_after(argv, out_dir / "rows" / "seed_1.done", tmp_path)
    if code == 0:
        pytest.skip("the run ended before the interrupt")
    assert code == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted; rerun the same command to resume from seed ") and last.endswith("/4"), err
    done = len(list((out_dir / "rows").glob("*.done")))
    rerun = subprocess.run([sys.executable, "-m", "hmi_fast.cli", *argv], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} already done (skipped:" in rerun.stderr
    assert len(_csv(out_dir / "curve.csv")[1]) == 4 * 10


def test_curve_on_a_local_dask_cluster_writes_the_same_tables(capsys, tmp_path):
    pytest.importorskip("distributed")
    code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path / "local"))
    assert code == 0, err
    code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path / "dask"), "--dask-local", "2")
    assert code == 0, err
    assert "Dask: a local cluster of 2 worker processes" in err
    for name in ("curve.csv", "recovery.csv"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--dask-local", "2", "--workers", "2"], "argument --workers: not with --dask-local"),
    (["--scheduler", "tcp://127.0.0.1:9", "--dask-local", "2"], "argument --dask-local: not allowed with argument --scheduler"),
    (["--dask-local", "0"], "argument --dask-local: expected an integer >= 1, got 0"),
    (["--scheduler", "tcp://127.0.0.1:9"], "argument --scheduler: cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"),
])
def test_cluster_options_refused_with_the_reason(capsys, tmp_path, argv, message):
    pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):  # nothing listens on port 9
        code, out, err = _run(capsys, "curve", *TINY_CURVE, "--out", str(tmp_path), *argv)
    assert code == 2 and message in err, err
    assert "Traceback" not in err
