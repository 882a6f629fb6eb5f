"""The spectral matrix on a Dask cluster (docs/distributed.md).

Rows are cut into fixed partitions; each partition is one task that builds a
:class:`~hmi_fast.SpectralAccumulator` with the single-process engine.
Accumulators travel between processes as their
:meth:`~hmi_fast.SpectralAccumulator.state` (a dict of NumPy arrays: the d×d
sums, the weight moments and sketch, the frame key; validated on arrival)
and are combined by :meth:`~hmi_fast.SpectralAccumulator.merge` in a fixed
binary tree, so the result does not depend on how many workers there are or
which task ran where: for a fixed partition it is the same bit for bit, and
within rounding (1e-12 relative) of :func:`hmi_fast.spectral_matrix`.

Sources:

* an :class:`~hmi_fast.HMIModel` with ``n``: each task rebuilds the model from
  its parameters and generates its own rows from ``(seed, i)``; nothing else
  travels to the workers;
* a ``dask.array`` X chunked by rows (one chunk across the columns) with y as
  a dask or NumPy array: one partition per chunk;
* a list of ``.npy`` shards (paths the workers can read) with y as a list of
  ``.npy`` label files (one per shard) or one NumPy array.

Checkpoints (learning curves) cut the partitions: the T at each checkpoint
is the merge of the partitions before it, from the same pass.

Every task is pure (its result is a function of its arguments), so a worker
that dies costs a recomputation of what it held, never a wrong or partial
result. Each task runs its numba and BLAS kernels within ``threads`` threads
(:func:`hmi_fast.threads`). This is the only module of the package that
imports Dask: install it with ``pip install "hmi_fast[dask]"``.
"""

from __future__ import annotations

import os
import re
import time
from typing import Iterator, Sequence

try:
    import dask
    import dask.array as da
    import distributed
    from dask.sizeof import sizeof as _dask_sizeof
except ImportError as exc:  # pragma: no cover - exercised where dask is absent
    raise ImportError(
        "hmi_fast.distributed needs Dask: install the extra with pip install 'hmi_fast[dask]' (dask, distributed)"
    ) from exc

import numpy as np

from . import _config
from ._validation import check_bool, check_center, check_dtype, check_float_array, check_lengths, check_positive_int
from .accumulator import SpectralAccumulator
from .engine import _check_checkpoints
from .engine import accumulate as _accumulate
from .model import HMIModel
from .preprocess import resolve_preprocess

__all__ = ["DEFAULT_PARTITION_ROWS", "accumulate", "curve_results", "curve_task", "fit_estimator",
           "iter_accumulate", "spectral_matrix"]

#: rows per partition of a model or a shard when ``partition_size`` is not given (docs/distributed.md).
DEFAULT_PARTITION_ROWS = 32768


# ------------------------------------------------------------------ argument checks
def _check_client(client):
    """The running distributed Client to use (``None``: the current default client)."""
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:
            raise ValueError(
                "client: no Dask client is running; pass client=Client(...) "
                "(e.g. Client(LocalCluster(n_workers=2, threads_per_worker=1))) or create one first"
            ) from None
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client: expected a dask.distributed.Client, got {type(client).__name__}")
    if client.asynchronous:
        raise TypeError(
            "client: an asynchronous Client is not supported; pass a Client created without asynchronous=True"
        )
    if client.status != "running":
        raise ValueError(f"client: the client is {client.status}, not running; pass an open dask.distributed.Client")
    return client


def _check_options(preprocess, center, moments, dtype, block_size) -> dict:
    """Accumulator options that travel to the tasks (checked here, before anything is submitted)."""
    pre = resolve_preprocess(preprocess)
    if not pre.is_builtin:
        raise ValueError(
            "preprocess: a cluster ships accumulator states, which hold only a built-in τ; "
            "pass 'saturating', 'identity', 'sign' or ('clip', c)"
        )
    return {
        "preprocess": ("clip", pre.param) if pre.name == "clip" else pre.name,
        "center": check_center(center),
        "moments": check_bool(moments, "moments"),
        "dtype": None if dtype is None else check_dtype(dtype).name,
        "block_size": None if block_size is None else check_positive_int(block_size, "block_size"),
    }


