"""A mergeable, fixed-size summary of the law of the weights τ(y_i) (docs/engine.md).

The exact finite-α bulk of T depends on the whole law of the weights, not
only on their first two moments. :class:`WeightSketch` keeps it in O(1)
memory whatever n: counts and sums of the values in logarithmic bins of
|τ| (relative width ``2 · RELATIVE_ACCURACY``, one set per sign, as in
DDSketch), the exact minimum and maximum. Two sketches merge by adding, so
the summary is the same whatever the block size, block order or partition
of the rows (up to the rounding of the sums). A bin is represented by the
mean of its values: within ``RELATIVE_ACCURACY`` of each of them, exact for
a bin holding one value (the atoms of ``sign`` or ``clip``), and the mean
of τ is preserved.
"""

from __future__ import annotations

import math

import numpy as np

from ._config import jit

#: relative error of a bin's representative value.
RELATIVE_ACCURACY = 0.005
#: |τ| below this is counted with the zeros' bin.
MIN_ABS = 1e-12
#: |τ| above this is counted in the last bin (the exact extremes are kept apart).
MAX_ABS = 1e12

_GAMMA = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_K = int(math.ceil(math.log(MAX_ABS / MIN_ABS) / _LOG_GAMMA))  # bins per sign


@jit()
def _bin_counts(w, shift, counts, sums, log_min, inv_log_gamma, K):
    """counts[bin(t)] += 1, sums[bin(t)] += t for t = w_i + shift; returns (min, max) of t."""
    lo = np.inf
    hi = -np.inf
    for i in range(w.shape[0]):
        t = w[i] + shift
        lo = min(lo, t)
        hi = max(hi, t)
        a = abs(t)
        if a < 1e-12:
            b = K
        else:
            k = int(math.floor((math.log(a) - log_min) * inv_log_gamma))
            if k >= K:
                k = K - 1
            elif k < 0:
                k = 0
            b = K + 1 + k if t > 0 else K - 1 - k
        counts[b] += 1
        sums[b] += t
    return lo, hi


class WeightSketch:
    """Counts of τ values in fixed logarithmic bins; mergeable, O(1) memory.

    Attributes
    ----------
    counts : ndarray of int64, shape (2K + 1,)
        Negative bins (largest |τ| first), the bin of |τ| < MIN_ABS, positive bins.
    sums : ndarray of float64, shape (2K + 1,)
        Sum of the values in each bin.
    minimum, maximum : float
        Exact extremes of the values seen (``inf``/``-inf`` when empty).

    Examples
    --------
    >>> import numpy as np
    >>> s = WeightSketch()
    >>> s.add(np.array([0.5, -0.25, 0.5, 0.0]))
    >>> values, probs = s.law()
    >>> values.tolist(), probs.tolist()
    ([-0.25, 0.0, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25])
    """

    def __init__(self):
        self.counts = np.zeros(2 * _K + 1, dtype=np.int64)
        self.sums = np.zeros(2 * _K + 1)
        self.minimum = math.inf
        self.maximum = -math.inf

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, w: np.ndarray, shift: float = 0.0) -> None:
        """Count the values ``w + shift`` (w: 1-D float64, finite)."""
        w = np.ascontiguousarray(w, dtype=np.float64)
        if w.size == 0:
            return
        lo, hi = _bin_counts(w, float(shift), self.counts, self.sums, math.log(MIN_ABS), 1.0 / _LOG_GAMMA, _K)
        self.minimum = min(self.minimum, lo)
        self.maximum = max(self.maximum, hi)

    def merge(self, other: "WeightSketch") -> None:
        self.counts += other.counts
        self.sums += other.sums
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def copy(self) -> "WeightSketch":
        new = WeightSketch()
        new.counts[...] = self.counts
        new.sums[...] = self.sums
        new.minimum, new.maximum = self.minimum, self.maximum
        return new

    def law(self, shift: float = 0.0):
        """``(values - shift, probabilities)``: each non-empty bin at the mean of its values, and the exact
        minimum and maximum as atoms of one value each (values ascending; equal values may repeat)."""
        n = self.n
        if n == 0:
            raise ValueError("weight sketch: no rows seen yet; update the accumulator with at least one row first")
        keep = np.flatnonzero(self.counts > 0)
        c = self.counts[keep].astype(np.float64)
        s = self.sums[keep].copy()
        # the extremes are kept exactly (the finite-α bulk edges depend on them): an atom of one value at each,
        # the rest of its bin at the mean of the others
        atoms_v, atoms_c = [], []
        for j, x in ((0, self.minimum), (len(keep) - 1, self.maximum)):
            if c[j] > 1 and not (j == len(keep) - 1 and len(keep) == 1 and atoms_v):
                atoms_v.append(x)
                atoms_c.append(1.0)
                c[j] -= 1.0
                s[j] -= x
        v = np.concatenate([s / c, atoms_v])
        c = np.concatenate([c, atoms_c])
        v = np.clip(v, self.minimum, self.maximum)
        order = np.argsort(v, kind="stable")
        return v[order] - shift, c[order] / n

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        return {"sketch_counts": self.counts, "sketch_sums": self.sums, "sketch_min": self.minimum,
                "sketch_max": self.maximum}

    @classmethod
    def from_state(cls, counts, sums, minimum, maximum, n: int) -> "WeightSketch":
        counts = np.asarray(counts)
        if counts.shape != (2 * _K + 1,) or counts.dtype.kind not in "iu":
            raise ValueError(
                f"sketch_counts: expected {2 * _K + 1} integer bin counts, got dtype {counts.dtype}, shape {counts.shape}"
            )
        if (counts < 0).any() or int(counts.sum()) != n:
            raise ValueError(f"sketch_counts: must be non-negative and add up to n={n}, got a total of {int(counts.sum())}")
        sums = np.asarray(sums)
        if sums.shape != counts.shape or sums.dtype.kind != "f" or not np.isfinite(sums).all():
            raise ValueError(f"sketch_sums: expected {counts.size} finite float sums, got dtype {sums.dtype}, shape {sums.shape}")
        if (sums[counts == 0] != 0).any():
            raise ValueError("sketch_sums: a bin with no values has a non-zero sum")
        minimum, maximum = float(minimum), float(maximum)
        if n and not (np.isfinite(minimum) and np.isfinite(maximum) and minimum <= maximum):
            raise ValueError(f"sketch_min, sketch_max: must be finite with min <= max, got {minimum}, {maximum}")
        new = cls()
        new.counts[...] = counts
        new.sums[...] = sums
        new.minimum, new.maximum = (minimum, maximum) if n else (math.inf, -math.inf)
        return new
