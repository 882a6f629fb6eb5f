"""Predicted spectrum of T, recovery and thresholds at sample ratio α (docs/theory.md §3–§4).

Two regimes, from the same population quantities (:mod:`hmi_fast.theory.population`):

``regime="exact"`` (default)
    The proportional limit d, n → ∞ with n/d = α fixed
    (:mod:`hmi_fast.theory.wishart`): bulk edges and density of the
    weighted Wishart matrix, outliers, squared overlaps and thresholds from
    ψ(λ) = λ (c + E[τ/(λ − τ)]) and the latent matrix E[τ (z zᵀ − I)/(λ − τ)].
``regime="large_alpha"``
    Its leading order as α → ∞: a semicircle of radius 2σ, σ² = E[τ²]/α,
    outliers at ``μ_τ + θ_k + σ²/θ_k``, ``q_k = 1 − α_k/α``, ``α_k = E τ²/θ_k²``.

The aspect ratio is ``c = 1/α`` (``d=None``), or ``c = (d − m*)/(α d)`` when
d is given: the matrix whose spectrum is the bulk is T restricted to the
complement of the m* hidden directions, of size d − m* (docs/theory.md §3.3).
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import numpy as np

from .._validation import check_positive_int
from ._sampling import DEFAULT_N_SAMPLES, check_alpha, check_center, check_regime, readonly
from .population import population, spread
from .wishart import WeightLaw

#: θ_k counts as 0 (α_k = inf) when |θ_k| <= ZERO_SPIKE · √E[τ²] (a rounding-level zero)
ZERO_SPIKE = 1e-12


# ---------------------------------------------------------------- laws and common helpers


def _shift(pop, center) -> float:
    if center is True:
        return float(pop.full[0])
    if center is False:
        return 0.0
    return float(center)


def _check_exact(tau, regime):
    if regime == "exact" and tau.is_builtin and tau.name == "identity":
        raise ValueError(
            "preprocess: 'identity' has unbounded weights, so the proportional limit has no bulk edge "
            "(the top of the spectrum follows the largest weights, which grow with n); "
            "use a bounded τ ('saturating', 'sign', ('clip', c)) or regime='large_alpha'"
        )


def _check_d(d, m_star):
    if d is None:
        return None
    d = check_positive_int(d, "d")
    if d <= m_star:
        raise ValueError(f"d: must be larger than m_star={m_star}, got {d}")
    return d


def _check_selection(selection, d, regime):
    if selection not in SELECTION_RULES:
        raise ValueError(f"selection: must be one of {SELECTION_RULES}, got {selection!r}")
    if selection != "outliers" and (d is None or regime != "exact"):
        raise ValueError(f"selection: {selection!r} is modelled at a given dimension in the exact regime; "
                         "pass d (and regime='exact') or use selection='outliers'")


def _aspect(alpha, d, m_star):
    """c = d'/n with d' = d (d=None: the limit) or d − m* (the complement of the hidden directions)."""
    return 1.0 / alpha if d is None else (1.0 - m_star / d) / alpha


@functools.lru_cache(maxsize=16)
def _weight_laws(pop, shift: float):
    """WeightLaw of the full population and of its replicates (weights τ − shift)."""
    def make(law):
        spikes = law.he2 if law.diagonal else law.spike_matrix()
        return WeightLaw(law.nodes - shift, law.p, spikes)
    return make(pop.law), tuple(make(r) for r in pop.law_reps)


def _slots(law: WeightLaw):
    """Which (end, branch) reports in each of the m* slots: (side index, branch) per slot.

    Diagonal: slot k is direction k (either end). Matrix: slots follow the eigenvalues e of
    ``E[τ (z zᵀ − I)]`` by decreasing |e|; e > 0 is a top branch, e < 0 a bottom one.
    """
    m = law.m
    if law.diagonal:
        return None
    theta_inf = np.tensordot(law.t, law.spikes, axes=(0, 0))
    e = np.linalg.eigvalsh(theta_inf)[::-1]  # descending: top branch j <-> e[j]
    order = np.argsort(-np.abs(e), kind="stable")
    slots = []
    for i in order:
        slots.append((0, int(i)) if e[i] > 0 else (1, int(m - 1 - i)))
    return slots


def _solve(law: WeightLaw, c, slots, selection=None):
    """Edges, edge scales, outlier per slot, recovery per direction and outlier count for each c.

    ``selection``: None (every outlier kept) or ``(rule, d, n)`` with n the sample sizes: the
    recovery and the mean number kept by that rule (:func:`_selected`).
    """
    E = law.edges(c)
    top, bot = law.spikes_at(c)
    A, m = c.size, law.m
    if slots is None:
        pos = np.where(np.isfinite(top.position), top.position, bot.position)
        branch = np.zeros((A, m, m))
        idx = np.arange(m)
        branch[:, idx, idx] = top.mass + bot.mass
    else:
        ends = (top, bot)
        pos = np.stack([ends[s].position[:, b] for s, b in slots], axis=1)
        branch = np.stack([ends[s].overlaps[:, b, :] for s, b in slots], axis=1)  # (A, slot, direction)
    count = np.isfinite(top.position).sum(axis=1) + np.isfinite(bot.position).sum(axis=1)
    if selection is None:
        q = top.overlaps.sum(axis=1) + bot.overlaps.sum(axis=1)
        kept = count.astype(np.float64)
    else:
        q, kept = _selected(E, (top, bot), *selection)
    return E.edges, E.scales, pos, np.clip(q, 0.0, 1.0), branch, count, kept


#: draws of the outliers' fluctuations in the selection model (fixed: common to every call)
SELECTION_DRAWS = 256
SELECTION_RULES = ("outliers", "gap", "edge")


@functools.lru_cache(maxsize=8)
def _draws(width: int) -> np.ndarray:
    out = np.random.default_rng([0x5E1EC7, width]).standard_normal((SELECTION_DRAWS, 2, width))
    out.setflags(write=False)
    return out


def _selected(E, ends, rule, d, n, margin=0.05):
    """Expected recovery q_k and number kept when ``rule`` ("gap" or "edge", as in
    :func:`hmi_fast.select_components` with the exact bulk) picks among the outliers of T at size (d, n).

    Each outlier eigenvalue is Gaussian around its predicted position with the leading-order variance of
    :func:`~hmi_fast.theory.wishart._outlier_noise`; the first bulk eigenvalue sits at the edge, shifted
    and spread by the Tracy–Widom law (mean −1.21, s.d. 1.27 in units of ``s_end d^(−2/3)``). The rule is
    applied to each of SELECTION_DRAWS common draws.
    """
    delta = float(d) ** (-1.0 / 3.0)
    A = E.edges.shape[0]
    m = ends[0].mass.shape[1]
    q = np.zeros((A, m))
    kept = np.zeros(A)
    draws = _draws(m + 1)  # (R, 2, m + 1)
    n = np.asarray(n, dtype=np.float64).reshape(-1)
    for e, sp in enumerate(ends):  # top (side +1, edge index 1), bottom (side −1, edge index 0)
        side = sp.side
        edge = E.edges[:, 1 if side > 0 else 0]
        scale = E.scales[:, 1 if side > 0 else 0]
        tw = scale * float(d) ** (-2.0 / 3.0)
        have = np.isfinite(sp.position)  # (A, m)
        if not have.any():
            continue
        sd = np.sqrt(np.where(have, np.maximum(sp.noise, 0.0), 0.0) / n[:, None] + (1.27 * tw[:, None]) ** 2)
        x = np.where(have, side * (sp.position - edge[:, None]), -np.inf)  # distance beyond the edge
        xs = x[:, None, :] + sd[:, None, :] * draws[None, :, e, :m]  # (A, R, m); -inf where no outlier
        bulk = tw[:, None] * (-1.21 + 1.27 * draws[None, :, e, m])  # (A, R): the first bulk eigenvalue
        order = np.argsort(-xs, axis=2)
        vals = np.take_along_axis(xs, order, axis=2)
        if rule == "edge":
            k = np.sum(vals > 2.0 * scale[:, None, None] * margin, axis=2)
        else:
            nxt = np.concatenate([vals[:, :, 1:], np.full(vals.shape[:2] + (1,), -np.inf)], axis=2)
            nxt = np.where(np.isfinite(nxt), nxt, bulk[:, :, None])  # after the last outlier: the bulk
            with np.errstate(invalid="ignore"):
                big = ((vals - nxt) >= delta * scale[:, None, None]) & (vals > 0) & np.isfinite(vals)
            k = np.where(big.any(axis=2), m - np.argmax(big[:, :, ::-1], axis=2), 0)
        chosen = (np.arange(m)[None, None, :] < k[:, :, None]).astype(np.float64)
        keep = np.zeros_like(chosen)
        np.put_along_axis(keep, order, chosen, axis=2)
        q += np.einsum("ab,abk->ak", keep.mean(axis=1), sp.overlaps)
        kept += k.mean(axis=1)
    return q, kept


# ---------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """Thresholds α_k per direction k (per outlier branch for links whose latent matrix is not diagonal).

    ``level=None``: the α at which direction k's outlier leaves the bulk
    (exact), or ``α_k = noise/θ_k²`` (large_alpha); inf where it never does.
    ``level`` in (0, 1): the α at which the recovery ``q_k`` reaches it.
    ``noise`` is ``E[(τ − shift)²]``: ``E τ²`` raw, ``Var τ`` centred.
    """

    alpha: np.ndarray
    alpha_se: np.ndarray
    theta: np.ndarray
    noise: float
    center: float
    preprocess: str
    regime: str
    level: float | None
    d: int | None


def _large_alpha_thresholds(pop, shift):
    def alphas(v):
        noise = v[..., 1:2] - 2 * shift * v[..., 0:1] + shift**2
        th2 = v[..., 2:] ** 2
        nonzero = th2 > ZERO_SPIKE**2 * v[..., 1:2]
        return np.where(nonzero, noise / np.where(nonzero, th2, 1.0), np.inf)

    al, al_se = pop.estimate(alphas)
    noise, _ = pop.estimate(lambda v: v[..., 1] - 2 * shift * v[..., 0] + shift**2)
    return al, np.where(np.isfinite(al), al_se, np.nan), float(noise)


def _emergence(law: WeightLaw, m_star, d):
    top, bot = law.emergence()
    if law.diagonal:
        c = np.maximum(top, bot)
    else:
        c = np.sort(np.concatenate([top, bot]))[::-1][:m_star]
    with np.errstate(divide="ignore"):
        return np.where(c > 0, _aspect(1.0, d, m_star) / np.where(c > 0, c, 1.0), np.inf)


def _recovery(law, slots, m_star, d, rule, al):
    sel = None if rule is None else (rule, d, al * d)
    return _solve(law, _aspect(al, d, m_star), slots, sel)[3]


def _crossing(law: WeightLaw, slots, m_star, d, level, start, stop, rule=None):
    """Smallest α in [start, stop] at which q_k reaches ``level``, per direction (inf if none).

    Bracketed on a log grid of α (20 points per decade), then refined by regula falsi (Illinois)
    in log α. ``rule``: None (every outlier counts) or the selection rule modelled at dimension d.
    """
    def recovery(al):
        return _recovery(law, slots, m_star, d, rule, al)

    start = max(start, 1e-6)
    grid = np.geomspace(start, stop, max(int(20 * np.log10(stop / start)), 2) + 1)
    q = recovery(grid)  # (A, m)
    out = np.full(m_star, np.inf)
    ks, i = [], []
    for k in range(m_star):
        above = np.flatnonzero(q[:, k] >= level)
        if above.size == 0:
            continue
        if above[0] == 0:
            out[k] = grid[0]
            continue
        ks.append(k)
        i.append(above[0])
    if not ks:
        return out
    ks, i = np.array(ks), np.array(i)
    r = np.arange(ks.size)
    a, b = np.log(grid[i - 1]), np.log(grid[i])
    fa, fb = q[i - 1, ks] - level, q[i, ks] - level  # fa < 0 <= fb
    side = np.zeros(ks.size)
    for _ in range(60):
        x = np.where(fb - fa > 0, (a * fb - b * fa) / (fb - fa), 0.5 * (a + b))
        fx = recovery(np.exp(x))[r, ks] - level
        left = fx < 0
        # Illinois: halve the retained end's value when the same end is kept twice
        fb = np.where(left & (side == -1), 0.5 * fb, fb)
        fa = np.where(~left & (side == 1), 0.5 * fa, fa)
        a, fa = np.where(left, x, a), np.where(left, fx, fa)
        b, fb = np.where(left, b, x), np.where(left, fb, fx)
        side = np.where(left, -1, 1)
        if np.all((b - a < 1e-8) | (np.abs(fx) < 1e-10)):
            break
    out[ks] = np.exp(np.where(np.abs(fa) < np.abs(fb), a, b))
    return out


def _crossing_se(laws, slots, m_star, d, rule, al, method):
    """Standard error of the crossings by the delta method: s.e. of q_k there over dq_k/dα."""
    ok = np.isfinite(al)
    se = np.full(al.shape, np.nan)
    if not ok.any():
        return se
    ks = np.flatnonzero(ok)
    a = al[ks]
    h = 1e-3
    full, reps = laws
    q = [_recovery(law, slots, m_star, d, rule, a)[np.arange(ks.size), ks] for law in (full, *reps)]
    up = _recovery(full, slots, m_star, d, rule, a * (1 + h))[np.arange(ks.size), ks]
    dn = _recovery(full, slots, m_star, d, rule, a * (1 - h))[np.arange(ks.size), ks]
    slope = (up - dn) / (2 * h * a)
    with np.errstate(divide="ignore", invalid="ignore"):
        se[ks] = spread(q[0], np.array(q[1:]), method) / np.abs(slope)
    return se


def thresholds(model, preprocess="saturating", center=False, *, level: float | None = None,
               regime: str = "exact", d: int | None = None, selection: str = "outliers",
               n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> Thresholds:
    """k-critical thresholds: where direction k leaves the bulk, or where its recovery reaches ``level``.

    Parameters
    ----------
    model : HMIModel
        Only ``a``, ``links`` and ``noise`` are used.
    preprocess : str, tuple or callable
        τ (bounded for the exact regime).
    center : bool or float
        Weights τ − μ: False (μ = 0), True (μ = E τ) or a given μ.
    level : float in (0, 1), optional
        None: the emergence threshold (the outlier leaves the bulk, q_k > 0).
        Otherwise the α at which ``q_k = ||P̂ w_k||²`` (all outliers kept) reaches it.
    regime : {"exact", "large_alpha"}
        See the module docstring; large_alpha gives ``α_k = E[(τ − μ)²]/θ_k²``
        and, with ``level``, ``α_k/(1 − level)``.
    d : int, optional
        Dimension, for the finite-size aspect ratio ``(d − m*)/n`` (exact regime).
    selection : {"outliers", "gap", "edge"}
        With ``level``: which eigenvectors count in q_k (see :func:`predict`; "gap" and "edge"
        need d). The estimator's recovery crosses the level later than that of all outliers.
    n_samples, seed
        Monte Carlo size and seed (see :func:`moments`).

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import thresholds
    >>> model = HMIModel(d=10, m_star=3, gamma=1.3)
    >>> th = thresholds(model, n_samples=20_000)
    >>> bool(np.all(np.diff(th.alpha) > 0))
    True
    >>> half = thresholds(model, level=0.5, n_samples=20_000)
    >>> bool(np.all(half.alpha > th.alpha))
    True
    """
    center = check_center(center)
    regime = check_regime(regime)
    d = _check_d(d, model.m_star)
    if level is not None and not (isinstance(level, numbers.Real) and not isinstance(level, bool)
                                  and 0.0 < level < 1.0):
        raise ValueError(f"level: must be a number in (0, 1) or None, got {level!r}")
    _check_selection(selection, d, regime)
    pop, tau = population(model, preprocess, n_samples, seed)
    _check_exact(tau, regime)
    shift = _shift(pop, center)
    theta = np.array(pop.full[2:])
    al, al_se, noise = _large_alpha_thresholds(pop, shift)
    if regime == "exact":
        m = model.m_star
        laws = _weight_laws(pop, shift)
        vals = [_emergence(law, m, d) for law in (laws[0], *laws[1])]
        al = vals[0]
        with np.errstate(invalid="ignore"):
            al_se = np.where(np.isfinite(al), spread(al, np.array(vals[1:]), pop.method), np.nan)
        if level is not None:
            slots = _slots(laws[0])
            fin = al[np.isfinite(al)]
            start, stop = (fin.min() / 4, fin.max() * 1e4) if fin.size else (1e-3, 1e9)
            rule = None if selection == "outliers" else selection
            al = _crossing(laws[0], slots, m, d, float(level), start, stop, rule)
            al_se = _crossing_se(laws, slots, m, d, rule, al, pop.method)
    elif level is not None:
        al, al_se = al / (1.0 - level), al_se / (1.0 - level)
    readonly(al, al_se, theta)
    return Thresholds(al, al_se, theta, noise, shift, tau.name, regime, None if level is None else float(level), d)


# ---------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    """Spectrum and recovery predicted at sample ratio(s) α (docs/theory.md §3).

    Scalars and per-direction arrays for a scalar ``alpha``; a leading axis of
    length len(alpha) otherwise.

    Attributes
    ----------
    alpha, c : sample ratio and the aspect ratio used (1/α, or (d − m*)/(α d)).
    sigma : semicircle-equivalent scale ``√(c E[w²])``, w = τ − shift.
    bulk_center : ``E w``.
    bulk_edges : (…, 2) lower and upper edge of the bulk.
    edge_scales : (…, 2) width of a semicircle with the same density at each edge
        (σ for large_alpha): the scale of eigenvalue gaps there.
    outliers : (…, m*) position of each direction's outlier (NaN inside the bulk); for links whose
        latent matrix is not diagonal, of each branch (``branch_overlaps`` says along what).
    overlaps : (…, m*) recovery ``q_k = ||P̂ w_k||²``, P̂ the projector on the selected eigenvectors.
    branch_overlaps : (…, m*, m*) squared overlap of slot j's eigenvector with w_k.
    n_components : number of outliers (both ends).
    n_selected : mean number of eigenvectors the modelled selection keeps (``n_components`` when
        ``selection="outliers"``).
    selection : which eigenvectors ``overlaps`` and ``mse`` count (see :func:`predict`).
    mse : ``Σ_k a_k² (1 − q_k)``.
    *_se : Monte Carlo standard errors (NaN where an outlier is at its threshold within them).
    """

    alpha: np.ndarray
    c: np.ndarray
    regime: str
    sigma: np.ndarray
    bulk_center: float
    bulk_edges: np.ndarray
    bulk_edges_se: np.ndarray
    edge_scales: np.ndarray
    outliers: np.ndarray
    outliers_se: np.ndarray
    overlaps: np.ndarray
    overlaps_se: np.ndarray
    branch_overlaps: np.ndarray
    n_components: np.ndarray
    n_selected: np.ndarray
    selection: str
    mse: np.ndarray
    mse_se: np.ndarray
    thresholds: Thresholds


def _predict_large(th: Thresholds, a, alpha, c, center):
    sigma = np.sqrt(th.noise * c)
    edges = np.stack([center - 2 * sigma, center + 2 * sigma], axis=-1)
    theta = th.theta[None, :]
    out = np.abs(theta) > sigma[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        outliers = np.where(out, center + theta + sigma[:, None] ** 2 / theta, np.nan)
    q = np.maximum(0.0, 1.0 - th.alpha[None, :] * c[:, None])  # 1 − α_k/α (α_k c at a finite-d aspect ratio)
    k_hat = np.sum(out, axis=1)
    mse = np.sum(a**2 * (1.0 - q), axis=1)
    m = a.size
    branch = np.zeros((alpha.size, m, m))
    branch[:, np.arange(m), np.arange(m)] = q
    nan = np.full_like(outliers, np.nan)
    return (sigma, edges, np.full_like(edges, np.nan), np.stack([sigma, sigma], axis=-1), outliers, nan, q, nan,
            branch, k_hat, k_hat.astype(np.float64), mse, np.full_like(mse, np.nan))


def _predict_exact(pop, model, alpha, c, shift, selection):
    full, reps = _weight_laws(pop, shift)
    slots = _slots(full)
    res = [_solve(law, c, slots, selection) for law in (full, *reps)]
    a2 = np.asarray(model.a, dtype=np.float64) ** 2
    edges, scales, pos, q, branch, count, kept = res[0]
    mse = np.sum(a2 * (1.0 - q), axis=1)
    rep = lambda i: np.array([r[i] for r in res[1:]])  # noqa: E731
    edges_se = spread(edges, rep(0), pop.method)
    pos_se = spread(pos, rep(2), pop.method)
    q_se = spread(q, rep(3), pop.method)
    mse_se = spread(mse, np.array([np.sum(a2 * (1.0 - r[3]), axis=1) for r in res[1:]]), pop.method)
    sigma = np.sqrt(c * full.second_moment)
    return sigma, edges, edges_se, scales, pos, pos_se, q, q_se, branch, count, kept, mse, mse_se


def predict(model, preprocess, alpha, center=False, *, regime: str = "exact", d: int | None = None,
            selection: str = "outliers", n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> Prediction:
    """Predicted spectrum of T and recovery at sample ratio α = n/d.

    Parameters
    ----------
    model, preprocess, center, regime, d, n_samples, seed
        As in :func:`thresholds`.
    alpha : float or 1-D array
        Sample ratio(s), finite and > 0.
    selection : {"outliers", "gap", "edge"}
        Which eigenvectors the recovery ``q_k`` (and ``mse``) counts: every predicted outlier (the
        d → ∞ limit of both rules), or those that :func:`hmi_fast.select_components` keeps with the
        exact bulk of the weights at dimension ``d`` (required): its threshold ``d^(−1/3)`` and margin
        0.05, applied to the outliers spread by their Gaussian fluctuations (exact regime;
        docs/theory.md §3.4). This is what the spectral estimator measures.

    Returns
    -------
    Prediction

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import predict
    >>> model = HMIModel(d=10, m_star=3, gamma=1.3)
    >>> p = predict(model, "saturating", [0.1, 1e6], n_samples=20_000)
    >>> p.n_components.tolist(), bool(p.mse[1] < 1e-3)
    ([0, 3], True)
    >>> lo, hi = p.bulk_edges[1]
    >>> bool(lo < p.bulk_center < hi < p.outliers[1, 2])
    True
    >>> g = predict(model, "saturating", 20.0, d=400, selection="gap", n_samples=20_000)
    >>> bool(g.mse >= predict(model, "saturating", 20.0, d=400, n_samples=20_000).mse)
    True
    """
    center = check_center(center)
    regime = check_regime(regime)
    d = _check_d(d, model.m_star)
    alpha = check_alpha(alpha)
    _check_selection(selection, d, regime)
    pop, tau = population(model, preprocess, n_samples, seed)
    _check_exact(tau, regime)
    shift = _shift(pop, center)
    th = thresholds(model, tau, center, regime=regime, d=d, n_samples=n_samples, seed=seed)
    al = alpha.reshape(-1)
    c = _aspect(al, d, model.m_star)
    mean = float(pop.full[0]) - shift
    if regime == "exact":
        rule = None if selection == "outliers" else (selection, d, al * d)
        out = _predict_exact(pop, model, al, c, shift, rule)
    else:
        out = _predict_large(th, np.asarray(model.a, dtype=np.float64), al, c, mean)
    out = (al, c) + out
    if alpha.ndim == 0:
        out = tuple(x[0] for x in out)
    readonly(*out)
    al, c, sigma, edges, edges_se, scales, pos, pos_se, q, q_se, branch, count, kept, mse, mse_se = out
    return Prediction(al, c, regime, sigma, mean, edges, edges_se, scales, pos, pos_se, q, q_se, branch,
                      count, kept, selection, mse, mse_se, th)


# ---------------------------------------------------------------- bulk density


@dataclass(frozen=True)
class BulkDensity:
    """Predicted density of the bulk eigenvalues of T at sample ratio α (integrates to 1 over the bulk)."""

    x: np.ndarray
    density: np.ndarray
    edges: np.ndarray
    alpha: float
    c: float


def bulk_density(model, preprocess, alpha: float, x=None, center=False, *, d: int | None = None,
                 n_points: int = 400, n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> BulkDensity:
    """Density of the bulk of T (exact regime: Silverstein's equation for the law of τ).

    Parameters
    ----------
    alpha : float
        Sample ratio.
    x : 1-D array, optional
        Where to evaluate; default ``n_points`` points between the edges,
        denser near them (Chebyshev spacing).
    model, preprocess, center, d, n_samples, seed
        As in :func:`thresholds`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import bulk_density
    >>> b = bulk_density(HMIModel(d=10, m_star=3, gamma=1.3), "saturating", 10.0, n_samples=20_000)
    >>> bool(abs(np.trapezoid(b.density, b.x) - 1) < 0.01)
    True
    """
    center = check_center(center)
    d = _check_d(d, model.m_star)
    a = check_alpha(alpha)
    if a.ndim != 0:
        raise ValueError(f"alpha: must be a single number, got shape {a.shape}")
    pop, tau = population(model, preprocess, n_samples, seed)
    _check_exact(tau, "exact")
    law = _weight_laws(pop, _shift(pop, center))[0]
    c = float(_aspect(float(a), d, model.m_star))
    edges = law.edges(np.array([c])).edges[0]
    if x is None:
        n_points = check_positive_int(n_points, "n_points", minimum=2)
        u = np.cos(np.pi * (np.arange(n_points) + 0.5) / n_points)[::-1]
        x = 0.5 * (edges[0] + edges[1]) + 0.5 * (edges[1] - edges[0]) * u
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError("x: must be a 1-D array of finite numbers")
    dens = law.density(c, x)
    readonly(x, dens, edges)
    return BulkDensity(x, dens, edges, float(a), c)
