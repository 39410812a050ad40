"""Honest evaluation: exact and AIS log-likelihoods, pseudo-likelihood, kNN KL, mode coverage.

Report the log-likelihood (exact where a layer is small, AIS with error bars
otherwise) as the quality figure; reconstruction error is a cheap monitor only.
"""

from .divergence import forward_kl, knn_kl_divergence, mode_coverage, reverse_kl
from .evaluate import (
    METRICS,
    ClassificationMonitor,
    LikelihoodMonitor,
    classification_scores,
    evaluate,
    evaluate_model,
)
from .likelihood import (
    AISResult,
    ais_log_z,
    ais_schedule,
    exact_log_z,
    free_energies,
    free_energy_gap,
    log_likelihood,
    pseudo_likelihood,
    reconstruction_error,
)

__all__ = [
    "METRICS", "AISResult", "ClassificationMonitor", "LikelihoodMonitor",
    "classification_scores", "ais_log_z", "ais_schedule", "evaluate",
    "evaluate_model",
    "exact_log_z", "forward_kl", "free_energies", "free_energy_gap", "knn_kl_divergence",
    "log_likelihood", "mode_coverage", "pseudo_likelihood", "reconstruction_error",
    "reverse_kl",
]
