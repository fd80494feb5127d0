"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download): a tiny real set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from ..config import DataConfig
from ..registry import DATASETS
from .base import ImageData, random_split

TEST_SIZE = 297  # leaves 1,500 training images


@DATASETS.register("digits")
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """Pixels 0..16 scaled to float32 [0, 1], [N, 1, 8, 8]; a seeded 1500 / 297 split."""
    bunch = load_digits()
    data = ImageData(
        "digits",
        torch.from_numpy((bunch.images / 16.0).astype(np.float32)[:, None]),
        labels=torch.from_numpy(bunch.target.astype(np.int64)),
    )
    train, test = random_split(len(data), TEST_SIZE, cfg.split_seed)
    return data.subset(torch.from_numpy(train)), data.subset(torch.from_numpy(test))