def _meta_check(dtype, name: str, ndim: int) -> np.dtype:
    """The engine's dtype rules applied to a lazy array's dtype (same messages as for NumPy input)."""
    return check_float_array(np.empty((0,) * ndim, dtype=dtype), name, ndim).dtype


_ROWS = re.compile(r"\b(rows?) (\d+)(?:\.\.(\d+))?")


def _renumber(exc: Exception, offset: int, suffix: str = "") -> Exception:
    """The same error with the engine's row numbers shifted by ``offset`` (rows of the whole data)."""
    msg = str(exc)
    if offset and "truncated" not in msg:
        msg = _ROWS.sub(lambda m: f"{m[1]} {offset + int(m[2])}" + (f"..{offset + int(m[3])}" if m[3] else ""), msg)
    return type(exc)(msg + suffix)


# ------------------------------------------------------------------ tasks (run on the workers)
def _model_part(params: dict, lo: int, hi: int, options: dict, threads: int) -> SpectralAccumulator:
    """Accumulator of rows ``lo .. hi`` of the model with these parameters (rebuilt here)."""
    model = HMIModel(**params)
    with _config.threads(threads):
        return _accumulate(model, n=hi - lo, start=lo, **options).copy()


def _array_part(X, y, a: int, b: int, shape: tuple, row0: int, index: int, options: dict,
                threads: int) -> SpectralAccumulator:
    """Accumulator of rows ``a .. b`` of one chunk (``row0``: its first row in the whole array)."""
    if tuple(np.shape(X)) != shape:
        raise ValueError(
            f"X: chunk {index} (rows {row0 - a}..{row0 - a + shape[0] - 1}) holds an array of shape {np.shape(X)} "
            f"but the dask array's chunks say {shape}; the declared chunks do not match the data "
            "(check the shapes given to da.from_delayed or map_blocks)"
        )
    if len(y) != shape[0]:
        raise ValueError(f"y: chunk {index} holds {len(y)} labels but X's chunk holds {shape[0]} rows")
    try:
        with _config.threads(threads):
            return _accumulate(X[a:b], y[a:b], **options).copy()
    except (ValueError, TypeError) as exc:
        raise _renumber(exc, row0) from None


def _shard_part(index: int, path: str, y, a: int, b: int, options: dict, threads: int) -> SpectralAccumulator:
    """Accumulator of rows ``a .. b`` of one ``.npy`` shard."""
    try:
        with _config.threads(threads):
            return _accumulate(path, y, start=a, n=b - a, **options).copy()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"source[{index}]: no such file {path!r} on the worker; every shard must be readable by the workers"
        ) from None
    except (ValueError, TypeError) as exc:
        raise _renumber(exc, a, f" (source[{index}], {path!r}: rows counted from the start of the file)") from None


def _merge(a: SpectralAccumulator, b: SpectralAccumulator) -> SpectralAccumulator:
    """The rows of ``a`` then ``b`` in a new accumulator (the inputs may be held by the scheduler: unchanged)."""
    return a.copy().merge(b)


@_dask_sizeof.register(SpectralAccumulator)
def _sizeof(acc) -> int:
    """What a state held by a worker weighs (for Dask's memory accounting and transfer costs)."""
    arrays = [v for v in vars(acc).values() if isinstance(v, np.ndarray)]
    return 1000 + sum(a.nbytes for a in arrays) + 2 * acc.weight_sketch.counts.nbytes


def _shard_headers(paths: list, ypaths) -> list:
    """(rows, columns, dtype) of each shard, read on a worker; label files checked against them."""
    from .sources import _npy_header

    out = []
    for i, p in enumerate(paths):
        name = f"source[{i}]"
        if not os.path.exists(p):
            raise FileNotFoundError(
                f"{name}: no such file {p!r} on the workers; every shard must be a .npy file the workers can read"
            )
        shape, dtype = _npy_header(p, name)[:2]
        if len(shape) != 2:
            raise ValueError(f"{name}: {p!r} holds an array of shape {shape}; expected 2-D (n_samples, n_features)")
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise TypeError(f"{name}: {p!r} holds dtype {dtype}; save it as float32 or float64")
        if out and shape[1] != out[0][1]:
            raise ValueError(
                f"{name}: {p!r} has {shape[1]} columns but source[0] has {out[0][1]}; "
                "every shard needs the same columns"
            )
        if ypaths is not None:
            yname = f"y[{i}]"
            if not os.path.exists(ypaths[i]):
                raise FileNotFoundError(f"{yname}: no such file {ypaths[i]!r} on the workers")
            yshape = _npy_header(ypaths[i], yname)[0]
            if len(yshape) != 1:
                raise ValueError(f"{yname}: {ypaths[i]!r} holds an array of shape {yshape}; expected 1-D labels")
            if yshape[0] != shape[0]:
                raise ValueError(f"{yname}: {ypaths[i]!r} holds {yshape[0]} labels but source[{i}] has {shape[0]} rows")
        out.append((int(shape[0]), int(shape[1]), dtype.newbyteorder("=").name))
    return out


