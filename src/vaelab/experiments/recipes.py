"""Every recipe module, imported to register it in EXPERIMENTS (`registry.py` imports this
module on the registry's first lookup)."""

from . import demo, disentanglement_study, gmm_toy, groundtruth, rd_study, semhash  # noqa: F401
