"""Package-wide configuration: numba flags, block size, threads.

This module is imported first by :mod:`hmi_fast`. Before numba's OpenMP
runtime (GNU libgomp) is loaded it bounds how long the OpenMP workers
busy-wait after a parallel kernel: ``GOMP_SPINCOUNT=10000``, about 0.3 ms
here, then they sleep. Two workloads pull opposite ways:

* the streaming engine runs a numba kernel and then a BLAS-3 call on both
  cores; workers that keep spinning take a core from the BLAS (OpenMP's
  default active policy: 1.7-2x slower);
* the eigensolver calls numba kernels every 0.1-0.5 ms; a worker that went
  to sleep costs a wake-up per call and, on a virtual machine, runs on a
  vCPU the host has slowed down (``OMP_WAIT_POLICY=PASSIVE``: the solve is
  1.4x slower).

A spin of about 0.3 ms keeps the workers awake through the solver's gaps
and costs the engine a fraction of a millisecond per block (within noise;
``benchmarks/threading_layers.py`` measures both workloads).

Environment overrides
---------------------
``HMI_FAST_BLOCK_SIZE``
    Rows per streaming block. Default: as many rows as fit in
    ``HMI_FAST_BLOCK_BYTES`` (32 MiB) at the block's width and dtype, at
    least 256 — 4096 float64 rows at d = 1000. Larger blocks give the BLAS
    longer rank-k updates; see ``docs/benchmarks.md``.
``HMI_FAST_BLOCK_BYTES``
    Memory of one block buffer when the block size is not set.
``HMI_FAST_CACHE``
    ``0`` disables numba's on-disk cache (default on).
``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``
    When the user sets either, both are left alone.
"""

from __future__ import annotations

import os

#: spins of an idle OpenMP worker before it sleeps (libgomp: about 26 us per 1000 here).
SPINCOUNT = 10000

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = str(SPINCOUNT)

import contextlib  # noqa: E402
from typing import Iterator  # noqa: E402

import numba  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

#: numba's fast-math flags without ``nnan``/``ninf`` so NaN checks still work.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: on-disk compilation cache (import plus first call in a warm process is fast).
CACHE = os.environ.get("HMI_FAST_CACHE", "1") != "0"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        out = int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a positive integer, got {value!r}") from None
    if out < 1:
        raise ValueError(f"environment variable {name} must be a positive integer, got {value!r}")
    return out


#: rows per streaming block when set by the environment (None: sized by BLOCK_BYTES).
BLOCK_SIZE = _env_int("HMI_FAST_BLOCK_SIZE", 0) or None

#: bytes of one block buffer when the block size is not given.
BLOCK_BYTES = _env_int("HMI_FAST_BLOCK_BYTES", 32 * 2**20)


def block_rows(d: int, dtype=None, block_size: int | None = None) -> int:
    """Rows per block: ``block_size`` if given, else ``HMI_FAST_BLOCK_SIZE``, else sized by ``BLOCK_BYTES``."""
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) and not hasattr(block_size, "__index__"):
            raise TypeError(f"block_size: must be an integer >= 1, got {block_size!r}")
        if int(block_size) < 1:
            raise ValueError(f"block_size: must be an integer >= 1, got {block_size}")
        return int(block_size)
    if BLOCK_SIZE is not None:
        return BLOCK_SIZE
    import numpy as np

    item = np.dtype(np.float64 if dtype is None else dtype).itemsize
    rows = BLOCK_BYTES // max(1, int(d) * item)
    return int(max(256, min(1 << 16, rows // 256 * 256)))


def jit(**kwargs):
    """``numba.njit`` with the package's defaults (cache, fastmath without nnan/ninf)."""
    opts = {"cache": CACHE, "fastmath": FASTMATH, "nogil": True}
    opts.update(kwargs)
    return numba.njit(**opts)


def get_num_threads() -> int:
    """Number of threads numba kernels use now."""
    return numba.get_num_threads()


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Limit numba's and the BLAS's thread pools together.

    Both pools are restored on exit, also when the body raises. ``None``
    leaves the current settings unchanged.

    Parameters
    ----------
    n : int or None
        Number of threads, ``1 <= n <= numba.config.NUMBA_NUM_THREADS``.

    Examples
    --------
    >>> import hmi_fast
    >>> with hmi_fast.threads(1):
    ...     pass
    """
    if n is None:
        yield get_num_threads()
        return
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"threads: n must be an integer or None, got {type(n).__name__}")
    n = int(n)
    top = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= top:
        raise ValueError(f"threads: n must be between 1 and {top} (the machine's thread count), got {n}")
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        numba.set_num_threads(previous)


def blas_info() -> list[dict]:
    """What threadpoolctl reports about the loaded BLAS libraries."""
    from threadpoolctl import threadpool_info

    import numpy  # noqa: F401  (loads the BLAS)

    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def describe() -> dict:
    """Versions, threading layer and BLAS kernel, for result metadata."""
    import platform

    import numpy
    import scipy

    info = blas_info()
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not yet loaded"
    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "blas": [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in info
        ],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