# ------------------------------------------------------------------ the plan
def _model_params(model: HMIModel) -> dict:
    """What a task needs to rebuild ``model`` (its rows are a function of these and the row index)."""
    return {"d": model.d, "m_star": model.m_star, "gamma": model.gamma, "link": model.link, "noise": model.noise,
            "seed": model.seed, "directions": model.directions}


def _pieces(source, y, n, client, options, partition_size, threads):
    """Row ranges of the source and how to make a task for rows ``a .. b`` of each.

    Returns ``(pieces, total_rows, options)``; a piece is ``(lo, hi, grid, make)``
    with ``grid`` the partition size that cuts it (None: the piece is one
    partition unless a checkpoint cuts it) and ``make(a, b)`` the delayed
    accumulator of rows ``a .. b``.
    """
    if isinstance(source, HMIModel):
        if y is not None:
            raise ValueError("y: must be None when the source is an HMIModel (the model makes its own labels)")
        if n is None:
            raise ValueError("n: required when the source is an HMIModel (how many rows to stream)")
        params = _model_params(source)
        options = {**options, "dtype": options["dtype"] or "float64"}
        part = dask.delayed(_model_part, pure=True)
        return [(0, n, partition_size, lambda a, b: part(params, a, b, options, threads))], n, options
    if isinstance(source, da.Array):
        return _array_pieces(source, y, n, options, partition_size, threads)
    if isinstance(source, (str, bytes, os.PathLike)):
        source = [source]
    if isinstance(source, (list, tuple)) and source and all(isinstance(p, (str, bytes, os.PathLike)) for p in source):
        return _shard_pieces([os.fsdecode(p) for p in source], y, n, client, options, partition_size, threads)
    if isinstance(source, (list, tuple)) and not source:
        raise ValueError("source: the list of shards is empty; pass at least one .npy path")
    raise TypeError(
        f"source: unsupported type {type(source).__name__} on a cluster; pass an HMIModel (with n), a dask array "
        "chunked by rows (with y), or a list of .npy paths; for a NumPy array use hmi_fast.accumulate, "
        "or da.from_array(X, chunks=(rows, -1))"
    )


def _array_pieces(X, y, n, options, partition_size, threads):
    if partition_size is not None:
        raise ValueError(
            "partition_size: a dask array is partitioned by its chunks; rechunk X instead, e.g. X.rechunk({0: rows})"
        )
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array of shape (n_samples, n_features), got shape {X.shape}")
    rows, cols = X.chunks
    if any(np.isnan(c) for c in rows + cols):
        raise ValueError("X: has chunks of unknown size; call X.compute_chunk_sizes() first")
    if len(cols) != 1:
        raise ValueError(
            f"X: must be chunked by rows only (one chunk across its {X.shape[1]} columns), got column chunks "
            f"{cols}; rechunk it with X.rechunk({{1: -1}})"
        )
    if X.shape[1] == 0:
        raise ValueError("X: has no columns (d = 0); T needs at least one feature")
    data_dtype = _meta_check(X.dtype, "X", 2)
    if y is None:
        raise ValueError("y: required when X is a dask array; pass the labels (a dask or NumPy array, one per row)")
    if isinstance(y, da.Array):
        if y.ndim != 1:
            raise ValueError(f"y: expected a 1-D array of shape (n_samples,), got shape {y.shape}")
        if any(np.isnan(c) for c in y.chunks[0]):
            raise ValueError("y: has chunks of unknown size; call y.compute_chunk_sizes() first")
        _meta_check(y.dtype, "y", 1)
        check_lengths(X.shape[0], y.shape[0])
        ychunks = list(y.rechunk((rows,)).to_delayed().ravel())  # labels follow X's chunks (y is small)
    else:
        y = check_float_array(y, "y", 1)
        check_lengths(X.shape[0], y.shape[0])
        ychunks = None
    total = X.shape[0] if n is None else check_positive_int(n, "n")
    if total > X.shape[0]:
        raise ValueError(f"n: asked for {total} rows but X has only {X.shape[0]} rows")
    if total == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    compute = options["dtype"] or ("float32" if data_dtype == np.float32 else "float64")
    options = {**options, "dtype": compute}
    xchunks = X.to_delayed(optimize_graph=True).ravel()
    part = dask.delayed(_array_part, pure=True)
    pieces, lo = [], 0
    for k, size in enumerate(rows):
        hi = lo + int(size)
        if size and lo < total:
            yc = ychunks[k] if ychunks is not None else dask.delayed(y[lo:hi], pure=True)

            def make(a, b, k=k, lo=lo, hi=hi, yc=yc):
                return part(xchunks[k], yc, a - lo, b - lo, (hi - lo, cols[0]), a, k, options, threads)

            pieces.append((lo, min(hi, total), None, make))
        lo = hi
    return pieces, total, options


