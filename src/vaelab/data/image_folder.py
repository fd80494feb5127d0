"""A folder of image files (PNG, JPEG, BMP, … anything Pillow reads) as an image data set.

Layout: FOLDER/train/ and FOLDER/test/ when both exist, else FOLDER itself split 90/10 with
`split_seed`. Inside a split, images may sit in class folders (FOLDER/train/cat/1.png); the
sorted class-folder names then give the labels. Images are resized to `image_size` × `image_size`
when it is set (required when their sizes differ) and converted to `channels`: 1 (grey) or
3 (RGB); by default 3 if any image is in a colour mode, else 1. Stored as uint8 in memory, or
streamed from the files when `data.storage` says so (`data/streaming.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from .base import ImageData, random_split
from .streaming import StreamedImages, decode_all, keep_in_memory, with_decoded_cache

GREY_MODES = {"1", "L", "LA"}
COLOUR_MODES = {"P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
TEST_FRACTION = 0.1


def image_files(folder: Path) -> list[Path]:
    """Files under `folder` (recursively) whose extension Pillow knows, sorted; no hidden ones."""
    known = Image.registered_extensions()
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in known
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def class_of(file: Path, folder: Path) -> str | None:
    """The class-folder name of `file` (its first folder below `folder`), None when loose."""
    parts = file.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else None


def read_image(file: Path, size: int | None) -> Image.Image:
    """The image in mode L or RGB, resized to size × size when `size` is set."""
    try:
        with Image.open(file) as image:
            image.load()
            if image.mode not in GREY_MODES | COLOUR_MODES:
                raise DataError(
                    f"{file}: image mode {image.mode} is not supported; use 8 bits per channel"
                )
            if image.mode not in ("L", "RGB"):
                image = image.convert("L" if image.mode in GREY_MODES else "RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{file}: cannot read image ({exc})") from None
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def scan(folder: Path) -> tuple[list[Path], list[str | None]]:
    """The image files under `folder` and their class-folder names."""
    files = image_files(folder)
    if not files:
        raise DataError(f"image-folder: no image files in {folder}")
    return files, [class_of(f, folder) for f in files]


def image_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """uint8 [C, H, W] of one image in `channels` (1: grey, 3: RGB); converted (a copy) only
    when its mode differs."""
    mode = "L" if channels == 1 else "RGB"
    array = np.asarray(image if image.mode == mode else image.convert(mode))
    return torch.from_numpy(
        array.reshape(image.size[1], image.size[0], -1).transpose(2, 0, 1).copy()
    )


def header(file: Path) -> tuple[tuple[int, int], str]:
    """(size, mode) of an image file from its header, without decoding it."""
    try:
        with Image.open(file) as image:
            size, mode = image.size, image.mode
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{file}: cannot read image ({exc})") from None
    if mode not in GREY_MODES | COLOUR_MODES:
        raise DataError(f"{file}: image mode {mode} is not supported; use 8 bits per channel")
    return size, mode


@dataclass(frozen=True)
class FileDecoder:
    """file → uint8 [C, H, W], resized to `size` (a picklable callable for DataLoader workers)."""

    size: int | None
    channels: int

    def __call__(self, file: Path) -> torch.Tensor:
        return image_tensor(read_image(file, self.size), self.channels)


@DATASETS.register("image-folder")
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """Train and test sets read from the image files under ``cfg.path``."""
    if cfg.path is None:
        raise DataError("image-folder: set data.path to the folder holding the images")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"image-folder: {root} is not a folder")
    if cfg.channels not in (None, 1, 3):
        raise DataError(f"image-folder: channels must be 1 (grey) or 3 (RGB), got {cfg.channels}")

    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    splits = [scan(root / "train"), scan(root / "test")] if has_splits else [scan(root)]
    files = [f for split_files, _ in splits for f in split_files]
    classes = [c for _, split_classes in splits for c in split_classes]
    if None in classes and any(c is not None for c in classes):
        raise DataError(f"image-folder: {root} mixes loose images with class folders")
    names = {name: k for k, name in enumerate(sorted(set(classes) - {None}))}
    labels = torch.tensor([names[c] for c in classes]) if names else None
    headers = [header(f) for f in files]  # sizes and modes, nothing decoded
    sizes = {size for size, _ in headers} if cfg.image_size is None else set()
    if len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise DataError(
            f"image-folder: images differ in size ({w1}×{h1}, {w2}×{h2}, …); set data.image_size"
        )
    channels = cfg.channels or (3 if any(mode in COLOUR_MODES for _, mode in headers) else 1)
    width, height = (cfg.image_size,) * 2 if cfg.image_size else next(iter(sizes))
    shape = (channels, height, width)
    decode = FileDecoder(cfg.image_size, channels)
    if keep_in_memory(cfg, len(files), shape):
        data = ImageData("image-folder", decode_all(files, decode, shape, "images"), labels=labels)
    else:
        data = StreamedImages("image-folder", files, decode, shape, labels, workers=cfg.workers)
        data = with_decoded_cache(data, cfg.decoded_cache)

    if has_splits:
        n_train = len(splits[0][0])
        return data.subset(slice(0, n_train)), data.subset(slice(n_train, len(data)))
    if len(data) < 2:
        raise DataError(f"image-folder: {root} holds one image; a train/test split needs two")
    n_test = max(1, math.floor(TEST_FRACTION * len(data)))
    train, test = random_split(len(data), n_test, cfg.split_seed)
    return data.subset(torch.from_numpy(train)), data.subset(torch.from_numpy(test))
