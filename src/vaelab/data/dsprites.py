"""Procedural dSprites (Matthey et al. 2017): 737,280 binary 64×64 images of 2-D shapes.

The factor grid and its order are the original ones: color (1 value, omitted below since it
never varies) × shape 3 (square, ellipse, heart) × scale 6 (linspace(0.5, 1, 6)) ×
orientation 40 (linspace(0, 2π, 40)) × posX 32 × posY 32 (linspace(0, 1, 32)), with posY
varying fastest, so image ``index_of(classes)`` has factor classes ``classes``.

Rendering conventions (``render``): a pixel is on when its centre lies inside the shape.
- Axes follow array indexing: x = column (left → right), y = row (top → bottom). posX moves
  the shape right, posY moves it *down*; orientation θ turns it counter-clockwise as seen on
  screen, about the shape's centre.
- Size: scale 1 draws a square of side 18 px (≈ 0.28 of the image side), an ellipse of
  21.6 × 10.8 px and a heart of about 19 × 19 px; scale s multiplies these by s.
- Position: the shape's centre moves from pixel coordinate 14 to 50 (in 36/31 px steps), so
  every shape stays wholly inside the image at every scale and orientation.
Images are uint8 with values 0 and 255 (the ``ImageData`` convention: value/255).

The full set is generated once and cached as packed bits in ``cache_dir()/dsprites-v1.npy``
(368 MiB), then memory-mapped. Bump the file's version whenever the drawing changes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from .base import ImageData, cache_dir, random_split

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_VALUES: tuple[np.ndarray, ...] = (
    np.arange(1.0, 4.0),  # shape 1, 2, 3 as in the original latents_values
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * np.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
FACTOR_SIZES = tuple(len(v) for v in FACTOR_VALUES)  # (3, 6, 40, 32, 32)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE = 64
TEST_SIZE = 10_000

UNIT = 9.0  # px: half the side of the scale-1 square; every shape fits in radius √2·UNIT
MARGIN = 14.0  # px: the shape centre stays within [MARGIN, IMAGE_SIZE - MARGIN]
_REACH = np.sqrt(2.0) * UNIT  # largest distance of an "on" pixel from the centre, scale 1
_WINDOW = int(np.ceil(2 * _REACH)) + 2  # side of the square evaluated around each centre

CACHE_NAME = "dsprites-v1.npy"
_CHUNK = 16_384  # images rendered per step when generating the cache


# --- the factor grid -----------------------------------------------------------------------


def index_of(classes: np.ndarray) -> np.ndarray:
    """Mixed-radix index (posY fastest) of factor class rows [n, 5] → int64 [n]."""
    classes = _check_classes(classes)
    return np.ravel_multi_index(tuple(classes.T), FACTOR_SIZES).astype(np.int64)


def classes_of(index: np.ndarray) -> np.ndarray:
    """Factor class rows int64 [n, 5] of image indices [n] (the inverse of ``index_of``)."""
    index = np.asarray(index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= NUM_IMAGES):
        raise DataError(f"dsprites: image index out of range [0, {NUM_IMAGES})")
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=-1).astype(np.int64)


def _check_classes(classes: np.ndarray) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.ndim != 2 or classes.shape[1] != len(FACTOR_SIZES):
        raise DataError(f"dsprites: factor classes must be [n, 5], got {list(classes.shape)}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise DataError(f"dsprites: factor classes must be integers, got {classes.dtype}")
    if len(classes) and ((classes < 0).any() or (classes >= FACTOR_SIZES).any()):
        raise DataError(f"dsprites: factor classes out of range; sizes are {FACTOR_SIZES}")
    return classes.astype(np.int64, copy=False)


# --- rendering -----------------------------------------------------------------------------


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 1.2) ** 2 + (v / 0.6) ** 2 <= 1.0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The heart curve (x² + y² − 1)³ = x² y³, point down, bounding box centred on 0."""
    x, y = 1.1 * u, 1.1 * v + 0.125
    r = x * x + y * y - 1.0
    return r * r * r <= x * x * y * y * y


_INSIDE: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (_square, _ellipse, _heart)


