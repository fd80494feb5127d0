"""Bag-of-words corpora (vaelab.data.bow): reading a folder or a .tar.gz, text processing,
vocabulary, CSR counts, batches, the cache and the 20 Newsgroups loader.

Fast and offline: a tiny corpus is written by the tests; the real 20news-bydate.tar.gz in
../shared/data is read only when it exists (one parse, ~10 s).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

from vaelab import DataConfig
from vaelab.data import bow
from vaelab.data.bow import BowData, load_bow_corpus
from vaelab.errors import DataError
from vaelab.registry import DATASETS

REAL_ARCHIVE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "20news-bydate.tar.gz"
)

# <split>/<label>/<document> → raw bytes. Headers end at the first blank line.
CORPUS = {
    "mini-train/rec.autos/101": b"From: joe@cars.com\nSubject: engine engine\n\nEngine oil, engine OIL and the car.\n",
    "mini-train/rec.autos/102": b"From: ann@cars.com\n\ncar car car wheel x y\n",
    "mini-train/sci.space/201": b"From: a\r\nSubject: b\r\n\r\nOrbit rocket orbit zz9 moon\r\n",
    "mini-train/sci.space/202": b"Subject: nothing\n\nthe and of a I 7 7 x\n",  # only stop words / short
    "mini-train/alt.atheism/301": b"From: god@heaven\nSubject: faith faith\n",  # all header
    "mini-train/alt.atheism/302": b"\nfaith car orbit\n",  # empty header
    "mini-train/alt.atheism/.hidden": b"\n\ncar car car car car car car car\n",  # ignored
    "mini-test/rec.autos/105": b"From: x\n\nwheel wheel\n",
    "mini-test/sci.space/205": b"From: x\n\nmoon orbit orbit car unknownword\n",
    "mini-test/alt.atheism/305": b"Subject: \xe9t\xe9\n\nfaith Faith FAITH \xfcber\n",  # latin-1
    "README": b"not a document\n",
}
LABELS = ("alt.atheism", "rec.autos", "sci.space")
# train document frequencies: car 3, orbit 2, then 1 each: engine faith moon oil rocket wheel zz
FULL_VOCAB = ("car", "orbit", "engine", "faith", "moon", "oil", "rocket", "wheel", "zz")
VOCAB5 = FULL_VOCAB[:5]
# V = 5, in document order (label, then file name); 301 and 202 are dropped
TRAIN5 = [[1, 1, 0, 1, 0], [1, 0, 2, 0, 0], [3, 0, 0, 0, 0], [0, 2, 0, 0, 1]]  # 302 101 102 201
TRAIN5_LABELS = [0, 1, 1, 2]
TEST5 = [[0, 0, 0, 3, 0], [1, 2, 0, 0, 1]]  # 305, 205 (105 has only "wheel", out of vocabulary)
TEST5_LABELS = [0, 2]


def write_corpus(root: Path, prefix: str = "") -> Path:
    for name, raw in CORPUS.items():
        file = root / prefix / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(raw)
    return root


def write_archive(path: Path, folder: Path, arcname: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for entry in sorted(folder.iterdir(), reverse=True):  # order must not matter
            tar.add(entry, arcname=f"{arcname}{entry.name}")
    return path


@pytest.fixture
def corpus(tmp_path) -> dict[str, Path]:
    folder = write_corpus(tmp_path / "folder")
    return {
        "folder": folder,
        "archive": write_archive(tmp_path / "mini.tar.gz", folder),
        "nested": write_archive(tmp_path / "nested.tgz", folder, arcname="./corpus/"),
    }


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    for var in ("VAELAB_20NEWS", "VAELAB_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "no-sklearn"))


def dense(data: BowData) -> list[list[float]]:
    return data.dense().tolist()


# --- processing ----------------------------------------------------------------------------


def test_tokenize_drops_header_stop_words_and_short_tokens():
    counts = bow.tokenize(
        b"Subject: header words\r\n\r\nThe Cat's cat-cat, a b2 AB \xe9l\xe8ve 42\n"
    )
    assert counts == {"cat": 3, "ab": 1, "ve": 1}  # "\xe9l\xe8ve": é, è split the word
    assert bow.tokenize(b"From: only a header\nSubject: x\n") == {}
    assert bow.tokenize(b"\nno header here") == {"header": 1}  # "no" and "here" are stop words


@pytest.mark.parametrize("source", ["folder", "archive", "nested"])
def test_round_trip_small_vocabulary(corpus, source):
    train, test = load_bow_corpus(corpus[source], vocab_size=5, name="mini", cache=False)
    assert train.vocabulary == test.vocabulary == VOCAB5
    assert train.label_names == test.label_names == LABELS
    assert train.shape == (5,) and len(train) == 4 and len(test) == 2
    assert dense(train) == TRAIN5 and dense(test) == TEST5
    assert train.labels.tolist() == TRAIN5_LABELS and test.labels.tolist() == TEST5_LABELS
    assert (train.dropped_empty, test.dropped_empty) == (2, 1)
    assert train.lengths.tolist() == [3, 3, 3, 3] and test.lengths.tolist() == [3, 4]
    assert train.name == "mini"
    assert train.labels.dtype == torch.int64 and train.values.dtype == torch.float32
    assert train.crow_indices.dtype == train.col_indices.dtype == torch.int64


def test_full_vocabulary_by_document_frequency_then_alphabetical(corpus):
    train, test = load_bow_corpus(corpus["archive"], cache=False)
    assert train.vocabulary == FULL_VOCAB  # fewer distinct words than 10,000
    assert test.dropped_empty == 0 and len(test) == 3  # "wheel" is in the vocabulary now
    rows = dict(zip(("305", "105", "205"), dense(test)))
    assert rows["105"] == [0, 0, 0, 0, 0, 0, 0, 2, 0]
    assert train.dense()[1].tolist() == [1, 0, 2, 0, 0, 2, 0, 0, 0]  # doc 101
    assert train.dense()[3].tolist() == [0, 2, 0, 0, 1, 0, 1, 0, 1]  # doc 201 (\r\n lines)
    assert load_bow_corpus(corpus["archive"], name="x", cache=False)[0].name == "x"
    assert load_bow_corpus(corpus["archive"], cache=False)[0].name == "mini"


def test_layout_errors_are_one_line(tmp_path):
    (tmp_path / "only-train" / "a").mkdir(parents=True)
    (tmp_path / "only-train" / "a" / "1").write_bytes(b"\nword word\n")
    with pytest.raises(DataError, match="ends in 'test'") as err:
        load_bow_corpus(tmp_path, cache=False)
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read the archive") as err:
        load_bow_corpus(bad, cache=False)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="no such file") as err:
        load_bow_corpus(tmp_path / "missing.tar.gz")
    assert "\n" not in str(err.value)


# --- BowData -------------------------------------------------------------------------------


def random_bow(n: int = 57, vocab: int = 31, seed: int = 0) -> BowData:
    g = torch.Generator().manual_seed(seed)
    full = torch.randint(0, 4, (n, vocab), generator=g).float()
    full *= torch.rand(n, vocab, generator=g) < 0.2
    full[5] = 0  # an empty row
    rows, cols = full.nonzero().T  # row-major: sorted by row, then column
    crow = torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.bincount(rows, minlength=n).cumsum(0)]
    )
    return BowData(
        "random",
        crow,
        cols,
        full[rows, cols],
        torch.randint(0, 3, (n,), generator=g),
        tuple(f"w{i}" for i in range(vocab)),
        ("a", "b", "c"),
    )


def reference_dense(data: BowData) -> torch.Tensor:
    """Dense counts rebuilt row by row (independent of the vectorised gather)."""
    full = torch.zeros(len(data), len(data.vocabulary))
    for i in range(len(data)):
        start, stop = data.crow_indices[i], data.crow_indices[i + 1]
        full[i, data.col_indices[start:stop]] = data.values[start:stop]
    return full


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_batch_equals_dense_rows():
    data = random_bow()
    full = reference_dense(data)
    assert torch.equal(data.dense(), full) and torch.equal(data.counts.to_dense(), full)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        index = torch.randint(0, len(data), (13,), generator=g)  # repeats allowed
        assert torch.equal(data.batch(index), full[index])
    assert torch.equal(data.batch(torch.tensor([-1, 5, 0])), full[[-1, 5, 0]])
    assert torch.equal(data.batch(slice(3, 40, 4)), full[3:40:4])
    assert torch.equal(data.batch([2, 7]), full[[2, 7]])
    assert torch.equal(data.batch(7), full[7])
    mask = torch.rand(len(data), generator=g) < 0.5
    assert torch.equal(data.batch(mask), full[mask])
    assert data.batch(torch.tensor([], dtype=torch.long)).shape == (0, 31)
    assert torch.equal(data.lengths, full.sum(1))
    with pytest.raises(IndexError):
        data.batch(torch.tensor([len(data)]))


def test_subset_limit_to():
    data = random_bow()
    full = data.dense()
    index = torch.tensor([9, 2, 2, 40])
    sub = data.subset(index)
    assert torch.equal(sub.dense(), full[index]) and torch.equal(sub.labels, data.labels[index])
    assert torch.equal(data.limit(10).dense(), full[:10]) and data.limit(None) is data
    assert data.limit(1000) is data
    moved = data.to("cpu")
    assert moved is not data and torch.equal(moved.dense(), full)
    assert "57 documents" in repr(data)


@pytest.mark.parametrize("bad", ["negative", "nan", "unsorted", "crow", "label"])
def test_invalid_counts_rejected(bad):
    data = random_bow()
    crow, col, val, labels = (
        data.crow_indices.clone(),
        data.col_indices.clone(),
        data.values.clone(),
        data.labels.clone(),
    )
    if bad == "negative":
        val[3] = -1.0
    elif bad == "nan":
        val[0] = float("nan")
    elif bad == "unsorted":
        row = int(torch.nonzero(crow.diff() >= 2)[0])
        start = int(crow[row])
        col[start], col[start + 1] = col[start + 1].clone(), col[start].clone()
    elif bad == "crow":
        crow[-1] += 1
    else:
        labels[0] = 3
    with pytest.raises(DataError):
        BowData("bad", crow, col, val, labels, data.vocabulary, data.label_names)


# --- cache ---------------------------------------------------------------------------------


def test_cache_is_used_on_second_load(corpus, monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    first = load_bow_corpus(corpus["archive"], vocab_size=5, name="mini")
    files = list((tmp_path / "cache" / "bow").glob("mini-*.safetensors"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(bow, "parse_corpus", fail)
    again = load_bow_corpus(corpus["archive"], vocab_size=5, name="mini")
    for a, b in zip(first, again):
        assert a.vocabulary == b.vocabulary and a.label_names == b.label_names
        assert torch.equal(a.dense(), b.dense()) and torch.equal(a.labels, b.labels)
        assert a.dropped_empty == b.dropped_empty
    with pytest.raises(AssertionError, match="parsed again"):  # another vocabulary size
        load_bow_corpus(corpus["archive"], vocab_size=6, name="mini")
    stat = corpus["archive"].stat()
    os.utime(corpus["archive"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="parsed again"):  # the archive changed
        load_bow_corpus(corpus["archive"], vocab_size=5, name="mini")


def test_folder_cache_tracks_the_listing(corpus, monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    load_bow_corpus(corpus["folder"], vocab_size=5, name="mini")
    (corpus["folder"] / "mini-train" / "rec.autos" / "103").write_bytes(b"\nengine\n")
    train, _ = load_bow_corpus(corpus["folder"], vocab_size=5, name="mini")
    assert len(train) == 5


def test_corrupt_cache_is_rebuilt(corpus, monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    load_bow_corpus(corpus["archive"], vocab_size=5, name="mini")
    (file,) = (tmp_path / "cache" / "bow").glob("mini-*.safetensors")
    file.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unusable"):
        train, _ = load_bow_corpus(corpus["archive"], vocab_size=5, name="mini")
    assert dense(train) == TRAIN5
    assert file.stat().st_size > 100  # rewritten


# --- the registered 20 Newsgroups loader ---------------------------------------------------


def test_loader_path_env_and_vocab_size(corpus, no_env, monkeypatch, tmp_path):
    loader = DATASETS.get("20newsgroups")
    five = dict(name="20newsgroups", vocab_size=5)
    train, test = loader(DataConfig(**five, path=str(corpus["archive"])))
    assert train.name == "20newsgroups" and dense(train) == TRAIN5 and dense(test) == TEST5
    monkeypatch.setenv("VAELAB_20NEWS", str(corpus["folder"]))
    assert dense(loader(DataConfig(**five))[0]) == TRAIN5
    monkeypatch.delenv("VAELAB_20NEWS")
    data_root = tmp_path / "data"
    data_root.mkdir()
    write_archive(data_root / "20news-bydate.tar.gz", corpus["folder"])
    monkeypatch.setenv("VAELAB_DATA", str(data_root))
    assert dense(loader(DataConfig(**five))[1]) == TEST5
    assert loader(DataConfig(name="20newsgroups"))[0].vocabulary == FULL_VOCAB


def test_loader_uses_sklearn_download_folder(corpus, no_env, monkeypatch, tmp_path):
    home = tmp_path / "sk"
    write_corpus(home / "20news_home")
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(home))
    assert (
        dense(DATASETS.get("20newsgroups")(DataConfig(name="20newsgroups", vocab_size=5))[0])
        == TRAIN5
    )


def test_loader_missing_data_is_one_line(no_env, monkeypatch, tmp_path):
    loader = DATASETS.get("20newsgroups")
    with pytest.raises(DataError) as err:
        loader(DataConfig(name="20newsgroups"))
    message = str(err.value)
    assert "\n" not in message
    for part in (
        "$VAELAB_20NEWS (not set)",
        "scikit-learn",
        "data.path=PATH",
        "20news-bydate.tar.gz",
    ):
        assert part in message
    with pytest.raises(DataError, match="data.path=.*does not exist") as err:
        loader(DataConfig(name="20newsgroups", path=str(tmp_path / "nope.tar.gz")))
    assert "\n" not in str(err.value)


# --- the real archive ----------------------------------------------------------------------


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason="../shared/data/20news-bydate.tar.gz absent")
def test_real_20news_archive():
    train, test = load_bow_corpus(REAL_ARCHIVE, name="20newsgroups")  # parse (~10 s), cache
    assert len(train) + train.dropped_empty == 11_314
    assert len(test) + test.dropped_empty == 7_532
    assert train.dropped_empty < 100 and test.dropped_empty < 100
    assert len(train.label_names) == 20 and train.label_names[0] == "alt.atheism"
    assert train.shape == (10_000,) and len(set(train.vocabulary)) == 10_000
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(20))
    assert not set(train.vocabulary) & bow.stop_words()
    assert min(train.lengths.min(), test.lengths.min()) >= 1
    cached_train, cached_test = load_bow_corpus(REAL_ARCHIVE, name="20newsgroups")
    index = torch.randint(0, len(test), (100,))
    assert torch.equal(cached_test.batch(index), test.batch(index))
    assert torch.equal(cached_train.values, train.values)
