"""The standard data sets' loaders (data/celeba.py, cifar10.py, svhn.py, binarized_mnist.py,
shapes3d.py, dsprites_npz.py and data/official.py) on small files written here in each real
format: values, shapes, labels, factors, splits and crop geometry against hand computation;
dynamic binarisation statistically and through the trainer; and missing, corrupt, truncated
and wrong-hash files, each one line (exit 2 from the command line). Offline: downloads go
through a stand-in for urlopen.

Verification runs in every test: `publish` replaces a module's published size and sha256 by
those of the file the test wrote, as if it were the official one.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pickle
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from vaelab.cli import main
from vaelab.config import DataConfig, load_config
from vaelab.data import (
    base,
    binarized_mnist,
    celeba,
    cifar10,
    dsprites,
    dsprites_npz,
    load_data,
    official,
    shapes3d,
    svhn,
)
from vaelab.data.streaming import StreamedImages
from vaelab.errors import DataError

ENVS = (
    "VAELAB_DATA",
    "VAELAB_MNIST",
    "VAELAB_CELEBA",
    "VAELAB_CIFAR10",
    "VAELAB_SVHN",
    "VAELAB_BINARIZED_MNIST",
    "VAELAB_SHAPES3D",
    "VAELAB_DSPRITES_NPZ",
)


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    for var in ENVS:
        monkeypatch.delenv(var, raising=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(monkeypatch, owner, key, path: Path) -> None:
    """Make `path` the 'official' file `owner.key` (a module attribute, or a key of a dict
    in the module): its size and sha256 become the published ones."""
    if isinstance(owner, dict):
        monkeypatch.setitem(
            owner,
            key,
            dataclasses.replace(owner[key], size=path.stat().st_size, sha256=sha256(path)),
        )
    else:
        old = getattr(owner, key)
        monkeypatch.setattr(
            owner, key, dataclasses.replace(old, size=path.stat().st_size, sha256=sha256(path))
        )


def load(name: str, path: Path | str, **kw):
    return load_data(DataConfig(name=name, path=str(path), **kw))


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


class Evil:
    """Unpickling this creates `marker` (what a malicious pickle would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def cli(argv: list[str], capfd) -> tuple[int, str]:
    code = main(argv)
    return code, capfd.readouterr().err.strip()


def config_file(tmp_path: Path, data: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(
        f"[data]\n{data}\n[model]\nlatent_dim = 2\nhidden = [8]\n"
        "[train]\nepochs = 1\nbatch_size = 4\nprogress = false\n"
    )
    return str(path)


# --- CIFAR-10 ---------------------------------------------------------------------------------


def cifar_records(rng, n: int) -> bytes:
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes()


@pytest.fixture
def cifar_folder(tmp_path):
    """cifar-10-batches-bin/ with 3 records per training batch and 2 in the test batch."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar" / cifar10.FOLDER
    folder.mkdir(parents=True)
    for name in cifar10.TRAIN_FILES:
        (folder / name).write_bytes(cifar_records(rng, 3))
    (folder / cifar10.TEST_FILE).write_bytes(cifar_records(rng, 2))
    return folder


def cifar_archive(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=cifar10.FOLDER)
    return target


def test_cifar10_folder_and_archive_give_the_records_in_order(cifar_folder, tmp_path, monkeypatch):
    train, test = load("cifar10", cifar_folder.parent)
    assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    # training image 4 is record 1 of data_batch_2; pixel (channel c, row r, column k) is byte
    # 1 + 1024 c + 32 r + k of its record
    record = (cifar_folder / "data_batch_2.bin").read_bytes()[3073 : 2 * 3073]
    assert int(train.labels[4]) == record[0]
    assert int(train.images[4, 2, 5, 7]) == record[1 + 2 * 1024 + 5 * 32 + 7]
    assert torch.equal(
        train.images[4], torch.frombuffer(bytearray(record[1:]), dtype=torch.uint8).view(3, 32, 32)
    )
    last = (cifar_folder / cifar10.TEST_FILE).read_bytes()[3073:]
    assert int(test.labels[1]) == last[0] and int(test.images[1, 0, 0, 0]) == last[1]

    archive = cifar_archive(cifar_folder, tmp_path / cifar10.ARCHIVE.name)
    publish(monkeypatch, cifar10, "ARCHIVE", archive)
    train2, test2 = load("cifar10", archive)
    assert torch.equal(train2.images, train.images) and torch.equal(train2.labels, train.labels)
    assert torch.equal(test2.images, test.images)
    # the folder holding the archive is a place too
    assert torch.equal(load("cifar10", tmp_path)[0].images, train.images)


def test_cifar10_pickled_version_is_refused_and_never_unpickled(tmp_path, capfd):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    (folder / "data_batch_1").write_bytes(pickle.dumps(Evil(marker)))
    for path in (folder, tmp_path):
        with pytest.raises(DataError) as info:
            load("cifar10", path)
        message = one_line(info)
        assert "pickled Python version" in message and "unpickling can run code" in message
        assert cifar10.ARCHIVE.name in message and cifar10.ARCHIVE.url in message
    code, err = cli(["train", config_file(tmp_path, f'name = "cifar10"\npath = "{folder}"')], capfd)
    assert code == 2 and len(err.splitlines()) == 1 and "pickled" in err, err
    assert not marker.exists()


def test_cifar10_bad_files_are_one_line(cifar_folder, tmp_path, monkeypatch):
    batch = cifar_folder / "data_batch_3.bin"
    good = batch.read_bytes()
    batch.write_bytes(good[:-10])
    with pytest.raises(DataError, match="whole number of 3073-byte records") as info:
        load("cifar10", cifar_folder)
    one_line(info)
    batch.write_bytes(bytes([11]) + good[1:])
    with pytest.raises(DataError, match="label 11"):
        load("cifar10", cifar_folder)
    batch.write_bytes(good)
    test_batch = (cifar_folder / cifar10.TEST_FILE).read_bytes()
    (cifar_folder / cifar10.TEST_FILE).unlink()
    with pytest.raises(DataError, match="lacks test_batch.bin"):
        load("cifar10", cifar_folder)
    (cifar_folder / cifar10.TEST_FILE).write_bytes(test_batch)

    archive = cifar_archive(cifar_folder, tmp_path / cifar10.ARCHIVE.name)
    with pytest.raises(DataError, match="truncated") as info:  # the official size differs
        load("cifar10", archive)
    assert cifar10.ARCHIVE.url in one_line(info)
    publish(monkeypatch, cifar10, "ARCHIVE", archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="not the published") as info:
        load("cifar10", archive)
    one_line(info)
    with pytest.raises(DataError, match="not a readable .tar.gz"):  # the same file, unverified
        load("cifar10", archive, verify=False)


def test_a_missing_data_set_names_the_places_the_files_and_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="cifar10"))
    message = one_line(info)
    for part in ("$VAELAB_CIFAR10 (not set)", "$VAELAB_DATA/cifar10", cifar10.ARCHIVE.url):
        assert part in message, message
    assert "data.download=true" in message


# --- downloads and the verification cache ------------------------------------------------------


def test_download_puts_the_verified_file_in_place_and_refuses_a_wrong_one(
    cifar_folder, tmp_path, monkeypatch
):
    archive = cifar_archive(cifar_folder, tmp_path / "published.tar.gz")
    publish(monkeypatch, cifar10, "ARCHIVE", archive)
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(archive.read_bytes())

    monkeypatch.setattr(official.urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "fetched"
    train, _ = load("cifar10", target, download=True)
    assert asked == [cifar10.ARCHIVE.url] and len(train) == 15
    assert (target / cifar10.ARCHIVE.name).read_bytes() == archive.read_bytes()
    assert not list(target.glob(".*.tmp"))
    load("cifar10", target, download=True)  # found now: nothing fetched again
    assert len(asked) == 1

    monkeypatch.setattr(official.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"x"))
    with pytest.raises(DataError, match="not the published file") as info:
        load("cifar10", tmp_path / "wrong", download=True)
    one_line(info)
    assert not any((tmp_path / "wrong").iterdir())

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(official.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        load("cifar10", tmp_path / "offline", download=True)
    message = one_line(info)
    assert cifar10.ARCHIVE.url in message and "no network" in message
    assert str(tmp_path / "offline" / cifar10.ARCHIVE.name) in message


def test_a_digest_is_computed_once_per_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    truth = sha256(path)
    assert official.sha256_of(path) == truth
    cache = base.cache_dir() / official.VERIFIED
    entry = json.loads(cache.read_text())[str(path.resolve())]
    assert entry["sha256"] == truth and entry["size"] == 3000
    # a remembered digest is trusted while size and mtime are unchanged …
    known = json.loads(cache.read_text())
    known[str(path.resolve())]["sha256"] = "0" * 64
    cache.write_text(json.dumps(known))
    assert official.sha256_of(path) == "0" * 64
    # … and computed again when the file changes
    path.write_bytes(b"abd" * 1000)
    assert official.sha256_of(path) == sha256(path) != truth


# --- SVHN -------------------------------------------------------------------------------------


def write_svhn(folder: Path, name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0] = 10  # the digit 0
    folder.mkdir(exist_ok=True)
    scipy.io.savemat(folder / name, {"X": x, "y": y})
    return x, y


def test_svhn_reads_the_mat_files_with_10_as_digit_0(tmp_path, monkeypatch):
    x, y = write_svhn(tmp_path, "train_32x32.mat", 6, 0)
    xt, _ = write_svhn(tmp_path, "test_32x32.mat", 4, 1)
    for part in ("train", "test"):
        publish(monkeypatch, svhn.FILES, part, tmp_path / svhn.FILES[part].name)
    train, test = load("svhn", tmp_path)
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert int(train.images[3, 1, 4, 9]) == x[4, 9, 1, 3]  # X is [row, column, channel, image]
    assert torch.equal(test.images[2], torch.from_numpy(xt[:, :, :, 2].transpose(2, 0, 1).copy()))
    assert int(train.labels[0]) == 0 and train.labels.tolist() == (y[:, 0] % 10).tolist()

    with pytest.raises(DataError, match="no extra_32x32.mat"):
        load("svhn", tmp_path, svhn_extra=True)
    xe, _ = write_svhn(tmp_path, "extra_32x32.mat", 5, 2)
    publish(monkeypatch, svhn.FILES, "extra", tmp_path / "extra_32x32.mat")
    extra, _ = load("svhn", tmp_path, svhn_extra=True)
    assert len(extra) == 11 and int(extra.images[6 + 2, 0, 1, 1]) == xe[1, 1, 0, 2]


def test_svhn_bad_files_are_one_line(tmp_path, monkeypatch):
    write_svhn(tmp_path, "train_32x32.mat", 6, 0)
    write_svhn(tmp_path, "test_32x32.mat", 4, 1)
    test_file = tmp_path / "test_32x32.mat"
    with pytest.raises(DataError, match="truncated"):  # not the official size
        load("svhn", tmp_path)
    for cut in (100, test_file.stat().st_size // 2):
        test_file.write_bytes(test_file.read_bytes()[:cut])
        with pytest.raises(DataError, match="not a readable MATLAB file") as info:
            load("svhn", tmp_path, verify=False)
        one_line(info)
    scipy.io.savemat(test_file, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.zeros((2, 1))})
    with pytest.raises(DataError, match="not 1–10"):
        load("svhn", tmp_path, verify=False)
    scipy.io.savemat(test_file, {"X": np.zeros((28, 28, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match="not uint8"):
        load("svhn", tmp_path, verify=False)


# --- 3D Shapes --------------------------------------------------------------------------------

# factor values as a 3dshapes.h5 file stores them (only their order matters to the loader)
SHAPES3D_VALUES = (
    np.arange(10) / 10,
    np.arange(10) / 10,
    np.arange(10) / 10,
    np.linspace(0.75, 1.25, 8),
    np.arange(4.0),
    np.linspace(-30.0, 30.0, 15),
)


def shapes3d_image(index: np.ndarray) -> np.ndarray:
    """A pattern image [n, 64, 64, 3] telling row, column, channel and image index apart."""
    r, c, ch = np.meshgrid(np.arange(64), np.arange(64), np.arange(3), indexing="ij")
    return ((np.asarray(index)[:, None, None, None] * 7 + r + 2 * c + 5 * ch) % 256).astype(
        np.uint8
    )


def write_shapes3d(path: Path, classes: np.ndarray) -> None:
    import h5py

    values = np.stack([SHAPES3D_VALUES[k][classes[:, k]] for k in range(6)], axis=1)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=shapes3d_image(np.arange(len(classes))))
        f.create_dataset("labels", data=values)


def test_shapes3d_factors_images_and_split(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n = 60  # every factor shows all its values, in shuffled rows
    classes = np.stack([rng.permutation(np.arange(n) % s) for s in shapes3d.FACTOR_SIZES], 1)
    path = tmp_path / "3dshapes.h5"
    write_shapes3d(path, classes)
    publish(monkeypatch, shapes3d, "FILE", path)
    train, test = load("shapes3d", tmp_path, split_seed=3)
    train_index, test_index = base.random_split(n, 6, 3)  # a tenth of a small file is held out
    assert len(train) == 54 and len(test) == 6
    assert torch.equal(test.factors, torch.from_numpy(classes[test_index]))
    assert torch.equal(train.factors, torch.from_numpy(classes[train_index]))
    assert train.factor_names == shapes3d.FACTOR_NAMES and train.labels is None
    expected = shapes3d_image(test_index).transpose(0, 3, 1, 2)  # [n, C, H, W]
    assert torch.equal(test.images, torch.from_numpy(np.ascontiguousarray(expected)))
    assert int(train.images[5, 2, 10, 3]) == (train_index[5] * 7 + 10 + 2 * 3 + 5 * 2) % 256
    limited, _ = load("shapes3d", path, split_seed=3, train_limit=4)
    assert torch.equal(limited.images, train.images[:4])


def test_shapes3d_bad_files_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "3dshapes.h5"
    classes = np.stack([np.arange(60) % s for s in shapes3d.FACTOR_SIZES], 1)
    classes[:, 3] %= 5  # scale shows 5 of its 8 values
    write_shapes3d(path, classes)
    with pytest.raises(DataError, match="has .* bytes but the official 3dshapes.h5"):
        load("shapes3d", path)
    with pytest.raises(DataError, match="scale takes 5 distinct values") as info:
        load("shapes3d", path, verify=False)
    one_line(info)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        load("shapes3d", path, verify=False)
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        load("shapes3d", path, verify=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not found; looked in: data.path=\S+ \(no 3dshapes.h5\)"):
        load("shapes3d", tmp_path / "empty")


def test_shapes3d_without_h5py_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "3dshapes.h5"
    path.write_bytes(b"x")
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    with pytest.raises(DataError) as info:
        load("shapes3d", path, verify=False)
    assert "vaelab[h5]" in one_line(info)


def test_shapes3d_ground_truth_draws_the_image_of_each_factor_row(tmp_path):
    """A full-size file (480,000 rows; unwritten image chunks read as zeros) in the official
    order: the image of factor row c is row ravel_multi_index(c)."""
    import h5py

    path = tmp_path / "3dshapes.h5"
    grid = np.stack(np.unravel_index(np.arange(shapes3d.NUM_IMAGES), shapes3d.FACTOR_SIZES), 1)
    written = np.array([0, 17, 123_456, 479_999])
    with h5py.File(path, "w") as f:
        images = f.create_dataset(
            "images", (shapes3d.NUM_IMAGES, 64, 64, 3), np.uint8, chunks=(1, 64, 64, 3)
        )
        images[written] = shapes3d_image(written)
        values = np.stack([SHAPES3D_VALUES[k][grid[:, k]] for k in range(6)], axis=1)
        f.create_dataset("labels", data=values, compression="gzip")
    gt = shapes3d.Shapes3DGroundTruth(DataConfig(name="shapes3d", path=str(path), verify=False))
    assert gt.factor_sizes == (10, 10, 10, 8, 4, 15) and gt.num_factors == 6
    rows = grid[written[::-1]]  # asked in any order
    out = gt.sample_observations_from_factors(rows, np.random.default_rng(0))
    expected = shapes3d_image(written[::-1]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    factors, observations = gt.sample(3, np.random.default_rng(1))
    assert factors.shape == (3, 6) and observations.shape == (3, 3, 64, 64)

    gt.close()
    with h5py.File(path, "r+") as f:
        f["labels"][0:2] = f["labels"][0:2][::-1]  # two rows out of order
    with pytest.raises(DataError, match="not in the official grid order"):
        shapes3d.Shapes3DGroundTruth(DataConfig(name="shapes3d", path=str(path), verify=False))


# --- dSprites .npz ----------------------------------------------------------------------------


def write_dsprites_npz(path: Path, n: int, marker: Path, pickled_images: bool = False):
    rng = np.random.default_rng(0)
    index = rng.choice(dsprites.NUM_IMAGES, n, replace=False)
    classes = dsprites.classes_of(index)
    latents = np.concatenate([np.zeros((n, 1), np.int64), classes], axis=1)
    images = (rng.random((n, 64, 64)) < 0.3).astype(np.uint8)
    stored = np.array(list(images), dtype=object) if pickled_images else images
    np.savez_compressed(
        path,
        imgs=stored,
        latents_classes=latents,
        latents_values=latents.astype(np.float64),
        metadata=np.array(Evil(marker), dtype=object),  # what the official file pickles
    )
    return images, classes


def test_dsprites_npz_matches_the_procedural_factors_and_never_unpickles(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    path = tmp_path / dsprites_npz.FILE.name
    images, classes = write_dsprites_npz(path, 40, marker)
    train, test = load("dsprites-npz", tmp_path, split_seed=5)
    train_index, test_index = base.random_split(40, 4, 5)
    assert (
        train.factor_names
        == dsprites.FACTOR_NAMES
        == ("shape", "scale", "orientation", "posX", "posY")
    )
    assert torch.equal(train.factors, torch.from_numpy(classes[train_index]))
    assert torch.equal(test.labels, torch.from_numpy(classes[test_index, 0]))
    assert torch.equal(test.images[:, 0], torch.from_numpy(images[test_index] * 255))
    assert train.images.shape == (36, 1, 64, 64) and train.binary
    assert not marker.exists()


def test_dsprites_npz_bad_files_are_one_line(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / dsprites_npz.FILE.name
    write_dsprites_npz(path, 20, marker, pickled_images=True)
    with pytest.raises(DataError, match="not a readable .npz") as info:
        load("dsprites-npz", path)
    assert "allow_pickle" in one_line(info)
    write_dsprites_npz(path, 20, marker)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable .npz"):
        load("dsprites-npz", path)
    corrupt = bytearray(data)
    corrupt[200:260] = bytes(60)  # inside imgs' compressed bytes
    path.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="not a readable .npz"):
        load("dsprites-npz", path)
    path.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        load("dsprites-npz", path)
    assert not marker.exists()


# --- binarized MNIST --------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


@pytest.fixture
def mnist_folder(tmp_path):
    """The four gzipped IDX files: 8 training and 6 test images whose intensities span 0–255."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    ramp = np.arange(784).reshape(28, 28) * 255 // 783
    write_idx(folder / "train-images-idx3-ubyte.gz", np.stack([ramp] * 8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.stack([ramp.T] * 6))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(6))
    return folder


@pytest.fixture
def published_mnist(mnist_folder, monkeypatch):
    for name in binarized_mnist.IDX_GZ:
        publish(monkeypatch, binarized_mnist.IDX_GZ, name, mnist_folder / name)
    return mnist_folder


def test_binarize_is_refused_on_a_binary_set_and_would_not_freeze_dynamic_binarisation(
    published_mnist,
):
    with pytest.raises(DataError) as info:
        load("binarized-mnist", published_mnist, binarize=True)
    assert one_line(info) == "data.binarize: binarized-mnist is binary already; drop data.binarize"


def test_dynamic_binarisation_is_bernoulli_of_the_intensity(published_mnist):
    train, test = load("binarized-mnist", published_mnist)
    assert isinstance(train, binarized_mnist.DynamicBinarized) and train.binary
    p = train.images[:1].float() / 255
    draws = 400
    torch.manual_seed(0)
    samples = torch.stack([train.batch(slice(0, 1)) for _ in range(draws)])
    assert ((samples == 0) | (samples == 1)).all()
    mean = samples.mean(0)
    # each pixel's mean of 400 draws lies within 5 standard errors of its intensity
    # (5·sqrt(p(1 − p)/400) ≤ 0.125; exactly p where p is 0 or 1)
    tolerance = 5 * torch.sqrt(p * (1 - p) / draws)
    assert ((mean - p).abs() <= tolerance + 1e-6).all()
    assert (mean[p == 0] == 0).all() and (mean[p == 1] == 1).all()

    index = torch.arange(8)
    torch.manual_seed(11)
    a = train.batch(index)
    b = train.batch(index)  # the next step: a fresh binarisation
    torch.manual_seed(11)
    assert torch.equal(train.batch(index), a) and not torch.equal(a, b)
    # limits, subsets and placement keep the sampling
    for view in (
        train.limit(3),
        train.subset(torch.tensor([1, 2])),
        train.placed(torch.device("cpu")),
    ):
        assert isinstance(view, binarized_mnist.DynamicBinarized) and view.binary


def test_the_dynamic_forms_test_set_is_binarised_once_with_the_stated_seed(published_mnist):
    _, test = load("binarized-mnist", published_mnist)
    _, again = load("binarized-mnist", published_mnist, test_limit=4)
    assert type(test) is base.ImageData and test.binary
    assert torch.equal(again.images, test.images[:4])  # the limit takes a prefix of one draw
    p = torch.from_numpy(np.stack([(np.arange(784).reshape(28, 28) * 255 // 783).T] * 6))
    generator = torch.Generator().manual_seed(binarized_mnist.TEST_SEED)
    expected = torch.bernoulli(p[:, None].float() / 255, generator=generator) * 255
    assert torch.equal(test.images, expected.to(torch.uint8))


def test_the_trainer_draws_a_fresh_binarisation_each_step_repeatably(
    published_mnist, tmp_path, monkeypatch
):
    from vaelab.runs import train_run

    seen = []
    original = binarized_mnist.DynamicBinarized.batch

    def spy(self, index):
        x = original(self, index)
        seen.append(float(x.sum()))  # one batch of all 8 images: the order does not matter
        return x

    monkeypatch.setattr(binarized_mnist.DynamicBinarized, "batch", spy)
    sequences = []
    for run in ("a", "b"):
        seen.clear()
        cfg = load_config(
            None,
            [
                "data.name=binarized-mnist",
                f"data.path={published_mnist}",
                "model.likelihood=bernoulli",
                "model.latent_dim=2",
                "model.hidden=[8]",
                "train.epochs=3",
                "train.batch_size=8",
                "train.progress=false",
                "train.loggers=[]",
            ],
        )
        train_run(cfg, tmp_path / run, report=False)
        sequences.append(list(seen))
    assert len(sequences[0]) == 3 and len(set(sequences[0])) == 3  # fresh every epoch
    assert sequences[0] == sequences[1]  # the same seed draws the same binarisations


def amat_text(images: np.ndarray, newline: str = "\n") -> bytes:
    return "".join(
        " ".join(map(str, row)) + newline for row in images.reshape(len(images), -1)
    ).encode()


def test_fixed_binarisation_files_and_the_valid_split(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    sets = {
        s: (rng.random((n, 28, 28)) < 0.4).astype(np.uint8)
        for s, n in (("train", 5), ("valid", 3), ("test", 2))
    }
    for split, images in sets.items():
        path = tmp_path / binarized_mnist.AMAT[split].name
        path.write_bytes(amat_text(images))
        publish(monkeypatch, binarized_mnist.AMAT, split, path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))  # .amat wins
    train, test = load("binarized-mnist", tmp_path)
    assert type(train) is base.ImageData and train.labels is None
    assert torch.equal(train.images[:, 0], torch.from_numpy(sets["train"] * 255))
    assert torch.equal(test.images[:, 0], torch.from_numpy(sets["test"] * 255))
    _, valid = load("binarized-mnist", tmp_path, test_split="valid")
    assert torch.equal(valid.images[:, 0], torch.from_numpy(sets["valid"] * 255))

    crlf = tmp_path / "crlf"
    crlf.mkdir()
    for split in ("train", "test"):
        (crlf / binarized_mnist.AMAT[split].name).write_bytes(amat_text(sets[split], "\r\n"))
    assert torch.equal(load("binarized-mnist", crlf, verify=False)[0].images, train.images)


def test_binarized_mnist_bad_files_are_one_line(tmp_path, published_mnist, monkeypatch):
    gz = published_mnist / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated") as info:
        load("binarized-mnist", published_mnist)
    one_line(info)
    with pytest.raises(DataError, match="corrupt IDX"):
        load("binarized-mnist", published_mnist, verify=False)
    with pytest.raises(DataError, match="no official validation split"):
        load("binarized-mnist", published_mnist, test_split="valid", verify=False)

    folder = tmp_path / "amat"
    folder.mkdir()
    rows = (np.random.default_rng(0).random((3, 784)) < 0.5).astype(int)
    (folder / binarized_mnist.AMAT["test"].name).write_bytes(amat_text(rows))
    train_file = folder / binarized_mnist.AMAT["train"].name
    text = amat_text(rows).decode().splitlines()
    train_file.write_text("\n".join([text[0], text[1][:-2], text[2]]) + "\n")
    with pytest.raises(DataError, match="line 2 has 783 values") as info:
        load("binarized-mnist", folder, verify=False)
    one_line(info)
    train_file.write_text(text[0].replace("0", "2", 1) + "\n")
    with pytest.raises(DataError, match="line 1 has values other than 0/1"):
        load("binarized-mnist", folder, verify=False)
    train_file.write_bytes(amat_text(rows[::-1]))  # the size of the 'published' file below
    publish(monkeypatch, binarized_mnist.AMAT, "train", folder / binarized_mnist.AMAT["test"].name)
    with pytest.raises(DataError, match="not the published"):
        load("binarized-mnist", folder)


def test_a_bernoulli_likelihood_accepts_the_dynamic_data(published_mnist, tmp_path, capfd):
    from vaelab.runs import check_data_fits

    cfg = load_config(
        None,
        ["data.name=binarized-mnist", f"data.path={published_mnist}", "model.likelihood=bernoulli"],
    )
    train, _ = load_data(cfg.data)
    check_data_fits(cfg, train)  # no error: every batch is binary


# --- CelebA -----------------------------------------------------------------------------------

ATTRIBUTE_NAMES = tuple(f"Attr{k}" for k in range(39)) + ("Smiling",)
PARTITION = {
    "000001.jpg": 0,
    "000002.jpg": 0,
    "000003.jpg": 0,
    "000004.jpg": 1,
    "000005.jpg": 2,
    "000006.jpg": 2,
}


@pytest.fixture
def celeba_folder(tmp_path, monkeypatch):
    """Six 178×218 JPEGs as the folder and as the zip, the partition and the attributes."""
    root = tmp_path / "celeba"
    images = root / celeba.FOLDER
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:218, 0:178]
    for k, name in enumerate(PARTITION):
        array = np.stack([x + 10 * k, y, (x * y) // 150], axis=-1) % 256
        array = (array + rng.integers(0, 8, array.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(array).save(images / name, quality=95)
    (root / celeba.PARTITION.name).write_text("".join(f"{n} {s}\n" for n, s in PARTITION.items()))
    values = rng.choice([-1, 1], (6, 40))
    lines = ["6", " ".join(ATTRIBUTE_NAMES)] + [
        f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(PARTITION, values)
    ]
    (root / celeba.ATTRIBUTES.name).write_text("\n".join(lines) + "\n")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    with zipfile.ZipFile(zipped / celeba.ZIP.name, "w") as archive:
        for name in PARTITION:
            archive.write(images / name, f"{celeba.FOLDER}/{name}")
    for name in (celeba.PARTITION.name, celeba.ATTRIBUTES.name):
        (zipped / name).write_bytes((root / name).read_bytes())
    publish(monkeypatch, celeba, "ZIP", zipped / celeba.ZIP.name)
    publish(monkeypatch, celeba, "PARTITION", root / celeba.PARTITION.name)
    publish(monkeypatch, celeba, "ATTRIBUTES", root / celeba.ATTRIBUTES.name)
    return root, zipped, (values > 0).astype(np.int64)


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_celeba_centre_crop_geometry(celeba_folder):
    root, _, _ = celeba_folder
    assert celeba.centre_box(178, 218, 148) == (15, 35, 163, 183)
    assert celeba.centre_box(178, 218, 0) == (0, 0, 178, 218)
    train, test = load("celeba", root, image_size=148)  # the crop alone, no resize
    full = decoded(root / celeba.FOLDER / "000002.jpg")
    assert torch.equal(
        train.images[1], torch.from_numpy(full[35:183, 15:163].transpose(2, 0, 1).copy())
    )
    small, _ = load("celeba", root, train_limit=1)  # the default: crop 148, then 64×64
    resized = Image.fromarray(decoded(root / celeba.FOLDER / "000001.jpg")[35:183, 15:163]).resize(
        (64, 64), Image.Resampling.BILINEAR
    )
    assert small.images.shape == (1, 3, 64, 64)
    assert torch.equal(
        small.images[0], torch.from_numpy(np.asarray(resized).transpose(2, 0, 1).copy())
    )
    grey, _ = load("celeba", root, crop=20, image_size=20, channels=1, train_limit=1)
    luma = np.asarray(Image.open(root / celeba.FOLDER / "000001.jpg").convert("L"))
    assert torch.equal(grey.images[0, 0], torch.from_numpy(luma[99:119, 79:99].copy()))


def test_celeba_folder_and_zip_splits_attributes_and_labels(celeba_folder):
    root, zipped, attributes = celeba_folder
    train, test = load("celeba", root, attribute="Smiling")
    train_z, test_z = load("celeba", zipped, attribute="Smiling")
    assert torch.equal(train.images, train_z.images) and torch.equal(test.images, test_z.images)
    assert len(train) == 3 and len(test) == 2  # partition 0 and partition 2
    assert train.factor_names == ATTRIBUTE_NAMES
    assert torch.equal(train.factors, torch.from_numpy(attributes[:3]))
    assert torch.equal(test.factors, torch.from_numpy(attributes[4:]))
    assert train.labels.tolist() == attributes[:3, 39].tolist()
    _, valid = load("celeba", zipped, test_split="valid")
    assert len(valid) == 1 and valid.labels is None
    assert torch.equal(valid.factors, torch.from_numpy(attributes[3:4]))
    (root / celeba.ATTRIBUTES.name).unlink()
    plain, _ = load("celeba", root)
    assert plain.factors is None and plain.factor_names == ()


def test_the_celeba_decoder_pickles_for_worker_processes(celeba_folder):
    _, zipped, _ = celeba_folder
    decoder = celeba.CelebADecoder(zipped / celeba.ZIP.name)
    first = decoder("000003.jpg")
    copy = pickle.loads(pickle.dumps(decoder))  # our own object: what a DataLoader worker gets
    assert copy._zip is None and torch.equal(copy("000003.jpg"), first)
    assert first.shape == (3, 64, 64) and first.dtype == torch.uint8


def test_celeba_bad_files_and_settings_are_one_line(celeba_folder, tmp_path):
    root, zipped, _ = celeba_folder
    cases = [
        (dict(attribute="Smilling"), 'did you mean "Smiling"'),
        (dict(crop=200), "data.crop=200 exceeds the 178×218 images"),
        (dict(download=True), "Google Drive"),
        (dict(channels=2), "channels must be 1 (grey) or 3 (RGB)"),
    ]
    for settings, expected in cases:
        with pytest.raises(DataError) as info:
            load("celeba", root, **settings)
        assert expected in one_line(info)
    (root / celeba.FOLDER / "000005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match="000005.jpg: cannot read image"):
        load("celeba", root)
    (root / celeba.FOLDER / "000005.jpg").unlink()
    with pytest.raises(DataError, match=r"lacks 1 of the 2 test images .* \(first: 000005.jpg\)"):
        load("celeba", root)
    archive = zipped / celeba.ZIP.name
    data = bytearray(archive.read_bytes())
    start = data.index(b"\xff\xd8", data.index(b"000006.jpg"))  # that member's JPEG bytes
    data[start + 500 : start + 510] = bytes(10)
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="not the published"):
        load("celeba", zipped)
    with pytest.raises(DataError, match="corrupt member 000006.jpg") as info:
        load("celeba", zipped, verify=False)
    one_line(info)
    (zipped / celeba.PARTITION.name).unlink()
    with pytest.raises(DataError, match="no list_eval_partition.txt"):
        load("celeba", zipped)
    (root / celeba.PARTITION.name).write_text("000001.jpg train\n")
    with pytest.raises(DataError, match="line 1 is not 'FILE 0|1|2'"):
        load("celeba", root, verify=False)


# --- settings that a data set cannot honour -----------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "svhn", "shapes3d", "dsprites-npz", "binarized-mnist"])
def test_fixed_size_sets_refuse_another_image_size(name, tmp_path):
    with pytest.raises(DataError, match="applies to celeba and image-folder only"):
        load(name, tmp_path, image_size=48)


def test_a_wrong_hash_exits_2_with_one_line_from_the_command_line(
    cifar_folder, tmp_path, monkeypatch, capfd
):
    archive = cifar_archive(cifar_folder, tmp_path / cifar10.ARCHIVE.name)
    monkeypatch.setattr(
        cifar10, "ARCHIVE", dataclasses.replace(cifar10.ARCHIVE, size=archive.stat().st_size)
    )
    code, err = cli(
        ["train", config_file(tmp_path, f'name = "cifar10"\npath = "{archive}"')], capfd
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "not the published" in err and "Traceback" not in err


def test_celeba_streamed_from_the_zip_equals_the_decoded_set(celeba_folder):
    """data.storage = "stream": the same images (decoded per batch by worker processes that
    each reopen the zip), attributes and labels as the in-memory set."""
    _, zipped, _ = celeba_folder
    for memory, streamed in zip(
        load("celeba", zipped, attribute="Smiling", storage="memory"),
        load("celeba", zipped, attribute="Smiling", storage="stream", workers=2),
    ):
        assert isinstance(streamed, StreamedImages) and streamed.shape == memory.shape
        assert torch.equal(streamed.labels, memory.labels)
        assert torch.equal(streamed.factors, memory.factors)
        assert streamed.factor_names == memory.factor_names
        chunks = [torch.tensor([1, 0]), torch.arange(len(memory))]
        for batch, chunk in zip(streamed.batches(chunks), chunks):
            assert torch.equal(batch, memory.batch(chunk))
