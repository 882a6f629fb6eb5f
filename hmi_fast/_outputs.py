"""Output folders: one writer per folder, atomic files, provenance.

Everything the experiments and figures write goes through here:

* :func:`exclusive` holds an advisory lock (``fcntl.flock``) on
  ``DIR/.lock`` while a run writes into ``DIR``. A second run on the same
  folder is refused with :class:`FolderBusy`, which names the folder and the
  pid holding it. The lock dies with its process, so a lock file left by a
  killed run is simply taken over. Worker processes of a run write under the
  lock of the process that started them and never take it themselves.
* :func:`write_text` / :func:`write_npz` write to a unique temporary name in
  the destination's folder, flush it to disk, then rename it into place: a
  reader sees the old file or the new one, never a part.
* :func:`provenance` is the record stored with every output: package
  version and git commit, command line, versions, BLAS kernel, threads.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

LOCK_NAME = ".lock"
TEMP_SUFFIX = ".tmp"


class FolderBusy(RuntimeError):
    """Another process is writing into the output folder."""

    def __init__(self, folder: Path, pid: int | None, since: str | None):
        self.folder, self.pid, self.since = Path(folder), pid, since
        who = f"pid {pid}" if pid is not None else "another process"
        when = f", since {since}" if since else ""
        super().__init__(
            f"{self.folder} is being written by another hmi-fast run ({who}{when}); wait for it to finish "
            f"or use another output folder (lock file {self.folder / LOCK_NAME})"
        )


_held: dict[str, list] = {}  # real path -> [fd, depth] of the locks this process holds
_held_guard = threading.Lock()


def _read_lock(path: Path) -> tuple[int | None, str | None]:
    try:
        info = json.loads(path.read_text())
        return int(info["pid"]), str(info.get("since"))
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


@contextlib.contextmanager
def exclusive(folder) -> Iterator[Path]:
    """Hold the write lock of ``folder`` (created if missing) for the ``with`` body.

    Re-entrant within a process. Raises :class:`FolderBusy` at once when
    another process holds it.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    path = folder / LOCK_NAME
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield folder
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(folder, *_read_lock(path)) from None
        # the holder before us may have removed the file between our open and our lock: lock the file on disk
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a process waiting on the old file sees it gone and retries
        os.close(fd)


def remove_temporaries(folder) -> list[Path]:
    """Delete the temporary files a killed writer left under ``folder`` (call it while holding the lock)."""
    gone = []
    for p in Path(folder).rglob(f"*{TEMP_SUFFIX}"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                gone.append(p)
    return gone


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (unique temporary name, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # unique name; the umask sets the mode
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_npz(path, **arrays) -> Path:
    """``np.savez`` to ``path`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def write_csv(path, header, rows) -> Path:
    """A CSV table (``header``, then ``rows``) written atomically."""
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return write_text(path, buf.getvalue())


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_output_folder(folder) -> Path:
    """Create ``folder`` if needed and check that files can be written in it.

    Raises ``ValueError`` naming the folder and the problem (a file in the
    way, no permission, a read-only file system) before any work starts.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the folder {folder} ({exc.strerror or exc}); choose a writable location") \
            from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write in the folder {folder} ({exc.strerror or exc}); choose a writable location") \
            from None
    return folder


# ------------------------------------------------------------------ provenance
@functools.lru_cache(maxsize=1)
def git_revision() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the package runs from, if any."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(status.strip())}


def version_string() -> str:
    """``"hmi_fast 0.1.0 (git 1a2b3c4d, modified)"``, the commit only where the package runs from a checkout."""
    from . import __version__

    rev = git_revision()
    if rev["commit"] is None:
        return f"hmi_fast {__version__}"
    return f"hmi_fast {__version__} (git {rev['commit'][:10]}{', modified' if rev['dirty'] else ''})"


def _package_versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("numpy", "scipy", "numba", "threadpoolctl", "scikit-learn", "matplotlib", "tqdm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(*, command: str | None = None, seeds=None, timings: dict | None = None,
               started: float | None = None) -> dict:
    """What produced an output: package, commit, command line, seeds, versions, BLAS kernel, threads, timings.

    ``command`` defaults to this process's command line; ``started`` is a
    ``time.time()`` stamp.
    """
    import platform

    from . import __version__
    from ._config import describe

    env = describe()
    blas = env.pop("blas")
    rev = git_revision()
    now = time.time()
    out = {
        "package": "hmi_fast",
        "version": __version__,
        "git_commit": rev["commit"],
        "git_modified": rev["dirty"],
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seeds": None if seeds is None else [int(s) for s in seeds],
        "started": None if started is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
        "timings_s": {k: round(float(v), 3) for k, v in (timings or {}).items()},
        "versions": {"python": platform.python_version(), **_package_versions()},
        "blas": blas,
        "threads": {"numba": env["numba_threads"], "numba_threading_layer": env["numba_threading_layer"],
                    "blas": [b.get("num_threads") for b in blas], "cpu_count": env["cpu_count"]},
        "environment": {k: env[k] for k in ("machine", "omp_wait_policy", "gomp_spincount")},
    }
    if started is not None:
        out["timings_s"].setdefault("total", round(now - started, 3))
    return out
