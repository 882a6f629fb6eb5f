"""Streaming sliced inverse regression (SIR) and sliced average variance estimation (SAVE) (docs/sliced.md).

The range of ``y`` is cut into ``H`` slices at fixed edges; every row goes
to the slice of its label. One pass keeps, per slice ``h``, the count
``n_h``, the sum ``Σ (x − c)`` and (for SAVE) the Gram ``Σ (x − c)(x − c)ᵀ``
about a fixed shift ``c`` (the mean of the first rows seen, for accuracy);
SIR needs only the pooled Gram. Per block, a counting sort gives each row
its place among the rows of its slice, one Numba-parallel pass subtracts
``c``, packs each slice's rows contiguously and checks for NaN/inf (nothing
is added before the whole block is packed), then one BLAS-3 symmetric
rank-k update per slice (``dsyrk``/``ssyrk``) adds that slice's rows to its
Gram and a Numba kernel, each thread owning whole slices, adds them to the
slice sums. Each row enters one ``syrk``: n·d² flops in all, as for ``T``,
and memory O(H·d²) whatever n.

From these sums (``finalize``), with ``Σ̂ = L Lᵀ`` the Cholesky factor of the
covariance of x (divided by n), in the whitened frame ``z = L⁻¹ (x − x̄)``:

* SIR:  ``M = Σ_h p_h m_h m_hᵀ``, ``p_h = n_h / n``, ``m_h = L⁻¹ (x̄_h − x̄)``;
* SAVE: ``M = Σ_h p_h (I − V_h)²``, ``V_h = L⁻¹ Σ̂_h L⁻ᵀ`` the slice covariance
  (divided by ``n_h − ddof``);
* bias-corrected SAVE (Li & Zhu 2007): ``M = I − 2 Σ p_h V_h + k₁ Σ p_h V_h² − k₂ Ψ``
  with ``V_h`` divided by ``n_h − 1``, ``c = n / H``, ``k₁ = c (c−1) / ((c−1)² + 1)``,
  ``k₂ = (c−1) / ((c−1)² + 1)`` and ``Ψ = (1/n) Σ_i |r_i|² r_i r_iᵀ``, ``r_i`` the
  whitened row minus its slice mean. ``Ψ`` is a fourth moment about the slice
  means in the whitened metric, both known only after a full pass: it is
  accumulated in a second pass (:class:`SliceResidualAccumulator`).

The slice means and covariances follow from the sums exactly, and whitening
is a linear map of them, so every matrix is exact for the rows seen.
The accumulators merge exactly (sums, after moving the other's sums to this
shift), so threads, processes or machines can each take a share of the rows.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import scipy.linalg as sla
from numba import prange
from scipy.linalg import blas

from . import _config
from ._config import jit
from ._validation import check_block, check_dtype, check_positive_int

__all__ = ["SliceResidualAccumulator", "SlicedAccumulator", "slice_edges"]

METHODS = ("sir", "save", "save_bc")

#: rows of the first update used for the shift ``c``.
SHIFT_ROWS = 1024


# ------------------------------------------------------------------ slicing


def slice_edges(y, n_slices: int = 10) -> np.ndarray:
    """Interior slice edges that cut ``y`` into ``n_slices`` slices of (nearly) equal counts.

    Slices are formed from the sorted labels one after another, each taking
    ``ceil(rows left / slices left)`` rows; without ties these are
    ``np.array_split``'s (and statsmodels') slices. A cut that would split a
    run of tied labels is moved to the end of the run, and the remaining
    rows are shared again among the remaining slices, so tied labels stay in
    one slice and discrete labels may give fewer slices. Each edge is the
    midpoint of the two labels on either side of its cut; a row goes to
    slice ``h`` when ``edges[h-1] < y <= edges[h]``.

    Parameters
    ----------
    y : array_like, 1-D
        Finite labels.
    n_slices : int
        Number of slices ``H >= 2`` (at most the number of labels).

    Returns
    -------
    edges : ndarray of shape (H' - 1,)
        Strictly increasing interior edges, ``H' <= H`` slices (no edge when
        all labels are equal).

    Examples
    --------
    >>> from hmi_fast import slice_edges
    >>> slice_edges([4.0, 1.0, 3.0, 2.0, 6.0, 5.0], 3)
    array([2.5, 4.5])
    >>> slice_edges([0, 0, 0, 0, 1, 2], 3)
    array([0.5, 1.5])
    """
    H = check_positive_int(n_slices, "n_slices", minimum=2)
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise TypeError(f"y: unsupported dtype {y.dtype}; pass real labels")
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size < H:
        raise ValueError(f"n_slices: must be at most the number of labels ({y.size}), got {H}")
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"y: non-finite value at row {int(np.argmax(bad))}; remove or impute NaN/inf labels")
    ys = np.sort(y)
    n = ys.size
    edges = []
    pos, left = 0, H
    while left > 1 and pos < n:
        cut = pos + -(-(n - pos) // left)
        if cut >= n:
            break
        if ys[cut - 1] == ys[cut]:  # inside a run of ties: move to its end
            cut = int(np.searchsorted(ys, ys[cut], side="right"))
            if cut >= n:
                break
        lo, hi = ys[cut - 1], ys[cut]
        edges.append(lo + (hi - lo) / 2.0)
        pos, left = cut, left - 1
    return np.array(edges, dtype=np.float64)


def check_edges(edges) -> np.ndarray:
    """Interior slice edges: a non-empty, finite, strictly increasing 1-D float array."""
    e = np.asarray(edges)
    if e.dtype.kind not in "fiu":
        raise TypeError(f"edges: unsupported dtype {e.dtype}; pass real numbers")
    e = np.array(e, dtype=np.float64).ravel() if e.ndim <= 1 else e
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"edges: expected a non-empty 1-D array of interior slice edges, got shape {np.shape(edges)}")
    if not np.isfinite(e).all():
        raise ValueError("edges: contain NaN or inf; pass finite interior edges (the outer slices are open)")
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"edges: must be strictly increasing, got {e.tolist()}")
    return e


def assign_slices(y, edges) -> np.ndarray:
    """Slice of each label: ``h`` with ``edges[h-1] < y <= edges[h]`` (int64)."""
    return np.searchsorted(edges, y, side="left").astype(np.int64)


# ------------------------------------------------------------------ kernels


@jit()
def _slice_offsets(slot, H, dest, start):
    """Counting sort: dest[i] = packed row of row i, slices in order; start[h] = first row of slice h."""
    n = slot.shape[0]
    for h in range(H + 1):
        start[h] = 0
    for i in range(n):
        start[slot[i] + 1] += 1
    for h in range(H):
        start[h + 1] += start[h]
    pos = start[:H].copy()
    for i in range(n):
        h = slot[i]
        dest[i] = pos[h]
        pos[h] += 1


@jit(parallel=True)
def _pack_rows(X, c, dest, buf, nt):
    """buf[dest[i]] = X[i] − c for row-major X; returns the first row holding NaN/inf, or -1."""
    n, d = X.shape
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            r = dest[i]
            nonfinite = False
            for j in range(d):
                v = X[i, j]
                nonfinite |= not np.isfinite(v)
                buf[r, j] = v - c[j]
            if nonfinite and i < bad[t]:
                bad[t] = i
    first = bad.min()
    return -1 if first == n else first


@jit(parallel=True)
def _pack_cols(X, c, dest, buf, nt):
    """Column-major variant of :func:`_pack_rows` (each thread owns whole columns)."""
    n, d = X.shape
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (d + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(d, lo + chunk)
        for j in range(lo, hi):
            cj = c[j]
            for i in range(n):
                v = X[i, j]
                if not np.isfinite(v):
                    if i < bad[t]:
                        bad[t] = i
                buf[dest[i], j] = v - cj
    first = bad.min()
    return -1 if first == n else first


@jit(parallel=True)
def _add_segment_sums(buf, start, sums, nt):
    """sums[h] += Σ buf[start[h]:start[h+1]]; each thread owns whole slices (no shared writes)."""
    H = start.shape[0] - 1
    d = buf.shape[1]
    for t in prange(nt):
        for h in range(t, H, nt):
            for r in range(start[h], start[h + 1]):
                for j in range(d):
                    sums[h, j] += buf[r, j]


@jit(parallel=True)
def _pack_residuals(X, means, slot, buf, nt):
    """buf[i] = X[i] − means[slot[i]] (either layout); first NaN/inf row or -1."""
    n, d = X.shape
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            h = slot[i]
            nonfinite = False
            for j in range(d):
                v = X[i, j]
                nonfinite |= not np.isfinite(v)
                buf[i, j] = v - means[h, j]
            if nonfinite and i < bad[t]:
                bad[t] = i
    first = bad.min()
    return -1 if first == n else first


@jit(parallel=True)
def _scale_by_norm(buf, nt):
    """buf[i] *= |buf[i]| (so that syrk of the rows sums |z|² z zᵀ)."""
    n, d = buf.shape
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            s = 0.0
            for j in range(d):
                s += buf[i, j] * buf[i, j]
            s = np.sqrt(s)
            for j in range(d):
                buf[i, j] *= s


@jit(parallel=True)
def _first_nonfinite(X, nt):
    """First row of X holding NaN/inf, or -1 (one read pass, either layout)."""
    n, d = X.shape
    bad = np.full(nt, n, dtype=np.int64)
    chunk = (n + nt - 1) // nt
    for t in prange(nt):
        lo = t * chunk
        hi = min(n, lo + chunk)
        for i in range(lo, hi):
            ok = True
            for j in range(d):
                ok &= np.isfinite(X[i, j])
            if not ok:
                bad[t] = i
                break
    first = bad.min()
    return -1 if first == n else first


@jit(parallel=True)
def _add_upper(S, C, nt):
    """S[i, j] += C[i, j] on the upper triangle (i <= j) of F-ordered d×d arrays."""
    d = S.shape[0]
    for t in prange(nt):
        for j in range(t, d, nt):  # columns dealt round-robin: balanced triangle
            for i in range(j + 1):
                S[i, j] += C[i, j]


def _syrk(dtype):
    return blas.dsyrk if dtype == np.float64 else blas.ssyrk


def _sym(U):
    """Full symmetric matrix from the upper triangle of ``U`` (a new C-ordered array)."""
    out = np.triu(U)
    out += np.triu(U, 1).T
    return out


# ------------------------------------------------------------------ accumulator


class SlicedAccumulator:
    """Streaming per-slice moments of x for SIR and SAVE.

    Parameters
    ----------
    d : int
        Number of features.
    edges : array_like
        Interior slice edges, strictly increasing (``H = len(edges) + 1``
        slices; see :func:`slice_edges`). A row goes to slice ``h`` when
        ``edges[h-1] < y <= edges[h]``.
    per_slice : bool, default True
        Keep one Gram per slice (SIR and SAVE; ``H`` d×d sums) or only the
        pooled Gram (SIR only; one d×d sum, one longer ``syrk`` per block).
    dtype : np.float32 or np.float64
        Precision of the block products; sums are float64.
    block_size : int, optional
        Capacity of the packing buffer; larger updates are processed in
        chunks (memory: ``block_size × d`` of ``dtype``).

    Attributes
    ----------
    n : int
        Rows seen.
    counts : ndarray of shape (H,)
        Rows per slice.
    shift : ndarray of shape (d,) or None
        The point ``c`` the sums are taken about (None until the first rows).

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import SlicedAccumulator, slice_edges
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((600, 4)); y = X[:, 0] + 0.1 * rng.standard_normal(600)
    >>> acc = SlicedAccumulator(4, slice_edges(y, 5))
    >>> for lo in range(0, 600, 200):
    ...     _ = acc.update(X[lo:lo + 200], y[lo:lo + 200])
    >>> acc.n, acc.counts.tolist(), acc.finalize("sir").matrix.shape
    (600, [120, 120, 120, 120, 120], (4, 4))
    """

    def __init__(self, d, edges, *, per_slice=True, dtype=np.float64, block_size=None):
        self.d = check_positive_int(d, "d")
        self.edges = check_edges(edges)
        self.H = self.edges.size + 1
        if not isinstance(per_slice, (bool, np.bool_)):
            raise TypeError(f"per_slice: must be True or False, got {per_slice!r}")
        self.per_slice = bool(per_slice)
        self.dtype = check_dtype(dtype, "dtype")
        self.block_size = _config.block_rows(self.d, self.dtype, block_size)
        self.n = 0
        self.counts = np.zeros(self.H, dtype=np.int64)
        self.shift = None
        self._sums = np.zeros((self.H, self.d))
        self._grams = [np.zeros((self.d, self.d), order="F") for _ in range(self.H if self.per_slice else 1)]
        self._lock = threading.Lock()
        self._buf = self._dest = self._scratch = None

    # ------------------------------------------------------------ internals
    def _buffers(self, rows):
        cap = min(self.block_size, max(rows, 1))
        if self._buf is None or self._buf.shape[0] < cap:
            self._buf = np.empty((cap, self.d), dtype=self.dtype)
            self._dest = np.empty(cap, dtype=np.int64)
        return self._buf, self._dest

    def _pack(self, X, slot, c, row0):
        """Pack one chunk; returns (buf, start) without touching the state."""
        n = X.shape[0]
        buf, dest = self._buffers(n)
        start = np.empty(self.H + 1, dtype=np.int64)
        _slice_offsets(slot, self.H, dest[:n], start)
        cols = X.flags.f_contiguous and not X.flags.c_contiguous
        bad = (_pack_cols if cols else _pack_rows)(X, c, dest[:n], buf, numba.get_num_threads())
        if bad >= 0:
            raise ValueError(f"X: non-finite value in row {row0 + bad}; remove or impute NaN/inf before slicing")
        return buf, start

    def _commit(self, buf, start):
        """Add a packed chunk to the sums (cannot fail)."""
        syrk = _syrk(self.dtype)
        if self.per_slice:
            live = np.flatnonzero(np.diff(start))
            segments = zip(live, start[live], start[live + 1])
        else:
            segments = [(0, 0, start[self.H])]
        for h, lo, hi in segments:
            G = self._grams[h]
            if self.dtype == np.float64:
                syrk(1.0, buf[lo:hi].T, beta=1.0, c=G, trans=0, lower=0, overwrite_c=1)
            else:
                if self._scratch is None:
                    self._scratch = np.zeros((self.d, self.d), dtype=np.float32, order="F")
                syrk(1.0, buf[lo:hi].T, beta=0.0, c=self._scratch, trans=0, lower=0, overwrite_c=1)
                _add_upper(G, self._scratch, numba.get_num_threads())
        _add_segment_sums(buf, start, self._sums, numba.get_num_threads())
        self.counts += np.diff(start)

    # --------------------------------------------------------------- public
    def update(self, X_block, y_block) -> "SlicedAccumulator":
        """Add the rows of one block (atomic: on error the state is unchanged). Returns ``self``."""
        X, y = check_block(X_block, y_block, self.d, "the accumulator's d")
        n = X.shape[0]
        if n == 0:
            return self
        yf = np.asarray(y, dtype=np.float64)
        bady = ~np.isfinite(yf)
        if bady.any():
            raise ValueError(f"y: non-finite value at row {self.n + int(np.argmax(bady))}; remove or impute NaN/inf labels")
        slot = assign_slices(yf, self.edges)
        with self._lock:
            if n > self.block_size:  # several chunks: find bad rows before the first is added
                bad = _first_nonfinite(X, numba.get_num_threads())
                if bad >= 0:
                    raise ValueError(f"X: non-finite value in row {self.n + bad}; remove or impute NaN/inf before slicing")
            c = self.shift
            if c is None:
                head = np.asarray(X[:SHIFT_ROWS], dtype=np.float64)
                c = head.mean(axis=0) if np.isfinite(head).all() else np.zeros(self.d)
            step = self.block_size
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                buf, start = self._pack(X[lo:hi], slot[lo:hi], c, self.n + lo)
                self.shift = c
                self._commit(buf, start)
            self.n += n
        return self

    def release(self) -> None:
        """Drop the packing buffers (``block_size × d``) until the next update; the sums are kept."""
        with self._lock:
            self._buf = self._dest = self._scratch = None

    def merge(self, other: "SlicedAccumulator") -> "SlicedAccumulator":
        """Add another accumulator's rows (same d, edges and ``per_slice``). Returns ``self``."""
        if not isinstance(other, SlicedAccumulator):
            raise TypeError(f"other: expected a SlicedAccumulator, got {type(other).__name__}")
        if other.d != self.d:
            raise ValueError(f"other: d differs ({other.d} vs {self.d}); merge accumulators of the same width")
        if other.edges.shape != self.edges.shape or not np.array_equal(other.edges, self.edges):
            raise ValueError("other: built with different slice edges; merge accumulators of the same edges")
        if other.per_slice != self.per_slice:
            raise ValueError("other: per_slice differs; merge accumulators that keep the same Grams")
        with other._lock:  # a consistent snapshot of the other, taken before this one is locked
            other = SlicedAccumulator.from_state(other.state())
        if other.n == 0:
            return self
        with self._lock:
            if self.shift is None:
                self.shift = other.shift.copy()
            sums, grams = other._moved_to(self.shift)
            for G, Go in zip(self._grams, grams):
                G += Go
            self._sums += sums
            self.counts += other.counts
            self.n += other.n
        return self

    def _moved_to(self, c):
        """This accumulator's sums and Grams about ``c`` instead of its own shift (new arrays)."""
        delta = self.shift - c  # x − c = (x − shift) + delta
        sums = self._sums + self.counts[:, None] * delta
        groups = [(self._sums[h], self.counts[h]) for h in range(self.H)] if self.per_slice else \
            [(self._sums.sum(axis=0), self.n)]
        grams = []
        for G, (s, m) in zip(self._grams, groups):
            # Σ(u+δ)(u+δ)ᵀ = G + s δᵀ + δ sᵀ + m δ δᵀ  (upper triangle kept)
            extra = np.outer(s, delta)
            extra += extra.T
            extra += m * np.outer(delta, delta)
            grams.append(np.asfortranarray(G + np.triu(extra)))
        return sums, grams

    def copy(self) -> "SlicedAccumulator":
        """An independent accumulator with the same state."""
        return SlicedAccumulator.from_state(self.state())

    def state(self) -> dict:
        """Everything needed to resume or merge elsewhere: arrays and numbers (see :meth:`from_state`)."""
        return {
            "kind": "sliced", "edges": self.edges.copy(), "counts": self.counts.copy(), "n": self.n,
            "sums": self._sums.copy(), "grams": np.stack([np.triu(G) for G in self._grams]),
            "shift": np.full(self.d, np.nan) if self.shift is None else self.shift.copy(),
            "per_slice": self.per_slice, "dtype": self.dtype.name, "block_size": self.block_size,
        }

    @classmethod
    def from_state(cls, state) -> "SlicedAccumulator":
        """Rebuild an accumulator saved with :meth:`state` (a dict, or a path to an ``.npz`` of it); validated."""
        state = _load_state(state, ("kind", "edges", "counts", "n", "sums", "grams", "shift", "per_slice",
                                    "dtype", "block_size"), "sliced")
        edges = check_edges(state["edges"])
        H = edges.size + 1
        sums = _state_array(state, "sums", 2, lambda s: s[0] == H, f"(H={H}, d)")
        d = sums.shape[1]
        acc = cls(d, edges, per_slice=bool(state["per_slice"]), dtype=str(state["dtype"]),
                  block_size=int(state["block_size"]))
        counts = _state_array(state, "counts", 1, lambda s: s == (H,), f"({H},)")
        if counts.dtype.kind not in "iu" and not np.array_equal(counts, np.round(counts)) or (counts < 0).any():
            raise ValueError("state: 'counts' must hold non-negative integers")
        n = int(state["n"])
        if n != int(counts.sum()):
            raise ValueError(f"state: 'n' ({n}) differs from the sum of 'counts' ({int(counts.sum())})")
        k = H if acc.per_slice else 1
        grams = _state_array(state, "grams", 3, lambda s: s == (k, d, d), f"({k}, {d}, {d})")
        shift = _state_array(state, "shift", 1, lambda s: s == (d,), f"({d},)", finite=False)
        if n and not np.isfinite(shift).all():
            raise ValueError("state: 'shift' must be finite once rows have been seen")
        acc.counts[:] = counts.astype(np.int64)
        acc.n = n
        acc._sums[...] = sums
        for G, Gs in zip(acc._grams, grams):
            G[...] = np.triu(Gs)
        acc.shift = np.array(shift, dtype=np.float64) if n else None
        return acc

    def __getstate__(self):
        return self.state()

    def __setstate__(self, state):
        self.__dict__.update(SlicedAccumulator.from_state(state).__dict__)

    def __repr__(self) -> str:
        return (f"SlicedAccumulator(d={self.d}, slices={self.H}, per_slice={self.per_slice}, "
                f"dtype={self.dtype.name}, n={self.n})")

    # ------------------------------------------------------------- moments
    def _need_rows(self, what):
        if self.n == 0:
            raise ValueError(f"{what}: no rows seen yet; call update() with at least one row first")

    def mean(self) -> np.ndarray:
        """Mean of the rows seen, ``x̄`` (d,)."""
        self._need_rows("mean")
        return self.shift + self._sums.sum(axis=0) / self.n

    def covariance(self) -> np.ndarray:
        """Covariance of the rows seen, divided by n: ``Σ̂`` (d × d)."""
        self._need_rows("covariance")
        G = self._grams[0].copy(order="F")
        for Gh in self._grams[1:]:
            G += Gh
        m = self._sums.sum(axis=0) / self.n
        C = _sym(G) / self.n
        C -= np.outer(m, m)
        return C

    def whitener(self) -> np.ndarray:
        """Lower Cholesky factor ``L`` of ``Σ̂ = L Lᵀ`` (the whitened frame is ``z = L⁻¹ (x − x̄)``)."""
        C = self.covariance()
        try:
            return sla.cholesky(C, lower=True)
        except sla.LinAlgError:
            raise ValueError(
                f"X: the covariance of the {self.d} features over {self.n} rows is singular; "
                "remove constant or collinear columns (or use more rows than features)"
            ) from None

    def slice_means(self) -> np.ndarray:
        """Mean of x in each slice (H × d; NaN rows for empty slices)."""
        self._need_rows("slice_means")
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.shift + self._sums / self.counts[:, None]

    def slice_covariance(self, h: int, ddof: int = 0) -> np.ndarray:
        """Covariance of x in slice ``h``, divided by ``n_h − ddof`` (needs ``per_slice=True``)."""
        if not self.per_slice:
            raise ValueError("slice_covariance: this accumulator keeps only the pooled Gram; build it with per_slice=True")
        m = self.counts[h]
        if m - ddof < 1:
            raise ValueError(f"slice {h}: holds {m} row(s), too few for a covariance with ddof={ddof}")
        s = self._sums[h] / m
        C = _sym(self._grams[h]) / m
        C -= np.outer(s, s)
        return C * (m / (m - ddof))

    # ------------------------------------------------------------- matrices
    def finalize(self, method: str = "sir", *, ddof: int | None = None, correction=None):
        """The SIR or SAVE matrix in the whitened frame (the accumulator stays usable).

        Parameters
        ----------
        method : {"sir", "save", "save_bc"}
        ddof : int, optional
            SAVE: slice covariances divided by ``n_h − ddof`` (0 by default;
            1 is statsmodels'; bias-corrected SAVE always uses 1).
        correction : SliceResidualAccumulator
            The second pass over the same rows (``"save_bc"`` only).

        Returns
        -------
        WhitenedMatrix
            See :mod:`hmi_fast.whitened`.
        """
        from .whitened import whitened_matrix

        return whitened_matrix(self, method, ddof=ddof, correction=correction)

    def residual_accumulator(self) -> "SliceResidualAccumulator":
        """An accumulator for the second pass of bias-corrected SAVE (slice means and ``L`` from this one)."""
        if not self.per_slice:
            raise ValueError("residual_accumulator: needs one Gram per slice; build with per_slice=True")
        means = np.nan_to_num(self.slice_means(), nan=0.0)
        return SliceResidualAccumulator(self.edges, means, self.whitener(), dtype=self.dtype, block_size=self.block_size)


