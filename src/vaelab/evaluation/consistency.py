"""Distance of a VAE to the consistent set of Theorem 1 (Shekhovtsov, Schlesinger & Flach,
ICLR 2022): the ELBO is tight only if the decoder's natural parameters are affine in the
latent statistics, f(z) = W ψ(z) + a, and the encoder's are affine in the data statistics
with the transposed matrix, g(x) = Wᵀ ν(x) + b — an exponential-family harmonium.

The nearest harmonium is found by least squares: f on ψ over latent codes (all of them when
enumerable, else codes drawn from the encoder on the data), g on ν over the data, and g on
ν with W tied to the decoder's fit. A residual is the fraction of the target's variance the
affine fit leaves unexplained (0 = inside the set, 1 = no affine structure at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import VaelabError
from ..estimators.exact import exact, exact_log_likelihood


@dataclass
class AffineFit:
    coef: Tensor  # [P, Q]: target ≈ features @ coef + intercept
    intercept: Tensor  # [Q]
    residual: float  # unexplained fraction of the target's (weighted) variance
    rms: float  # root mean squared residual per target entry


def _residuals(target: Tensor, predicted: Tensor, weights: Tensor) -> tuple[float, float]:
    w = weights / weights.sum()
    err = ((target - predicted) ** 2).sum(-1)
    spread = ((target - (w[:, None] * target).sum(0)) ** 2).sum(-1)
    total = float((w * spread).sum())
    unexplained = float((w * err).sum())
    rms = (unexplained / target.shape[-1]) ** 0.5
    return (unexplained / total if total > 1e-12 else 0.0), rms


def affine_fit(features: Tensor, target: Tensor, weights: Tensor | None = None) -> AffineFit:
    """Weighted least squares target ≈ features @ coef + intercept (float64)."""
    features, target = features.double(), target.double()
    weights = (
        torch.ones(len(features), dtype=torch.float64) if weights is None else weights.double()
    )
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    root = weights.sqrt()[:, None]
    solution = torch.linalg.lstsq(design * root, target * root, driver="gelsd").solution
    residual, rms = _residuals(target, design @ solution, weights)
    return AffineFit(solution[:-1], solution[-1], residual, rms)


def tied_encoder_fit(nu: Tensor, g: Tensor, decoder_coef: Tensor) -> AffineFit:
    """g ≈ Wᵀ ν + b with W from the decoder's fit (f = W ψ + a, i.e. coef = Wᵀ): only b free."""
    predicted_wo_b = nu.double() @ decoder_coef.double().T
    b = (g.double() - predicted_wo_b).mean(0)
    residual, rms = _residuals(
        g.double(), predicted_wo_b + b, torch.ones(len(g), dtype=torch.float64)
    )
    return AffineFit(decoder_coef.T.double(), b, residual, rms)


def check_overdetermined(features: Tensor, fit: str, rows: str) -> None:
    """One line when an affine fit on `features` [N, P] has no more rows than parameters per
    output (P + 1): its residual would be 0 whatever the model, a fit that says nothing."""
    n, parameters = features.shape[0], features.shape[1] + 1
    if n <= parameters:
        raise VaelabError(
            f"consistency: the affine fit of the {fit} has {parameters} parameters per output "
            f"but only {n} {rows}, so it would be exact whatever the model"
            + (f"; use more than {parameters} examples (--examples)" if rows == "examples" else "")
        )


@torch.no_grad()
def consistency(model, x: Tensor, max_codes: int = 4096) -> dict[str, float]:
    """Residuals of the nearest harmonium on data x [N, *data] and, when the codes are
    enumerable, the exact ELBO–log-likelihood gap (nats per example). The decoder is fitted
    on all codes, or on `max_codes` of them drawn uniformly when there are more. In
    evaluation mode a σ_x fitted to batches in training is frozen, so p(x|z) is an
    exponential family of z alone for every decoder likelihood that is one."""
    model.eval()
    if not model.likelihood.exponential_family:
        raise VaelabError(
            "consistency: the decoder likelihood is not an exponential family (it has no "
            "natural parameters), so there is no harmonium to compare it with"
        )
    if model.conditional:
        raise VaelabError(
            "consistency: evaluate a β-conditional model at one β (not supported yet)"
        )
    device = next(model.parameters()).device
    x = x.to(device)
    q = model.encode(x)
    enumerable = q.enumerable
    if enumerable:
        codes = q.enumerate_support()
        weights = model.prior.log_prob(codes).exp()
        if len(codes) > max_codes:  # the prior is uniform: a uniform subset of codes
            pick = torch.randperm(len(codes), generator=torch.Generator().manual_seed(0))
            pick = pick[:max_codes].to(device)
            codes, weights = codes[pick], weights[pick]
    else:  # codes drawn from the encoder: the aggregated posterior
        codes = q.draw(1)[0]
        weights = None
    psi = q.sufficient_statistics(codes).cpu()
    nu = model.likelihood.family.sufficient_statistics(x.flatten(1)).cpu()
    check_overdetermined(psi, "decoder", "latent codes" if enumerable else "examples")
    check_overdetermined(nu, "encoder", "examples")
    f = model.likelihood.natural_parameters(model.decode(codes))
    decoder = affine_fit(psi, f.cpu(), None if weights is None else weights.cpu())
    g = q.natural_parameters.cpu()
    encoder = affine_fit(nu, g)
    tied = tied_encoder_fit(nu, g, decoder.coef)
    result = {
        "decoder_residual": decoder.residual,
        "decoder_rms": decoder.rms,
        "encoder_residual": encoder.residual,
        "encoder_rms": encoder.rms,
        "tied_encoder_residual": tied.residual,
        "tied_encoder_rms": tied.rms,
        "examples": len(x),
        "codes": len(codes),
        "enumerated": enumerable,
    }
    if enumerable:
        elbo = -exact(model, x, torch.ones((), device=device), None).negative_elbo
        loglik = exact_log_likelihood(model, x)
        result |= {
            "elbo": float(elbo.mean()),
            "log_likelihood": float(loglik.mean()),
            "gap": float((loglik - elbo).mean()),
        }
    return result
