"""Data sets, registered by name in ``DATASETS``, and ``load_data`` that every run uses."""

from __future__ import annotations

import dataclasses

import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from . import (  # noqa: F401  (fill the registry)
    binarized_mnist,
    bow,
    celeba,
    cifar10,
    digits,
    dsprites,
    dsprites_npz,
    idx,
    image_folder,
    shapes3d,
    svhn,
)
from .base import ImageData, ImageSet, TensorData, cache_dir

__all__ = ["ImageData", "TensorData", "cache_dir", "load_data"]


def load_data(cfg: DataConfig):
    """(train, test) of the data set `cfg.name`, limited, optionally binarised, and checked.
    Image data sets give ImageData; text corpora give BowData (word counts)."""
    train, test = DATASETS.get(cfg.name)(cfg)
    train, test = train.limit(cfg.train_limit), test.limit(cfg.test_limit)
    if cfg.binarize:
        if not isinstance(train, ImageSet):
            raise DataError(f"data.binarize: {cfg.name} is not an image data set")
        if train.binary:  # thresholding would freeze a dynamic binarisation into a fixed one
            raise DataError(f"data.binarize: {cfg.name} is binary already; drop data.binarize")
        if not isinstance(train, ImageData):
            raise DataError(
                f"data.binarize: {cfg.name} is streamed from disk and thresholds only in "
                "memory; set data.storage = 'memory'"
            )
        train, test = binarize(train), binarize(test)
    # each ImageData checked its images (rank, NaN, range) when it was made
    if train.shape != test.shape:
        raise DataError(
            f"{cfg.name}: train images are {list(train.shape)} but test images {list(test.shape)}"
        )
    return train, test


def binarize(data: ImageData) -> ImageData:
    """Pixels above 0.5 → 255, others → 0 (uint8), e.g. for a Bernoulli decoder."""
    on = data.images > (0.5 if data.images.is_floating_point() else 127)  # uint8: v/255 > 0.5
    return dataclasses.replace(data, images=on.to(torch.uint8).mul_(255))
