"""Data loaders: IDX files, dSprites rendering, digits, image folders, load_data checks.

Fast and offline: IDX and image files are written by the tests; the full dSprites cache is
never generated here (``render`` and ``index_of`` are tested directly).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab import DataConfig
from vaelab.data import ImageData, dsprites, load_data
from vaelab.data.idx import read_idx
from vaelab.errors import DataError

SHARED_FASHION = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fashion-mnist"
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --- IDX -----------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """An IDX file of a uint8 array, written independently of the reader."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist_folder(folder: Path, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 5),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / stem, array, gz)
    return arrays


@pytest.fixture
def no_data_env(monkeypatch):
    for var in ("VAELAB_FASHION_MNIST", "VAELAB_MNIST", "VAELAB_DATA"):
        monkeypatch.delenv(var, raising=False)


def check_mnist_like(train: ImageData, test: ImageData, arrays: dict[str, np.ndarray]) -> None:
    assert train.images.dtype == torch.uint8 and train.images.shape == (5, 1, 28, 28)
    assert test.images.shape == (3, 1, 28, 28)
    assert train.labels.dtype == torch.int64
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_via_path(tmp_path, no_data_env, gz):
    arrays = write_mnist_folder(tmp_path, gz)
    check_mnist_like(*load_data(DataConfig(name="fashion-mnist", path=str(tmp_path))), arrays)


def test_idx_round_trip_via_env_var(tmp_path, no_data_env, monkeypatch):
    arrays = write_mnist_folder(tmp_path / "fm", gz=False)
    monkeypatch.setenv("VAELAB_FASHION_MNIST", str(tmp_path / "fm"))
    check_mnist_like(*load_data(DataConfig(name="fashion-mnist")), arrays)


def test_idx_found_under_vaelab_data(tmp_path, no_data_env, monkeypatch):
    arrays = write_mnist_folder(tmp_path / "mnist", gz=True)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    check_mnist_like(*load_data(DataConfig(name="mnist")), arrays)


def test_read_idx_other_type_and_dims(tmp_path):
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    path = tmp_path / "x.idx"
    path.write_bytes(
        bytes([0, 0, 0x0C, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4)) + array.tobytes()
    )
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and np.array_equal(out, array) and out.flags.writeable


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx(tmp_path, gz):
    path = write_idx(tmp_path / "a", np.zeros((4, 28, 28)), gz=False)
    data = path.read_bytes()[:-10]
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=r"corrupt IDX file \(.*dims \[4, 28, 28\]"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"\x00\x00\x42\x01" + bytes(8))
    with pytest.raises(DataError, match="corrupt IDX file .bad magic number"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "a.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage that is not deflate data" * 4)
    with pytest.raises(DataError, match="corrupt IDX file .bad gzip data"):
        read_idx(path)
    whole = gzip.compress(bytes(4) + bytes(1000))
    path.write_bytes(whole[: len(whole) // 2])  # a cut-off download
    with pytest.raises(DataError, match="corrupt IDX file .bad gzip data"):
        read_idx(path)


@pytest.mark.skipif(SYSTEM_FASHION.exists(), reason="Debian's Fashion-MNIST is installed")
def test_missing_folder_lists_every_place(tmp_path, no_data_env, monkeypatch):
    monkeypatch.setenv("VAELAB_FASHION_MNIST", str(tmp_path / "nowhere"))
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="fashion-mnist"))
    message = str(err.value)
    assert "\n" not in message
    for place in (
        "$VAELAB_FASHION_MNIST=",
        str(tmp_path / "nowhere"),
        str(tmp_path / "data" / "fashion-mnist"),
        str(SYSTEM_FASHION),
    ):
        assert place in message
    assert "data.path=FOLDER" in message and "train-images-idx3-ubyte.gz" in message


