"""Binary MNIST, the likelihood benchmark of IWAE (Burda et al. 2016) and MR-VAE: 28×28
images of 0/1 pixels, in one of two forms, by what the folder holds.

- Dynamic binarisation (MNIST's four IDX files, read by data/idx.py): every training batch
  is drawn afresh, x ~ Bernoulli(grey intensity), with torch's default generator of the
  data's device — the generator the trainer seeds with (seed, step) before it asks for the
  step's batch, so every epoch sees a new binarisation and a resumed run draws exactly the
  ones an uninterrupted run would. The 10,000 test images are binarised once, by a generator
  seeded with `TEST_SEED`, the same on every machine.
- Fixed binarisation (Larochelle & Murray 2011; ``binarized_mnist_{train,valid,test}.amat``
  text files, one image per line as 784 space-separated 0/1 values): 50,000 train and
  10,000 test images (``data.test_split = "valid"``: the 10,000 validation images instead).
  Used when the folder holds them, even if it holds the IDX files too. No labels.

Places: ``data.path``, else $VAELAB_BINARIZED_MNIST, $VAELAB_DATA/binarized-mnist, the
download folder, then MNIST's ($VAELAB_MNIST, $VAELAB_DATA/mnist, /usr/share/datasets/mnist).
``data.download = true`` fetches MNIST's IDX files (from the mirror TensorFlow Datasets uses).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from . import idx, official
from .base import ImageData, to_float

NAME = "binarized-mnist"
ENV = "VAELAB_BINARIZED_MNIST"
SIDE = 28
PIXELS = SIDE * SIDE
TEST_SEED = 0  # the fixed binarisation of the dynamic form's test set
AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
AMAT = {
    split: official.OfficialFile(
        f"binarized_mnist_{split}.amat", f"{AMAT_URL}binarized_mnist_{split}.amat", size, digest
    )
    for split, size, digest in (
        ("train", 78_400_000, "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        ("valid", 15_680_000, "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        ("test", 15_680_000, "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    )
}
IDX_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
IDX_GZ = {
    f.name: f
    for f in (
        official.OfficialFile(
            "train-images-idx3-ubyte.gz",
            IDX_URL + "train-images-idx3-ubyte.gz",
            9_912_422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        official.OfficialFile(
            "train-labels-idx1-ubyte.gz",
            IDX_URL + "train-labels-idx1-ubyte.gz",
            28_881,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        official.OfficialFile(
            "t10k-images-idx3-ubyte.gz",
            IDX_URL + "t10k-images-idx3-ubyte.gz",
            1_648_877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        official.OfficialFile(
            "t10k-labels-idx1-ubyte.gz",
            IDX_URL + "t10k-labels-idx1-ubyte.gz",
            4_542,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    )
}
IDX_STEMS = [stem for pair in idx.SPLIT_FILES.values() for stem in pair]


class DynamicBinarized(ImageData):
    """Grey intensities (uint8, value/255) whose every `batch` is a fresh draw
    x ~ Bernoulli(intensity), float32 0/1, from torch's default generator of the images'
    device (seeded by the trainer per step before the step's batch is drawn)."""

    def batch(self, index: Tensor | slice) -> Tensor:
        return torch.bernoulli(to_float(self.images[index]))

    @property
    def binary(self) -> bool:
        """Every batch is binary (what a Bernoulli likelihood needs), whatever is stored."""
        return True

    def subset(self, index: Tensor | slice) -> DynamicBinarized:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return dataclasses.replace(
            self, images=self.images[index], labels=pick(self.labels), factors=pick(self.factors)
        )

    def placed(self, device: torch.device) -> DynamicBinarized:
        """Always moved to `device` (47 MB): its draws then come from the generator the
        trainer seeds there, never from an unseeded host generator."""
        return self.to(device)


def fixed_binarization(data: ImageData, seed: int = TEST_SEED) -> ImageData:
    """`data` binarised once, x ~ Bernoulli(intensity) from a CPU generator seeded with
    `seed`, stored as uint8 0/255."""
    generator = torch.Generator().manual_seed(seed)
    on = torch.bernoulli(to_float(data.images), generator=generator)
    return dataclasses.replace(data, images=on.to(torch.uint8).mul_(255))


def read_amat(path: Path) -> np.ndarray:
    """uint8 0/255 images [N, 1, 28, 28] of an .amat file: per line 784 values, each 0 or 1.
    The official layout (single spaces, "\n" line ends) is read at once, any other line by
    line."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{NAME}: cannot read {path} ({exc.strerror or exc})") from None
    raw = np.frombuffer(text, np.uint8)
    width = 2 * PIXELS  # "v v … v\n"
    if len(raw) and len(raw) % width == 0:
        rows = raw.reshape(-1, width)
        if (rows[:, 1:-1:2] == ord(" ")).all() and (rows[:, -1] == ord("\n")).all():
            pixels = rows[:, ::2] - np.uint8(ord("0"))  # wraps above 1 for anything but 0/1
            if pixels.max() <= 1:
                return (pixels * np.uint8(255)).reshape(len(rows), 1, SIDE, SIDE)
    images = []
    for number, line in enumerate(text.splitlines(), 1):
        values = line.split()
        if not values:
            continue
        joined = b"".join(values)
        if len(values) != PIXELS or len(joined) != PIXELS or joined.strip(b"01"):
            what = f"{len(values)} values" if len(values) != PIXELS else "values other than 0/1"
            raise DataError(
                f"{NAME}: {path}: line {number} has {what}, not {PIXELS} zeros and ones "
                "(truncated or not a binarized-MNIST .amat file)"
            )
        images.append(np.frombuffer(joined, np.uint8) - np.uint8(ord("0")))
    if not images:
        raise DataError(f"{NAME}: {path} holds no images")
    return (np.stack(images) * np.uint8(255)).reshape(len(images), 1, SIDE, SIDE)


def form(place: Path, cfg: DataConfig) -> str:
    """ "amat", "idx", or a few words on why `place` holds neither."""
    if not place.is_dir():
        return "a file, not a folder" if place.exists() else "no such folder"
    splits = ("train", cfg.test_split)
    if all((place / AMAT[s].name).is_file() for s in splits):
        return "amat"
    found = sum(idx.find_idx(place, stem) is not None for stem in IDX_STEMS)
    if found == len(IDX_STEMS):
        return "idx"
    return f"{found} of {len(IDX_STEMS)} MNIST IDX files, no .amat files"


def load_fixed(folder: Path, cfg: DataConfig) -> tuple[ImageData, ImageData]:
    sets = []
    for split in ("train", cfg.test_split):
        official.verify(folder / AMAT[split].name, AMAT[split], NAME, cfg)
        sets.append(ImageData(NAME, torch.from_numpy(read_amat(folder / AMAT[split].name))))
    return sets[0], sets[1]


def load_dynamic(folder: Path, cfg: DataConfig) -> tuple[ImageData, ImageData]:
    official.no_valid_split(f"{NAME} (MNIST IDX files)", cfg)
    for stem in IDX_STEMS:
        file = idx.find_idx(folder, stem)
        if file.name in IDX_GZ:  # un-gzipped files have no published digest
            official.verify(file, IDX_GZ[file.name], NAME, cfg)
    train, test = (idx.load_idx_split(NAME, folder, split) for split in ("train", "test"))
    if train.shape != (1, SIDE, SIDE):
        raise DataError(f"{NAME}: {folder} holds {list(train.shape)} images, not MNIST's 28×28")
    dynamic = DynamicBinarized(NAME, train.images, train.labels)
    return dynamic, fixed_binarization(test)


@DATASETS.register(NAME)
def load(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """Dynamic or fixed binarisation, by the files found (see the module docstring)."""
    official.native_size(NAME, cfg, SIDE)
    root = os.environ.get("VAELAB_DATA")
    mnist = [
        ("$VAELAB_MNIST", os.environ.get("VAELAB_MNIST")),
        ("$VAELAB_DATA/mnist", root and os.path.join(root, "mnist")),
        ("/usr/share/datasets/mnist", "/usr/share/datasets/mnist"),
    ]
    folder = official.find(
        NAME,
        ENV,
        cfg,
        lambda place: None if form(place, cfg) in ("amat", "idx") else form(place, cfg),
        "MNIST's four IDX files (dynamic binarisation) or binarized_mnist_{train,valid,test}"
        f".amat from {AMAT_URL} (fixed)",
        list(IDX_GZ.values()),
        also=mnist,
    )
    return (load_fixed if form(folder, cfg) == "amat" else load_dynamic)(folder, cfg)
