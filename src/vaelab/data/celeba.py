"""CelebA, aligned and cropped faces (Liu et al. 2015): 202,599 colour JPEGs of 178×218 px,
split by the official partition into 162,770 train / 19,867 valid / 19,962 test.

Files, in one folder: the images as ``img_align_celeba.zip`` (the official archive, read in
place) or its folder ``img_align_celeba/``; ``list_eval_partition.txt`` (per line: file name
and 0 train, 1 valid, 2 test); optionally ``list_attr_celeba.txt`` (the number of images,
the 40 attribute names, then per image its name and 40 values ±1), which gives
``factors`` [N, 40] as 0/1 with ``factor_names`` the attribute names, and with
``data.attribute = NAME`` the labels. ``data.test_split`` picks the test set: "test"
(default) or "valid".

Images: the literature's 64×64 — a centre square of ``data.crop`` = 148 px (left = (178 −
148) // 2 = 15, top = (218 − 148) // 2 = 35), then resized (bilinear, antialiased) to
``data.image_size`` (default 64). ``CelebADecoder`` decodes one image (a file of the folder
or a member of the zip) to uint8 [C, H, W]; the in-memory path calls it for every image up
front, the streamed one (`data.storage`) per batch in DataLoader workers (it pickles, and
each process reopens the zip).
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..errors import DataError, closest
from ..registry import DATASETS
from . import official
from .base import ImageData, ImageSet
from .streaming import StreamedImages, decode_all, keep_in_memory, with_decoded_cache

NAME = "celeba"
ENV = "VAELAB_CELEBA"
IMAGE_SIZE = 64
DRIVE = "https://drive.google.com/drive/folders/0B7EVK8r0v71pWEZsZE9oNnFzTm8"
ZIP = official.OfficialFile(
    "img_align_celeba.zip",
    DRIVE,
    1_443_490_838,
    "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
)
PARTITION = official.OfficialFile(
    "list_eval_partition.txt",
    DRIVE,
    2_836_386,
    "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
)
ATTRIBUTES = official.OfficialFile(
    "list_attr_celeba.txt",
    DRIVE,
    26_721_026,
    "f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0",
)
FOLDER = "img_align_celeba"
SPLITS = {"train": 0, "valid": 1, "test": 2}
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def centre_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre crop × crop square (crop 0: the whole image)."""
    if crop == 0:
        return 0, 0, width, height
    if crop > min(width, height):
        raise DataError(f"celeba: data.crop={crop} exceeds the {width}×{height} images")
    left, top = (width - crop) // 2, (height - crop) // 2
    return left, top, left + crop, top + crop


