"""hmi_fast: fast spectral learning of hierarchical multi-index models."""

from ._config import threads  # noqa: I001  (first: sets the OpenMP wait policy before numba loads it)
from .accumulate import SpectralAccumulator
from .engine import spectral_matrices, spectral_matrix
from .model import HMIModel, coefficients
from .preprocess import Preprocess, clip

__version__ = "0.1.0"

__all__ = [
    "HMIModel",
    "Preprocess",
    "SpectralAccumulator",
    "clip",
    "coefficients",
    "spectral_matrices",
    "spectral_matrix",
    "threads",
]