def _shard_pieces(paths, y, n, client, options, partition_size, threads):
    ypaths = None
    if y is None:
        raise ValueError("y: required with .npy shards; pass a list of .npy label files (one per shard) or one array")
    if isinstance(y, (list, tuple)):
        if len(y) != len(paths) or not all(isinstance(p, (str, bytes, os.PathLike)) for p in y):
            raise ValueError(
                f"y: a list of labels must hold one .npy path per shard ({len(paths)}), got {len(y)} items"
            )
        ypaths = [os.fsdecode(p) for p in y]
    elif isinstance(y, da.Array):
        raise TypeError(
            "y: with .npy shards pass the labels as .npy paths (one per shard) or a NumPy array, not a dask array"
        )
    else:
        y = check_float_array(y, "y", 1)
    headers = client.submit(_shard_headers, paths, ypaths, pure=False).result()
    rows = [h[0] for h in headers]
    available = sum(rows)
    if ypaths is None:
        check_lengths(available, y.shape[0], "source")
    total = available if n is None else check_positive_int(n, "n")
    if total > available:
        raise ValueError(f"n: asked for {total} rows but the shards hold only {available}")
    if total == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    compute = options["dtype"] or ("float32" if all(h[2] == "float32" for h in headers) else "float64")
    options = {**options, "dtype": compute}
    part = dask.delayed(_shard_part, pure=True)
    pieces, lo = [], 0
    for i, (path, r) in enumerate(zip(paths, rows)):
        hi = lo + r
        if r and lo < total:
            labels = ypaths[i] if ypaths is not None else dask.delayed(y[lo:hi], pure=True)

            def make(a, b, i=i, lo=lo, path=path, labels=labels):
                return part(i, path, labels, a - lo, b - lo, options, threads)

            pieces.append((lo, min(hi, total), partition_size or DEFAULT_PARTITION_ROWS, make))
        lo = hi
    return pieces, total, options


def _tree(states: list):
    """Merge delayed accumulators pairwise, level by level, in row order: a fixed tree."""
    merge = dask.delayed(_merge, pure=True)
    while len(states) > 1:
        nxt = [merge(states[i], states[i + 1]) for i in range(0, len(states) - 1, 2)]
        if len(states) % 2:
            nxt.append(states[-1])
        states = nxt
    return states[0]


