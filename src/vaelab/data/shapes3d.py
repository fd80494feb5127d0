"""3D Shapes (Burgess & Kim 2018): 480,000 colour 64×64 renders of a shape in a room, every
combination of six factors exactly once.

File: ``3dshapes.h5`` (HDF5; needs h5py, the ``h5`` extra) with ``images`` uint8
[480000, 64, 64, 3] and ``labels`` float64 [480000, 6]: floor hue (10 values), wall hue (10),
object hue (10), scale (8), shape (4), orientation (15), in that column order. The file
stores factor *values*; a factor's class is the rank of its value among that factor's
distinct values in the file (as TensorFlow Datasets does), so every factor must show its full
number of values. In the official file the images follow the factor grid in order,
orientation fastest, which `Shapes3DGroundTruth` uses to draw an image for any factor row —
for the disentanglement metrics, as `ground_truth.DSpritesGroundTruth` does for dSprites.

No official split: a seeded random one (`base.random_split`), 10,000 test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from . import official
from .base import ImageData, random_split
from .ground_truth import GroundTruthData

NAME = "shapes3d"
ENV = "VAELAB_SHAPES3D"
FILE = official.OfficialFile(
    "3dshapes.h5",
    "https://storage.googleapis.com/3d-shapes/3dshapes.h5",
    267_573_662,
    "0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
)
FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 480,000
SIDE = 64
BLOCK = 4096  # images read at a time


def h5py_module():
    """h5py, or one line naming the extra that installs it."""
    try:
        import h5py
    except ModuleNotFoundError as exc:
        if exc.name != "h5py":
            raise
        raise DataError(
            "shapes3d: reading 3dshapes.h5 needs h5py; pip install 'vaelab[h5]'"
        ) from None
    return h5py


def open_file(path: Path):
    """The open HDF5 file, its ``images`` and ``labels`` checked for type and shape."""
    h5py = h5py_module()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"shapes3d: {path} is not a readable HDF5 file ({exc})") from None
    images, labels = f.get("images"), f.get("labels")
    if not isinstance(images, h5py.Dataset) or not isinstance(labels, h5py.Dataset):
        f.close()
        raise DataError(f"shapes3d: {path} lacks the datasets images and labels")
    n = images.shape[0] if images.ndim else 0
    if images.dtype != np.uint8 or images.shape[1:] != (SIDE, SIDE, 3):
        f.close()
        raise DataError(
            f"shapes3d: {path}: images are {images.dtype} {list(images.shape)}, not uint8 "
            "[N, 64, 64, 3]"
        )
    if labels.shape != (n, len(FACTOR_SIZES)):
        f.close()
        raise DataError(f"shapes3d: {path}: labels are {list(labels.shape)}, not [{n}, 6]")
    return f


def classes_of(values: np.ndarray, path: Path) -> np.ndarray:
    """Factor class indices int64 [N, 6] of factor values [N, 6]: each value's rank among its
    factor's distinct values, which must number as in the official grid."""
    classes = np.empty(values.shape, dtype=np.int64)
    for k, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        distinct, classes[:, k] = np.unique(values[:, k], return_inverse=True)
        if len(distinct) != size:
            raise DataError(
                f"shapes3d: {path}: factor {name} takes {len(distinct)} distinct values, the "
                f"official grid {size}; not the official labels"
            )
    return classes


def read_rows(images, index: np.ndarray) -> np.ndarray:
    """uint8 images [n, 3, 64, 64] at row `index` (any order), read in sorted blocks."""
    order = np.argsort(index, kind="stable")
    rows = index[order]
    out = np.empty((len(index), 3, SIDE, SIDE), dtype=np.uint8)
    for start in range(0, len(rows), BLOCK):
        chunk = rows[start : start + BLOCK]
        low, high = int(chunk[0]), int(chunk[-1]) + 1
        try:
            if high - low <= 2 * len(chunk):  # dense: one contiguous read
                block = images[low:high][chunk - low]
            else:
                unique, back = np.unique(chunk, return_inverse=True)
                block = images[unique][back]
        except (OSError, ValueError) as exc:
            raise DataError(f"shapes3d: {images.file.filename}: corrupt images ({exc})") from None
        out[order[start : start + BLOCK]] = block.transpose(0, 3, 1, 2)
    return out


@DATASETS.register(NAME)
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """A seeded split (`data.split_seed`): 10,000 test images (a tenth of a smaller file), the
    rest for training; only the first train_limit / test_limit of each are read."""
    official.native_size(NAME, cfg, SIDE)
    official.no_valid_split(NAME, cfg)
    path = official.locate_file(NAME, ENV, cfg, FILE)
    with open_file(path) as f:
        try:
            values = f["labels"][()]
        except (OSError, ValueError) as exc:
            raise DataError(f"shapes3d: {path}: corrupt labels ({exc})") from None
        classes = classes_of(values, path)
        n = len(classes)
        if n < 2:
            raise DataError(f"shapes3d: {path} holds {n} images; a train/test split needs two")
        train, test = random_split(n, official.held_out(n), cfg.split_seed)

        def take(index: np.ndarray) -> ImageData:
            return ImageData(
                NAME,
                torch.from_numpy(read_rows(f["images"], index)),
                factors=torch.from_numpy(classes[index]),
                factor_names=FACTOR_NAMES,
            )

        return take(train[: cfg.train_limit]), take(test[: cfg.test_limit])


class Shapes3DGroundTruth(GroundTruthData):
    """3D Shapes for the disentanglement metrics: the image of factor row c is row
    ``ravel_multi_index(c, FACTOR_SIZES)`` of the official file (checked against its labels
    when opened), as float32 [n, 3, 64, 64] in [0, 1]. Reads the file as it is asked."""

    factor_sizes = FACTOR_SIZES
    factor_names = FACTOR_NAMES

    def __init__(self, cfg: DataConfig | None = None, path: str | Path | None = None):
        cfg = cfg or DataConfig(name=NAME)
        self.path = Path(path) if path is not None else official.locate_file(NAME, ENV, cfg, FILE)
        with open_file(self.path) as f:
            values = f["labels"][()]
        if len(values) != NUM_IMAGES:
            raise DataError(
                f"shapes3d: {self.path} holds {len(values):,} images, not the full grid of "
                f"{NUM_IMAGES:,} the ground-truth sampling needs"
            )
        grid = np.stack(np.unravel_index(np.arange(NUM_IMAGES), FACTOR_SIZES), axis=-1)
        if not np.array_equal(classes_of(values, self.path), grid):
            raise DataError(f"shapes3d: {self.path}: images are not in the official grid order")
        self._file = None

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        if self._file is None:
            self._file = open_file(self.path)
        index = np.ravel_multi_index(tuple(np.asarray(factors).T), FACTOR_SIZES)
        return read_rows(self._file["images"], index).astype(np.float32) / np.float32(255.0)

    def close(self) -> None:
        """Close the file (it is opened again when next asked)."""
        if self._file is not None:
            self._file.close()
            self._file = None
