"""The predicted MSE_γ curve, its slope in the discovery window, and the scaling-law regimes (docs/theory.md §6)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._validation import check_positive_int
from ._sampling import DEFAULT_N_SAMPLES, check_alpha, check_center, check_regime, readonly
from .predictions import Thresholds, predict, thresholds


@dataclass(frozen=True)
class MSECurve:
    """Predicted ``MSE_γ(α) = Σ_k a_k² (1 − q_k)`` in both regimes.

    ``mse`` (with ``mse_se``) is the requested regime's curve; ``mse_large_alpha``
    the large-α one, ``Σ a_k² min(1, α_k/α)``, and ``mse_piecewise`` the same
    written as ``Σ_{α≤α_k} a_k² + Σ_{α>α_k} a_k² α_k/α`` (a cross-check).
    ``thresholds`` are the requested regime's emergence thresholds.
    """

    alphas: np.ndarray
    mse: np.ndarray
    mse_se: np.ndarray
    mse_large_alpha: np.ndarray
    mse_piecewise: np.ndarray
    regime: str
    selection: str
    thresholds: Thresholds


def mse_curve(model, preprocess="saturating", alphas=None, center=False, *, regime: str = "exact",
              d: int | None = None, selection: str = "outliers", n_samples: int = DEFAULT_N_SAMPLES,
              seed: int = 0) -> MSECurve:
    """Predicted weighted error ``MSE_γ`` along sample ratios ``alphas``.

    ``alphas=None`` uses 200 log-spaced points from α_1/10 to 10·α_{m*}
    (finite thresholds of the regime only). Other parameters as in
    :func:`~hmi_fast.theory.predict`: ``selection="gap"`` with ``d`` predicts what
    the spectral estimator measures; the default counts every predicted outlier.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import mse_curve
    >>> c = mse_curve(HMIModel(d=10, m_star=3, gamma=1.3), alphas=[10, 100, 1000], n_samples=20_000)
    >>> bool(np.all(np.diff(c.mse) <= 0) and np.allclose(c.mse_large_alpha, c.mse_piecewise))
    True
    >>> bool(np.all(c.mse >= c.mse_large_alpha))  # finite-α overlaps are lower
    True
    """
    center = check_center(center)
    regime = check_regime(regime)
    th = thresholds(model, preprocess, center, regime=regime, d=d, n_samples=n_samples, seed=seed)
    if alphas is None:
        fin = th.alpha[np.isfinite(th.alpha)]
        lo, hi = (fin.min() / 10, fin.max() * 10) if fin.size else (1.0, 1e6)
        alphas = np.geomspace(lo, hi, 200)
    al = check_alpha(alphas, "alphas").reshape(-1)
    p = predict(model, preprocess, al, center, regime=regime, d=d, selection=selection, n_samples=n_samples,
                seed=seed)
    large = predict(model, preprocess, al, center, regime="large_alpha", n_samples=n_samples, seed=seed)
    a2 = np.asarray(model.a, dtype=np.float64) ** 2
    ak = large.thresholds.alpha[None, :]
    below = al[:, None] <= ak
    with np.errstate(invalid="ignore"):
        piecewise = np.sum(np.where(below, a2, a2 * ak / al[:, None]), axis=1)
    readonly(al, piecewise)
    return MSECurve(al, p.mse, p.mse_se, large.mse, piecewise, regime, selection, th)


def fit_slope(alphas, values, lo: float, hi: float) -> float:
    """Least-squares slope of log(values) against log(alphas) over lo <= α <= hi (NaN if < 2 points)."""
    a, v = np.asarray(alphas, dtype=np.float64), np.asarray(values, dtype=np.float64)
    m = (a >= lo) & (a <= hi) & (v > 0)
    if m.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(a[m]), np.log(v[m]), 1)[0])


@dataclass(frozen=True)
class DiscoverySlopes:
    """Fitted log-slopes of the predicted MSE_γ in the discovery window, beside −(1 − 1/(2γ))."""

    window: tuple
    exact: float
    large_alpha: float
    predicted_exponent: float
    regime: str


def discovery_slopes(model, preprocess="saturating", center=False, *, window=None, d: int | None = None,
                     n_points: int = 60, n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> DiscoverySlopes:
    """Slopes of the exact and large-α MSE_γ curves between 2·α_1 and α_{m*} (exact thresholds).

    ``window=(lo, hi)`` sets the range instead. ``predicted_exponent`` is
    :func:`scaling_law`'s exponent for the model's γ.

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import discovery_slopes
    >>> s = discovery_slopes(HMIModel(d=30, m_star=30, gamma=1.3), n_samples=50_000)
    >>> round(s.predicted_exponent, 3), bool(-0.9 < s.exact < -0.4 and -0.9 < s.large_alpha < -0.4)
    (-0.615, True)
    """
    n_points = check_positive_int(n_points, "n_points", minimum=2)
    th = thresholds(model, preprocess, center, d=d, n_samples=n_samples, seed=seed)
    if window is None:
        fin = th.alpha[np.isfinite(th.alpha)]
        if fin.size < 2:
            raise ValueError("window: fewer than two finite thresholds; pass window=(lo, hi)")
        window = (2.0 * fin[0], fin[-1])
    lo, hi = (float(v) for v in check_alpha(np.asarray(window, dtype=np.float64), "window"))
    if not lo < hi:
        raise ValueError(f"window: must be (lo, hi) with lo < hi, got {window!r}")
    al = np.geomspace(lo, hi, n_points)
    curve = mse_curve(model, preprocess, al, center, d=d, n_samples=n_samples, seed=seed)
    law = scaling_law(float(model.gamma)) if hasattr(model, "gamma") else None
    return DiscoverySlopes((lo, hi), fit_slope(al, curve.mse, lo, hi), fit_slope(al, curve.mse_large_alpha, lo, hi),
                           float("nan") if law is None else law.exponent, "exact")


# ---------------------------------------------------------------- scaling law


@dataclass(frozen=True)
class ScalingLaw:
    """Regime and exponent of ``MSE_γ(α)`` (docs/theory.md, a reconstruction).

    ``exponent`` is the exponent while directions are being discovered
    (MSE ∝ α^exponent); ``final_exponent`` (−1) applies once all m* are found.
    """

    gamma: float
    regime: str
    exponent: float
    final_exponent: float
    description: str
    m_star: int | None = None


def scaling_law(gamma: float, m_star: int | None = None) -> ScalingLaw:
    """Scaling-law regime for ``a_k ∝ k^-γ``.

    * γ > 1/2 (``"power_law"``): ``MSE ∝ α^-(1 − 1/(2γ))`` while directions
      are discovered (α_k ∝ k^{2γ}), then ``∝ m*/α`` once all are found
      (from α ~ α_{m*} ∝ m*^{2γ}).
    * γ < 1/2 (``"plateau"``): MSE stays of order 1 until α ~ m*, then ∝ m*/α.
    * γ = 1/2 (``"borderline"``): exponent 0 with logarithmic decay,
      ``MSE ≈ 1 − log k̂ / log m*``.

    Examples
    --------
    >>> from hmi_fast.theory import scaling_law
    >>> law = scaling_law(1.3)
    >>> law.regime, round(law.exponent, 4)
    ('power_law', -0.6154)
    """
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not math.isfinite(gamma):
        raise ValueError(f"gamma: must be a finite number, got {gamma!r}")
    gamma = float(gamma)
    if m_star is not None:
        m_star = check_positive_int(m_star, "m_star")
    ms = "m*" if m_star is None else f"m*={m_star}"
    if math.isclose(gamma, 0.5, rel_tol=0, abs_tol=1e-12):
        return ScalingLaw(gamma, "borderline", 0.0, -1.0,
                          "γ = 1/2 is the borderline case: Σ a_k² is logarithmic in m*, so MSE decays only "
                          f"logarithmically, ≈ 1 − log k̂(α)/log {ms} with k̂ ∝ α/log {ms}, until all {ms} "
                          "directions are found; then ∝ m*/α.", m_star)
    if gamma > 0.5:
        e = -(1.0 - 1.0 / (2.0 * gamma))
        cross = "" if m_star is None else f" (from α of order α_{{m*}} ∝ {m_star}^{2 * gamma:.3g})"
        return ScalingLaw(gamma, "power_law", e, -1.0,
                          f"γ > 1/2: directions emerge one by one at α_k ∝ k^{2 * gamma:.3g}; while they are "
                          f"being discovered MSE ∝ α^{e:.4g}; once all {ms} are found{cross}, MSE ∝ m*/α.",
                          m_star)
    return ScalingLaw(gamma, "plateau", 0.0, -1.0,
                      f"γ < 1/2: the weight is spread over all {ms} directions; MSE stays on a plateau of "
                      f"order 1 until α is of order {ms}, then decreases ∝ m*/α.", m_star)
