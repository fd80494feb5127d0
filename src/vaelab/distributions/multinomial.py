"""Multinomial decoder over word counts: p(x|z) = Mult(x; n, softmax(ℓ(z))), n = Σ_v x_v.

Three conventions for −log p(x|z) are in use and vaelab reports which one a number uses:
  full            −Σ_v x_v log π_v − log(n! / Π_v x_v!)
  no-coefficient  −Σ_v x_v log π_v
  saturated       −Σ_v x_v log π_v + Σ_v x_v log(x_v / n): relative to the saturated model
                  π = x/n — ≥ 0, and 0 only for a perfect decoder; what the public
                  reproduction of Shekhovtsov et al. (2022) computes (ReScience C 9(2),
                  2023). The paper itself does not state its convention (its eq. 13 keeps
                  the base measure, i.e. `full`).
They differ by a constant per document, so they give the same gradients.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LIKELIHOODS
from .base import Likelihood
from .exponential_family import MultinomialEF
from .reconstruction import Reconstruction

CONVENTIONS = ("full", "no-coefficient", "saturated")


def convention_offset(x: Tensor, convention: str) -> Tensor:
    """Per-document constant [B] to add to the no-coefficient NLL for `convention`."""
    if convention == "no-coefficient":
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    if convention == "full":
        return -MultinomialEF().log_base_measure(x)
    if convention == "saturated":
        n = x.sum(-1, keepdim=True)
        return torch.xlogy(x, x / n.clamp_min(1)).sum(-1)
    raise ValueError(f"unknown convention {convention!r}; one of {CONVENTIONS}")


@LIKELIHOODS.register("multinomial")
class MultinomialLikelihood(Likelihood):
    """Word counts x [B, V] given decoder logits [S, B, V]. A document's length n is part of
    the data, so there is no `sample` without it (`can_sample` is False)."""

    family = MultinomialEF()
    can_sample = False
    config_fields = {"convention": "multinomial_convention"}

    def __init__(self, data_shape: tuple[int, ...], convention: str = "saturated"):
        super().__init__(data_shape)
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; one of {CONVENTIONS}")
        self.convention = convention

    def mean(self, output: Tensor) -> Tensor:
        """The word probabilities π = softmax(ℓ)."""
        return torch.softmax(output, dim=-1)

    def natural_parameters(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        return output

    def pairwise(self, x, output, condition=None, weights=None) -> Reconstruction:
        """Terms for every (code k, document b) pair from outputs [K, V] and x [B, V], by one
        matrix product instead of a [K, B, V] tensor: −Σ_v x_bv log π_kv = −(log π xᵀ)_kb."""
        nll = -(F.log_softmax(output, dim=-1) @ x.T) + convention_offset(x, self.convention)
        return Reconstruction(nll, torch.zeros_like(nll), weights=weights)

    def forward(self, x, output, condition=None, weights=None) -> Reconstruction:
        log_pi = F.log_softmax(output, dim=-1)
        nll = -(x * log_pi).sum(-1) + convention_offset(x, self.convention)
        # a squared error of word frequencies means little and costs a pass over S·B·V: not kept
        return Reconstruction(nll, torch.zeros_like(nll), weights=weights)

    def describe(self, condition: Tensor | None = None) -> dict[str, Any]:
        return {"likelihood": self.registered_name, "nll_convention": self.convention}
