"""What the trainer trains on (`TrainingData`), the in-memory image data set loaders return,
checks on what loaders read, and the seeded split for data sets without an official test set."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError


class TrainingData:
    """Base class: the contract of the trainer's data.

    - `len(data)`, and `batch(index)` → what the model's forward takes (a tensor or a tuple
      of tensors) for the examples at `index` (a 1-D int64 tensor on `device`, or a slice);
    - `to(device)` → the same data on `device`; `device`: where its tensors (and the indices it
      takes) live; `nbytes`: what it holds in memory;
    - `batches(chunks)` → the batches of a sequence of index chunks, in order: by default
      `batch` of each as it is asked for (so a batch drawn with randomness, e.g. dynamic
      binarisation, draws after the trainer seeded the step); a streamed set reads ahead with
      `DataLoader` workers instead (`data/streaming.py`).
    """

    def batches(self, chunks):
        return (self.batch(index) for index in chunks)

    def placed(self, device: torch.device) -> TrainingData:
        """The data for training on `device`: moved there when it fits (on a GPU: at most
        half its free memory), else kept on the host with each batch copied over from
        pinned memory without blocking (`HostBatches`)."""
        if device.type != "cuda" or self.nbytes <= torch.cuda.mem_get_info(device)[0] // 2:
            return self.to(device)
        return HostBatches(self.to("cpu"), device)


class HostBatches(TrainingData):
    """Host data whose batches are copied to `target` (a GPU) as they are asked for."""

    def __init__(self, data: TrainingData, target: torch.device):
        self.data, self.target = data, target

    def __len__(self) -> int:
        return len(self.data)

    device = torch.device("cpu")  # indices stay on the host
    nbytes = property(lambda self: self.data.nbytes)

    def batch(self, index):
        return to_device(self.data.batch(index), self.target)

    def batches(self, chunks):
        return (to_device(b, self.target) for b in self.data.batches(chunks))

    def to(self, device) -> TrainingData:
        return self.data.to(device)


def to_device(batch, device: torch.device):
    """A batch (tensor or tuple of tensors) on `device`: from pinned memory, non-blocking."""
    if isinstance(batch, tuple):
        return tuple(to_device(t, device) for t in batch)
    if device.type == "cuda" and batch.device.type == "cpu":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


class ImageSet(TrainingData):
    """Base class of image data sets: `batch(index)` gives float32 images [B, C, H, W] in
    [0, 1]; `shape` (C, H, W), `labels`, `factors`, `factor_names`, `subset`, `limit`.
    `ImageData` holds them in memory, `data.streaming.StreamedImages` reads them from disk."""


@dataclass
class ImageData(ImageSet):
    """Images [N, C, H, W] with optional labels and ground-truth factors.

    `images` is stored compactly as uint8 (value/255) or as floats in [0, 1]; `batch` gives
    float32 in [0, 1] either way.
    """

    name: str
    images: Tensor
    labels: Tensor | None = None  # int64 [N]
    factors: Tensor | None = None  # int64 [N, K] factor class indices (e.g. dSprites)
    factor_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        check_images(self.images, self.name)
        for what, t in (("labels", self.labels), ("factors", self.factors)):
            if t is not None and len(t) != len(self.images):
                raise DataError(f"{self.name}: {len(t)} {what} for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Tensor | slice) -> Tensor:
        """Images at `index` as float32 in [0, 1]."""
        return to_float(rows(self.images, index))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def binary(self) -> bool:
        """Every pixel is 0 or 1 (uint8: 0 or 255)."""
        on = 255 if self.images.dtype == torch.uint8 else 1
        return bool(((self.images == 0) | (self.images == on)).all())

    def subset(self, index: Tensor | slice) -> ImageData:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return ImageData(
            self.name, self.images[index], pick(self.labels), pick(self.factors), self.factor_names
        )

    def limit(self, n: int | None) -> ImageData:
        """The first n examples (all if n is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def to(self, device: torch.device | str) -> ImageData:
        """A copy whose images live on `device` (labels and factors stay where they are)."""
        return dataclasses.replace(self, images=self.images.to(device))

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def nbytes(self) -> int:
        return self.images.nbytes


class TensorData(TrainingData):
    """Rows of one or more tensors of equal length, as the trainer's data: `batch(index)`
    gives the tensor (one) or the tuple of tensors (several) at `index`. For fits whose data
    is not a data set of images or documents: codes, (image, label) pairs, points."""

    def __init__(self, *tensors: Tensor):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise DataError(
                f"TensorData needs tensors of one length, got {[len(t) for t in tensors]}"
            )
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batch(self, index: Tensor | slice) -> Tensor | tuple[Tensor, ...]:
        picked = tuple(rows(t, index) for t in self.tensors)
        return picked[0] if len(picked) == 1 else picked

    def to(self, device: torch.device | str) -> TensorData:
        return TensorData(*(t.to(device) for t in self.tensors))

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def rows(t: Tensor, index: Tensor | slice) -> Tensor:
    """t[index]: a slice as a view, an index tensor by `index_select` (for uint8 images about
    twice as fast as advanced indexing, which is per-step cost)."""
    if isinstance(index, Tensor) and index.dim() == 1 and index.dtype in (torch.int64, torch.int32):
        return t.index_select(0, index)
    return t[index]


def to_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def check_images(images: Tensor, source: str) -> None:
    """Reject what would train silently wrong: wrong rank or type, NaN/inf, values off [0, 1]."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"{source}: expected images [N, C, H, W], got {shape}")
    if len(images) == 0:
        raise DataError(f"{source}: the data set is empty")
    if images[0].numel() == 0:
        raise DataError(
            f"{source}: the images are of zero size ({'×'.join(map(str, images.shape[1:]))})"
        )
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise DataError(f"{source}: images must be uint8 or floating point, got {images.dtype}")
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise DataError(f"{source}: {bad} images contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise DataError(f"{source}: pixel values must lie in [0, 1], found [{low:g}, {high:g}]")


def first_place(
    places: list[tuple[str, str | None]], why_not: Callable[[Path], str | None]
) -> tuple[Path | None, list[str]]:
    """The first of the labelled candidate places (label, path or None) that holds the data
    — `why_not(path)` is None when it does, else a few words on what is missing — or None;
    and the report of every place tried, for the error message."""
    report = []
    for label, place in places:
        if not place:
            report.append(f"{label} (not set)")
            continue
        path = Path(place).expanduser()
        missing = why_not(path)
        if missing is None:
            return path, report
        report.append(f"{label if label == str(path) else f'{label}={path}'} ({missing})")
    return None, report


def random_split(n: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) indices: test is the first `n_test` of a random permutation."""
    order = np.random.default_rng(seed).permutation(n)
    return order[n_test:], order[:n_test]


def cache_dir() -> Path:
    """Where generated or converted data is cached: $VAELAB_CACHE, else ~/.cache/vaelab."""
    root = os.environ.get("VAELAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vaelab"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
