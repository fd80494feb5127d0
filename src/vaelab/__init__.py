"""vaelab: variational autoencoders done carefully.

Importing the package is light (no torch): the names below are imported on first use, and
each registry imports the modules that fill it on its first lookup (`registry.py`), so the
command line answers `--help` or a bad config at once.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {  # public name → the module that defines it
    "Config": "config",
    "DataConfig": "config",
    "ModelConfig": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "VaelabError": "errors",
    "VAE": "models",
    "build_vae": "models",
    "sweep": "sweeps",
    "sample": "evaluation.inspection",
    "traverse": "evaluation.inspection",
    "traverse_betas": "evaluation.inspection",
    "interpolate": "evaluation.inspection",
}


def __getattr__(name: str):
    """The public names (`vaelab.Config`, `vaelab.sweep`, …), imported on first use."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


__all__ = sorted(_LAZY)
