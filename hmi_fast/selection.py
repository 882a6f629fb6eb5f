"""How many informative directions: gap rule and bulk-edge rule (docs/theory.md, docs/selection.md).

The bulk of ``T = (1/n) sum_i tau(y_i) x_i x_i^T`` is, for ``alpha = n/d >> 1``,
close to a semicircle centred at ``mu = E tau`` with radius ``2 sigma``,
``sigma^2 = E[tau^2] d / n``. Informative spikes sit outside it, at mutual
distances of order ``sigma``; consecutive eigenvalues at the bulk edge are
``O(sigma d^(-2/3))`` apart.

``rule="gap"`` (default; **package convention**, the change of scale of the paper's Figure 3)
    At each end, sort the supplied eigenvalues from the extreme inward,
    ``lambda_1, lambda_2, ...`` (for the bottom end, by decreasing distance
    below the centre), form the normalised gaps
    ``g_i = |lambda_i - lambda_{i+1}| / sigma_hat`` and keep
    ``k_hat = max{ i : g_i >= delta_d and lambda_i beyond mu_hat +- 2 sigma_hat }``
    (0 if there is none): everything before the *last* large gap. The
    threshold ``delta_d = c d^(-1/3)``, ``c = 1`` (``threshold=`` sets delta
    directly), vanishes as d grows yet stays far above the edge gaps,
    ``O(d^(-2/3))``, while gaps among spikes stay ``O(1)``. Two close spikes
    are both kept when the gap after the second is large; the
    largest-single-gap rule, which drops the weaker of two spikes of
    different strength, is not used.
``rule="edge"``
    Keep the eigenvalues beyond ``mu_hat +- 2 sigma_hat (1 + margin)``.

Both counts are always computed (``n_components_gap``, ``n_components_edge``,
``agree``); ``rule`` picks the one reported as ``n_components`` and ``index``.

The two ends
------------
``which="LA"``: every supplied value belongs to the top end; ``"SA"``: to the
bottom end. ``"BE"``: with a centre ``mu_hat`` known (``tau_mean`` given, or the
full spectrum supplied), values above it form the top end and values below
it the bottom end; otherwise the ``ceil(m/2)`` largest of the ``m`` values
form the top end and the rest the bottom end, which is the layout of
``topk_eigh(T, m, which="BE")`` (in any order).

Bulk estimate with the weights (exact finite-alpha bulk)
-------------------------------------------------------
``weights=`` (the per-sample weights ``w_i = tau(y_i) - shift`` as a 1-D
array, or an object whose ``.law()`` returns ``(values, probabilities)``,
such as the accumulator's weight sketch) gives the bulk of *this* data: the
edges of the weighted Wishart law with aspect ratio ``d/n``
(:mod:`hmi_fast.theory.wishart`, docs/theory.md §3), not the semicircle,
which is only its large-alpha limit and is far off at alpha of a few tens.
Each end then has its own scale ``s_end``, the width of the semicircle with
the same density at that edge (``sigma`` as alpha grows); the gap rule
normalises the gaps at an end by it and requires ``lambda_i`` beyond that
end's edge, and the edge rule keeps ``lambda_i`` beyond ``edge + 2 s_end
margin``. ``tau_mean`` and ``tau_sq_mean`` are then not used.

Bulk estimate without the weights (semicircle)
----------------------------------------------
``sigma_hat^2 = tau_sq_mean * d / n`` and ``mu_hat = tau_mean`` when the
moments of the weights are given (``SpectralAccumulator.weight_mean`` and
``weight_sq_mean``). Otherwise, from the eigenvalues:

* the full spectrum (``len(eigenvalues) == d``): ``mu_hat`` = the median,
  ``sigma_hat`` = the interquartile range / 1.6159 (the semicircle's), both
  insensitive to the few spikes;
* only ends: the innermost supplied eigenvalue of an end is taken to be the
  ``j``-th bulk eigenvalue from that edge (``j`` = values supplied at that
  end minus the spikes found there, refined once), which the semicircle puts
  at ``2 sigma (3 pi j / (4 sqrt(2) d))^(2/3)`` inside the edge. Two ends give
  both ``mu_hat`` and ``sigma_hat``; one end gives one of them, so the other
  moment must be passed. Supply enough eigenvalues per end to reach into
  the bulk (``saturated`` says when an end did not).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .theory import wishart

__all__ = ["Selection", "select_components"]

RULES = ("gap", "edge")
WHICH = ("BE", "LA", "SA")

#: interquartile range of the semicircle of radius 2 sigma, in units of sigma.
SEMICIRCLE_IQR = 1.6159


@dataclass(frozen=True)
class Selection:
    """Result of :func:`select_components`.

    Attributes
    ----------
    n_components : int
        ``k_hat`` of the chosen rule, ``n_top + n_bottom``.
    index : ndarray of int
        Indices into the given ``eigenvalues`` of the selected ones: the top
        end from the extreme inward, then the bottom end from the extreme inward.
    n_top, n_bottom : int
        Selected at each end.
    rule : str
    gaps : tuple of two ndarrays
        Normalised gaps ``g_i`` at the top end and at the bottom end, each
        from the extreme inward (``len = values at that end - 1``).
    threshold : float
        ``delta`` used by the gap rule, in units of ``sigma_hat``.
    bulk_center : float
        ``mu_hat``; with ``weights``, their mean.
    bulk_edges : tuple of float
        ``(mu_hat - 2 sigma_hat, mu_hat + 2 sigma_hat)``; with ``weights``, the exact edges.
    sigma : float
        ``sigma_hat`` (with ``weights``: ``sqrt(mean(w^2) d / n)``, the semicircle's).
    edge_scales : tuple of float
        The gap scale at the bottom and top end: ``(sigma_hat, sigma_hat)``, or ``s_end`` with ``weights``.
    bulk : str
        ``"semicircle"`` or ``"exact"`` (with ``weights``).
    n_components_gap, n_components_edge : int
    agree : bool
        Whether the two rules give the same count at each end.
    saturated : bool
        The last supplied eigenvalue of a considered end is still beyond the
        bulk edge: no bulk eigenvalue was supplied there, so more components
        may exist than were computed (ask for more eigenvalues).
    """

    n_components: int
    index: np.ndarray
    n_top: int
    n_bottom: int
    rule: str
    gaps: tuple
    threshold: float
    bulk_center: float
    bulk_edges: tuple
    sigma: float
    n_components_gap: int
    n_components_edge: int
    agree: bool
    saturated: bool
    edge_scales: tuple = (float("nan"), float("nan"))
    bulk: str = "semicircle"


def _edge_depth(j: int, d: int) -> float:
    """Depth of the j-th semicircle eigenvalue below its edge, in units of 2 sigma."""
    return (3.0 * math.pi * max(j, 1) / (4.0 * math.sqrt(2.0) * d)) ** (2.0 / 3.0)


def _gap_count(x, sigma, delta, beyond):
    """Gap rule at one end. ``x``: distances from the centre, from the extreme inward.

    When every supplied value lies beyond the bulk edge (no bulk eigenvalue
    was supplied at this end: the end is saturated, or d is tiny), the edge
    itself bounds the last gap, so the innermost spike can be kept too.
    Returns the count and the gaps between the supplied values.
    """
    if len(x) == 0:
        return 0, np.empty(0)
    ext = x if x[-1] <= beyond else np.append(x, beyond)
    gaps = (ext[:-1] - ext[1:]) / sigma if sigma > 0 else np.full(len(ext) - 1, np.inf)
    ok = (gaps >= delta) & (ext[:-1] > beyond)
    k = int(np.flatnonzero(ok)[-1]) + 1 if ok.any() else 0
    return k, gaps[: len(x) - 1]


def _check_number(value, name, *, positive=False, nonneg=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    if nonneg and value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return float(value)


def select_components(
    eigenvalues,
    *,
    d: int,
    n: int,
    rule: str = "gap",
    which: str = "BE",
    tau_mean: float | None = None,
    tau_sq_mean: float | None = None,
    weights=None,
    threshold: float | None = None,
    margin: float = 0.05,
) -> Selection:
    """Number of informative directions among computed eigenvalues of T.

    See the module docstring for both rules, the two ends and the bulk estimate.

    Parameters
    ----------
    eigenvalues : array_like, 1-D
        Eigenvalues from one or both ends (e.g. ``topk_eigh(T, k, which).values``),
        or the full spectrum.
    d, n : int
        Dimension and number of samples behind T.
    rule : {"gap", "edge"}
        The rule reported as ``n_components``/``index``.
    which : {"BE", "LA", "SA"}
        Ends that may hold spikes: both, the top, or the bottom.
    tau_mean, tau_sq_mean : float, optional
        Mean of the weights ``tau(y_i)`` and of their squares (bulk centre
        and width of the semicircle); estimated from the eigenvalues when not given.
    weights : 1-D array or object with ``.law()``, optional
        The weights ``tau(y_i) - shift`` behind T, or their law
        ``(values, probabilities)``: the exact finite-alpha bulk (module docstring).
    threshold : float, optional
        ``delta`` of the gap rule in units of ``sigma_hat`` (default ``d^(-1/3)``).
    margin : float
        Relative margin of the edge rule.

    Returns
    -------
    Selection

    Examples
    --------
    >>> import numpy as np
    >>> ev = np.array([3.0, 1.5, 0.205, 0.2, 0.199, -0.2, -0.201])
    >>> select_components(ev, d=1000, n=100_000, tau_mean=0.0, tau_sq_mean=1.0).n_components
    2

    With the weights themselves the bulk is the exact one of their law:

    >>> rng = np.random.default_rng(0)
    >>> w = np.tanh(rng.standard_normal(20_000))
    >>> s = select_components([0.3, 0.12, 0.1, -0.1], d=200, n=20_000, weights=w)
    >>> s.bulk, s.n_top, [round(e, 2) for e in s.bulk_edges]
    ('exact', 1, [-0.12, 0.13])
    """
    ev = np.asarray(eigenvalues)
    if ev.dtype.kind not in "fiu":
        raise TypeError(f"eigenvalues: unsupported dtype {ev.dtype}; pass real numbers")
    ev = ev.astype(np.float64)
    if ev.ndim != 1 or ev.size == 0:
        raise ValueError(f"eigenvalues: expected a non-empty 1-D array, got shape {ev.shape}")
    if not np.isfinite(ev).all():
        raise ValueError("eigenvalues: contain NaN or inf; pass finite eigenvalues")
    for name, v in (("d", d), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: must be a positive integer, got {v!r}")
        if v < 1:
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")
    d, n = int(d), int(n)
    if ev.size > d:
        raise ValueError(
            f"eigenvalues: got {ev.size} of them, but a d x d matrix has only d={d}; pass the eigenvalues of T "
            "(or the right d)"
        )
    if rule not in RULES:
        raise ValueError(f"rule: must be one of {RULES}, got {rule!r}")
    if which not in WHICH:
        raise ValueError(f"which: must be one of {WHICH}, got {which!r}")
    mu = None if tau_mean is None else _check_number(tau_mean, "tau_mean")
    sigma = None
    if tau_sq_mean is not None:
        sigma = math.sqrt(_check_number(tau_sq_mean, "tau_sq_mean", nonneg=True) * d / n)
    if threshold is None:
        delta = float(d) ** (-1.0 / 3.0)
    else:
        delta = _check_number(threshold, "threshold", positive=True)
    margin = _check_number(margin, "margin", nonneg=True)
    if weights is not None:
        return _select_exact(ev, d, n, rule, which, _weight_law(weights), delta, margin)

    full = ev.size == d and ev.size >= 4
    if full and (mu is None or sigma is None):
        q1, med, q3 = np.percentile(ev, [25.0, 50.0, 75.0])
        mu = float(med) if mu is None else mu
        sigma = float(q3 - q1) / SEMICIRCLE_IQR if sigma is None else sigma

    # ---- split into ends: indices from the extreme inward
    order = np.argsort(-ev, kind="stable")  # descending
    if which == "LA":
        top, bot = order, order[:0]
    elif which == "SA":
        top, bot = order[:0], order[::-1]
    elif mu is not None:
        top = order[ev[order] > mu]
        bot = order[::-1][ev[order[::-1]] < mu]
    else:
        n_top = (ev.size + 1) // 2
        top, bot = order[:n_top], order[n_top:][::-1]

    if mu is None or sigma is None:
        mu, sigma = _bulk_from_ends(ev, top, bot, mu, sigma, d, delta)

    lo, hi = mu - 2.0 * sigma, mu + 2.0 * sigma
    xt = ev[top] - mu  # distances beyond the centre, from the extreme inward
    xb = mu - ev[bot]
    kt_gap, gt = _gap_count(xt, sigma, delta, 2.0 * sigma)
    kb_gap, gb = _gap_count(xb, sigma, delta, 2.0 * sigma)
    cut = 2.0 * sigma * (1.0 + margin)
    kt_edge = int(np.count_nonzero(xt > cut))
    kb_edge = int(np.count_nonzero(xb > cut))
    kt, kb = (kt_gap, kb_gap) if rule == "gap" else (kt_edge, kb_edge)
    saturated = bool((len(xt) and xt[-1] > 2.0 * sigma) or (len(xb) and xb[-1] > 2.0 * sigma))
    index = np.concatenate([top[:kt], bot[:kb]]).astype(np.intp)
    return Selection(
        n_components=int(kt + kb),
        index=index,
        n_top=int(kt),
        n_bottom=int(kb),
        rule=rule,
        gaps=(gt, gb),
        threshold=float(delta),
        bulk_center=float(mu),
        bulk_edges=(float(lo), float(hi)),
        sigma=float(sigma),
        n_components_gap=int(kt_gap + kb_gap),
        n_components_edge=int(kt_edge + kb_edge),
        agree=bool(kt_gap == kt_edge and kb_gap == kb_edge),
        saturated=saturated,
        edge_scales=(float(sigma), float(sigma)),
        bulk="semicircle",
    )


def _weight_law(weights):
    """(values, probabilities) from a 1-D array of weights or an object with ``.law()``, validated."""
    if hasattr(weights, "law") and callable(weights.law):
        got = weights.law()
        if not (isinstance(got, tuple) and len(got) == 2):
            raise TypeError("weights: .law() must return a pair (values, probabilities)")
        values = np.asarray(got[0], dtype=np.float64)
        probs = np.asarray(got[1], dtype=np.float64)
        if values.ndim != 1 or values.shape != probs.shape or values.size == 0:
            raise ValueError(
                f"weights: .law() must return two non-empty 1-D arrays of one length, got shapes "
                f"{values.shape} and {probs.shape}"
            )
        if not (np.isfinite(values).all() and np.isfinite(probs).all() and (probs >= 0).all() and probs.sum() > 0):
            raise ValueError("weights: .law() returned NaN/inf values or negative probabilities; pass a valid law")
        return values, probs / probs.sum()
    w = np.asarray(weights)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weights: expected a 1-D array of numbers or an object with .law(), got dtype {w.dtype}")
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights: expected a non-empty 1-D array, got shape {w.shape}")
    w = w.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        raise ValueError(f"weights: non-finite value at index {bad[0]}; pass finite weights")
    return wishart.bin_values(w)


def _select_exact(ev, d, n, rule, which, law, delta, margin):
    """Both rules with the exact bulk of the weights' law (module docstring)."""
    wl = wishart.WeightLaw(*law)
    c = d / n
    E = wl.edges(np.array([c]))
    lo, hi = (float(v) for v in E.edges[0])
    s_lo, s_hi = (float(v) for v in E.scales[0])
    mu = wl.mean
    sigma = math.sqrt(c * wl.second_moment)
    order = np.argsort(-ev, kind="stable")
    if which == "LA":
        top, bot = order, order[:0]
    elif which == "SA":
        top, bot = order[:0], order[::-1]
    else:
        top = order[ev[order] > mu]
        bot = order[::-1][ev[order[::-1]] < mu]
    xt, xb = ev[top] - mu, mu - ev[bot]
    beyond_t, beyond_b = hi - mu, mu - lo
    kt_gap, gt = _gap_count(xt, s_hi, delta, beyond_t)
    kb_gap, gb = _gap_count(xb, s_lo, delta, beyond_b)
    kt_edge = int(np.count_nonzero(xt > beyond_t + 2.0 * s_hi * margin))
    kb_edge = int(np.count_nonzero(xb > beyond_b + 2.0 * s_lo * margin))
    kt, kb = (kt_gap, kb_gap) if rule == "gap" else (kt_edge, kb_edge)
    saturated = bool((len(xt) and xt[-1] > beyond_t) or (len(xb) and xb[-1] > beyond_b))
    index = np.concatenate([top[:kt], bot[:kb]]).astype(np.intp)
    return Selection(
        n_components=int(kt + kb), index=index, n_top=int(kt), n_bottom=int(kb), rule=rule, gaps=(gt, gb),
        threshold=float(delta), bulk_center=float(mu), bulk_edges=(lo, hi), sigma=float(sigma),
        n_components_gap=int(kt_gap + kb_gap), n_components_edge=int(kt_edge + kb_edge),
        agree=bool(kt_gap == kt_edge and kb_gap == kb_edge), saturated=saturated,
        edge_scales=(s_lo, s_hi), bulk="exact",
    )


def _bulk_from_ends(ev, top, bot, mu, sigma, d, delta):
    """Centre and width from the innermost supplied eigenvalue of each end (see the module docstring)."""
    have_top, have_bot = len(top) >= 2, len(bot) >= 2
    if mu is None and sigma is None and not (have_top and have_bot):
        raise ValueError(
            "tau_sq_mean: the bulk centre and width cannot both be estimated from one end of the spectrum; "
            "pass tau_mean and tau_sq_mean (SpectralAccumulator.weight_mean, weight_sq_mean), "
            "or at least 2 eigenvalues at each end with which='BE', or the full spectrum"
        )
    if not (have_top or have_bot):
        raise ValueError("eigenvalues: need at least 2 values at one end to estimate the bulk; pass tau_mean and tau_sq_mean")
    spikes_top = spikes_bot = 0
    for _ in range(2):  # estimate, count the spikes at each end, re-estimate with the bulk ranks
        jt = max(len(top) - spikes_top, 1)
        jb = max(len(bot) - spikes_bot, 1)
        ut, ub = _edge_depth(jt, d), _edge_depth(jb, d)
        it = ev[top[-1]] if have_top else None  # innermost of each end
        ib = ev[bot[-1]] if have_bot else None
        # it = mu + 2 sigma (1 - ut);  ib = mu - 2 sigma (1 - ub)
        if mu is None and sigma is None:
            s = (it - ib) / (2.0 * (2.0 - ut - ub))
            m = it - 2.0 * s * (1.0 - ut)
        elif sigma is None:
            m = mu
            vals = []
            if have_top:
                vals.append((it - mu) / (2.0 * (1.0 - ut)))
            if have_bot:
                vals.append((mu - ib) / (2.0 * (1.0 - ub)))
            s = float(np.mean(vals))
        else:
            s = sigma
            vals = []
            if have_top:
                vals.append(it - 2.0 * sigma * (1.0 - ut))
            if have_bot:
                vals.append(ib + 2.0 * sigma * (1.0 - ub))
            m = float(np.mean(vals))
        s = max(float(s), 0.0)
        spikes_top = _gap_count(ev[top] - m, s, delta, 2.0 * s)[0] if have_top else 0
        spikes_bot = _gap_count(m - ev[bot], s, delta, 2.0 * s)[0] if have_bot else 0
    return float(m), float(s)
