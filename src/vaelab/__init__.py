"""vaelab: variational autoencoders done carefully."""

from . import data, distributions, estimators, networks  # noqa: F401  (fill the registries)
from .config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from .errors import VaelabError
from .models import VAE, build_vae

__version__ = "0.1.0"


def __getattr__(name: str):
    """`vaelab.sweep` (the grid runner, `sweeps.sweep`), imported on first use."""
    if name == "sweep":
        from .sweeps import sweep

        return sweep
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


__all__ = [
    "VAE",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "VaelabError",
    "build_vae",
    "load_config",
    "sweep",
]
