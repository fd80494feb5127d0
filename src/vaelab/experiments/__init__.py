"""Recipes: each source experiment as a named, configurable run (`vaelab run NAME`)."""

from . import demo, gmm_toy, groundtruth, rd_study, semhash
from .base import Experiment, experiment

__all__ = ["Experiment", "demo", "experiment", "gmm_toy", "groundtruth", "rd_study", "semhash"]
