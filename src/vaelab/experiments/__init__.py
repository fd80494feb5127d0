"""Recipes: each source experiment as a named, configurable run (`vaelab run NAME`)."""

from . import demo, disentanglement_study, gmm_toy, groundtruth, rd_study, semhash
from .base import Experiment, experiment

__all__ = [
    "Experiment",
    "demo",
    "disentanglement_study",
    "experiment",
    "gmm_toy",
    "groundtruth",
    "rd_study",
    "semhash",
]
