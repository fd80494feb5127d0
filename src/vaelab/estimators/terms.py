"""The per-example terms every estimator returns and the trainer logs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..distributions import kl_per_dimension


@dataclass
class LossTerms:
    """Per-example terms [B] of one forward pass."""

    loss: Tensor  # D + β·R
    distortion: Tensor  # E_q[−log p(x|z)]
    rate: Tensor  # KL(q(z|x) ‖ p(z))
    mse: Tensor  # squared error of the decoder mean, averaged over data dimensions
    sigma: Tensor | None  # σ_x summary (Gaussian decoders)
    # what rate shaping (free bits, β schedules; training/schedules.py) needs: the β the loss
    # used ([1] or [B]) and the rate per latent dimension [B, L] (rate = its sum)
    beta: Tensor | None = None
    kl_per_dimension: Tensor | None = None

    @classmethod
    def compose(
        cls,
        distortion: Tensor,
        q,
        prior,
        beta: Tensor,
        mse: Tensor,
        sigma: Tensor | None,
        surrogate: Tensor | None = None,
    ) -> LossTerms:
        """The one place the rate joins the loss: R = Σ_j KL(q_j ‖ p_j) (analytic) and
        loss = D + β·R (+ an estimator's `surrogate`, a term of value 0 carrying its gradient)."""
        kl = kl_per_dimension(q, prior)
        rate = kl.sum(-1)
        loss = distortion + beta * rate
        if surrogate is not None:
            loss = loss + surrogate
        return cls(loss, distortion, rate, mse, sigma, beta, kl)

    @property
    def negative_elbo(self) -> Tensor:
        return self.distortion + self.rate

    def sums(self) -> dict[str, Tensor]:
        """Detached batch sums of every per-example term (what the trainer logs)."""
        terms = (self.loss, self.distortion, self.rate, self.negative_elbo, self.mse)
        sums = torch.stack(terms).detach().sum(-1)  # one reduction for all (the trainer's cost)
        out = dict(zip(("loss", "distortion", "rate", "negative_elbo", "mse"), sums.unbind()))
        if self.sigma is not None:
            out["sigma"] = self.sigma.detach() * len(self.loss)
        return out


@dataclass
class ObjectiveTerms:
    """Per-example loss [B] and any other per-example terms [B] to log, for what the trainer
    fits that is not a VAE (a harmonium, a classifier, a GAN's discriminator step, …)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)

    def sums(self) -> dict[str, Tensor]:
        return {"loss": self.loss.detach().sum()} | {
            k: v.detach().sum() for k, v in self.terms.items()
        }