def render(classes: np.ndarray) -> np.ndarray:
    """Draw the images of factor class rows [n, 5] → uint8 [n, 1, 64, 64] with values 0/255.

    Each shape's implicit inside-test is evaluated at the pixel centres of a window around the
    shape, mapped to shape coordinates by inverse translation, rotation and scaling.
    """
    classes = _check_classes(classes)
    n = len(classes)
    shape, scale, angle, pos_x, pos_y = (
        values[c] for values, c in zip(FACTOR_VALUES, classes.T, strict=True)
    )
    span = IMAGE_SIZE - 2 * MARGIN
    cx, cy = MARGIN + span * pos_x, MARGIN + span * pos_y
    start_x = np.clip(np.floor(cx - _REACH), 0, IMAGE_SIZE - _WINDOW).astype(np.int64)
    start_y = np.clip(np.floor(cy - _REACH), 0, IMAGE_SIZE - _WINDOW).astype(np.int64)
    offsets = np.arange(_WINDOW)
    # pixel-centre offsets from the shape centre, in shape units (v points up on screen)
    inv = 1.0 / (UNIT * scale)
    dx = ((start_x[:, None] + offsets + 0.5 - cx[:, None]) * inv[:, None]).astype(np.float32)
    dv = ((cy[:, None] - start_y[:, None] - offsets - 0.5) * inv[:, None]).astype(np.float32)
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)

    window = np.empty((n, _WINDOW, _WINDOW), dtype=bool)  # [image, row, column]
    for k, inside in enumerate(_INSIDE):
        pick = np.flatnonzero(shape == k + 1)
        if len(pick) == 0:
            continue
        c, s, x, v = cos[pick, None], sin[pick, None], dx[pick], dv[pick]
        u_rot = (c * x)[:, None, :] + (s * v)[:, :, None]  # rotate by −θ
        v_rot = (c * v)[:, :, None] - (s * x)[:, None, :]
        window[pick] = inside(u_rot, v_rot)

    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    rows = start_y[:, None, None] + offsets[None, :, None]
    cols = start_x[:, None, None] + offsets[None, None, :]
    images[np.arange(n)[:, None, None], rows, cols] = window.view(np.uint8) * np.uint8(255)
    return images[:, None]


# --- the cached full data set --------------------------------------------------------------


def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def generate(path: Path, progress: bool = True) -> None:
    """Render all images in index order into `path` as packed bits [N, 512], atomically."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(NUM_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8)
        )
        with tqdm(total=NUM_IMAGES, desc="dSprites", unit="img", disable=not progress) as bar:
            for start in range(0, NUM_IMAGES, _CHUNK):
                stop = min(start + _CHUNK, NUM_IMAGES)
                images = render(classes_of(np.arange(start, stop)))
                # packbits sets a bit for every non-zero byte
                out[start:stop] = np.packbits(images.reshape(stop - start, -1), axis=1)
                bar.update(stop - start)
        out.flush()
        del out
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def packed_images() -> np.ndarray:
    """All images as memory-mapped packed bits [N, 512], generating the cache if needed."""
    path = cache_path()
    if not path.exists():
        generate(path)
    try:
        bits = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(
            f"dsprites: unreadable cache {path} ({exc}); delete it to regenerate"
        ) from None
    expected = (NUM_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8)
    if not isinstance(bits, np.ndarray) or bits.shape != expected or bits.dtype != np.uint8:
        raise DataError(
            f"dsprites: cache {path} is not a dSprites cache (wrong type or shape); "
            "delete it to regenerate"
        )
    return bits


def _unpack(bits: np.ndarray) -> np.ndarray:
    images = np.unpackbits(bits, axis=1)
    images *= 255
    return images.reshape(len(bits), 1, IMAGE_SIZE, IMAGE_SIZE)


def images_at(classes: np.ndarray) -> np.ndarray:
    """Cached images (uint8 0/255 [n, 1, 64, 64]) of factor class rows [n, 5]."""
    return _unpack(packed_images()[index_of(classes)])


@DATASETS.register("dsprites")
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """A seeded random split: test = 10,000 images (or test_limit), train = the rest (or
    train_limit of them); the two never overlap, whatever the limits.

    Memory: all 727,280 training images take 2.9 GB as uint8; use train_limit to take fewer.
    """
    train, test = random_split(NUM_IMAGES, TEST_SIZE, cfg.split_seed)
    bits = packed_images()

    def take(index: np.ndarray) -> ImageData:
        classes = classes_of(index)
        return ImageData(
            "dsprites",
            torch.from_numpy(_unpack(bits[index])),
            labels=torch.from_numpy(classes[:, 0].copy()),
            factors=torch.from_numpy(classes),
            factor_names=FACTOR_NAMES,
        )

    return take(train[: cfg.train_limit]), take(test[: cfg.test_limit])
