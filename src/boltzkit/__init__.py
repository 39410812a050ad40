"""boltzkit: Boltzmann machines on PyTorch, composed from units, connections and samplers."""

from .connections import DenseConnection
from .errors import BoltzkitError, ConfigError, DataError, ModelFileError, TrainingDiverged
from .io import load_model, save_model
from .objectives import LikelihoodGradient
from .rbm import RBM, make_rbm
from .sampling import ContrastiveDivergence, ParallelTempering, PersistentCD, make_sampler
from .training import Trainer
from .units import (
    BernoulliUnits,
    GaussianUnits,
    ReLUUnits,
    SigmoidUnits,
    SoftmaxUnits,
    Units,
    make_units,
)

__version__ = "0.1.0"

__all__ = [
    "BernoulliUnits", "BoltzkitError", "ConfigError", "ContrastiveDivergence", "DataError",
    "DenseConnection", "GaussianUnits", "LikelihoodGradient", "ModelFileError",
    "ParallelTempering", "PersistentCD", "RBM", "ReLUUnits", "SigmoidUnits", "SoftmaxUnits",
    "Trainer", "TrainingDiverged", "Units", "load_model", "make_rbm", "make_sampler",
    "make_units", "save_model",
]