class SliceResidualAccumulator:
    """Second pass of bias-corrected SAVE: ``Ψ = (1/n) Σ_i |r_i|² r_i r_iᵀ``, ``r_i = L⁻¹ (x_i − x̄_{h(i)})``.

    Built by :meth:`SlicedAccumulator.residual_accumulator` from the first
    pass's slice means and whitener. Per block: rows minus their slice mean
    (Numba), a triangular solve with ``L`` (BLAS-3 ``trsm``), each row scaled
    by its norm, one ``syrk``: 2·n·d² flops. Merges exactly with accumulators
    built from the same first pass.
    """

    def __init__(self, edges, means, whitener, *, dtype=np.float64, block_size=None):
        self.edges = check_edges(edges)
        self.means = np.ascontiguousarray(means, dtype=np.float64)
        self.whitener = np.asfortranarray(whitener, dtype=np.float64)
        self.d = self.whitener.shape[0]
        if self.means.shape != (self.edges.size + 1, self.d) or self.whitener.shape != (self.d, self.d):
            raise ValueError(
                f"means, whitener: expected shapes ({self.edges.size + 1}, d) and (d, d), "
                f"got {self.means.shape} and {self.whitener.shape}"
            )
        self.dtype = check_dtype(dtype, "dtype")
        self.block_size = _config.block_rows(self.d, self.dtype, block_size)
        self._L = self.whitener.astype(self.dtype, order="F")
        self.n = 0
        self._sum = np.zeros((self.d, self.d), order="F")
        self._lock = threading.Lock()
        self._buf = self._scratch = None

    def update(self, X_block, y_block) -> "SliceResidualAccumulator":
        """Add the rows of one block (atomic). Returns ``self``."""
        X, y = check_block(X_block, y_block, self.d, "the accumulator's d")
        n = X.shape[0]
        if n == 0:
            return self
        yf = np.asarray(y, dtype=np.float64)
        bady = ~np.isfinite(yf)
        if bady.any():
            raise ValueError(f"y: non-finite value at row {self.n + int(np.argmax(bady))}; remove or impute NaN/inf labels")
        slot = assign_slices(yf, self.edges)
        nt = numba.get_num_threads()
        with self._lock:
            if n > self.block_size:
                bad = _first_nonfinite(X, nt)
                if bad >= 0:
                    raise ValueError(f"X: non-finite value in row {self.n + bad}; remove or impute NaN/inf before slicing")
            trsm = blas.dtrsm if self.dtype == np.float64 else blas.strsm
            syrk = _syrk(self.dtype)
            for lo in range(0, n, self.block_size):
                hi = min(n, lo + self.block_size)
                m = hi - lo
                if self._buf is None or self._buf.shape[0] < m:
                    self._buf = np.empty((m, self.d), dtype=self.dtype)
                buf = self._buf[:m]
                bad = _pack_residuals(X[lo:hi], self.means, slot[lo:hi], buf, nt)
                if bad >= 0:
                    raise ValueError(f"X: non-finite value in row {self.n + lo + bad}; remove or impute NaN/inf before slicing")
                trsm(1.0, self._L, buf.T, side=0, lower=1, trans_a=0, diag=0, overwrite_b=1)  # rows z = L⁻¹ r
                _scale_by_norm(buf, nt)
                if self.dtype == np.float64:
                    syrk(1.0, buf.T, beta=1.0, c=self._sum, trans=0, lower=0, overwrite_c=1)
                else:
                    if self._scratch is None:
                        self._scratch = np.zeros((self.d, self.d), dtype=np.float32, order="F")
                    syrk(1.0, buf.T, beta=0.0, c=self._scratch, trans=0, lower=0, overwrite_c=1)
                    _add_upper(self._sum, self._scratch, nt)
            self.n += n
        return self

    def release(self) -> None:
        """Drop the block buffers until the next update; the sum is kept."""
        with self._lock:
            self._buf = self._scratch = None

    def merge(self, other: "SliceResidualAccumulator") -> "SliceResidualAccumulator":
        """Add another second-pass accumulator built from the same first pass. Returns ``self``."""
        if not isinstance(other, SliceResidualAccumulator):
            raise TypeError(f"other: expected a SliceResidualAccumulator, got {type(other).__name__}")
        if not (np.array_equal(other.edges, self.edges) and np.array_equal(other.means, self.means)
                and np.array_equal(other.whitener, self.whitener)):
            raise ValueError("other: built from a different first pass (edges, slice means or whitener differ)")
        with other._lock:
            s, m = other._sum.copy(), other.n
        with self._lock:
            self._sum += s
            self.n += m
        return self

    def finalize(self) -> np.ndarray:
        """``Ψ`` in the whitened frame (d × d)."""
        if self.n == 0:
            raise ValueError("finalize: no rows seen yet; call update() with at least one row first")
        return _sym(self._sum) / self.n

    def state(self) -> dict:
        """Arrays and numbers to resume (see :meth:`from_state`)."""
        return {"kind": "slice_residual", "edges": self.edges.copy(), "means": self.means.copy(),
                "whitener": np.array(self.whitener), "sum": np.triu(self._sum), "n": self.n,
                "dtype": self.dtype.name, "block_size": self.block_size}

    @classmethod
    def from_state(cls, state) -> "SliceResidualAccumulator":
        """Rebuild from :meth:`state` (a dict or an ``.npz`` path); validated."""
        state = _load_state(state, ("kind", "edges", "means", "whitener", "sum", "n", "dtype", "block_size"),
                            "slice_residual")
        W = _state_array(state, "whitener", 2, lambda s: s[0] == s[1], "(d, d)")
        d = W.shape[0]
        acc = cls(state["edges"], _state_array(state, "means", 2, lambda s: s[1] == d, f"(H, {d})"), W,
                  dtype=str(state["dtype"]), block_size=int(state["block_size"]))
        S = _state_array(state, "sum", 2, lambda s: s == (d, d), f"({d}, {d})")
        n = int(state["n"])
        if n < 0:
            raise ValueError(f"state: 'n' must be >= 0, got {n}")
        acc._sum[...] = np.triu(S)
        acc.n = n
        return acc

    def __getstate__(self):
        return self.state()

    def __setstate__(self, state):
        self.__dict__.update(SliceResidualAccumulator.from_state(state).__dict__)

    def __repr__(self) -> str:
        return f"SliceResidualAccumulator(d={self.d}, slices={self.edges.size + 1}, n={self.n})"


# ------------------------------------------------------------------ state validation


def _load_state(state, keys, kind):
    if isinstance(state, (str, bytes)) or hasattr(state, "__fspath__"):
        with np.load(state, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
    if not hasattr(state, "keys"):
        raise TypeError(f"state: expected a dict or an .npz path, got {type(state).__name__}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"state: missing {missing}; pass what state() returned")
    if str(state["kind"]) != kind:
        raise ValueError(f"state: holds a {str(state['kind'])!r} accumulator, not {kind!r}")
    return state


def _state_array(state, key, ndim, shape_ok, expected, finite=True):
    a = np.asarray(state[key])
    if a.dtype.kind not in "fiu" or a.ndim != ndim or not shape_ok(a.shape):
        raise ValueError(f"state: {key!r} has shape {a.shape} and dtype {a.dtype}; expected real numbers of shape {expected}")
    if finite and not np.isfinite(a).all():
        raise ValueError(f"state: {key!r} holds NaN or inf")
    return a
