"""One call from any data source to the spectral matrix ``T`` (docs/engine.md).

Every streaming consumer of the package (the functions below, the
estimator, the experiments, the network, the distributed reduction) goes
through :func:`iter_accumulate`: it opens the source, checks everything
before the first row is read, feeds blocks to a
:class:`~hmi_fast.SpectralAccumulator` (a new one, or one to continue) and
stops at checkpoints.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ._validation import check_dtype, check_positive_int
from .accumulator import SpectralAccumulator
from .sources import open_source


def _check_checkpoints(checkpoints, n_total):
    if isinstance(checkpoints, (str, bytes)) or not hasattr(checkpoints, "__iter__"):
        raise TypeError(
            f"checkpoints: must be a sequence of increasing sample counts, e.g. [1000, 5000], got {checkpoints!r}"
        )
    cps = [check_positive_int(c, "checkpoints") for c in checkpoints]
    if not cps:
        raise ValueError("checkpoints: give at least one sample count, or None")
    if any(b <= a for a, b in zip(cps, cps[1:])):
        raise ValueError(f"checkpoints: must be strictly increasing, got {cps}")
    if n_total is not None and cps[-1] > n_total:
        raise ValueError(
            f"checkpoints: the last one ({cps[-1]}) is beyond the {n_total} rows the accumulator will hold"
        )
    return cps


_UNSET = object()


def _plan(source, y, *, preprocess, center, block_size, dtype, n, start, accumulator, moments, exact_mean):
    """Open the source and make (or check) the accumulator; returns (accumulator, source)."""
    if block_size is not None:
        check_positive_int(block_size, "block_size")
    compute = None if dtype is None else check_dtype(dtype)
    if accumulator is not None:
        if not isinstance(accumulator, SpectralAccumulator):
            raise TypeError(f"accumulator: expected a SpectralAccumulator, got {type(accumulator).__name__}")
        given = {k: v for k, v in (("preprocess", preprocess), ("center", center), ("moments", moments))
                 if v is not _UNSET}
        if given:
            raise ValueError(
                f"accumulator: it already fixes {sorted(given)}; leave them out when continuing an accumulator"
            )
        if compute is not None and compute != accumulator.dtype:
            raise ValueError(f"dtype: the accumulator computes in {accumulator.dtype.name}; leave dtype out or match it")
        compute = accumulator.dtype
    # a model streams latent rows unless the accumulator already holds sums of x
    latent = accumulator is None or accumulator.n == 0 or accumulator.frame is not None
    src = open_source(source, y, n=n, start=start, block_size=block_size, dtype=compute, latent=latent)
    if accumulator is not None and src.frame is not None and accumulator.n and src.frame != accumulator.frame:
        src = open_source(source, y, n=n, start=start, block_size=block_size, dtype=compute, latent=False)
    if accumulator is None:
        preprocess = "saturating" if preprocess is _UNSET else preprocess
        center = False if center is _UNSET else center
        moments = False if moments is _UNSET else moments
        if compute is None:
            compute = np.float32 if src.dtype == np.float32 else np.float64
        if center is True and exact_mean and src.labels is not None and src.d is not None:
            # every label is known before the pass: centre by their exact mean without keeping the Gram
            from .preprocess import resolve_preprocess

            tau = resolve_preprocess(preprocess)
            center = float(np.mean(tau.weights(np.asarray(src.labels, dtype=np.float64))))
        if src.d is None:  # an iterable: the first block tells the width
            return _LazyAccumulator(dict(preprocess=preprocess, dtype=compute, center=center,
                                         block_size=block_size, moments=moments)), src
        if src.d != 0 and src.d is not None:
            accumulator = SpectralAccumulator(src.d, preprocess=preprocess, dtype=compute, center=center,
                                              block_size=block_size, moments=moments, frame=None)
    elif src.d is not None and src.d != accumulator.d:
        raise ValueError(f"X: has {src.d} columns but the accumulator has d={accumulator.d}")
    return accumulator, src


class _LazyAccumulator:
    """Stands for the accumulator of an iterable source until its first block gives d."""

    def __init__(self, options):
        self.options = options
        self.acc = None

    def get(self, Xb):
        if self.acc is None:
            Xb = np.asarray(Xb)
            if Xb.ndim != 2:
                raise ValueError(f"X: expected a 2-D array of shape (n_samples, n_features), got shape {Xb.shape}")
            if Xb.shape[1] == 0:
                raise ValueError("X: has no columns (d = 0); T needs at least one feature")
            self.acc = SpectralAccumulator(Xb.shape[1], **self.options)
        return self.acc


def _blocks(acc, src):
    lazy = isinstance(acc, _LazyAccumulator)
    for Xb, yb, _ in src.blocks:
        a = acc.get(Xb) if lazy else acc
        yield a, Xb, yb


def _check_on_rows(on_rows):
    if on_rows is not None and not callable(on_rows):
        raise TypeError(f"on_rows: must be a callable taking a row count, or None, got {type(on_rows).__name__}")
    return on_rows


def iter_accumulate(
    source,
    y=None,
    *,
    checkpoints: Sequence[int],
    preprocess=_UNSET,
    center=_UNSET,
    moments=_UNSET,
    block_size: int | None = None,
    dtype=None,
    n: int | None = None,
    start: int = 0,
    accumulator: SpectralAccumulator | None = None,
    on_rows=None,
) -> Iterator[tuple[int, SpectralAccumulator]]:
    """Stream ``source`` into an accumulator and yield ``(n_j, accumulator)`` at each checkpoint.

    The accumulator yielded is the live one: finalize it, save its
    :meth:`~hmi_fast.SpectralAccumulator.state` or copy it, but do not update
    it before the next step. Checkpoints count the rows the accumulator
    holds, including any it held before (``accumulator=``). Arguments are
    checked when this function is called, before any row is read.

    Parameters
    ----------
    source, y, block_size, dtype
        As in :func:`spectral_matrix`.
    checkpoints : sequence of int
        Strictly increasing row counts.
    preprocess, center, moments
        Options of a new accumulator (defaults ``"saturating"``, ``False``,
        ``False``; see :class:`~hmi_fast.SpectralAccumulator`). Leave them
        out with ``accumulator=``.
    n : int, optional
        Rows to read from ``start`` (required for a model).
    start : int
        First row of a random-access source (array, file, model) to read.
    accumulator : SpectralAccumulator, optional
        Continue this accumulator: the rows read are added to it. To resume
        a model's stream where the accumulator stopped, pass
        ``start=accumulator.n``.
    on_rows : callable, optional
        Called with the number of rows added after each block (progress bars).

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.engine import iter_accumulate
    >>> model = HMIModel(d=20, m_star=2, gamma=1.0, seed=0)
    >>> [(n, acc.n) for n, acc in iter_accumulate(model, n=300, checkpoints=[100, 300])]
    [(100, 100), (300, 300)]
    """
    if checkpoints is None:
        raise ValueError("checkpoints: give a strictly increasing sequence of row counts")
    acc, src = _plan(source, y, preprocess=preprocess, center=center, block_size=block_size, dtype=dtype, n=n,
                     start=start, accumulator=accumulator, moments=moments, exact_mean=False)
    held = acc.n if isinstance(acc, SpectralAccumulator) else 0
    cps = _check_checkpoints(checkpoints, None if src.n is None else held + src.n)
    if cps[0] <= held:
        raise ValueError(f"checkpoints: the first one ({cps[0]}) is not beyond the {held} rows the accumulator holds")
    return _checkpoint_pass(acc, src, cps, _check_on_rows(on_rows))


def _checkpoint_pass(acc, src, cps, on_rows=None):
    k = 0
    last = None
    for a, Xb, yb in _blocks(acc, src):
        last = a
        lo, rows = 0, len(Xb)
        while k < len(cps) and a.n + rows - lo >= cps[k]:
            cut = lo + cps[k] - a.n
            if cut > lo:
                a.update(Xb[lo:cut], yb[lo:cut], frame=src.frame)
                if on_rows is not None:
                    on_rows(cut - lo)
            lo = cut
            yield cps[k], a
            k += 1
        if k == len(cps):
            return
        if lo < rows:
            a.update(Xb[lo:], yb[lo:], frame=src.frame)
            if on_rows is not None:
                on_rows(rows - lo)
    held = last.n if last is not None else (acc.n if isinstance(acc, SpectralAccumulator) else 0)
    if held == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    raise ValueError(f"checkpoints: the data ended after {held} rows, before checkpoint {cps[k]}")


def accumulate(source, y=None, *, preprocess=_UNSET, center=_UNSET, moments=_UNSET, block_size=None, dtype=None,
               n=None, start=0, accumulator=None, on_rows=None) -> SpectralAccumulator:
    """One pass over ``source`` into a :class:`~hmi_fast.SpectralAccumulator`, which is returned.

    ``accumulate(...).finalize()`` is T (of x, whatever the source). Use this
    when you need the accumulator's moments, its weight law, its state, or
    want to keep adding rows; ``accumulator=`` continues an existing one.
    Arguments as in :func:`iter_accumulate` and :func:`spectral_matrix`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel, accumulate, spectral_matrix
    >>> model = HMIModel(d=10, m_star=2, gamma=1.0, seed=0)
    >>> acc = accumulate(model, n=500)
    >>> acc = accumulate(model, n=500, start=500, accumulator=acc)   # resume the stream
    >>> bool(np.allclose(acc.finalize(), spectral_matrix(model, n=1000)))
    True
    """
    on_rows = _check_on_rows(on_rows)
    acc, src = _plan(source, y, preprocess=preprocess, center=center, block_size=block_size, dtype=dtype, n=n,
                     start=start, accumulator=accumulator, moments=moments, exact_mean=False)
    last = acc if isinstance(acc, SpectralAccumulator) else None
    before = 0 if last is None else last.n
    for a, Xb, yb in _blocks(acc, src):
        a.update(Xb, yb, frame=src.frame)
        last = a
        if on_rows is not None:
            on_rows(len(Xb))
    if last is None or last.n == before == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    return last


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

    Each ``T_j`` is normalised by its own ``n_j`` (and, with ``center=True``,
    centered by the exact mean of τ over its ``n_j`` rows). Memory holds one
    T at a time, so a whole learning curve costs one pass and O(d²) memory.
    Arguments are checked when this function is called. See
    :func:`spectral_matrix` for their meaning.

    Examples
    --------
    >>> from hmi_fast import HMIModel, spectral_matrices
    >>> model = HMIModel(d=20, m_star=2, gamma=1.0, seed=0)
    >>> [n for n, T in spectral_matrices(model, n=300, checkpoints=[100, 300])]
    [100, 300]
    """
    steps = iter_accumulate(source, y, checkpoints=checkpoints, preprocess=preprocess, center=center,
                            block_size=block_size, dtype=dtype, n=n)
    return ((n_j, acc.finalize()) for n_j, acc in steps)


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
        In-memory ``X`` (C or F order, float32/float64, views allowed; integer
        and non-native byte order data are converted) with labels ``y``; a
        ``np.memmap`` or a path to a ``.npy`` file (read in blocks: memory
        bounded by the block, not by n); an iterable of ``(X_block, y_block)``;
        or an :class:`~hmi_fast.HMIModel` (with ``n``).
    y : array or path, optional
        Labels, required for array and file sources.
    preprocess : str, tuple or callable
        τ: ``"saturating"`` (default), ``"identity"``, ``"sign"``,
        ``("clip", c)``, or a function (see :mod:`hmi_fast.preprocess`).
    center : bool or float
        Subtract μ from the weights (docs/theory.md): a float, or ``True`` for
        the exact mean of τ over the rows (free when the labels are known
        before the pass — arrays and files; otherwise the unweighted Gram is
        accumulated beside T, about twice the work).
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
    if checkpoints is not None:
        return [T for _, T in spectral_matrices(source, y, checkpoints=checkpoints, preprocess=preprocess,
                                                center=center, block_size=block_size, dtype=dtype, n=n)]
    acc, src = _plan(source, y, preprocess=preprocess, center=center, block_size=block_size, dtype=dtype, n=n,
                     start=0, accumulator=None, moments=False, exact_mean=True)
    last = acc if isinstance(acc, SpectralAccumulator) else None
    for a, Xb, yb in _blocks(acc, src):
        a.update(Xb, yb, frame=src.frame)
        last = a
    if last is None or last.n == 0:
        raise ValueError("X: has no rows; T needs at least one sample")
    return last.finalize()