def decode(data: bytes, crop: int, size: int | None, channels: int, what: str) -> torch.Tensor:
    """One JPEG (its bytes) → uint8 [C, H, W]: centre crop, then resize to size × size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except IMAGE_ERRORS as exc:
        raise DataError(f"celeba: {what}: cannot read image ({exc})") from None
    image = image.crop(centre_box(*image.size, crop))
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image).reshape(image.size[1], image.size[0], channels)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


@dataclass
class CelebADecoder:
    """file name → uint8 [C, H, W], read from `source` (the image folder or the zip)."""

    source: Path
    crop: int = 148
    size: int | None = IMAGE_SIZE
    channels: int = 3
    _zip: zipfile.ZipFile | None = field(default=None, init=False, repr=False)
    _members: dict[str, str] | None = field(default=None, init=False, repr=False)
    _pid: int = field(default=-1, init=False, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_members": None, "_pid": -1}

    def members(self) -> dict[str, str]:
        """File name → its member name in the zip (or its path in the folder)."""
        if self.source.is_dir():
            return {p.name: str(p) for p in self.source.iterdir() if p.suffix == ".jpg"}
        self._open()
        return self._members

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():  # a forked worker opens its own
            try:
                self._zip = zipfile.ZipFile(self.source)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"celeba: {self.source} is not a readable zip ({exc})") from None
            self._members = {Path(m).name: m for m in self._zip.namelist() if m.endswith(".jpg")}
            self._pid = os.getpid()
        return self._zip

    def read(self, name: str) -> bytes:
        if self.source.is_dir():
            try:
                return (self.source / name).read_bytes()
            except OSError as exc:
                raise DataError(f"celeba: cannot read {self.source / name} ({exc})") from None
        archive = self._open()
        try:
            return archive.read(self._members[name])
        except KeyError:
            raise DataError(f"celeba: {self.source} has no image {name}") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # bad CRC, cut off
            raise DataError(f"celeba: {self.source}: corrupt member {name} ({exc})") from None

    def __call__(self, name: str) -> torch.Tensor:
        return decode(self.read(name), self.crop, self.size, self.channels, name)


def read_text(path: Path, official_file: official.OfficialFile, cfg: DataConfig) -> list[str]:
    official.verify(path, official_file, NAME, cfg)
    try:
        return path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"celeba: cannot read {path} ({exc})") from None


def read_partition(path: Path, cfg: DataConfig) -> dict[str, list[str]]:
    """Split name → its file names, in the file's order."""
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    by_code = {str(code): s for s, code in SPLITS.items()}
    for number, line in enumerate(read_text(path, PARTITION, cfg), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in by_code:
            raise DataError(
                f"celeba: {path}: line {number} is not 'FILE 0|1|2' ({line[:40]!r}); is it "
                f"{PARTITION.name}?"
            )
        splits[by_code[parts[1]]].append(parts[0])
    if not splits["train"] or not splits[cfg.test_split]:
        raise DataError(f"celeba: {path} lists no train or no {cfg.test_split} images")
    return splits


def read_attributes(path: Path, cfg: DataConfig) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """(the 40 attribute names, file name → 0/1 int64 [40])."""
    lines = read_text(path, ATTRIBUTES, cfg)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(
            f"celeba: {path} does not start with the image count; is it {ATTRIBUTES.name}?"
        )
    names = tuple(lines[1].split())
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != int(lines[0]):
        raise DataError(f"celeba: {path} announces {int(lines[0])} images but lists {len(rows)}")
    values: dict[str, np.ndarray] = {}
    for number, row in enumerate(rows, 3):
        if len(row) != len(names) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise DataError(
                f"celeba: {path}: line {number} is not a file name and {len(names)} values ±1"
            )
        values[row[0]] = (np.array(row[1:], dtype=np.int64) > 0).astype(np.int64)
    return names, values


def images_at(place: Path) -> Path | None:
    """The zip (preferred) or image folder in folder `place`."""
    for candidate in (place / ZIP.name, place / FOLDER):
        if candidate.is_file() or candidate.is_dir():
            return candidate
    return None


def why_not(place: Path) -> str | None:
    if not place.is_dir():
        return "a file, not a folder" if place.exists() else "no such folder"
    if images_at(place) is None:
        return f"no {ZIP.name} or {FOLDER}/"
    return None if (place / PARTITION.name).is_file() else f"no {PARTITION.name}"


@DATASETS.register(NAME)
def load(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """Train (partition 0) and test (partition 2, or 1): decoded into memory as uint8, or
    streamed (decoded per batch by `data.workers` processes) when `data.storage` says so —
    "auto" streams a set larger than a quarter of the free memory (all of CelebA at 64×64 is
    2.5 GB). Only the first train_limit / test_limit of each are used."""
    if cfg.channels not in (None, 1, 3):
        raise DataError(f"celeba: channels must be 1 (grey) or 3 (RGB), got {cfg.channels}")
    if cfg.download:
        raise DataError(
            f"celeba: the official files are on Google Drive ({DRIVE}), which needs a browser; "
            f"put {ZIP.name} and {PARTITION.name} (and {ATTRIBUTES.name}) into a folder and "
            f"set data.path=FOLDER or {ENV}=FOLDER"
        )
    folder = official.find(
        NAME, ENV, cfg, why_not, f"{ZIP.name} (or {FOLDER}/) and {PARTITION.name} from {DRIVE}"
    )
    source = images_at(folder)
    if source.is_file():
        official.verify(source, ZIP, NAME, cfg)
    splits = read_partition(folder / PARTITION.name, cfg)
    names, attributes = (), None
    if (folder / ATTRIBUTES.name).is_file():
        names, attributes = read_attributes(folder / ATTRIBUTES.name, cfg)
    if cfg.attribute is not None and cfg.attribute not in names:
        if attributes is None:
            raise DataError(f"celeba: data.attribute needs {ATTRIBUTES.name} in {folder}")
        raise DataError(
            f"celeba: unknown attribute {cfg.attribute!r}{closest(cfg.attribute, names)}; "
            f"known: {', '.join(names)}"
        )
    decoder = CelebADecoder(source, cfg.crop, cfg.image_size or IMAGE_SIZE, cfg.channels or 3)
    present = decoder.members()
    wanted = {
        "train": splits["train"][: cfg.train_limit],
        "test": splits[cfg.test_split][: cfg.test_limit],
    }
    for split, files in wanted.items():
        missing = [f for f in files if f not in present]
        if missing:
            raise DataError(
                f"celeba: {source} lacks {len(missing)} of the {len(files)} {split} images "
                f"of {PARTITION.name} (first: {missing[0]})"
            )

    def take(files: list[str]) -> ImageSet:
        if attributes is not None and any(f not in attributes for f in files):
            missing = next(f for f in files if f not in attributes)
            raise DataError(f"celeba: {ATTRIBUTES.name} has no row for {missing}")
        factors = labels = None
        if attributes is not None:
            factors = torch.from_numpy(np.stack([attributes[f] for f in files]))
        if cfg.attribute is not None:
            labels = factors[:, names.index(cfg.attribute)].clone()
        first = decoder(files[0])
        if not keep_in_memory(cfg, len(files), first.shape):
            streamed = StreamedImages(
                NAME, files, decoder, tuple(first.shape), labels, factors, names, cfg.workers
            )
            return with_decoded_cache(streamed, cfg.decoded_cache)
        images = decode_all(files, decoder, first.shape, "CelebA")
        return ImageData(NAME, images, labels=labels, factors=factors, factor_names=names)

    return take(wanted["train"]), take(wanted["test"])