def _graph(source, y, *, client, n, checkpoints, preprocess, center, moments, dtype, block_size, partition_size,
           threads):
    """Check everything, then the delayed accumulator at each checkpoint (or at the end)."""
    client = _check_client(client)
    options = _check_options(preprocess, center, moments, dtype, block_size)
    threads = check_positive_int(threads, "threads")
    if partition_size is not None:
        partition_size = check_positive_int(partition_size, "partition_size")
    if n is not None:
        n = check_positive_int(n, "n")
    if isinstance(source, HMIModel):
        partition_size = partition_size or DEFAULT_PARTITION_ROWS
    pieces, total, options = _pieces(source, y, n, client, options, partition_size, threads)
    cps = [total] if checkpoints is None else _check_checkpoints(checkpoints, total)
    total = cps[-1]  # rows after the last checkpoint are not read
    parts = []
    for lo, hi, grid, make in pieces:
        if lo >= total:
            break
        hi = min(hi, total)
        cuts = {lo, hi} | {c for c in cps if lo < c < hi}
        if grid:
            cuts |= set(range(lo, hi, grid))
        cuts = sorted(cuts)
        parts += [(a, b, make) for a, b in zip(cuts, cuts[1:])]
    prefixes, prev, k = [], None, 0
    for c in cps:  # each checkpoint: its own rows merged in a fixed tree, then added to the previous prefix
        seg = []
        while k < len(parts) and parts[k][1] <= c:
            a, b, make = parts[k]
            seg.append(make(a, b))
            k += 1
        here = _tree(seg)
        prev = here if prev is None else dask.delayed(_merge, pure=True)(prev, here)
        prefixes.append(prev)
    return client, cps, prefixes


def _results(client, cps, prefixes) -> Iterator[tuple[int, SpectralAccumulator]]:
    """Submit the whole pass now; the generator returned yields the accumulators in checkpoint order."""
    return _in_order(client, cps, client.compute(prefixes))


def _in_order(client, cps, futures):
    # Futures are released, not cancelled, when this ends: a cancel still in flight would
    # also cancel the same (pure) keys of a call that follows at once.
    for n_j, fut in zip(cps, futures):
        yield n_j, fut.result().copy()  # a result may be shared with other callers of the same keys


# ------------------------------------------------------------------ public API
def iter_accumulate(
    source,
    y=None,
    *,
    checkpoints: Sequence[int],
    client: "distributed.Client | None" = None,
    n: int | None = None,
    preprocess="saturating",
    center=False,
    moments: bool = False,
    dtype=None,
    block_size: int | None = None,
    partition_size: int | None = None,
    threads: int = 1,
) -> Iterator[tuple[int, SpectralAccumulator]]:
    """Build the accumulator at each checkpoint on a Dask cluster; yield ``(n_j, accumulator)`` in order.

    Everything is checked and the whole pass is submitted when this function
    is called; the accumulators arrive (and are yielded) in checkpoint order.
    Each is a new :class:`~hmi_fast.SpectralAccumulator` on the client:
    ``finalize()`` is T of x over the first ``n_j`` rows.

    Parameters
    ----------
    source : HMIModel, dask array or list of .npy paths
        A model (with ``n``): tasks generate their own rows. A dask array X
        chunked by rows only (one chunk across the columns): one partition per
        chunk. A list of ``.npy`` files holding row blocks of X, read by the
        workers.
    y : dask array, array or list of paths, optional
        Labels: none for a model; a dask or NumPy array with a dask X; a list
        of ``.npy`` label files (one per shard) or one NumPy array with shards.
    checkpoints : sequence of int
        Strictly increasing row counts (at most the rows available).
    client : distributed.Client, optional
        A running client (default: the current one).
    n : int, optional
        Rows to use (required for a model; default: all rows of X or the shards).
    preprocess, center, moments, dtype, block_size
        As in :class:`~hmi_fast.SpectralAccumulator` and
        :func:`hmi_fast.accumulate`; ``preprocess`` must be built in (states
        carry its name). ``block_size`` is the block inside each task.
    partition_size : int, optional
        Rows per task for a model or shards (default
        :data:`DEFAULT_PARTITION_ROWS`); a dask array is partitioned by its
        chunks. The result is bitwise the same for a given partition whatever
        the number of workers.
    threads : int
        Numba and BLAS threads of each task (:func:`hmi_fast.threads`); run
        workers with one task slot each (``threads_per_worker=1``) and
        ``cores / threads`` workers per node (docs/distributed.md).

    Examples
    --------
    >>> from distributed import Client
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast import distributed as hd
    >>> model = HMIModel(d=20, m_star=2, gamma=1.0, seed=0)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
    ...     steps = [(n_j, acc.n) for n_j, acc in hd.iter_accumulate(
    ...         model, n=3000, checkpoints=[1000, 3000], client=client, partition_size=1000)]
    >>> steps
    [(1000, 1000), (3000, 3000)]
    """
    if checkpoints is None:
        raise ValueError("checkpoints: give a strictly increasing sequence of row counts")
    client, cps, prefixes = _graph(source, y, client=client, n=n, checkpoints=checkpoints, preprocess=preprocess,
                                      center=center, moments=moments, dtype=dtype, block_size=block_size,
                                      partition_size=partition_size, threads=threads)
    return _results(client, cps, prefixes)


