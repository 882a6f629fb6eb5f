"""Sources of (X, y) blocks for the engine: arrays, memmaps, ``.npy`` files, iterables, models.

Every source is turned into an iterator of ``(X_block, y_block, row0)``
whose memory is bounded by the block, not by n, plus the frame of its rows
(``None`` for x itself; a model streams latent rows, see docs/model.md).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import _config
from ._validation import check_float_array, check_lengths, check_positive_int
from .model import HMIModel


@dataclass
class Source:
    """An opened source: its blocks and what is known before reading them."""

    blocks: Iterator  # of (X_block, y_block, row0), rows in `frame`
    d: int | None  # None for an iterable until its first block
    n: int | None  # rows that will be read (None: an iterable of unknown length)
    dtype: np.dtype | None  # the data's own dtype, where it has one
    frame: object  # None (x) or a LatentFrame
    labels: np.ndarray | None = None  # all labels, when known before the pass (arrays, files)


def _is_path(obj) -> bool:
    return isinstance(obj, (str, bytes, os.PathLike))


def _read_npy_header(f):
    """(shape, dtype, fortran_order) of an open ``.npy`` file, versions 1.0, 2.0 and 3.0 (public API only)."""
    import ast
    import struct

    major, minor = np.lib.format.read_magic(f)
    if (major, minor) == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        return shape, np.dtype(dtype), fortran
    if (major, minor) not in ((2, 0), (3, 0)):
        raise ValueError(f"unknown .npy format version {major}.{minor}")
    (length,) = struct.unpack("<I", f.read(4))
    text = f.read(length)
    if len(text) != length:
        raise ValueError("the header is cut short")
    header = ast.literal_eval(text.decode("utf8" if major == 3 else "latin1"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"header is not a .npy header: {header!r}")
    shape, fortran = header["shape"], header["fortran_order"]
    if not (isinstance(shape, tuple) and all(isinstance(v, int) and v >= 0 for v in shape) and isinstance(fortran, bool)):
        raise ValueError(f"header holds an invalid shape or order: {header!r}")
    return shape, np.lib.format.descr_to_dtype(header["descr"]), fortran


def _npy_header(path, name: str):
    """(shape, dtype, fortran_order, data offset, path) of a ``.npy`` file, with its size checked."""
    path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file {path!r}; pass an existing .npy file or an array")
    try:
        with open(path, "rb") as f:
            shape, dtype, fortran = _read_npy_header(f)
            offset = f.tell()
    except (ValueError, SyntaxError, struct_error(), UnicodeDecodeError, TypeError) as exc:
        raise ValueError(f"{name}: {path!r} is not a readable .npy file ({exc}); save arrays with np.save") from None
    if dtype.hasobject:
        raise TypeError(f"{name}: {path!r} holds Python objects (dtype {dtype}); save a float32 or float64 array")
    size = os.path.getsize(path)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need:
        raise ValueError(
            f"{name}: {path!r} is truncated ({size} bytes, the header needs {need} for shape {shape}); save it again"
        )
    return shape, dtype, fortran, offset, path


def struct_error():
    import struct

    return struct.error


def _load_labels(y, n_rows: int | None):
    if _is_path(y):
        shape, dtype, _, _, path = _npy_header(y, "y")
        y = np.load(path, mmap_mode="r")
    y = check_float_array(y, "y", 1)
    if n_rows is not None:
        check_lengths(n_rows, y.shape[0])
    return y


def _array_blocks(X, y, start, stop, block_size) -> Iterator:
    release = _page_releaser(X)
    for lo in range(start, stop, block_size):
        hi = min(stop, lo + block_size)
        yield X[lo:hi], np.asarray(y[lo:hi]), lo - start
        release(hi)


def _page_releaser(X):
    """For a C-ordered, file-backed, shared np.memmap: drop the pages of rows already processed.

    Dropped pages of a shared file mapping (modes ``r``, ``r+``, ``w+``) are
    read again from the file or the page cache if touched, so this never
    changes what anyone sees. A copy-on-write mapping (mode ``c``) keeps the
    caller's in-memory edits only in its private pages: those are never
    released.
    """
    mm = getattr(X, "_mmap", None)
    if (not isinstance(X, np.memmap) or mm is None or getattr(X, "mode", "c") not in ("r", "r+", "w+")
            or not X.flags.c_contiguous or not hasattr(mm, "madvise")):
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


def _npy_blocks(path, y, start, stop, block_size, header) -> Iterator:
    shape, dtype, fortran, offset, path = header
    if fortran:
        X = np.load(path, mmap_mode="r")
        yield from _array_blocks(X, y, start, stop, block_size)
        return
    d = shape[1]
    native = dtype.newbyteorder("=")
    buf = np.empty((min(block_size, max(stop - start, 1)), d), dtype=dtype)
    with open(path, "rb") as f:
        f.seek(offset + start * d * dtype.itemsize)
        for lo in range(start, stop, block_size):
            hi = min(stop, lo + block_size)
            view = buf[: hi - lo]
            got = f.readinto(memoryview(view).cast("B"))
            if got != view.nbytes:
                raise ValueError(f"X: {path!r} is truncated (file ends before row {hi}); the header says {shape[0]} rows")
            yield (view if dtype.isnative else view.astype(native)), np.asarray(y[lo:hi]), lo - start


def _iterable_blocks(source, n) -> Iterator:
    row = 0
    for item in source:
        try:
            Xb, yb = item
        except (TypeError, ValueError):
            raise TypeError("source: an iterable source must yield (X_block, y_block) pairs") from None
        if n is not None and row >= n:
            return
        Xb = check_float_array(Xb, "X", 2)
        yb = check_float_array(yb, "y", 1)
        if n is not None and row + len(Xb) > n:
            take = n - row
            Xb, yb = Xb[:take], yb[:take]
        yield Xb, yb, row
        row += len(Xb)
    if n is not None and row < n:
        raise ValueError(f"n: the source ended after {row} rows, fewer than n={n}")


def _model_blocks(model: HMIModel, start, n, block_size, dtype, latent: bool) -> Iterator:
    """Rows ``start .. start + n`` of a model's stream into one reused buffer (the engine copies nothing)."""
    buf = np.empty((min(block_size, n), model.d), dtype=dtype)
    for lo in range(start, start + n, block_size):
        hi = min(start + n, lo + block_size)
        if latent:
            G, yb = model.latent_rows(lo, hi, out=buf[: hi - lo])
        else:
            G, yb = model.rows(lo, hi, dtype=dtype, out=buf[: hi - lo])
        yield G, yb, lo - start


