"""Dimension-free predictions of the spectral method (docs/theory.md).

Modules, each importing only those above it:

* :mod:`~hmi_fast.theory._sampling` — draws, quadrature rules, kernels, argument checks;
* :mod:`~hmi_fast.theory.population` — moments of τ(y), spike strengths θ_k and the law of τ;
* :mod:`~hmi_fast.theory.wishart` — the spectrum of a spiked weighted Wishart matrix (the finite-α theory);
* :mod:`~hmi_fast.theory.predictions` — thresholds, predicted spectrum and recovery, bulk density;
* :mod:`~hmi_fast.theory.scaling` — the MSE_γ curve, its discovery-window slopes, the scaling-law regimes;
* :mod:`~hmi_fast.theory.optimal` — the optimal preprocessing τ* and the Fisher information.

Every public function is available here as ``hmi_fast.theory.<name>``.
"""

from ._sampling import DEFAULT_N_SAMPLES, MIN_N_SAMPLES, TabulatedFunction
from .optimal import (
    DEFAULT_SMOOTHING,
    MAX_GRID,
    FisherInformation,
    OptimalPreprocessing,
    fisher_information,
    optimal_preprocessing,
)
from .population import Moments, SpikeStrengths, moments, spike_strengths
from .predictions import ZERO_SPIKE, BulkDensity, Prediction, Thresholds, bulk_density, predict, thresholds
from .scaling import DiscoverySlopes, MSECurve, ScalingLaw, discovery_slopes, fit_slope, mse_curve, scaling_law
from .wishart import WeightLaw

__all__ = [
    "DEFAULT_N_SAMPLES",
    "DEFAULT_SMOOTHING",
    "MAX_GRID",
    "MIN_N_SAMPLES",
    "ZERO_SPIKE",
    "BulkDensity",
    "DiscoverySlopes",
    "FisherInformation",
    "MSECurve",
    "Moments",
    "OptimalPreprocessing",
    "Prediction",
    "ScalingLaw",
    "SpikeStrengths",
    "TabulatedFunction",
    "Thresholds",
    "WeightLaw",
    "bulk_density",
    "discovery_slopes",
    "fisher_information",
    "fit_slope",
    "mse_curve",
    "moments",
    "optimal_preprocessing",
    "predict",
    "scaling_law",
    "spike_strengths",
    "thresholds",
]
