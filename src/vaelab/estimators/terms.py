"""The per-example terms every estimator returns and the trainer logs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class LossTerms:
    """Per-example terms [B] of one forward pass."""

    loss: Tensor  # D + β·R
    distortion: Tensor  # E_q[−log p(x|z)]
    rate: Tensor  # KL(q(z|x) ‖ p(z))
    mse: Tensor  # squared error of the decoder mean, averaged over data dimensions
    sigma: Tensor | None  # σ_x summary (Gaussian decoders)

    @property
    def negative_elbo(self) -> Tensor:
        return self.distortion + self.rate

    def sums(self) -> dict[str, Tensor]:
        """Detached batch sums of every per-example term (what the trainer logs)."""
        out = {
            "loss": self.loss,
            "distortion": self.distortion,
            "rate": self.rate,
            "negative_elbo": self.negative_elbo,
            "mse": self.mse,
        }
        out = {k: v.detach().sum() for k, v in out.items()}
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
