"""Sources of (X, y) blocks for the engine: arrays, memmaps, ``.npy`` files, iterables, models.

Every source is turned into an iterator of ``(X_block, y_block, row0)``
whose memory is bounded by the block, not by n.
"""

from __future__ import annotations

import mmap
import os
from typing import Iterator

import numpy as np

from . import _config
from ._validation import check_float_array, check_lengths, check_positive_int
from .model import HMIModel


def _open_npy(path, name: str):
    """Header of a ``.npy`` file: (file object, shape, dtype, fortran_order)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file {path!r}; pass an existing .npy file or an array")
    f = open(path, "rb")
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
    except ValueError as exc:
        f.close()
        raise ValueError(f"{name}: {path!r} is not a valid .npy file ({exc}); save arrays with np.save") from None
    except Exception:
        f.close()
        raise
    return f, shape, np.dtype(dtype), fortran, path


def _load_labels(y, n_rows: int | None):
    if isinstance(y, (str, os.PathLike)):
        f, shape, dtype, _, path = _open_npy(y, "y")
        f.close()
        y = np.load(path, mmap_mode="r")
    y = check_float_array(y, "y", 1)
    if n_rows is not None:
        check_lengths(n_rows, y.shape[0])
    return y


def _array_blocks(X, y, n, block_size) -> Iterator:
    release = _page_releaser(X)
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        yield X[lo:hi], np.asarray(y[lo:hi]), lo
        release(hi)


def _page_releaser(X):
    """For a C-ordered np.memmap, drop the pages of rows already processed (bounded RSS).

    Advisory only: dropped pages of a file mapping are read again from the
    file if touched, so this never changes results.
    """
    mm = getattr(X, "_mmap", None)
    if not isinstance(X, np.memmap) or mm is None or not X.flags.c_contiguous or not hasattr(mm, "madvise"):
        return lambda stop: None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):  # pragma: no cover - closed or odd mapping
        return lambda stop: None
    start = X.ctypes.data - base  # where row 0 lies inside the mapping
    row_bytes = X.strides[0]
    page = mmap.PAGESIZE
    done = [start // page * page + (page if start % page else 0)]

    def release(stop):
        end = (start + stop * row_bytes) // page * page
        if end > done[0]:
            try:
                mm.madvise(mmap.MADV_DONTNEED, done[0], end - done[0])
            except (OSError, ValueError):  # pragma: no cover - advisory only
                return
            done[0] = end

    return release


def _npy_blocks(path, y, n, block_size) -> Iterator:
    f, shape, dtype, fortran, path = _open_npy(path, "X")
    try:
        if len(shape) != 2:
            raise ValueError(f"X: {path!r} holds an array of shape {shape}; expected 2-D (n_samples, n_features)")
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"X: {path!r} holds dtype {dtype}; save it as float32 or float64")
        rows, d = shape
        if fortran:
            f.close()
            X = np.load(path, mmap_mode="r")
            yield from _array_blocks(X, y, n, block_size)
            return
        buf = np.empty((min(block_size, max(n, 1)), d), dtype=dtype)
        for lo in range(0, n, block_size):
            hi = min(n, lo + block_size)
            view = buf[: hi - lo]
            got = f.readinto(memoryview(view).cast("B"))
            if got != view.nbytes:
                raise ValueError(f"X: {path!r} is truncated (file ends before row {hi}); the header says {rows} rows")
            yield view, np.asarray(y[lo:hi]), lo
    finally:
        f.close()


def npy_shape(path) -> tuple:
    f, shape, dtype, fortran, path = _open_npy(path, "X")
    f.close()
    return shape


def _iterable_blocks(source, n) -> Iterator:
    row = 0
    for item in source:
        try:
            Xb, yb = item
        except (TypeError, ValueError):
            raise TypeError("source: an iterable source must yield (X_block, y_block) pairs") from None
        if n is not None and row >= n:
            return
        if n is not None and row + len(Xb) > n:
            take = n - row
            Xb, yb = Xb[:take], yb[:take]
        yield Xb, yb, row
        row += len(Xb)
    if n is not None and row < n:
        raise ValueError(f"n: the source ended after {row} rows, fewer than n={n}")


def open_source(source, y=None, *, n=None, block_size: int | None = None, dtype=None):
    """Resolve ``source`` into ``(blocks, d, n_total, dtype, post)``.

    ``n_total`` is ``None`` for iterables of unknown length; ``dtype`` is the
    source's own dtype where it has one (``None`` otherwise). ``post`` maps
    the accumulated matrix to T: the identity, except for a model, whose
    blocks are latent rows g (x = Q g) and whose T is therefore Q T_g Qᵀ.
    """
    if n is not None:
        n = check_positive_int(n, "n")
    if isinstance(source, HMIModel):
        if y is not None:
            raise ValueError("y: must be None when the source is an HMIModel (the model makes its own labels)")
        if n is None:
            raise ValueError("n: required when the source is an HMIModel (how many rows to stream)")
        dt = np.dtype(np.float64 if dtype is None else dtype)
        block_size = _config.block_rows(source.d, dt, block_size)
        return _model_latent_blocks(source, n, block_size, dt), source.d, n, dt, source.rotate
    if isinstance(source, (str, os.PathLike)):
        if y is None:
            raise ValueError("y: required when X is a file path; pass the labels as an array or a .npy path")
        shape = npy_shape(source)
        if len(shape) != 2:
            raise ValueError(f"X: {os.fspath(source)!r} holds an array of shape {shape}; expected 2-D (n_samples, n_features)")
        y = _load_labels(y, shape[0])
        total = _check_n(n, shape[0])
        _check_nonempty(total, shape[1])
        f, _, dt, _, _ = _open_npy(source, "X")
        f.close()
        block_size = _config.block_rows(shape[1], dtype or dt, block_size)
        return _npy_blocks(source, y, total, block_size), shape[1], total, dt, _identity
    if isinstance(source, np.ndarray) or hasattr(source, "__array__") and not hasattr(source, "__next__"):
        if y is None:
            raise ValueError("y: required when X is an array; pass the labels (one per row of X)")
        X = check_float_array(source, "X", 2)
        y = _load_labels(y, X.shape[0])
        total = _check_n(n, X.shape[0])
        _check_nonempty(total, X.shape[1])
        block_size = _config.block_rows(X.shape[1], dtype or X.dtype, block_size)
        return _array_blocks(X, y, total, block_size), X.shape[1], total, X.dtype, _identity
    if hasattr(source, "__iter__"):
        if y is not None:
            raise ValueError("y: must be None when the source is an iterable of (X_block, y_block) pairs")
        d = getattr(source, "d", None)
        return _iterable_blocks(source, n), d, n, getattr(source, "dtype", None), _identity
    raise TypeError(
        f"source: unsupported type {type(source).__name__}; pass an array, a np.memmap, a .npy path, "
        "an iterable of (X_block, y_block) pairs, or an HMIModel"
    )


def _model_latent_blocks(model, n, block_size, dtype):
    buf = np.empty((min(block_size, n), model.d), dtype=dtype)
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        G, yb = model.latent_rows(lo, hi, out=buf[: hi - lo])
        yield G, yb, lo


def _identity(T):
    return T


def _check_n(n, rows):
    if n is None:
        return rows
    if n > rows:
        raise ValueError(f"n: asked for {n} rows but the data has only {rows}")
    return n


def _check_nonempty(n, d):
    if n == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    if d == 0:
        raise ValueError("X: has no columns (d = 0); T needs at least one feature")
