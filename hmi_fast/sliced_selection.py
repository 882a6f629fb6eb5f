"""How many directions SIR and SAVE found: the Marchenko–Pastur edge rule (docs/sliced.md).

After whitening, the null part of both matrices has no free scale: with
Gaussian x, ``n`` rows, ``d`` features and ``H`` non-empty slices,

* SIR's ``H − 1`` non-zero null eigenvalues are those of ``W / n``, ``W`` a
  ``p × p`` Wishart matrix with ``N`` degrees of freedom, ``p = H − 1``,
  ``N = d`` (the slice means' noise is ``N(0, I / n_h)``; Li 1991);
* SAVE's ``d`` null eigenvalues follow, for slices of many more than ``d``
  rows, the Marchenko–Pastur law of ``p = d``, ``N = d (H − 1)``: the
  slice covariances' fluctuations ``V_h − I`` are free semicircular
  elements of variance ``d / n_h``, the centring by the pooled covariance
  turns ``Σ p_h (V_h − V̄)²`` into ``(d / n)`` times a free sum of ``H − 1``
  free Poisson laws, which is the free Poisson law of rate ``H − 1``.

Both bulks are ``[(√N − √p)², (√N + √p)²] / n`` around the mean ``N / n``.
For slices of finitely many rows, each slice's term has its variance
multiplied by ``1 + d / n_h`` (the fourth moment of a Marchenko–Pastur law
of ratio ``d / n_h``), so SAVE's half-width is widened by ``√(1 + γ̄)``,
``γ̄`` the mean of ``d / n_h`` over the slices.

The rule, at each step with ``k`` directions already kept, replaces
``d → d − k`` (and ``H − 1 → H − 1 − k`` for SIR), takes the bulk mean from the
trace, ``μ̂ = (tr M − Σ_{j ≤ k} λ_j) / (bulk size)`` (exact in expectation:
Pillai's trace for SIR; it also absorbs the shift of bias-corrected SAVE and
an excess kurtosis of x), and keeps the eigenvalues above

    μ̂ + (2 √(N p) w + p + s σ_TW) / n,    σ_TW = (√N + √p)(1/√N + 1/√p)^(1/3),

(``w = √(1 + γ̄)`` for SAVE, 1 for SIR), ``σ_TW`` the Tracy–Widom scale of the
largest eigenvalue (Johnstone 2001) times a quantile ``s`` (``tw=``, default 2),
until no more are kept.

The gap rule of :mod:`hmi_fast.selection` does not carry over as such: its
scale ``σ² = E τ² d / n`` has no meaning here, SAVE's bulk is a
Marchenko–Pastur law rather than a semicircle, and SIR has only ``H − 1``
noise eigenvalues whose spacing stays a fixed fraction of their spread as
``d`` grows, so a vanishing gap threshold separates nothing there.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["SlicedSelection", "select_sliced"]

METHODS = ("sir", "save", "save_bc")


@dataclass(frozen=True)
class SlicedSelection:
    """Result of :func:`select_sliced`.

    Attributes
    ----------
    n_components : int
    index : ndarray of int
        Indices into the given eigenvalues of the kept ones, largest first.
    threshold : float
        The last edge used: eigenvalues above it are kept.
    bulk_mean : float
        ``μ̂`` from the trace.
    bulk_edges : tuple of float
        ``μ̂ ∓ (2 √(N p) ∓ p) / n``: the null bulk's predicted support.
    tw_scale : float
        ``σ_TW / n``.
    saturated : bool
        Every supplied eigenvalue was kept: more may lie above the edge (compute more).
    """

    n_components: int
    index: np.ndarray
    threshold: float
    bulk_mean: float
    bulk_edges: tuple
    tw_scale: float
    saturated: bool


def _edge(method, d, n, H, k, rest_trace, tw, widen):
    """(threshold, mean, lower, upper, σ_TW / n) with k directions kept; None if no bulk is left."""
    if method == "sir":
        p, N, size = H - 1 - k, d - k, H - 1 - k
    else:
        p, N, size = d - k, (d - k) * (H - 1), d - k
    if p <= 0 or N <= 0 or size <= 0:
        return None
    mu = rest_trace / size
    half = 2.0 * math.sqrt(N * p) * widen
    sig = (math.sqrt(N) + math.sqrt(p)) * (1.0 / math.sqrt(N) + 1.0 / math.sqrt(p)) ** (1.0 / 3.0)
    return mu + (half + p + tw * sig) / n, mu, mu + (p - half) / n, mu + (p + half) / n, sig / n


def select_sliced(eigenvalues, *, method: str, d: int, slice_counts, trace: float,
                  tw: float = 2.0) -> SlicedSelection:
    """Number of directions found by SIR or SAVE: eigenvalues above the whitened null's edge.

    See the module docstring for the rule and its justification.

    Parameters
    ----------
    eigenvalues : array_like, 1-D
        The largest eigenvalues of the matrix (any order), or all of them.
    method : {"sir", "save", "save_bc"}
    d : int
        Features.
    slice_counts : array_like of int
        Rows per slice (empty slices are ignored; at least 2 non-empty).
    trace : float
        ``tr M`` (the bulk mean comes from it).
    tw : float
        Tracy–Widom quantile added to the edge (default 2).

    Returns
    -------
    SlicedSelection

    Examples
    --------
    >>> import numpy as np
    >>> lam = np.array([0.5, 0.2, 0.0052, 0.0051])  # SIR, d=100, n=20000, 10 slices
    >>> rest = 7 * 100 / 20000  # null eigenvalues add up to about (H - 1 - k) d / n
    >>> counts = np.full(10, 2000)
    >>> select_sliced(lam, method="sir", d=100, slice_counts=counts, trace=lam.sum() + rest).n_components
    2
    """
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
        raise ValueError(f"d: must be an integer >= 1, got {d!r}")
    counts = np.asarray(slice_counts)
    if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise ValueError(f"slice_counts: expected a 1-D array of non-negative integers, got {slice_counts!r}")
    counts = counts[counts > 0]
    if counts.size < 2:
        raise ValueError(f"slice_counts: need at least 2 non-empty slices, got {counts.size}")
    n, n_slices = int(counts.sum()), int(counts.size)
    widen = 1.0 if method == "sir" else math.sqrt(1.0 + float(np.mean(d / counts)))
    for name, v in (("trace", trace), ("tw", tw)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name}: must be a finite number, got {v!r}")
    ev = np.asarray(eigenvalues)
    if ev.dtype.kind not in "fiu" or ev.ndim != 1 or ev.size == 0:
        raise ValueError(f"eigenvalues: expected a non-empty 1-D array of real numbers, got shape {ev.shape}")
    ev = ev.astype(np.float64)
    if not np.isfinite(ev).all():
        raise ValueError("eigenvalues: contain NaN or inf; pass finite eigenvalues")
    order = np.argsort(-ev, kind="stable")
    lam = ev[order]
    cum = np.concatenate([[0.0], np.cumsum(lam)])
    k, last = 0, None
    while True:
        out = _edge(method, d, n, n_slices, k, float(trace) - cum[k], tw, widen)
        if out is None:  # SIR: every non-zero eigenvalue kept
            break
        last = out
        over = lam > out[0]
        above = lam.size if over.all() else int(np.argmin(over))
        if above <= k:
            break
        k = above
    if last is None:
        last = (math.nan,) * 5
    return SlicedSelection(
        n_components=int(k), index=order[:k].astype(np.intp), threshold=float(last[0]), bulk_mean=float(last[1]),
        bulk_edges=(float(last[2]), float(last[3])), tw_scale=float(last[4]), saturated=bool(k == lam.size),
    )
