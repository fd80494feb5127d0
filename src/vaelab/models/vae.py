"""A VAE assembled from parts: encoder + posterior + decoder + likelihood + prior.

loss(x) = D(x) + β·R(x), with distortion D = E_q[−log p(x|z)] and rate R = KL(q(z|x) ‖ p(z)),
both per example, summed over dimensions, in nats (DESIGN §1a). β multiplies the rate only;
the decoder's σ_x lives in the likelihood, so β and σ_x never stand in for each other.

With a `beta_prior` the VAE is β-conditional (DESIGN §1b): in training each example's β is
drawn from it (log-uniform, per example or per minibatch) and the loss is
E_β[D(x; β) + β·R(x; β)]; the encoder, the decoder and, in σ mode `learned-beta`, σ_x all
see ℓ = standardised log β. At evaluation the model is run at any β it is given.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..distributions.log_uniform import PER_EXAMPLE, LogUniformBeta
from ..estimators import LossTerms
from ..estimators.reparameterization import reparameterization
from ..registry import CONDITIONING, ESTIMATORS, LIKELIHOODS, NETWORKS, POSTERIORS, PRIORS


def full_precision(t: Tensor) -> Tensor:
    """A network output in float32 when autocast made it bfloat16 or float16: likelihoods,
    KL terms and σ_x's soft bound are computed at full precision (training/trainer.py)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class VAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        posterior: type,
        likelihood: nn.Module,
        prior,
        beta: float = 1.0,
        samples: int = 1,
        beta_prior: LogUniformBeta | None = None,
        estimator: Callable = reparameterization,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.likelihood = likelihood
        self.prior = prior
        self.beta = beta  # the β of an unconditional model; the default β of a conditional one
        self.samples = samples
        self.beta_prior = beta_prior
        self.estimator = estimator

    @property
    def conditional(self) -> bool:
        return self.beta_prior is not None

    def condition(
        self, n: int, beta: float | Tensor | None, device
    ) -> tuple[Tensor, Tensor | None]:
        """(β, ℓ) for a batch of n examples: β [n] or [1] (one β for the whole batch, which
        the networks then compute once and broadcast); ℓ is None for an unconditional model."""
        if not self.conditional:
            return torch.as_tensor(self.beta if beta is None else beta, device=device), None
        if beta is None and self.training:
            log_beta = self.beta_prior.sample(n, device)
        else:
            beta = self.beta if beta is None else beta
            log_beta = torch.log(torch.as_tensor(beta, dtype=torch.float32, device=device))
            log_beta = log_beta.reshape(-1)
        return log_beta.exp(), self.beta_prior.standardise(log_beta)

    def encode(self, x: Tensor, condition: Tensor | None = None):
        """q(z|x) for a batch x [B, *data] (and ℓ [B] if conditional)."""
        return self.posterior.from_params(full_precision(self.encoder(x, condition)))

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Decoder output for codes z [*lead, B, L] (ℓ [B] is repeated over the lead dims)."""
        lead = z.shape[:-1]
        if condition is not None and len(condition) > 1:
            condition = condition.expand(*lead).reshape(-1)
        out = full_precision(self.decoder(z.reshape(-1, z.shape[-1]), condition))
        return out.reshape(*lead, *out.shape[1:])

    def forward(self, x: Tensor, beta: float | Tensor | None = None) -> LossTerms:
        """Per-example loss terms, by the model's estimator (reparameterisation, exact, …)."""
        beta, cond = self.condition(len(x), beta, x.device)
        return self.estimator(self, x, beta, cond)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, beta: float | None = None) -> Tensor:
        """Decoder mean at the posterior mean."""
        _, cond = self.condition(len(x), beta, x.device)
        return self.likelihood.mean(self.decode(self.encode(x, cond).mean, cond))

    @torch.no_grad()
    def generate(self, n: int, beta: float | None = None) -> Tensor:
        """Decoder means of n codes drawn from the prior."""
        device = next(self.parameters()).device
        _, cond = self.condition(n, beta, device)
        return self.likelihood.mean(self.decode(self.prior.sample(n, device=device), cond))


def build_vae(cfg: ModelConfig, data_shape: tuple[int, ...]) -> VAE:
    """Assemble a VAE from the registered parts named in `cfg`."""
    posterior = POSTERIORS.get(cfg.posterior)
    likelihood = LIKELIHOODS.get(cfg.likelihood).from_config(data_shape, cfg)
    encoder, decoder = NETWORKS.get(cfg.network)(
        data_shape=tuple(data_shape),
        encoder_outputs=posterior.param_size(cfg.latent_dim),
        latent_dim=cfg.latent_dim,
        decoder_outputs_per_dim=likelihood.outputs_per_dim,
        hidden=list(cfg.hidden),
        channels=list(cfg.channels),
    )
    beta_prior = None
    if cfg.conditioning is not None:
        modulator = CONDITIONING.get(cfg.conditioning)
        encoder.add_conditioning(modulator)
        decoder.add_conditioning(modulator)
        low, high = cfg.beta_range
        beta_prior = LogUniformBeta(low, high, per_example=PER_EXAMPLE[cfg.beta_sampling])
    prior = PRIORS.get(cfg.prior)(cfg.latent_dim)
    return VAE(
        encoder,
        decoder,
        posterior,
        likelihood,
        prior,
        beta=cfg.beta,
        samples=cfg.samples,
        beta_prior=beta_prior,
        estimator=ESTIMATORS.get(cfg.estimator),
    )
