"""One call from any data source to the spectral matrix ``T`` (docs/engine.md)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ._validation import check_dtype, check_positive_int
from .accumulator import SpectralAccumulator
from .sources import open_source


def _check_checkpoints(checkpoints, n_total):
    cps = [check_positive_int(c, "checkpoints") for c in checkpoints]
    if not cps:
        raise ValueError("checkpoints: give at least one sample count, or None")
    if any(b <= a for a, b in zip(cps, cps[1:])):
        raise ValueError(f"checkpoints: must be strictly increasing, got {cps}")
    if n_total is not None and cps[-1] > n_total:
        raise ValueError(f"checkpoints: the last one ({cps[-1]}) is beyond n={n_total}; the data has {n_total} rows")
    return cps


def _one_pass(source, y, *, checkpoints, preprocess, center, block_size, dtype, n):
    """Yield ``(n_j, T_j)`` at each checkpoint; with ``checkpoints=None``, once at the end."""
    if block_size is not None:
        check_positive_int(block_size, "block_size")
    compute = None if dtype is None else check_dtype(dtype)
    blocks, d, n_total, src_dtype, post = open_source(source, y, n=n, block_size=block_size, dtype=compute)
    cps = None if checkpoints is None else _check_checkpoints(checkpoints, n_total)
    compute = compute if compute is not None else src_dtype
    acc = None
    k = 0
    for Xb, yb, row0 in blocks:
        if acc is None:
            acc = _new_accumulator(Xb, d, compute, preprocess, center, block_size)
        lo, rows = 0, len(Xb)
        while cps is not None and k < len(cps) and row0 + rows >= cps[k]:
            cut = cps[k] - row0
            if cut > lo:
                acc.update(Xb[lo:cut], yb[lo:cut])
            lo = cut
            yield cps[k], post(acc.finalize())
            k += 1
        if cps is not None and k == len(cps):
            return
        if lo < rows:
            acc.update(Xb[lo:], yb[lo:])
    if acc is None or acc.n == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    if cps is None:
        yield acc.n, post(acc.finalize())
    elif k < len(cps):
        raise ValueError(f"checkpoints: the data ended after {acc.n} rows, before checkpoint {cps[k]}")


def accumulate(source, y=None, *, preprocess="saturating", center=False, block_size=None, dtype=None, n=None):
    """One pass over ``source`` into a :class:`SpectralAccumulator`; returns ``(acc, to_T)``.

    ``to_T(acc.finalize())`` is T. For a model source the accumulator holds
    latent-frame sums and ``to_T`` rotates them (docs/model.md); otherwise it
    is the identity. Use this when you need the accumulator's moments
    (``weight_mean``, ``weight_sq_mean``) or want to keep updating it.
    Arguments as in :func:`spectral_matrix`.
    """
    if block_size is not None:
        check_positive_int(block_size, "block_size")
    compute = None if dtype is None else check_dtype(dtype)
    blocks, d, _, src_dtype, post = open_source(source, y, n=n, block_size=block_size, dtype=compute)
    compute = compute if compute is not None else src_dtype
    acc = None
    for Xb, yb, _ in blocks:
        if acc is None:
            acc = _new_accumulator(Xb, d, compute, preprocess, center, block_size)
        acc.update(Xb, yb)
    if acc is None or acc.n == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    return acc, post


def _new_accumulator(Xb, d, compute, preprocess, center, bs):
    Xb = np.asarray(Xb)
    if Xb.ndim != 2:
        raise ValueError(f"X: expected a 2-D array of shape (n_samples, n_features), got shape {Xb.shape}")
    width = Xb.shape[1] if d is None else d
    if width == 0:
        raise ValueError("X: has no columns (d = 0); T needs at least one feature")
    if compute is None:
        compute = np.float32 if Xb.dtype == np.float32 else np.float64
    return SpectralAccumulator(width, preprocess=preprocess, dtype=compute, center=center, block_size=bs)


def spectral_matrices(
    source,
    y=None,
    *,
    checkpoints: Sequence[int],
    preprocess="saturating",
    center=False,
    block_size: int | None = None,
    dtype=None,
    n: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(n_j, T_j)`` at each checkpoint of one streamed pass.

    Each ``T_j`` is normalised by its own ``n_j``. Memory holds one T at a
    time, so a whole learning curve costs one pass and O(d²) memory.
    See :func:`spectral_matrix` for the arguments.

    Examples
    --------
    >>> from hmi_fast import HMIModel, spectral_matrices
    >>> model = HMIModel(d=20, m_star=2, gamma=1.0, seed=0)
    >>> [n for n, T in spectral_matrices(model, n=300, checkpoints=[100, 300])]
    [100, 300]
    """
    if checkpoints is None:
        raise ValueError("checkpoints: give a strictly increasing sequence of sample counts")
    return _one_pass(
        source, y, checkpoints=checkpoints, preprocess=preprocess, center=center,
        block_size=block_size, dtype=dtype, n=n,
    )


def spectral_matrix(
    source,
    y=None,
    *,
    preprocess="saturating",
    center=False,
    block_size: int | None = None,
    dtype=None,
    checkpoints: Sequence[int] | None = None,
    n: int | None = None,
):
    """The spectral matrix ``T = (1/n) Σ_i τ(y_i) x_i x_iᵀ``.

    Parameters
    ----------
    source : array, np.memmap, path, iterable or HMIModel
        In-memory ``X`` (C or F order, float32/float64, views allowed) with
        labels ``y``; a ``np.memmap`` or a path to a ``.npy`` file (read in
        blocks: memory bounded by the block, not by n); an iterable of
        ``(X_block, y_block)``; or an :class:`~hmi_fast.HMIModel` (with ``n``).
    y : array or path, optional
        Labels, required for array and file sources.
    preprocess : str, tuple or callable
        τ: ``"saturating"`` (default), ``"identity"``, ``"sign"``,
        ``("clip", c)``, or a function (see :mod:`hmi_fast.preprocess`).
    center : bool or float
        Subtract μ from the weights (docs/theory.md): a float, or ``True`` for
        the mean of τ over the first block.
    block_size : int, optional
        Rows per block (default: ``HMI_FAST_BLOCK_SIZE``, or 32 MiB of rows).
    dtype : np.float32 or np.float64, optional
        Precision of the block products (default: the data's; float64 for
        integer data and models). The sum across blocks and the returned T
        are float64.
    checkpoints : sequence of int, optional
        Strictly increasing sample counts; returns a list with T at each,
        each normalised by its own count, from one pass.
    n : int, optional
        Rows to use (required for a model; the first n rows otherwise).

    Returns
    -------
    T : ndarray of shape (d, d), or a list of them with ``checkpoints``.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import spectral_matrix
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((200, 4)), rng.standard_normal(200)
    >>> T = spectral_matrix(X, y, preprocess="identity")
    >>> np.allclose(T, (X * y[:, None]).T @ X / 200)
    True
    """
    results = _one_pass(
        source, y, checkpoints=checkpoints, preprocess=preprocess, center=center,
        block_size=block_size, dtype=dtype, n=n,
    )
    if checkpoints is not None:
        return [T for _, T in results]
    return next(iter(results))[1]