def open_source(source, y=None, *, n=None, start=0, block_size: int | None = None, dtype=None,
                latent: bool = True) -> Source:
    """Resolve ``source`` into a :class:`Source` (everything is checked here, before any row is read).

    ``start`` skips the first rows of a random-access source (arrays, files,
    models); ``n`` is the number of rows to read (required for a model;
    default: the rest of an array or file, all of an iterable). ``latent``:
    whether a model may stream its latent rows (frame ``model.frame``) rather
    than rows of x.
    """
    if n is not None:
        n = check_positive_int(n, "n")
    start = check_positive_int(start, "start", minimum=0)
    if isinstance(source, HMIModel):
        if y is not None:
            raise ValueError("y: must be None when the source is an HMIModel (the model makes its own labels)")
        if n is None:
            raise ValueError("n: required when the source is an HMIModel (how many rows to stream)")
        dt = np.dtype(np.float64 if dtype is None else dtype)
        bs = _config.block_rows(source.d, dt, block_size)
        frame = source.frame if latent else None
        return Source(_model_blocks(source, start, n, bs, dt, latent), source.d, n, dt, frame)
    if _is_path(source):
        if y is None:
            raise ValueError("y: required when X is a file path; pass the labels as an array or a .npy path")
        header = _npy_header(source, "X")
        shape, fdtype = header[0], header[1]
        if len(shape) != 2:
            raise ValueError(f"X: {header[4]!r} holds an array of shape {shape}; expected 2-D (n_samples, n_features)")
        if fdtype.kind != "f" or fdtype.itemsize not in (4, 8):
            raise TypeError(f"X: {header[4]!r} holds dtype {fdtype}; save it as float32 or float64")
        y = _load_labels(y, shape[0])
        total = _check_range(n, start, shape[0])
        _check_nonempty(total, shape[1])
        native = fdtype.newbyteorder("=")
        bs = _config.block_rows(shape[1], dtype or native, block_size)
        return Source(_npy_blocks(source, y, start, start + total, bs, header), shape[1], total, native, None,
                      labels=y[start:start + total])
    if isinstance(source, np.ndarray) or (hasattr(source, "__array__") and not hasattr(source, "__next__")) \
            or (y is not None and isinstance(source, (list, tuple))) or hasattr(source, "tocsr"):
        if y is None:
            raise ValueError("y: required when X is an array; pass the labels (one per row of X)")
        X = check_float_array(source, "X", 2)
        y = _load_labels(y, X.shape[0])
        total = _check_range(n, start, X.shape[0])
        _check_nonempty(total, X.shape[1])
        bs = _config.block_rows(X.shape[1], dtype or X.dtype, block_size)
        return Source(_array_blocks(X, y, start, start + total, bs), X.shape[1], total, X.dtype, None,
                      labels=y[start:start + total])
    if hasattr(source, "__iter__"):
        if y is not None:
            raise ValueError(
                f"y: must be None when the source is an iterable of (X_block, y_block) pairs "
                f"(got a {type(source).__name__}); for in-memory data pass X as a NumPy array"
            )
        if start:
            raise ValueError("start: an iterable cannot skip rows; pass start=0, or an array, file or model")
        d = getattr(source, "d", None)
        return Source(_iterable_blocks(source, n), d, n, getattr(source, "dtype", None), None)
    raise TypeError(
        f"source: unsupported type {type(source).__name__}; pass an array, a np.memmap, a .npy path, "
        "an iterable of (X_block, y_block) pairs, or an HMIModel"
    )


def npy_shape(path) -> tuple:
    return _npy_header(path, "X")[0]


def _check_range(n, start, rows):
    if start > rows:
        raise ValueError(f"start: {start} is beyond the data's {rows} rows")
    if n is None:
        return rows - start
    if start + n > rows:
        raise ValueError(f"n: asked for {n} rows from row {start} but the data has only {rows} rows")
    return n


def _check_nonempty(n, d):
    if n == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    if d == 0:
        raise ValueError("X: has no columns (d = 0); T needs at least one feature")
