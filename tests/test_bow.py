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
from vaelab.errors import ConfigError, DataError
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


# (text, what "auto" keeps, what true keeps): the header rule of split_header
HEADER_CASES = {
    "mail header": (
        "From: a@b.org\nSubject: orbit\nLines: 2\n\nrocket moon",
        "rocket moon",
        "rocket moon",
    ),
    "one known field": ("Subject: orbit\n\nrocket moon", "rocket moon", "rocket moon"),
    "continuation lines": (
        " uunet!path!leftover\nFrom: a@b.org\n  (Full Name)\nOrganization: x\n\nrocket",
        "rocket",
        "rocket",
    ),
    "plain text": ("Orbit rocket moon.\n\nSecond paragraph here.", None, "Second paragraph here."),
    "look-alike: Note": ("Note: orbit rocket\n\nmoon", None, "moon"),
    "look-alike: two unknown fields": ("Note: orbit\nTodo: rocket\n\nmoon", None, "moon"),
    "look-alike: Re": ("Re: orbit rocket\n\nmoon", None, "moon"),
    "look-alike: space in name": ("Dear Sir: orbit\n\nmoon", None, "moon"),
    "look-alike: URL": ("http://orbit.org/rocket\n\nmoon", None, "moon"),
    "field then text line": ("From: a@b.org\norbit rocket\n\nmoon", None, "moon"),
    "no blank line, all header": ("From: a@b.org\nSubject: orbit\n", "", ""),
    "no blank line, text": ("orbit rocket moon\n", None, ""),
    "empty header": ("\norbit rocket", None, "orbit rocket"),
}


@pytest.mark.parametrize("case", HEADER_CASES)
def test_header_rule_strips_only_rfc822_header_blocks(case):
    text, auto, always = HEADER_CASES[case]
    body, removed = bow.split_header(text, "auto")
    assert body == (text if auto is None else auto) and removed == (auto is not None)
    assert bow.split_header(text, True)[0] == always
    assert bow.split_header(text, False) == (text, False)


def test_tokenize_keeps_every_word_of_plain_text_and_look_alike_headers():
    plain = b"Orbit rocket.\n\nMoon landing, orbit."
    assert bow.tokenize(plain) == {"orbit": 2, "rocket": 1, "moon": 1, "landing": 1}
    assert bow.tokenize(plain, strip_headers=True) == {"moon": 1, "landing": 1, "orbit": 1}
    note = b"Note: rocket launch\n\norbit"
    assert bow.tokenize(note) == {"note": 1, "rocket": 1, "launch": 1, "orbit": 1}
    header = b"From: joe@cars.com\nSubject: engine\n\norbit"
    assert bow.tokenize(header) == {"orbit": 1}
    assert bow.tokenize(header, strip_headers=False) == {
        "joe": 1, "cars": 1, "com": 1, "subject": 1, "engine": 1, "orbit": 1,
    }  # fmt: skip


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, raw in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(raw)
    return root


def test_corpus_without_headers_loads_with_auto_and_the_error_names_the_option(tmp_path):
    plain = write_files(tmp_path / "plain", {
        "c-train/a/1": b"orbit rocket moon", "c-train/b/2": b"engine wheel car",
        "c-test/a/3": b"rocket orbit", "c-test/b/4": b"car engine",
    })  # fmt: skip
    train, test = load_bow_corpus(plain, cache=False)
    assert len(train) == 2 and len(test) == 2 and train.dropped_empty == 0
    assert set(train.vocabulary) == {"orbit", "rocket", "moon", "engine", "wheel", "car"}
    with pytest.raises(DataError) as err:  # true: no blank line, so every document is header
        load_bow_corpus(plain, cache=False, strip_headers=True)
    message = str(err.value)
    assert "\n" not in message and "every one of the 2 training documents is empty" in message
    assert "data.strip_headers = true" in message and '"auto"' in message
    assert "2 have no blank line" in message
    stop = write_files(tmp_path / "stop", {
        "c-train/a/1": b"From: x\nSubject: y\n\nthe and of", "c-test/a/2": b"orbit",
    })  # fmt: skip
    with pytest.raises(DataError, match="no word of ≥ 2 letters outside the stop list") as err:
        load_bow_corpus(stop, cache=False)
    assert "data.strip_headers = false keeps the header text" in str(err.value)
    assert "\n" not in str(err.value)


def test_strip_headers_in_the_config_takes_auto_true_or_false():
    from vaelab.config import from_dict
    from vaelab.errors import ConfigError

    for value in ("auto", True, False):
        assert from_dict(DataConfig, {"strip_headers": value}).strip_headers == value
    assert DataConfig().strip_headers == "auto"
    for value, fragment in (("yes", '"auto", true or false'), (3, "true or false or a string")):
        with pytest.raises(ConfigError, match=fragment) as err:
            from_dict(DataConfig, {"strip_headers": value})
        assert "strip_headers" in str(err.value) and "\n" not in str(err.value)


# --- the "rainbow" preset ------------------------------------------------------------------

