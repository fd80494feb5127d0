"""IDX files (LeCun's MNIST format, gzip or raw) and the MNIST / Fashion-MNIST loaders.

IDX layout: magic = 0x00 0x00, a type code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64) and the number of dimensions; then each dimension as a big-endian
uint32; then the values, big-endian, row-major.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from .base import ImageData, first_place

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file, gzip-compressed or not (detected by magic bytes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{path}: corrupt IDX file (bad gzip data: {exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES or data[3] == 0:
        raise DataError(f"{path}: corrupt IDX file (bad magic number 0x{data[:4].hex()})")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: corrupt IDX file (header for {ndim} dimensions is cut off)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: corrupt IDX file ({len(data)} bytes, dims {list(dims)} need {expected})"
        )
    values = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def find_idx(folder: Path, stem: str) -> Path | None:
    """`stem`.gz or `stem` in `folder`, whichever exists."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def idx_folder(name: str, env: str, cfg: DataConfig, system_dir: str) -> Path:
    """The first folder holding all four IDX files; else one line listing every place looked.

    An explicit ``cfg.path`` is the only place looked at (no silent fallback); otherwise
    $`env`, $VAELAB_DATA/`name` and `system_dir` are tried in that order.
    """
    if cfg.path is not None:
        places = [("data.path", cfg.path)]
    else:
        data_root = os.environ.get("VAELAB_DATA")
        places = [
            (f"${env}", os.environ.get(env)),
            (f"$VAELAB_DATA/{name}", data_root and os.path.join(data_root, name)),
            (system_dir, system_dir),
        ]
    stems = [stem for pair in SPLIT_FILES.values() for stem in pair]

    def why_not(folder: Path) -> str | None:
        found = sum(find_idx(folder, stem) is not None for stem in stems)
        if found == len(stems):
            return None
        if folder.is_dir():
            return f"{found} of {len(stems)} files"
        return "a file, not a folder" if folder.exists() else "no such folder"

    folder, report = first_place(places, why_not)
    if folder is not None:
        return folder
    raise DataError(
        f"{name}: IDX files not found; looked in: {'; '.join(report)}. Provide a folder holding "
        f"{', '.join(s + '.gz' for s in stems)} (or un-gzipped) with data.path=FOLDER or "
        f"{env}=FOLDER"
    )


def load_idx_split(name: str, folder: Path, split: str) -> ImageData:
    """One split as uint8 images [N, 1, H, W] and int64 labels."""
    image_file, label_file = (find_idx(folder, stem) for stem in SPLIT_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{image_file}: expected uint8 images [N, H, W], got {images.dtype} "
            f"{list(images.shape)}"
        )
    if labels.ndim != 1:
        raise DataError(f"{label_file}: expected labels [N], got {list(labels.shape)}")
    if len(labels) != len(images):
        raise DataError(f"{name}: {len(images)} {split} images but {len(labels)} labels")
    return ImageData(
        name,
        torch.from_numpy(images[:, None]),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )


def load_idx_dataset(
    name: str, env: str, cfg: DataConfig, system_dir: str
) -> tuple[ImageData, ImageData]:
    folder = idx_folder(name, env, cfg, system_dir)
    return load_idx_split(name, folder, "train"), load_idx_split(name, folder, "test")


@DATASETS.register("mnist")
def load_mnist(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """MNIST (LeCun et al. 1998): 60,000 / 10,000 digits, 28×28 grey."""
    return load_idx_dataset("mnist", "VAELAB_MNIST", cfg, "/usr/share/datasets/mnist")


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 clothing images, 28×28 grey."""
    return load_idx_dataset(
        "fashion-mnist", "VAELAB_FASHION_MNIST", cfg, "/usr/share/datasets/fashion-mnist"
    )
