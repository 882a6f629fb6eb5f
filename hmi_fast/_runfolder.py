"""The files of a learning-curve run folder: checksummed row lines and accumulator states.

Each row line and each state file carries a checksum and the digest of the
run's configuration. :func:`survey` reads what one seed's files hold and says
what is missing or damaged (by file name) and where the seed can resume;
it never writes. :mod:`hmi_fast.experiments` acts on it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _outputs
from .accumulator import SpectralAccumulator


def paths(out: Path, seed: int):
    return out / "rows" / f"seed_{seed}.jsonl", out / "rows" / f"seed_{seed}.done", out / "state" / f"seed_{seed}.npz"


def _rel(out: Path, path: Path) -> str:
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


def row_check(row: dict) -> str:
    body = {k: v for k, v in row.items() if k != "check"}
    return f"{zlib.crc32(json.dumps(body, sort_keys=True).encode()):08x}"


def row_line(row: dict) -> str:
    return json.dumps({**row, "check": row_check(row)}) + "\n"


def read_rows(path: Path, seed: int, digest: str, checkpoints) -> tuple[dict, list[str], bool]:
    """Valid rows of a rows file by n, the problems found (with the file's name), and whether to rewrite it."""
    rows: dict[int, dict] = {}
    problems: list[str] = []
    if not path.exists():
        return rows, problems, False
    cps = set(checkpoints)
    raw = path.read_bytes()
    rewrite = bool(raw) and not raw.endswith(b"\n")
    conflicts = set()
    for i, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            rewrite = True
            continue
        where = f"{path.name} line {i}"
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and row.get("check") == row_check(row)
        except (json.JSONDecodeError, TypeError):
            ok = False
        if not ok:
            problems.append(f"{where}: cut or damaged")
        elif row.get("config") != digest:
            problems.append(f"{where}: a row of another configuration")
        elif row.get("seed") != seed or row.get("n") not in cps:
            problems.append(f"{where}: not a checkpoint of seed {seed} in this configuration")
        elif row["n"] in rows:
            if rows[row["n"]] != row:
                conflicts.add(row["n"])
            problems.append(f"{where}: n={row['n']} written twice")
            continue
        else:
            rows[row["n"]] = row
            continue
        rewrite = True
    for n in sorted(conflicts):  # two different rows for one checkpoint: trust neither
        rows.pop(n)
        problems.append(f"{path.name}: the rows for n={n} disagree; recomputing it")
    if problems:
        rewrite = True
    return rows, problems, rewrite


def state_digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        v = np.asarray(arrays[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def save_state(acc: SpectralAccumulator, path: Path, config, seed: int) -> None:
    arrays = {k: np.asarray(v) for k, v in acc.state().items()}
    arrays["_config"] = np.asarray(config.digest())
    arrays["_seed"] = np.asarray(seed)
    _outputs.write_npz(path, _check=np.asarray(state_digest(arrays)), **arrays)


def load_state(path: Path, config, seed: int) -> tuple[SpectralAccumulator | None, str | None]:
    """The saved accumulator of a seed, or ``(None, problem)`` when the file is damaged or foreign."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        return None, f"{path.name}: unreadable ({type(exc).__name__}: {exc})"
    check = arrays.pop("_check", None)
    if check is None or str(check) != state_digest(arrays):
        return None, f"{path.name}: checksum mismatch (the file was altered or cut)"
    if str(arrays.pop("_config")) != config.digest() or int(arrays.pop("_seed")) != seed:
        return None, f"{path.name}: the state of another configuration or seed"
    try:
        acc = SpectralAccumulator.from_state(arrays)
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"{path.name}: not a valid accumulator state ({exc})"
    if acc.d != config.d or acc.dtype != np.dtype(config.dtype) or acc.n not in set(config.checkpoints()):
        return None, f"{path.name}: does not match the run (d, dtype or row count)"
    if acc.frame != config.model(seed).frame:  # the stream's sums are kept in the model's latent frame
        return None, f"{path.name}: its sums are not in the frame of this seed's stream"
    return acc, None


@dataclass
class SeedStatus:
    """What the files of one seed hold, and what resuming it needs."""

    seed: int
    rows: dict
    missing: list
    problems: list
    rewrite: bool
    done_marker: bool
    acc: SpectralAccumulator | None

    @property
    def start(self) -> int:
        return 0 if self.acc is None else self.acc.n


def survey(config, seed: int, out: Path) -> SeedStatus:
    rows_path, done_path, state_path = paths(out, seed)
    cps = config.checkpoints()
    rows, problems, rewrite = read_rows(rows_path, seed, config.digest(), cps)
    problems = [f"rows/{p}" for p in problems]
    missing = [n for n in cps if n not in rows]
    done = done_path.exists()
    if missing and not rows_path.exists() and (done or state_path.exists()):
        problems.append(f"{_rel(out, rows_path)}: missing")
    if missing and done:
        problems.append(f"{_rel(out, done_path)}: marks seed {seed} finished but rows for "
                        f"n={', '.join(map(str, missing))} are missing")
    acc = None
    if missing and state_path.exists():
        acc, problem = load_state(state_path, config, seed)
        if problem:
            problems.append(f"state/{problem}")
        elif acc.n > missing[0]:
            problems.append(f"{_rel(out, state_path)}: is past the missing row n={missing[0]}; "
                            f"seed {seed} restarts from its first row")
            acc = None
    return SeedStatus(seed, rows, missing, problems, rewrite, done, acc)


def rewrite_rows(path: Path, rows: dict) -> None:
    _outputs.write_text(path, "".join(row_line(rows[n]) for n in sorted(rows)))


def load_config(out: Path) -> dict | None:
    path = out / "config.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
        return old
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path}: damaged ({exc}); it records the settings of the run in {out}. If that run used these "
            f"settings, delete {path.name} and rerun (rows of other settings are then refused); otherwise "
            "use another output folder"
        ) from None
