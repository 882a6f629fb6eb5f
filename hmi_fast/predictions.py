"""Large-α predictions from the population quantities (docs/theory.md).

Spectrum (bulk centre and edges, outlier positions), overlaps, predicted k̂
and MSE_γ at given α, the MSE curve, and the scaling-law regime for γ.
Everything is a closed form in the numbers of :mod:`hmi_fast.theory`
(which re-exports these functions).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._validation import check_positive_int
from .theory import (  # noqa: F401
    DEFAULT_N_SAMPLES,
    Thresholds,
    _check_alpha,
    _check_centred,
    _population,
    _readonly,
    _thresholds,
    moments,
    thresholds,
)


# ---------------------------------------------------------------- public API: predictions


@dataclass(frozen=True)
class Prediction:
    """Large-α spectrum and recovery predicted at sample ratio(s) α (docs/theory.md).

    Scalars and shape (m*,) for a scalar ``alpha``; a leading axis of
    length len(alpha) otherwise. ``outliers`` and ``overlaps`` are per
    direction k; ``outliers`` is NaN where direction k stays in the bulk.
    """

    alpha: np.ndarray
    sigma: np.ndarray
    bulk_center: float
    bulk_edges: np.ndarray
    outliers: np.ndarray
    overlaps: np.ndarray
    n_components: np.ndarray
    mse: np.ndarray
    thresholds: Thresholds


def _predict(th: Thresholds, a: np.ndarray, alpha: np.ndarray, centre: float) -> Prediction:
    al = alpha.reshape(-1)
    sigma = np.sqrt(th.noise / al)
    edges = np.stack([centre - 2 * sigma, centre + 2 * sigma], axis=-1)
    theta = th.theta[None, :]
    out = np.abs(theta) > sigma[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        outliers = np.where(out, centre + theta + sigma[:, None] ** 2 / theta, np.nan)
    q = np.maximum(0.0, 1.0 - th.alpha[None, :] / al[:, None])
    k_hat = np.sum(al[:, None] > th.alpha[None, :], axis=1)
    mse = np.sum(a**2 * (1.0 - q), axis=1)
    if alpha.ndim == 0:
        al, sigma, edges, outliers, q, k_hat, mse = (x[0] for x in (al, sigma, edges, outliers, q, k_hat, mse))
    _readonly(al, sigma, edges, outliers, q, k_hat, mse)
    return Prediction(al, sigma, float(centre), edges, outliers, q, k_hat, mse, th)


def predict(model, preprocess, alpha, centred: bool = False, *,
            n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> Prediction:
    """Predicted spectrum of T and recovery at sample ratio α = n/d.

    With ``σ² = E τ² / α`` (centred: ``Var τ / α``) and centre μ_τ
    (centred: 0): bulk ``centre ± 2σ``; direction k gives an outlier at
    ``centre + θ_k + σ²/θ_k`` iff ``|θ_k| > σ`` (⇔ α > α_k), with squared
    overlap ``q_k = max(0, 1 − α_k/α)``; ``n_components = #{k: α > α_k}``;
    ``mse = Σ a_k² (1 − q_k)``.

    Parameters
    ----------
    model, preprocess, n_samples, seed
        As in :func:`moments`.
    alpha : float or 1-D array
        Sample ratio(s), finite and > 0.
    centred : bool
        Predictions for centred weights τ − μ_τ.

    Examples
    --------
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import predict
    >>> p = predict(HMIModel(d=10, m_star=3, gamma=1.3), "saturating", [0.1, 1e6], n_samples=20_000)
    >>> p.n_components.tolist(), bool(p.mse[1] < 1e-3)
    ([0, 3], True)
    """
    centred = _check_centred(centred)
    alpha = _check_alpha(alpha)
    pop, tau = _population(model, preprocess, n_samples, seed)
    th = _thresholds(pop, tau, centred)
    centre = 0.0 if centred else float(pop.full[0])
    return _predict(th, np.asarray(model.a, dtype=np.float64), alpha, centre)


@dataclass(frozen=True)
class MSECurve:
    """Predicted ``MSE_γ(α)``.

    ``mse`` is the per-direction form ``Σ_k a_k² (1 − q_k)`` with
    ``q_k = max(0, 1 − α_k/α)``; ``mse_piecewise`` is docs/theory.md's
    ``Σ_{α≤α_k} a_k² + Σ_{α>α_k} a_k² α_k/α``. They are the same function
    (``1 − q_k = min(1, α_k/α)``), computed separately as a check.
    """

    alphas: np.ndarray
    mse: np.ndarray
    mse_piecewise: np.ndarray
    thresholds: Thresholds


def mse_curve(model, preprocess="saturating", alphas=None, centred: bool = False, *,
              n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0) -> MSECurve:
    """Predicted weighted error ``MSE_γ`` along sample ratios ``alphas``.

    ``alphas=None`` uses 200 log-spaced points from α_1/10 to 10·α_{m*}
    (finite thresholds only). Other parameters as in :func:`predict`.

    Examples
    --------
    >>> import numpy as np
    >>> from hmi_fast import HMIModel
    >>> from hmi_fast.theory import mse_curve
    >>> c = mse_curve(HMIModel(d=10, m_star=3, gamma=1.3), alphas=[10, 100, 1000], n_samples=20_000)
    >>> bool(np.all(np.diff(c.mse) <= 0) and np.allclose(c.mse, c.mse_piecewise))
    True
    """
    centred = _check_centred(centred)
    pop, tau = _population(model, preprocess, n_samples, seed)
    th = _thresholds(pop, tau, centred)
    if alphas is None:
        fin = th.alpha[np.isfinite(th.alpha)]
        lo, hi = (fin.min() / 10, fin.max() * 10) if fin.size else (1.0, 1e6)
        alphas = np.geomspace(lo, hi, 200)
    al = _check_alpha(alphas, "alphas").reshape(-1)
    a2 = np.asarray(model.a, dtype=np.float64) ** 2
    mse = _predict(th, np.sqrt(a2), al, 0.0).mse
    ak = th.alpha[None, :]
    below = al[:, None] <= ak
    with np.errstate(invalid="ignore"):
        piecewise = np.sum(np.where(below, a2, a2 * ak / al[:, None]), axis=1)
    _readonly(al, piecewise)
    return MSECurve(al, mse, piecewise, th)


# ---------------------------------------------------------------- public API: scaling law


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