def accumulate(
    source,
    y=None,
    *,
    client: "distributed.Client | None" = None,
    n: int | None = None,
    preprocess="saturating",
    center=False,
    moments: bool = False,
    dtype=None,
    block_size: int | None = None,
    partition_size: int | None = None,
    threads: int = 1,
) -> SpectralAccumulator:
    """One pass over ``source`` on a Dask cluster into a :class:`~hmi_fast.SpectralAccumulator`.

    The partitions' states are merged in a fixed tree on the cluster; the
    accumulator returned lives on the client (merge it into another, save its
    state, or ``finalize()`` it). Arguments as in :func:`iter_accumulate`.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from distributed import Client
    >>> from hmi_fast import accumulate as local_accumulate
    >>> from hmi_fast import distributed as hd
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((3000, 8)), rng.standard_normal(3000)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
    ...     acc = hd.accumulate(da.from_array(X, chunks=(1000, -1)), y, client=client)
    >>> acc.n, bool(np.allclose(acc.finalize(), local_accumulate(X, y).finalize(), rtol=1e-12, atol=0))
    (3000, True)
    """
    client, cps, prefixes = _graph(source, y, client=client, n=n, checkpoints=None, preprocess=preprocess,
                                      center=center, moments=moments, dtype=dtype, block_size=block_size,
                                      partition_size=partition_size, threads=threads)
    return next(iter(_results(client, cps, prefixes)))[1]


def spectral_matrix(
    source,
    y=None,
    *,
    client: "distributed.Client | None" = None,
    n: int | None = None,
    checkpoints: Sequence[int] | None = None,
    preprocess="saturating",
    center=False,
    dtype=None,
    block_size: int | None = None,
    partition_size: int | None = None,
    threads: int = 1,
):
    """``T = (1/n) Σ τ(y_i) x_i x_iᵀ`` computed on a Dask cluster (a list of them with ``checkpoints``).

    Arguments as in :func:`iter_accumulate`; the result agrees with
    :func:`hmi_fast.spectral_matrix` within rounding (1e-12 relative).

    Examples
    --------
    >>> import numpy as np
    >>> from distributed import Client
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast import spectral_matrix as local_T
    >>> from hmi_fast import distributed as hd
    >>> model = HMIModel(d=20, m_star=2, gamma=1.0, seed=0)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
    ...     T = hd.spectral_matrix(model, n=4000, client=client, partition_size=1000)
    >>> bool(np.allclose(T, local_T(model, n=4000), rtol=1e-12, atol=0))
    True
    """
    kw = dict(client=client, n=n, preprocess=preprocess, center=center, dtype=dtype, block_size=block_size,
              partition_size=partition_size, threads=threads)
    if checkpoints is not None:
        return [acc.finalize() for _, acc in iter_accumulate(source, y, checkpoints=checkpoints, **kw)]
    return accumulate(source, y, **kw).finalize()


