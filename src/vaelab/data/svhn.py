"""SVHN, cropped digits (Netzer et al. 2011): 73,257 train / 26,032 test colour images, 32×32,
and 531,131 easier extra training images (``data.svhn_extra = true`` adds them).

Files: ``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat``) in one folder, MATLAB
files read with ``scipy.io.loadmat`` (no code is run): ``X`` uint8 [32, 32, 3, N], ``y``
[N, 1] with labels 1–10, where 10 stands for the digit 0 — labels here are the digits, 0–9.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import scipy.io
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from . import official
from .base import ImageData

NAME = "svhn"
ENV = "VAELAB_SVHN"
SIDE = 32
URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {
    "train": official.OfficialFile(
        "train_32x32.mat",
        URL + "train_32x32.mat",
        182_040_794,
        "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
    ),
    "test": official.OfficialFile(
        "test_32x32.mat",
        URL + "test_32x32.mat",
        64_275_384,
        "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
    ),
    "extra": official.OfficialFile(
        "extra_32x32.mat",
        URL + "extra_32x32.mat",
        1_329_278_602,
        "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3",
    ),
}
MAT_ERRORS = (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, zlib.error)


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 3, 32, 32], int64 digits [N]) of one official .mat file."""
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (*MAT_ERRORS, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"svhn: {path} is not a readable MATLAB file ({exc})") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise DataError(f"svhn: {path} lacks the variables X and y; is it an SVHN .mat file?")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (SIDE, SIDE, 3):
        raise DataError(f"svhn: {path}: X is {x.dtype} {list(x.shape)}, not uint8 [32, 32, 3, N]")
    y = np.asarray(y).reshape(-1)
    if len(y) != x.shape[3]:
        raise DataError(f"svhn: {path}: {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"svhn: {path}: labels span [{y.min()}, {y.max()}], not 1–10")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y.astype(np.int64) % 10


@DATASETS.register(NAME)
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """train (+ extra) and test as uint8 images with digit labels."""
    official.native_size(NAME, cfg, SIDE)
    official.no_valid_split(NAME, cfg)
    parts = ["train", "test", "extra"] if cfg.svhn_extra else ["train", "test"]
    wanted = [FILES[p] for p in parts]

    def why_not(place: Path) -> str | None:
        if not place.is_dir():
            return "a file, not a folder" if place.exists() else "no such folder"
        missing = [f.name for f in wanted if not (place / f.name).is_file()]
        return f"no {', '.join(missing)}" if missing else None

    folder = official.find(NAME, ENV, cfg, why_not, " and ".join(f.name for f in wanted), wanted)
    arrays = {}
    for part in parts:
        official.verify(folder / FILES[part].name, FILES[part], NAME, cfg)
        arrays[part] = read_mat(folder / FILES[part].name)
    train = [arrays[p] for p in parts if p != "test"]
    images, labels = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    return (
        ImageData(NAME, torch.from_numpy(images), torch.from_numpy(labels)),
        ImageData(NAME, torch.from_numpy(arrays["test"][0]), torch.from_numpy(arrays["test"][1])),
    )
