"""Recipes: each source experiment as a named, configurable run (`vaelab run NAME`)."""

from . import demo, rd_study
from .base import Experiment, experiment

__all__ = ["Experiment", "demo", "experiment", "rd_study"]
