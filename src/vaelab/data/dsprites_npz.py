"""dSprites from DeepMind's official file (Matthey et al. 2017), beside the procedural
`dsprites` (data/dsprites.py), which stays the default.

File: ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` with ``imgs`` uint8 [737280, 64, 64]
(0/1) and ``latents_classes`` int64 [737280, 6] (colour, shape, scale, orientation, posX,
posY). Read with ``np.load(allow_pickle=False)``; its ``metadata`` entry is a pickled object
and is never loaded. Colour never varies and is dropped, so the factors have the order, names
and sizes of data/dsprites.py (shape, scale, orientation, posX, posY): metrics treat both
alike, and the same `split_seed` gives the same split of the full set.

No published digest: the archive's CRC-32 checks and the arrays' shapes and ranges are what
is verified. Memory: all images take 3 GB as uint8 while they are split.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from . import dsprites, official
from .base import ImageData, random_split

NAME = "dsprites-npz"
ENV = "VAELAB_DSPRITES_NPZ"
FILE = official.OfficialFile(
    "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
    "https://github.com/deepmind/dsprites-dataset/raw/master/"
    "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
)
SIDE = dsprites.IMAGE_SIZE


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 0/1 images [N, 64, 64], factor classes int64 [N, 5]) of the official file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not {"imgs", "latents_classes"} <= set(npz.files):
                raise DataError(f"dsprites-npz: {path} lacks imgs or latents_classes")
            images, latents = npz["imgs"], npz["latents_classes"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # ValueError includes "Object arrays cannot be loaded when allow_pickle=False"
        raise DataError(f"dsprites-npz: {path} is not a readable .npz file ({exc})") from None
    n = len(images) if images.ndim else 0
    if images.dtype != np.uint8 or images.shape[1:] != (SIDE, SIDE) or n == 0:
        raise DataError(
            f"dsprites-npz: {path}: imgs are {images.dtype} {list(images.shape)}, not uint8 "
            "[N, 64, 64]"
        )
    if images.max() > 1:
        raise DataError(f"dsprites-npz: {path}: imgs hold {images.max()}, not only 0 and 1")
    if latents.shape != (n, 6) or not np.issubdtype(latents.dtype, np.integer):
        raise DataError(
            f"dsprites-npz: {path}: latents_classes are {latents.dtype} "
            f"{list(latents.shape)}, not integers [{n}, 6]"
        )
    if (latents[:, 0] != 0).any():
        raise DataError(f"dsprites-npz: {path}: the colour latent varies; not the official file")
    classes = latents[:, 1:].astype(np.int64)
    if (classes < 0).any() or (classes >= dsprites.FACTOR_SIZES).any():
        raise DataError(
            f"dsprites-npz: {path}: latents_classes out of range; sizes are {dsprites.FACTOR_SIZES}"
        )
    return images, classes


@DATASETS.register(NAME)
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """A seeded split as `dsprites` makes it: 10,000 test images (a tenth of a smaller file),
    the rest (or train_limit of them) for training; images 0/255, labels = shape."""
    official.native_size(NAME, cfg, SIDE)
    official.no_valid_split(NAME, cfg)

    path = official.locate_file(NAME, ENV, cfg, FILE)
    images, classes = read_npz(path)
    n = len(images)
    if n < 2:
        raise DataError(f"dsprites-npz: {path} holds one image; a train/test split needs two")
    train, test = random_split(n, official.held_out(n, dsprites.TEST_SIZE), cfg.split_seed)

    def take(index: np.ndarray) -> ImageData:
        picked = images[index][:, None]
        picked *= 255  # a copy: the ImageData convention, value/255
        return ImageData(
            NAME,
            torch.from_numpy(picked),
            labels=torch.from_numpy(classes[index, 0].copy()),
            factors=torch.from_numpy(classes[index]),
            factor_names=dsprites.FACTOR_NAMES,
        )

    return take(train[: cfg.train_limit]), take(test[: cfg.test_limit])
