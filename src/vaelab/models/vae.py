"""A VAE assembled from parts: encoder + posterior + decoder + likelihood + prior.

loss(x) = D(x) + β·R(x), with distortion D = E_q[−log p(x|z)] and rate R = KL(q(z|x) ‖ p(z)),
both per example, summed over dimensions, in nats (DESIGN §1a). β multiplies the rate only;
the decoder's σ_x lives in the likelihood, so β and σ_x never stand in for each other.

With a `beta_prior` the VAE is β-conditional (DESIGN §1b): in training each example's β is
drawn from it (its law and scheme in distributions/log_uniform.py: per minibatch, per example
or stratified) and the loss is E_β[D(x; β) + β·R(x; β)]; the encoder, the decoder and, in σ
mode `learned-beta`, σ_x all see ℓ = standardised log β, the networks at the sites
`model.condition_at` names (`CONDITION_SITES`). At evaluation the model is run at any β it
is given. With one β per batch ℓ is [1], and each network's conditioner runs once per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..distributions import log_uniform
from ..distributions.log_uniform import LogUniformBeta
from ..errors import ConfigError
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
        """Decoder output for codes z [*lead, B, L] (ℓ [1], or [B]: the decoder computes the
        modulations of the B β once and repeats them over the other lead dims)."""
        lead = z.shape[:-1]
        if condition is not None and len(condition) > 1 and lead[-1:] != condition.shape:
            raise ValueError(
                f"codes {list(z.shape)} do not end in the batch of {len(condition)} β "
                "(one β per example needs codes [..., B, L])"
            )
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


# model.condition_at's sites (config.py declares the same names)
CONDITION_SITES = ("blocks", "latent", "heads")


def beta_prior_of(cfg: ModelConfig) -> LogUniformBeta:
    """The β distribution of a β-conditional config: range, law and sampling scheme."""
    low, high = cfg.beta_range
    return log_uniform.beta_prior(low, high, cfg.beta_sampling, cfg.beta_law, cfg.beta_tilt)


def condition_networks(
    cfg: ModelConfig, encoder: nn.Module, decoder: nn.Module, heads: tuple[int, int]
) -> None:
    """Add `cfg.conditioning` to both networks at the sites of `cfg.condition_at`: every
    block ("blocks"), the encoder's last block and the decoder's first ("latent", the ones
    next to the code), the networks' output heads ("heads": the posterior's parameters and
    the likelihood's, a σ_x head among them when the σ mode has one; `heads` = their units).
    The conditioner takes the options its `config_fields` names, those that are set."""
    make = CONDITIONING.get(cfg.conditioning)
    options = {
        arg: getattr(cfg, name)
        for arg, name in make.config_fields.items()
        if getattr(cfg, name) is not None
    }
    sites = set(cfg.condition_at)
    for side, network, latent_end, head in (
        ("encoder", encoder, -1, heads[0]),
        ("decoder", decoder, 0, heads[1]),
    ):
        count = network.block_count
        if "latent" in sites and not count:
            raise ConfigError(
                f"model.condition_at: 'latent' modulates the {side}'s block next to the code, "
                f"and this {cfg.network} {side} has none; choose 'blocks' or 'heads'"
            )
        blocks = set(range(count)) if "blocks" in sites else set()
        if "latent" in sites:
            blocks.add(latent_end % count)
        network.add_conditioning(
            partial(make, side=side, **options),
            blocks=blocks,
            head_features=head if "heads" in sites else None,
        )


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
        heads = (posterior.param_size(cfg.latent_dim), likelihood.outputs_per_dim * data_shape[0])
        condition_networks(cfg, encoder, decoder, heads)
        beta_prior = beta_prior_of(cfg)
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
