"""Monte Carlo inference below the models: annealed importance sampling (one engine for every
annealing path), HMC on tempered posteriors, the annealing schedules, and the statistics of
importance weights (log-mean-exp, effective sample size, standard errors)."""

from .ais import AISResult, AnnealingPath, anneal
from .hmc import HMCChains, TemperedPosterior
from .schedules import (
    SCHEDULES,
    as_schedule,
    linear_schedule,
    piecewise_schedule,
    sigmoid_schedule,
)
from .weights import (
    bootstrap_interval,
    effective_sample_size,
    ess_from_sums,
    log_mean_exp_std_error,
    logmeanexp,
    standard_error,
)

__all__ = [
    "AISResult",
    "AnnealingPath",
    "HMCChains",
    "SCHEDULES",
    "TemperedPosterior",
    "anneal",
    "as_schedule",
    "bootstrap_interval",
    "effective_sample_size",
    "ess_from_sums",
    "linear_schedule",
    "log_mean_exp_std_error",
    "logmeanexp",
    "piecewise_schedule",
    "sigmoid_schedule",
    "standard_error",
]
