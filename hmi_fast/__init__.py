"""hmi_fast: fast spectral learning of hierarchical multi-index models."""

from ._config import threads  # noqa: I001  (first: sets the OpenMP wait policy before numba loads it)
from . import metrics, theory
from .accumulator import SpectralAccumulator
from .eigen import ConvergenceWarning, EighResult, topk_eigh
from .engine import accumulate, spectral_matrices, spectral_matrix
from .estimator import SpectralEstimator
from .model import HMIModel, coefficients
from .preprocess import Preprocess, clip
from .selection import Selection, select_components
from .sliced import SliceResidualAccumulator, SlicedAccumulator, slice_edges
from .sliced_estimators import SAVE, SlicedAverageVarianceEstimation, SlicedInverseReg, sliced_matrix
from .sliced_selection import SlicedSelection, select_sliced
from .whitened import WhitenedMatrix

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "EighResult",
    "HMIModel",
    "Preprocess",
    "SAVE",
    "Selection",
    "SpectralAccumulator",
    "SliceResidualAccumulator",
    "SlicedAccumulator",
    "SlicedAverageVarianceEstimation",
    "SlicedInverseReg",
    "SlicedSelection",
    "SpectralEstimator",
    "WhitenedMatrix",
    "accumulate",
    "clip",
    "coefficients",
    "metrics",
    "select_components",
    "select_sliced",
    "slice_edges",
    "sliced_matrix",
    "spectral_matrices",
    "spectral_matrix",
    "theory",
    "threads",
    "topk_eigh",
]
