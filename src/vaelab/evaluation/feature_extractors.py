"""Choosing the feature network for FID/KID/MMD (nothing is ever downloaded; DESIGN §4):

- "inception" (`inception.InceptionV3Features`): pytorch-fid's FID Inception-v3, pool3
  features (2048-d), from a local weights file;
- "classifier" (`classifier_features.DatasetClassifierFeatures`): the 128-d penultimate layer
  of a small classifier trained on the data set's labels, cached by content.

Each registers itself in `FEATURE_EXTRACTORS`; `get_feature_extractor` is the one entry point.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.base import ImageData
from ..registry import FEATURE_EXTRACTORS
from ..training.distributed import resolve_device
from . import classifier_features, inception  # noqa: F401  (fill the registry)
from .inception import inception_weights_path
from .sample_quality import FeatureExtractor


def get_feature_extractor(
    dataset_train: ImageData,
    inception_weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    kind: str | None = None,
    progress: bool = True,
) -> FeatureExtractor:
    """The feature network for FID/KID/MMD on `dataset_train`'s domain.

    `kind` names one in `FEATURE_EXTRACTORS` ("inception", "classifier"); by default
    "inception" when a weights file is given (argument or ``$VAELAB_INCEPTION_WEIGHTS``),
    else "classifier" (trained on `dataset_train`, or loaded from the cache). `device` may be
    "auto" (CUDA when present).
    """
    weights = inception_weights_path(inception_weights)
    kind = kind or ("inception" if weights else "classifier")
    device = resolve_device(device) if device == "auto" else torch.device(device)
    return FEATURE_EXTRACTORS.get(kind)(dataset_train, weights, device, progress)