def test_explicit_path_without_files(tmp_path, no_data_env):
    write_mnist_folder(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"data\.path=.* \(3 of 4 files\)"):
        load_data(DataConfig(name="fashion-mnist", path=str(tmp_path)))


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="../shared/data/fashion-mnist absent")
def test_real_fashion_mnist():
    train, test = load_data(DataConfig(name="fashion-mnist", path=str(SHARED_FASHION)))
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == (1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(test.labels.bincount(), torch.full((10,), 1000))


# --- dSprites ------------------------------------------------------------------------------


def rows(**fixed: int) -> np.ndarray:
    """Factor class rows varying the one factor not fixed over all its classes."""
    (free,) = [name for name in dsprites.FACTOR_NAMES if name not in fixed]
    k = dsprites.FACTOR_NAMES.index(free)
    out = np.zeros((dsprites.FACTOR_SIZES[k], 5), dtype=np.int64)
    for name, value in fixed.items():
        out[:, dsprites.FACTOR_NAMES.index(name)] = value
    out[:, k] = np.arange(dsprites.FACTOR_SIZES[k])
    return out


def centre_of_mass(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x = column, y = row) centre of each image's on pixels."""
    on = images[:, 0] > 0
    ys, xs = np.indices(on.shape[1:])
    count = on.sum((1, 2))
    return (on * xs).sum((1, 2)) / count, (on * ys).sum((1, 2)) / count


def test_dsprites_grid_and_index_order():
    assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert dsprites.NUM_IMAGES == 737280
    assert np.allclose(dsprites.FACTOR_VALUES[1], np.linspace(0.5, 1, 6))
    assert np.isclose(dsprites.FACTOR_VALUES[2][-1], 2 * np.pi)
    index = dsprites.index_of(
        np.array(
            [
                [0, 0, 0, 0, 0],
                [0, 0, 0, 0, 1],
                [0, 0, 0, 1, 0],
                [0, 0, 1, 0, 0],
                [0, 1, 0, 0, 0],
                [1, 0, 0, 0, 0],
                [2, 5, 39, 31, 31],
            ]
        )
    )
    assert index.tolist() == [0, 1, 32, 1024, 40960, 245760, 737279]
    some = np.random.default_rng(0).integers(0, dsprites.NUM_IMAGES, 100)
    assert np.array_equal(dsprites.index_of(dsprites.classes_of(some)), some)
    with pytest.raises(DataError, match="out of range"):
        dsprites.index_of(np.array([[3, 0, 0, 0, 0]]))


def test_dsprites_render_is_binary_and_inside():
    classes = np.array(
        [
            [s, 5, o, x, y]
            for s in range(3)
            for o in range(0, 40, 3)
            for x in (0, 31)
            for y in (0, 31)
        ]
    )
    images = dsprites.render(classes)
    assert images.shape == (len(classes), 1, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 255}
    assert (images.reshape(len(images), -1).max(1) == 255).all()
    # the largest shapes at the extreme positions still leave the border empty
    for edge in (images[..., 0, :], images[..., -1, :], images[..., 0], images[..., -1]):
        assert edge.max() == 0


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_dsprites_size_grows_with_scale(shape):
    counts = (dsprites.render(rows(shape=shape, orientation=0, posX=16, posY=16)) > 0).sum(
        (1, 2, 3)
    )
    assert (np.diff(counts) > 0).all()
    if shape == 0:  # the scale-1 square is 18 px wide, the scale-0.5 one 9 px
        assert counts[-1] == 18 * 18 and abs(counts[0] - 81) <= 9


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_dsprites_position_axes(shape):
    x, y = centre_of_mass(dsprites.render(rows(shape=shape, scale=3, orientation=5, posY=7)))
    assert (np.diff(x) > 0).all() and np.ptp(y) < 0.5  # posX moves right (column)
    x, y = centre_of_mass(dsprites.render(rows(shape=shape, scale=3, orientation=5, posX=7)))
    assert (np.diff(y) > 0).all() and np.ptp(x) < 0.5  # posY moves down (row)


@pytest.mark.parametrize("shape", [0, 1])
def test_dsprites_rotation_about_centre(shape):
    x, y = centre_of_mass(dsprites.render(rows(shape=shape, scale=5, posX=10, posY=20)))
    assert np.ptp(x) < 0.6 and np.ptp(y) < 0.6


def test_dsprites_heart_points_down_and_turns_counter_clockwise():
    upright, quarter = dsprites.render(np.array([[2, 5, 0, 16, 16], [2, 5, 10, 16, 16]]))[:, 0]
    width = (upright > 0).sum(1)  # per row: wide lobes on top, a point at the bottom
    filled = np.flatnonzero(width)
    assert width[filled[:3]].mean() > width[filled[-3:]].mean()
    height = (quarter > 0).sum(0)  # turned ~90° counter-clockwise: the point faces right
    filled = np.flatnonzero(height)
    assert height[filled[:3]].mean() > height[filled[-3:]].mean()


def test_dsprites_loader_split(monkeypatch):
    """The loader's split and factors, with the cache replaced by on-the-fly rendering."""

    class Rendered:
        def __getitem__(self, index):
            images = dsprites.render(dsprites.classes_of(index))
            return np.packbits(images.reshape(len(index), -1), axis=1)

    monkeypatch.setattr(dsprites, "packed_images", Rendered)
    cfg = DataConfig(name="dsprites", train_limit=200, test_limit=50, split_seed=3)
    train, test = load_data(cfg)
    assert (len(train), len(test)) == (200, 50)
    assert train.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert train.factors.dtype == torch.int64 and torch.equal(train.labels, train.factors[:, 0])
    assert np.array_equal(train.images.numpy(), dsprites.render(train.factors.numpy()))
    assert not set(dsprites.index_of(train.factors.numpy())) & set(
        dsprites.index_of(test.factors.numpy())
    )
    again, _ = load_data(cfg)
    assert torch.equal(again.factors, train.factors)
    assert np.array_equal(dsprites.images_at(test.factors[:5].numpy()), test.images[:5].numpy())


# --- digits, image folders, checks ---------------------------------------------------------


def test_digits():
    train, test = load_data(DataConfig(name="digits"))
    assert (len(train), len(test)) == (1500, 297)
    assert train.shape == (1, 8, 8) and train.images.dtype == torch.float32
    assert float(train.images.max()) == 1.0 and train.labels.max() == 9
    other, _ = load_data(DataConfig(name="digits", split_seed=1))
    assert not torch.equal(other.images, train.images)
    assert torch.equal(load_data(DataConfig(name="digits"))[0].images, train.images)


def test_limits_and_binarize():
    train, test = load_data(
        DataConfig(name="digits", train_limit=100, test_limit=10, binarize=True)
    )
    assert (len(train), len(test)) == (100, 10)
    assert train.images.dtype == torch.uint8 and set(train.images.unique().tolist()) == {0, 255}
    plain, _ = load_data(DataConfig(name="digits", train_limit=100))
    assert torch.equal(train.images == 255, plain.images > 0.5)


def write_png(path: Path, value: int, size: int = 8, colour: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if colour:
        Image.new("RGB", (size, size), (value, 0, 255 - value)).save(path)
    else:
        Image.new("L", (size, size), value).save(path)


def test_image_folder_with_splits_and_classes(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            for i in range(n):
                write_png(tmp_path / split / name / f"{i}.png", 100 * label + i)
    train, test = load_data(DataConfig(name="image-folder", path=str(tmp_path)))
    assert (len(train), len(test)) == (6, 4)
    assert train.shape == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.images[:, 0, 0, 0].tolist() == [0, 1, 2, 100, 101, 102]


def test_image_folder_split_colour_and_resize(tmp_path):
    for i in range(19):
        write_png(tmp_path / f"{i:02d}.png", 10 * i, size=8 + i % 2)
    write_png(tmp_path / "c.png", 50, colour=True)
    with pytest.raises(DataError, match="differ in size.*image_size"):
        load_data(DataConfig(name="image-folder", path=str(tmp_path)))
    train, test = load_data(DataConfig(name="image-folder", path=str(tmp_path), image_size=6))
    assert (len(train), len(test)) == (18, 2) and train.labels is None
    assert train.shape == (3, 6, 6)  # one colour image makes all RGB
    grey, _ = load_data(
        DataConfig(name="image-folder", path=str(tmp_path), image_size=6, channels=1)
    )
    assert grey.shape == (1, 6, 6)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        load_data(DataConfig(name="image-folder", path=str(tmp_path)))
    with pytest.raises(DataError, match="not a folder"):
        load_data(DataConfig(name="image-folder", path=str(tmp_path / "missing")))
    write_png(tmp_path / "a.png", 0)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b\.png: cannot read image"):
        load_data(DataConfig(name="image-folder", path=str(tmp_path)))


def test_nan_images_rejected():
    images = torch.rand(4, 1, 2, 2)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 images contain NaN"):
        ImageData("x", images)
