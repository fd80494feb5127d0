"""CIFAR-10 (Krizhevsky 2009): 50,000 / 10,000 colour images, 32×32, ten classes — the
official *binary* version only.

Files: ``cifar-10-binary.tar.gz`` (read in place, nothing extracted) or its folder
``cifar-10-batches-bin/`` with ``data_batch_1.bin`` … ``data_batch_5.bin`` (train) and
``test_batch.bin``. Each record is one label byte (0–9) and 3,072 pixel bytes: the red, green
and blue 32×32 planes, row-major — so a batch reshapes to [N, 3, 32, 32] as it is.

The pickled Python version (``cifar-10-batches-py``, ``cifar-10-python.tar.gz``) is refused:
unpickling a file can run any code in it.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from . import official
from .base import ImageData

NAME = "cifar10"
ENV = "VAELAB_CIFAR10"
SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE
TRAIN_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST_FILE = "test_batch.bin"
BATCHES = (*TRAIN_FILES, TEST_FILE)
FOLDER = "cifar-10-batches-bin"
ARCHIVE = official.OfficialFile(
    "cifar-10-binary.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    170_052_171,
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)
PICKLED = ("cifar-10-batches-py", "cifar-10-python.tar.gz", "data_batch_1")


def refuse_pickled(path: Path) -> None:
    """One line when `path` is, or directly holds, the pickled Python version."""
    hits = [path] if path.name in PICKLED else [path / p for p in PICKLED if (path / p).exists()]
    if hits:
        raise DataError(
            f"cifar10: {hits[0]} is the pickled Python version of CIFAR-10, which vaelab "
            f"refuses because unpickling can run code; get the binary version {ARCHIVE.name} "
            f"from {ARCHIVE.url}"
        )


def source(place: Path) -> Path | str:
    """The archive or batch folder at `place`, or a few words on why there is none."""
    refuse_pickled(place)
    if place.is_file():
        return place if place.name.endswith((".tar.gz", ".tgz")) else "not a .tar.gz archive"
    if not place.is_dir():
        return "no such file or folder"
    if (place / ARCHIVE.name).is_file():
        return place / ARCHIVE.name
    folder = place / FOLDER if (place / FOLDER).is_dir() else place
    refuse_pickled(folder)
    missing = [f for f in BATCHES if not (folder / f).is_file()]
    if not missing:
        return folder
    if len(missing) < len(BATCHES):
        return f"{folder} lacks {', '.join(missing)}"
    return f"no {ARCHIVE.name} or {FOLDER}/"


def read_batches(src: Path, cfg: DataConfig) -> dict[str, bytes]:
    """The bytes of the six batch files, by file name, from the archive or the folder."""
    if src.is_dir():
        return {f: (src / f).read_bytes() for f in BATCHES}
    official.verify(src, ARCHIVE, NAME, cfg)
    try:
        with tarfile.open(src, "r:gz") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            if "data_batch_1" in members:
                refuse_pickled(src / "data_batch_1")
            missing = [f for f in BATCHES if f not in members]
            if missing:
                raise DataError(f"cifar10: {src} lacks {', '.join(missing)}; is it {ARCHIVE.name}?")
            batches = {f: archive.extractfile(members[f]).read() for f in BATCHES}
            while archive.fileobj.read(1 << 20):  # to the end, where gzip checks its CRC-32
                pass
            return batches
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cifar10: {src} is not a readable .tar.gz archive ({exc})") from None


def parse(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) of one batch file's bytes."""
    if len(data) == 0 or len(data) % RECORD:
        raise DataError(
            f"cifar10: {what} has {len(data):,} bytes, not a whole number of {RECORD}-byte "
            "records (truncated or not a CIFAR-10 binary batch)"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"cifar10: {what} has label {labels.max()}; CIFAR-10 labels are 0–9")
    return records[:, 1:].reshape(-1, 3, SIDE, SIDE), labels


def why_not(place: Path) -> str | None:
    found = source(place)
    return found if isinstance(found, str) else None


@DATASETS.register(NAME)
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """The five training batches in order, then the test batch, as uint8 images."""
    official.native_size(NAME, cfg, SIDE)
    official.no_valid_split(NAME, cfg)
    place = official.find(
        NAME, ENV, cfg, why_not, f"{ARCHIVE.name} (or its {FOLDER}/ folder)", [ARCHIVE]
    )
    batches = read_batches(source(place), cfg)
    parts = [parse(batches[f], f) for f in TRAIN_FILES]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_images, test_labels = parse(batches[TEST_FILE], TEST_FILE)

    def data(images: np.ndarray, labels: np.ndarray) -> ImageData:
        return ImageData(NAME, torch.from_numpy(images.copy()), torch.from_numpy(labels))

    return data(train_images, train_labels), data(test_images, test_labels)
