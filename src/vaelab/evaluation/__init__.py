"""Evaluation: ELBO terms, figures."""

from .elbo import evaluate

__all__ = ["evaluate"]
