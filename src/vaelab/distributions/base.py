"""The contracts every distribution object of vaelab keeps: decoder likelihoods p(x|z),
posteriors q(z|x) and priors p(z).

Callers use only what these base classes declare — the methods, and the capability flags in
place of `isinstance`, `hasattr` or name comparisons. `tests/test_contracts.py` runs every
registered class through them.

Shapes: data x is [B, *data]; a decoder output for S codes per example is [S, B, *out]
(out = data with `outputs_per_dim` values per data dimension); every per-example term is
summed over data (or latent) dimensions, in nats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .exponential_family import ExponentialFamily
from .reconstruction import Reconstruction

MaybeTensor = Tensor | None


class Likelihood(nn.Module):
    """A decoder likelihood p(x|z), given the decoder's output at z.

    Capabilities (class attributes, read by callers instead of type checks):
    - `outputs_per_dim`: decoder outputs per data dimension (2 for a Gaussian with a σ head);
    - `batch_dependent`: in training, a parameter (σ_x) is fitted to the batch being trained
      on. In evaluation mode (`.eval()`) it is frozen — a running estimate kept from training
      and saved with the weights — so that p(x|z) is a density of x given z alone;
    - `needs_condition`: forward needs ℓ (standardised log β) of a β-conditional model;
    - `family`: the exponential family of p(x|z) (`natural_parameters` is then defined), or
      None;
    - `can_sample`: `sample` needs nothing but the decoder output;
    - `binary_data`: p(x|z) is a distribution over binary data only (x ∈ {0, 1}ᴰ), so
      training on other data is refused.

    Construction: `from_config(data_shape, model_config)` reads only the fields named in the
    class's `config_fields` (constructor argument → `ModelConfig` field).
    """

    outputs_per_dim: ClassVar[int] = 1
    batch_dependent: ClassVar[bool] = False
    needs_condition: ClassVar[bool] = False
    family: ClassVar[ExponentialFamily | None] = None
    can_sample: ClassVar[bool] = True
    binary_data: ClassVar[bool] = False
    config_fields: ClassVar[Mapping[str, str]] = {}

    def __init__(self, data_shape: tuple[int, ...]):
        super().__init__()
        self.data_shape = tuple(data_shape)

    @classmethod
    def from_config(cls, data_shape: tuple[int, ...], model_config: Any) -> Likelihood:
        """An instance from the `ModelConfig` fields this likelihood declares."""
        options = {arg: getattr(model_config, key) for arg, key in cls.config_fields.items()}
        return cls(tuple(data_shape), **options)

    @property
    def exponential_family(self) -> bool:
        return self.family is not None

    def mean(self, output: Tensor) -> Tensor:
        """E[x|z] from decoder outputs [..., *out] → [..., *data]."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, output: Tensor, condition: MaybeTensor = None, weights: MaybeTensor = None
    ) -> Reconstruction:
        """Terms of −log p(x|z) for x [B, *data] and outputs [S, B, *out] → [S, B] each.

        `weights` [S, B] (summing to 1 over S) are the probabilities of the S codes under
        q(z|x) when they are an enumeration rather than samples (default: uniform 1/S). They
        set how `Reconstruction.nll` averages over codes and, for a batch-dependent σ, the
        E_q[squared error] that σ is fitted to."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """log p(x|z) [S, B]; in evaluation mode a density in x for every z."""
        return -self(x, output, condition).nll_samples

    def pairwise(
        self, x: Tensor, output: Tensor, condition: MaybeTensor = None, weights: MaybeTensor = None
    ) -> Reconstruction:
        """Terms for every (code k, example b) pair from outputs [K, *out] and x [B, *data] →
        [K, B]. This default expands the outputs to [K, B, *out]; subclasses replace it by
        matrix products where the formula allows."""
        expanded = output[:, None].expand(len(output), len(x), *output.shape[1:])
        return self(x, expanded, condition, weights)

    def sample(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """x ~ p(x|z) [..., *data] (a batch-dependent σ is taken frozen); where `can_sample`."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample from the output alone")

    def natural_parameters(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """η = f(z) [..., dim ν] with p(x|z) = h(x) exp(⟨ν(x), η⟩ − A(η)) (exponential families
        only; a batch-dependent σ is taken frozen)."""
        raise NotImplementedError(f"{type(self).__name__} is not an exponential family")

    def describe(self, condition: Tensor | None = None) -> dict[str, Any]:
        """What reports print (JSON-able): the registered name under "likelihood" and the
        settings that change what a number means, at ℓ = `condition` for a β-conditional
        model."""
        raise NotImplementedError


class Posterior:
    """q(z|x) over the last dimension, batch shape everything before it — the names and
    meanings of `torch.distributions`.

    Capabilities: `has_rsample` (z = μ + σ·ε and friends: gradients flow through samples),
    `has_enumerate_support` (a finite set of codes), `continuous`.
    Construction: `from_params(encoder_output)`, `param_size(latent_dim)` encoder outputs.
    Exponential-family form: `sufficient_statistics(z)` = ψ(z) and `natural_parameters` = g(x)
    with q(z|x) = h'(z) exp(⟨ψ(z), g(x)⟩ − B(g(x))).
    """

    has_rsample: ClassVar[bool] = False
    has_enumerate_support: ClassVar[bool] = False
    continuous: ClassVar[bool] = True

    @staticmethod
    def param_size(latent_dim: int) -> int:
        raise NotImplementedError

    @classmethod
    def from_params(cls, params: Tensor) -> Posterior:
        raise NotImplementedError

    @property
    def params(self) -> Tensor:
        """The encoder output this posterior was built from (`from_params(q.params)` ≡ q)."""
        raise NotImplementedError

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError

    @property
    def variance(self) -> Tensor:
        raise NotImplementedError

    def sample(self, samples: int = 1) -> Tensor:
        """Codes [samples, *batch, L], not differentiable."""
        raise NotImplementedError

    def rsample(self, samples: int = 1) -> Tensor:
        """Reparameterised codes [samples, *batch, L] (only where `has_rsample`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reparameterised")

    def draw(self, samples: int = 1) -> Tensor:
        """`rsample` where the posterior has one, else `sample`."""
        return self.rsample(samples) if self.has_rsample else self.sample(samples)

    def enumerate_support(self) -> Tensor:
        """Every code [K, L] (only where `has_enumerate_support`)."""
        raise NotImplementedError(f"{type(self).__name__} has no finite support")

    @classmethod
    def can_enumerate(cls, latent_dim: int) -> bool:
        """Whether codes of `latent_dim` dimensions are few enough to sum over (≤ 2^16)."""
        return False

    @property
    def enumerable(self) -> bool:
        """`can_enumerate` for this posterior's latent size."""
        return self.can_enumerate(self.mean.shape[-1])

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x), summed over latent dimensions; z broadcasts against the batch."""
        raise NotImplementedError

    def entropy(self) -> Tensor:
        raise NotImplementedError

    def sufficient_statistics(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def natural_parameters(self) -> Tensor:
        raise NotImplementedError


class Prior:
    """p(z) in `latent_dim` dimensions; flags as for `Posterior`."""

    has_rsample: ClassVar[bool] = False
    continuous: ClassVar[bool] = True

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    def sample(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """Codes [n, L]."""
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) [...], summed over latent dimensions."""
        raise NotImplementedError

    def grad_log_prob(self, z: Tensor) -> Tensor:
        """∇_z log p(z) (continuous priors; HMC). Autograd unless a subclass knows it."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(z).sum(), z)
        return grad