UUENCODED = b"begin 644 x.gif\n" + b"".join(
    b"M" + bytes(33 + (i * 7 + j) % 60 for j in range(60)) + b"\n" for i in range(40)
)


def test_rainbow_text_check():
    assert bow.looks_like_text(b"From: a\n\nplain words\n")
    assert not bow.looks_like_text(b"")
    assert not bow.looks_like_text(bytes(range(256)) * 4)  # binary
    assert not bow.looks_like_text(UUENCODED)  # most lines 61 long, hardly any spaces
    # exactly 95 % printable fails ("more than 95 %"), 96 % passes
    assert not bow.looks_like_text(b"a" * 95 + b"\x00" * 5)
    assert bow.looks_like_text(b"a" * 96 + b"\x00" * 4)


def test_rainbow_preset_lexes_like_rainbow(tmp_path):
    files = {
        # SMART drops "actually" and "appreciate" (not in scikit-learn's list); it keeps
        # "system" and "fire" (which scikit-learn drops); a 100-letter token is dropped
        "r-train/a/1": b"Subject: s\n\nactually appreciate system fire orbit " + b"x" * 100,
        "r-train/a/2": b"Subject: s\n\norbit",  # one word: not a document
        "r-train/b/3": b"Subject: s\n\nfire engine",
        "r-train/b/4": UUENCODED,  # not text
        "r-test/a/5": b"Subject: s\n\nlaunch pad",  # no vocabulary word: a row of zeros
        "r-test/b/6": b"Subject: s\n\nfire system",
    }
    root = write_files(tmp_path / "r", files)
    train, test = load_bow_corpus(root, cache=False, preprocessing="rainbow")
    assert set(train.vocabulary) == {"system", "fire", "orbit", "engine"}
    assert len(train) == 2 and train.dropped_empty == 2  # the one-word and the binary file
    assert len(test) == 2 and test.dropped_empty == 0 and test.lengths.tolist() == [0, 2]
    vaelab, _ = load_bow_corpus(root, cache=False)  # scikit-learn's stop words, no text check
    assert {"actually", "appreciate", "x" * 100} <= set(vaelab.vocabulary)
    assert "fire" not in vaelab.vocabulary and "system" not in vaelab.vocabulary
    with pytest.raises(ConfigError, match="unknown preset 'bow'"):
        load_bow_corpus(root, cache=False, preprocessing="bow")


# --- count smoothing -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_smooth_counts_adds_the_smoothed_training_unigram_to_every_document(corpus):
    train, test = load_bow_corpus(corpus["archive"], vocab_size=5, cache=False)
    s_train, s_test = bow.smooth_counts(train, test)
    counts = torch.tensor(TRAIN5, dtype=torch.float64).sum(0)  # (5, 3, 2, 1, 1)
    f = (counts + 1 / 5) / (counts + 1 / 5).sum()
    assert torch.allclose(s_train.dense().double(), torch.tensor(TRAIN5) + f, atol=1e-6)
    assert torch.allclose(s_test.dense().double(), torch.tensor(TEST5) + f, atol=1e-6)
    assert s_test.lengths.tolist() == pytest.approx([4, 5])  # one pseudo-word each
    assert torch.allclose(s_test.batch([1, 1]), s_test.dense()[[1, 1]])
    assert torch.equal(s_train.subset([2]).dense(), s_train.dense()[[2]])
    assert torch.equal(s_train.to("cpu").dense(), s_train.dense())
    assert not s_train.binary and "smoothed" in repr(s_train)
    assert torch.equal(s_train.counts.to_dense(), train.dense())  # the stored counts
    with pytest.raises(DataError, match="smoothed already"):
        bow.smooth_counts(s_train, s_test)


def test_collapsed_baseline_and_conventions_take_smoothed_counts(corpus):
    train, test = bow.smooth_counts(*load_bow_corpus(corpus["archive"], vocab_size=5, cache=False))
    x, xt = test.dense().double(), train.dense().double()
    log_unigram = (xt.sum(0) / xt.sum()).log()
    n = x.sum(1)
    no_coefficient = -(x * log_unigram).sum(1)
    full = no_coefficient - (torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(1))
    saturated = no_coefficient + (x * (x / n[:, None]).log()).sum(1)
    base = bow.collapsed_baseline(train, test)
    assert base["nelbo_no_coefficient"] == pytest.approx(float(no_coefficient.mean()), rel=1e-6)
    assert base["nelbo_full"] == pytest.approx(float(full.mean()), rel=1e-6)
    assert base["nelbo_saturated"] == pytest.approx(float(saturated.mean()), rel=1e-6)
    shifts = bow.convention_shifts(test)
    assert shifts["full"] == pytest.approx(float((full - saturated).mean()), rel=1e-6)


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
    with pytest.raises(AssertionError, match="parsed again"):  # another header mode
        load_bow_corpus(corpus["archive"], vocab_size=5, name="mini", strip_headers=True)
    with pytest.raises(AssertionError, match="parsed again"):  # another preset
        load_bow_corpus(corpus["archive"], vocab_size=5, name="mini", preprocessing="rainbow")
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