def fit_estimator(estimator, source, y=None, *, client=None, n: int | None = None,
                  partition_size: int | None = None, threads: int = 1):
    """Fit a :class:`~hmi_fast.SpectralEstimator` with its T built on a Dask cluster.

    The reduction runs on the cluster with the estimator's ``preprocess``,
    ``center``, ``dtype``, ``block_size`` (and ``moments`` when
    ``whiten=True``); the eigensolve and the selection run here, by
    :meth:`~hmi_fast.SpectralEstimator.fit_accumulator`. ``resid=True`` is
    refused (residual pHd reads the data twice). Returns the estimator.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from distributed import Client
    >>> from hmi_fast import HMIModel, SpectralEstimator
    >>> from hmi_fast import distributed as hd
    >>> X, y = HMIModel(d=30, m_star=2, gamma=1.0, link="he2", seed=0).sample(20_000)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
    ...     est = hd.fit_estimator(SpectralEstimator(max_components=4, random_state=0),
    ...                            da.from_array(X, chunks=(5000, -1)), y, client=client)
    >>> est.components_.shape[1], est.n_samples_seen_
    (30, 20000)
    """
    from .estimator import SpectralEstimator

    if not isinstance(estimator, SpectralEstimator):
        raise TypeError(f"estimator: expected a SpectralEstimator, got {type(estimator).__name__}")
    estimator._check_params()
    if estimator.resid:
        raise ValueError("resid: residual pHd needs the raw data (two passes); use fit or fit_stream, or resid=False")
    acc = accumulate(source, y, client=client, n=n, preprocess=estimator.preprocess, center=estimator.center,
                     moments=bool(estimator.whiten), dtype=estimator.dtype, block_size=estimator.block_size,
                     partition_size=partition_size, threads=threads)
    return estimator.fit_accumulator(acc)


# ------------------------------------------------------------------ learning curves (experiments on a cluster)
def _curve_steps(config, seed: int, checkpoints, acc, have) -> Iterator[tuple]:
    """Advance ``acc`` through ``checkpoints``; yield ``(n_j, row or None, stream_s, analysis_s)``.

    The stream is :func:`hmi_fast.experiments._through`, the pass a local
    ``run_seed`` makes (one engine pass from ``acc.n``), and each row is
    :func:`hmi_fast.experiments.analyse` with the fields ``run_seed`` adds,
    so a seed gives the same rows here as in a local run. A checkpoint equal
    to ``acc.n`` is analysed too (a state saved before its row was written);
    those in ``have`` are reached but not analysed.
    """
    from .experiments import _through, analyse

    model = config.model(seed)
    per_end = config.per_end()
    t0 = time.perf_counter()
    for n_j in _through(model, acc, checkpoints):
        t1 = time.perf_counter()
        row = None
        if n_j not in have:
            row = analyse(acc.finalize(), acc, model, per_end)
            row.update(seed=seed, n=n_j, alpha=n_j / model.d, config=config.digest())
        t2 = time.perf_counter()
        yield n_j, row, t1 - t0, t2 - t1
        t0 = time.perf_counter()


def curve_task(config, seed: int, *, checkpoints: Sequence[int] | None = None, state=None, have=(),
               threads: int | None = 1) -> dict:
    """One seed's learning curve (or a stretch of it) as a pure task: rows and state, no files written.

    Parameters
    ----------
    config : hmi_fast.experiments.CurveConfig
    seed : int
    checkpoints : sequence of int, optional
        The checkpoints of ``config`` to reach in this task (default: all),
        in one pass of the engine. Those below the rows ``state`` holds are
        skipped; one equal to it is analysed unless it is in ``have``.
    state : dict, optional
        Where to start: an accumulator :meth:`~hmi_fast.SpectralAccumulator.state`
        (e.g. read from a run folder), or the result of a previous
        ``curve_task`` (its ``"state"`` is used and its rows count as
        written). Default: no rows yet.
    have : collection of int
        Checkpoints whose rows are already written: reached but not analysed.
    threads : int or None
        Numba and BLAS threads of the task (``None``: leave them as they are).

    Returns
    -------
    dict
        ``{"seed", "rows": [one dict per analysed checkpoint, the rows
        ``run_seed`` writes (without their checksum)], "n": rows held, "done": whether the last
        checkpoint of config was reached, "state": the accumulator's state,
        "stream_s", "analysis_s"}``.

    Examples
    --------
    >>> from hmi_fast.experiments import CurveConfig
    >>> from hmi_fast.distributed import curve_task
    >>> cfg = CurveConfig(d=20, m_star=2, alphas=(5.0, 20.0), seeds=(0,), max_components=3)
    >>> first = curve_task(cfg, 0, checkpoints=[100])
    >>> rest = curve_task(cfg, 0, state=first)
    >>> [r["n"] for r in first["rows"] + rest["rows"]], rest["done"]
    ([100, 400], True)
    """
    cps_all = config.checkpoints()
    cps = cps_all if checkpoints is None else [int(c) for c in checkpoints]
    unknown = sorted(set(cps) - set(cps_all))
    if unknown:
        raise ValueError(f"checkpoints: {unknown} are not checkpoints of the config ({cps_all})")
    have = {int(h) for h in have}
    if isinstance(state, dict) and "rows" in state and "state" in state:  # a previous stretch: its rows are done
        have |= {int(r["n"]) for r in state["rows"]}
        state = state["state"]
    if state is None:
        from .experiments import _new_accumulator

        acc = _new_accumulator(config)
    else:
        acc = SpectralAccumulator.from_state(state)
    rows, stream_s, analysis_s = [], 0.0, 0.0
    with _config.threads(threads):
        for _, row, ts, ta in _curve_steps(config, seed, sorted(cps), acc, have):
            stream_s += ts
            analysis_s += ta
            if row is not None:
                rows.append(row)
    return {"seed": seed, "rows": rows, "n": acc.n, "done": acc.n >= cps_all[-1], "state": acc.state(),
            "stream_s": stream_s, "analysis_s": analysis_s}


