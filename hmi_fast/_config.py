"""Package-wide configuration: numba flags, block size, threads.

What importing hmi_fast changes in the process
----------------------------------------------
Only this, and ``HMI_FAST_THREAD_TUNING=0`` turns all of it off:

* **OpenMP spin.** numba's OpenMP workers (GNU libgomp) busy-wait after a
  parallel kernel; two workloads pull opposite ways: the streaming engine
  runs a numba kernel and then a BLAS-3 call on both cores (workers that
  keep spinning take a core from the BLAS: OpenMP's default active policy
  is 1.7-2x slower), while the eigensolver calls numba kernels every
  0.1-0.5 ms (workers that sleep at once cost a wake-up per call:
  ``OMP_WAIT_POLICY=PASSIVE`` makes the solve 1.3x slower). A spin of about
  0.3 ms (``GOMP_SPINCOUNT=10000``) serves both
  (``benchmarks/threading_layers.py`` measures them). libgomp reads this
  only when it loads, so at import hmi_fast sets the variable, loads numba's
  threading layer (about 10 ms), and removes the variable again: child
  processes do not inherit it. Nothing is done when you set
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` yourself, or when libgomp was
  already loaded (it would have no effect then); :func:`describe` reports
  which case applied (``openmp_spin``).
* **BLAS threads during a dense Lanczos solve.** While
  :func:`~hmi_fast.topk_eigh` iterates on a dense matrix its products run on
  numba's threads and every BLAS call is small, so the solve limits the BLAS
  to one thread (an idle OpenBLAS thread spins ~0.1 s after each call and
  takes numba's second core). BLAS limits are process-wide (a property of
  OpenBLAS); they go through :func:`blas_threads`, which nests correctly
  across Python threads and restores the counts the process had when the
  last limit ends. Dense LAPACK solves and the engine are not limited.

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
``HMI_FAST_THREAD_TUNING``
    ``0``: no OpenMP spin setting, no BLAS limit during solves, no check of
    busy threads before a solve (see above).
``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``
    When the user sets either, both are left alone.
"""

from __future__ import annotations

import os

#: spins of an idle OpenMP worker before it sleeps (libgomp: about 26 us per 1000 here).
SPINCOUNT = 10000

#: whether the package tunes threads at all (``HMI_FAST_THREAD_TUNING=0`` turns it off).
THREAD_TUNING = os.environ.get("HMI_FAST_THREAD_TUNING", "1").strip() != "0"


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:  # not Linux: cannot tell
        return False


def _apply_openmp_spin() -> str:
    """Set the OpenMP spin for numba's workers when that can take effect; returns what happened."""
    if not THREAD_TUNING:
        return "off (HMI_FAST_THREAD_TUNING=0)"
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return "left to the user's OMP_WAIT_POLICY/GOMP_SPINCOUNT"
    if _libgomp_loaded():
        return "not applied: libgomp was loaded before hmi_fast"
    os.environ["GOMP_SPINCOUNT"] = str(SPINCOUNT)
    try:
        import numba
        from numba.np.ufunc import parallel

        parallel._launch_threads()  # libgomp (if numba uses it) reads the variable now
        layer = numba.threading_layer()
    except Exception as exc:  # pragma: no cover - numba internals changed: fall back to leaving it set
        return f"GOMP_SPINCOUNT={SPINCOUNT} left in the environment ({type(exc).__name__})"
    del os.environ["GOMP_SPINCOUNT"]
    if layer != "omp":
        return f"not needed: numba uses its {layer} threading layer"
    return f"GOMP_SPINCOUNT={SPINCOUNT} applied when libgomp loaded"


#: what was done about the OpenMP spin at import (see the module docstring).
OPENMP_SPIN = _apply_openmp_spin()

import contextlib  # noqa: E402
import threading  # noqa: E402
from typing import Iterator  # noqa: E402

import numba  # noqa: E402

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
    """Number of threads numba kernels use now (in this Python thread)."""
    return numba.get_num_threads()


_CONTROLLER = None
_BLAS_LOCK = threading.Lock()
_BLAS_ACTIVE: list = []  # the limits in force, one entry per open blas_threads scope
_BLAS_SAVED: list = []  # (library controller, thread count) before the first scope opened


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        import numpy  # noqa: F401  (loads NumPy's BLAS)
        import scipy.linalg  # noqa: F401  (and SciPy's)

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _blas_libraries():
    return [lc for lc in _controller().lib_controllers if lc.user_api == "blas"]


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Limit every loaded BLAS to ``n`` threads in the body (``None``: no change).

    BLAS thread counts belong to the whole process. Scopes opened by several
    Python threads at once nest: the limit in force is the smallest open one,
    and when the last scope closes every library gets back the count it had
    before the first opened (also when a body raises).
    """
    if n is None:
        yield
        return
    with _BLAS_LOCK:
        if not _BLAS_ACTIVE:
            _BLAS_SAVED[:] = [(lc, lc.num_threads) for lc in _blas_libraries()]
        _BLAS_ACTIVE.append(int(n))
        _set_blas(min(_BLAS_ACTIVE))
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_ACTIVE.remove(int(n))
            if _BLAS_ACTIVE:
                _set_blas(min(_BLAS_ACTIVE))
            else:
                for lc, count in _BLAS_SAVED:
                    _set_library(lc, count)
                _BLAS_SAVED.clear()


def _set_blas(n: int) -> None:
    for lc, count in _BLAS_SAVED:
        _set_library(lc, min(n, count))


def _set_library(lc, n: int) -> None:
    # threadpoolctl lets only one "controlling" Python thread change OpenBLAS's pthreads pool and ignores
    # the others; blas_threads already serialises every change under its own lock, so set it directly.
    setter = getattr(lc, "_real_set_num_threads", None) or lc.set_num_threads
    setter(n)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Limit numba's and the BLAS's thread pools together.

    numba's count is per Python thread; the BLAS count is process-wide and
    nests across threads (see :func:`blas_threads`). Both are restored on
    exit, also when the body raises. ``None`` leaves the current settings
    unchanged.

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
        with blas_threads(n):
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
        "openmp_spin": OPENMP_SPIN,
        "thread_tuning": THREAD_TUNING,
        "blas": [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in info
        ],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
