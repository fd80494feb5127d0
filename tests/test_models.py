"""Networks and the assembled VAE: shapes for every supported image size and σ mode."""

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.models import build_vae
from vaelab.registry import SIGMA_MODES

IMAGE_SHAPES = {
    (1, 8, 8): [16, 32],
    (1, 28, 28): [32, 64],
    (1, 64, 64): [32, 32, 64, 64],
    (3, 64, 64): [32, 32, 64, 64],
}


@pytest.mark.parametrize("shape", list(IMAGE_SHAPES))
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_networks_map_images_to_codes_and_back(shape, network):
    cfg = ModelConfig(network=network, channels=IMAGE_SHAPES[shape], hidden=[32], latent_dim=5)
    model = build_vae(cfg, shape)
    x = torch.rand(3, *shape)
    assert model.encode(x).mean.shape == (3, 5)
    assert model.reconstruct(x).shape == x.shape
    assert model.generate(2).shape == (2, *shape)


@pytest.mark.parametrize("mode", SIGMA_MODES.names())
@pytest.mark.parametrize("samples", [1, 3])
def test_every_sigma_mode_gives_finite_per_example_terms_and_gradients(mode, samples):
    conditioning = "film" if SIGMA_MODES.get(mode).needs_condition else None
    cfg = ModelConfig(
        network="conv",
        hidden=[16],
        latent_dim=3,
        sigma_mode=mode,
        samples=samples,
        conditioning=conditioning,
    )
    model = build_vae(cfg, (1, 8, 8))
    terms = model(torch.rand(4, 1, 8, 8))
    for t in (terms.loss, terms.distortion, terms.rate, terms.mse):
        assert t.shape == (4,) and torch.isfinite(t).all()
    terms.loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_beta_weights_the_rate_only():
    model = build_vae(ModelConfig(hidden=[16], latent_dim=3, beta=1.0), (1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(1)
    base = model(x)
    torch.manual_seed(1)
    scaled = model(x, beta=7.0)
    torch.testing.assert_close(scaled.distortion, base.distortion)
    torch.testing.assert_close(scaled.loss, base.distortion + 7.0 * base.rate)