def curve_results(client, config, seeds: Sequence[int], *, resume=None, per_checkpoint: bool = False,
                  threads: int = 1) -> Iterator[dict]:
    """Run seeds of a learning curve on a cluster; yield each task's result for the client to write.

    Every seed is one :func:`curve_task` (default: one engine pass, the rows
    of a local run bit for bit) or, with ``per_checkpoint=True``, a chain of
    them, one per remaining checkpoint: the client then gets a state to save
    at every checkpoint, but each stretch is its own pass, so the last bits
    of the rows can differ from a one-pass run. All tasks are submitted when this
    function is called (call it once per config to run several configs at
    once, then read the generators). Results come back as tasks finish,
    in checkpoint order within a seed; the caller is the only writer: append
    ``result["rows"]``, then save ``result["state"]`` (or mark the seed done
    when ``result["done"]``).

    Parameters
    ----------
    client : distributed.Client
    config : hmi_fast.experiments.CurveConfig
    seeds : sequence of int
        Seeds to run (leave out those already done).
    resume : dict, optional
        ``{seed: (state or None, have)}``: a saved accumulator state and the
        checkpoints whose rows are already written.
    per_checkpoint : bool
        One task per checkpoint, or one per seed (default).
    threads : int
        Numba and BLAS threads of each task.

    Examples
    --------
    >>> from distributed import Client
    >>> from hmi_fast.experiments import CurveConfig
    >>> from hmi_fast.distributed import curve_results
    >>> cfg = CurveConfig(d=20, m_star=2, alphas=(5.0, 20.0), seeds=(0, 1), max_components=3)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
    ...     done = sorted((row["seed"], row["n"]) for res in curve_results(client, cfg, cfg.seeds)
    ...                   for row in res["rows"])
    >>> done
    [(0, 100), (0, 400), (1, 100), (1, 400)]
    """
    client = _check_client(client)
    threads = check_positive_int(threads, "threads")
    per_checkpoint = check_bool(per_checkpoint, "per_checkpoint")
    resume = {} if resume is None else dict(resume)
    cps = config.checkpoints()
    chains = {}
    for s in seeds:
        state, have = resume.get(s, (None, ()))
        held = 0 if state is None else int(np.asarray(state["n"]))
        todo = [c for c in cps if c > held or (c == held and c not in set(have))]
        if not todo:
            continue
        steps = [[c] for c in todo] if per_checkpoint else [todo]
        prev, futs = state, []
        for step in steps:
            prev = client.submit(curve_task, config, s, checkpoints=step, state=prev, have=tuple(have), threads=threads)
            futs.append(prev)
        chains[s] = futs
    return _curve_in_order(chains)


def _curve_in_order(chains: dict) -> Iterator[dict]:
    """Results as they finish, in checkpoint order within each seed; each future is dropped once yielded."""
    where = {f.key: (s, i) for s, futs in chains.items() for i, f in enumerate(futs)}
    ready: dict = {}
    next_index = {s: 0 for s in chains}
    finished = distributed.as_completed([f for futs in chains.values() for f in futs])
    chains.clear()  # from here on only `finished` and `ready` hold the futures: results leave the cluster once read
    for fut in finished:
        s, i = where[fut.key]
        ready[(s, i)] = fut
        while (s, next_index[s]) in ready:
            yield ready.pop((s, next_index[s])).result()
            next_index[s] += 1
