"""Bag-of-words corpora (20 Newsgroups) as sparse word counts, for semantic hashing.

Layout: scikit-learn's ``load_files`` layout, ``<root>/<split>/<label>/<document>``, where the
two split folders are the ones whose names end in "train" and "test" (case-insensitive), e.g.
``20news-bydate-train`` and ``20news-bydate-test``. The corpus is read from that folder or
streamed straight out of a tar archive (``.tar.gz``, ``.tgz``, …) such as the standard
``20news-bydate.tar.gz`` (11,314 training and 7,532 test documents, 20 newsgroups); nothing is
extracted to disk. Hidden files and folders (names starting with ".") are ignored.

Text processing (deterministic; ``PROCESSING_VERSION`` is bumped whenever it changes):

1. bytes are decoded as latin-1 (every byte is a character; nothing fails to decode) and
   ``\\r\\n`` becomes ``\\n``;
2. the e-mail header is dropped: everything before the first blank line (as scikit-learn's
   ``strip_newsgroup_header``; a document without a blank line is all header, so empty);
   footers and quoted replies are kept;
3. the body is lowercased and split into tokens = maximal runs of ``[a-z]`` of length ≥ 2
   (as scikit-learn's ``CountVectorizer``, minus digits and "_"; non-ASCII letters separate
   tokens);
4. scikit-learn's ``ENGLISH_STOP_WORDS`` (318 words) are dropped;
5. vocabulary = the `vocab_size` words (default 10,000) with the highest document frequency in
   the *training* split, ties broken alphabetically; the vocabulary is stored in that order
   (word 0 is the most frequent). Fewer distinct words → a smaller vocabulary.
6. each document becomes its counts of vocabulary words. Documents left without any
   vocabulary word are dropped; each split's ``BowData.dropped_empty`` says how many.

Documents are ordered by label name, then file name (not shuffled); labels index the sorted
label-folder names of both splits.

The counts are cached after the first read in ``cache_dir()/bow/<name>-<key>.safetensors``
(safetensors + JSON metadata, written atomically), where the key hashes the source's identity
(an archive's size and modification time, or a folder's listing of paths, sizes and
modification times), the vocabulary size and ``PROCESSING_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import DataConfig
from ..errors import CheckpointError, ConfigError, DataError
from ..registry import DATASETS
from .base import cache_dir, first_place

PROCESSING_VERSION = 1
DEFAULT_VOCAB_SIZE = 10_000
MIN_TOKEN_LENGTH = 2
TOKEN = re.compile(f"[a-z]{{{MIN_TOKEN_LENGTH},}}")  # maximal runs: [a-z]+ of length ≥ 2
SPLITS = ("train", "test")
CACHE_FORMAT = "vaelab-bow"

NEWS_NAME = "20newsgroups"
NEWS_ENV = "VAELAB_20NEWS"
NEWS_ARCHIVE = "20news-bydate.tar.gz"
NEWS_FOLDER = "20news-bydate"
NEWS_URL = "http://qwone.com/~jason/20Newsgroups/20news-bydate.tar.gz"


# --- the data --------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class BowData:
    """Word counts of N documents over a vocabulary of V words, as CSR arrays, with labels.

    Row i's counts are ``values[crow_indices[i]:crow_indices[i + 1]]`` at the vocabulary
    indices ``col_indices[…]`` (strictly increasing within a row). ``batch`` gives dense
    float32 rows [b, V] on the data's device. ``dropped_empty`` is the number of documents of
    the source split that were dropped because no vocabulary word was left in them (a subset
    keeps the number of its source).
    """

    name: str
    crow_indices: Tensor  # int64 [N + 1]
    col_indices: Tensor  # int64 [nnz]
    values: Tensor  # float32 [nnz], counts ≥ 0 (> 0 as read)
    labels: Tensor  # int64 [N]
    vocabulary: tuple[str, ...]
    label_names: tuple[str, ...]
    dropped_empty: int = 0

    def __post_init__(self):
        self.vocabulary, self.label_names = tuple(self.vocabulary), tuple(self.label_names)
        check_csr(self)

    def __len__(self) -> int:
        return len(self.crow_indices) - 1

    def __repr__(self) -> str:
        return (
            f"BowData({self.name!r}, {len(self)} documents, {len(self.vocabulary)} words, "
            f"{len(self.values)} non-zeros, {len(self.label_names)} labels, "
            f"{self.dropped_empty} dropped empty, device={self.device})"
        )

    @property
    def shape(self) -> tuple[int]:
        """(V,): the size of one document's count vector."""
        return (len(self.vocabulary),)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def binary(self) -> bool:
        """Every count is 0 or 1."""
        return bool(((self.values == 0) | (self.values == 1)).all())

    @property
    def counts(self) -> Tensor:
        """All counts as a torch sparse CSR tensor [N, V] (sharing memory with the arrays)."""
        return torch.sparse_csr_tensor(
            self.crow_indices,
            self.col_indices,
            self.values,
            (len(self), len(self.vocabulary)),
            check_invariants=False,  # checked by check_csr when the data was made
        )

    @property
    def lengths(self) -> Tensor:
        """Words per document (sum of its counts), float32 [N]."""
        total = torch.cat(
            [
                self.values.new_zeros(1, dtype=torch.float64),
                self.values.cumsum(0, dtype=torch.float64),
            ]
        )
        return (total[self.crow_indices[1:]] - total[self.crow_indices[:-1]]).float()

    def to(self, device: torch.device | str) -> BowData:
        """The same data on `device` (tensors already there are shared, as with Tensor.to)."""
        move = lambda t: t.to(device)  # noqa: E731
        return BowData(
            self.name,
            move(self.crow_indices),
            move(self.col_indices),
            move(self.values),
            move(self.labels),
            self.vocabulary,
            self.label_names,
            self.dropped_empty,
        )

    def batch(self, index: Tensor | slice | Sequence[int] | int) -> Tensor:
        """Dense float32 counts [b, V] of the rows at `index`, on the data's device.

        Vectorised: the rows' ranges of the CSR arrays are gathered at once and scattered into
        zeros. An int gives one row [V].
        """
        if isinstance(index, int):
            return self.batch([index])[0]
        rows = self._rows(index)
        row_ids, pos = self._gather(rows)
        out = torch.zeros(len(rows), len(self.vocabulary), device=self.device)
        out[row_ids, self.col_indices[pos]] = self.values[pos]
        return out

    def dense(self) -> Tensor:
        """All counts as a dense float32 [N, V] (20 Newsgroups train: 11k × 10k = 0.45 GB)."""
        return self.batch(slice(None))

    def subset(self, index: Tensor | slice | Sequence[int]) -> BowData:
        """The documents at `index`, in that order."""
        rows = self._rows(index)
        row_ids, pos = self._gather(rows)
        lens = self.crow_indices[rows + 1] - self.crow_indices[rows]
        crow = torch.cat([lens.new_zeros(1), lens.cumsum(0)])
        return BowData(
            self.name,
            crow,
            self.col_indices[pos],
            self.values[pos],
            self.labels[rows],
            self.vocabulary,
            self.label_names,
            self.dropped_empty,
        )

    def limit(self, n: int | None) -> BowData:
        """The first n documents (all if n is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def _rows(self, index: Tensor | slice | Sequence[int]) -> Tensor:
        """Row numbers int64 [b] in [0, N) on the data's device (negative ones wrap)."""
        n = len(self)
        if isinstance(index, slice):
            return torch.arange(n, device=self.device)[index]
        rows = torch.as_tensor(index, device=self.device)
        if rows.dtype == torch.bool:
            if rows.shape != (n,):
                raise IndexError(
                    f"{self.name}: boolean index of shape {list(rows.shape)} for {n} documents"
                )
            return rows.nonzero().flatten()
        if rows.is_floating_point() or rows.is_complex() or rows.dim() != 1:
            raise IndexError(
                f"{self.name}: index must be 1-D integers, got {rows.dtype} {list(rows.shape)}"
            )
        rows = rows.long()
        if len(rows) and (int(rows.min()) < -n or int(rows.max()) >= n):
            raise IndexError(f"{self.name}: document index out of range for {n} documents")
        return torch.where(rows < 0, rows + n, rows)

    def _gather(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """For the rows' non-zeros: their output row (0..b-1) and position in the CSR arrays."""
        starts = self.crow_indices[rows]
        lens = self.crow_indices[rows + 1] - starts
        total = int(lens.sum()) if len(rows) else 0
        row_ids = torch.repeat_interleave(
            torch.arange(len(rows), device=self.device), lens, output_size=total
        )
        first = lens.cumsum(0) - lens  # where each row's entries begin in the output
        pos = torch.arange(total, device=self.device) + (starts - first)[row_ids]
        return row_ids, pos


def check_csr(data: BowData) -> None:
    """Reject malformed arrays and counts that would train silently wrong (negative, NaN)."""
    name, vocab = data.name, len(data.vocabulary)
    crow, col, val, labels = data.crow_indices, data.col_indices, data.values, data.labels
    for what, t, dtype in (
        ("crow_indices", crow, torch.int64),
        ("col_indices", col, torch.int64),
        ("values", val, torch.float32),
        ("labels", labels, torch.int64),
    ):
        if not isinstance(t, Tensor) or t.dim() != 1 or t.dtype != dtype:
            got = f"{t.dtype} {list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise DataError(f"{name}: {what} must be 1-D {dtype}, got {got}")
    n, nnz = len(crow) - 1, len(col)
    if n < 0 or int(crow[0]) != 0 or int(crow[-1]) != nnz or len(val) != nnz:
        raise DataError(f"{name}: inconsistent CSR arrays (crow_indices must run from 0 to nnz)")
    lens = crow.diff()
    if (lens < 0).any():
        raise DataError(f"{name}: crow_indices must be non-decreasing")
    if len(labels) != n:
        raise DataError(f"{name}: {len(labels)} labels for {n} documents")
    if nnz:
        if int(col.min()) < 0 or int(col.max()) >= vocab:
            raise DataError(f"{name}: word index out of range for a vocabulary of {vocab} words")
        new_row = torch.zeros(nnz, dtype=torch.bool, device=col.device)
        new_row[crow[:-1][lens > 0]] = True
        if (~new_row[1:] & (col.diff() <= 0)).any():
            raise DataError(f"{name}: word indices must be strictly increasing within a document")
        if not torch.isfinite(val).all():
            raise DataError(
                f"{name}: {int((~torch.isfinite(val)).sum())} counts are NaN or infinite"
            )
        if (val < 0).any():
            raise DataError(f"{name}: {int((val < 0).sum())} counts are negative")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= len(data.label_names)):
        raise DataError(f"{name}: labels out of range for {len(data.label_names)} label names")
    if data.dropped_empty < 0:
        raise DataError(f"{name}: dropped_empty must be ≥ 0")


# --- reading a corpus ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def tokenize(raw: bytes) -> Counter[str]:
    """Word counts of one document: header dropped, lowercased, [a-z]{2,}, no stop words."""
    text = raw.decode("latin-1").replace("\r\n", "\n")
    body = ("\n" + text).partition("\n\n")[2]  # a leading "\n" means an empty header
    counts = Counter(TOKEN.findall(body.lower()))
    for word in stop_words() & counts.keys():
        del counts[word]
    return counts


def _split_of(parts: Sequence[str]) -> str | None:
    """'train' or 'test' when `parts` is <prefix>/<…train|…test>/<label>/<document>."""
    if len(parts) < 3 or any(p.startswith(".") for p in parts):
        return None
    folder = parts[-3].lower()
    return next((split for split in SPLITS if folder.endswith(split)), None)


def _archive_documents(path: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if _split_of(parts) is None:
                    continue
                handle = tar.extractfile(member)
                yield parts, handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the archive ({' '.join(str(exc).split())})") from None


def _folder_files(root: Path) -> list[tuple[tuple[str, ...], Path]]:
    """(parts relative to `root`, file) of every document file below `root`, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root).parts
        for file in files:
            if _split_of((*rel, file)) is not None:
                found.append(((*rel, file), Path(folder) / file))
    return sorted(found)


def _folder_documents(root: Path) -> Iterator[tuple[tuple[str, ...], bytes]]:
    for parts, file in _folder_files(root):
        try:
            yield parts, file.read_bytes()
        except OSError as exc:
            raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from None


def read_corpus(
    path: Path,
) -> tuple[dict[str, list[tuple[str, str, Counter[str]]]], list[str]]:
    """Per split, (label, document name, word counts) sorted by label then name; label names.

    Exactly one folder must end in "train" and one in "test" (else a DataError).
    """
    documents = _archive_documents(path) if path.is_file() else _folder_documents(path)
    split_dirs: dict[str, set[str]] = {split: set() for split in SPLITS}
    docs: dict[str, list[tuple[str, str, Counter[str]]]] = {split: [] for split in SPLITS}
    for parts, raw in documents:
        split = _split_of(parts)
        split_dirs[split].add("/".join(parts[:-2]))
        docs[split].append((parts[-2], parts[-1], tokenize(raw)))
    for split in SPLITS:
        if len(split_dirs[split]) != 1:
            state = (
                "none found"
                if not split_dirs[split]
                else "several: " + ", ".join(sorted(split_dirs[split]))
            )
            raise DataError(
                f"{path}: expected one folder whose name ends in {split!r} holding "
                f"<label>/<document> files ({state}); layout: <root>/<…train|…test>/<label>/<doc>"
            )
        docs[split].sort(key=lambda d: d[:2])
    labels = sorted({label for split in SPLITS for label, _, _ in docs[split]})
    return docs, labels


def build_vocabulary(documents: Sequence[Counter[str]], size: int) -> list[str]:
    """The `size` words of highest document frequency, ties alphabetical, in that order."""
    frequency: Counter[str] = Counter()
    for counts in documents:
        frequency.update(counts.keys())
    ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:size]]


def to_bow(
    name: str,
    documents: Sequence[tuple[str, str, Counter[str]]],
    vocabulary: Sequence[str],
    label_names: Sequence[str],
) -> BowData:
    """CSR counts of `documents` over `vocabulary`; documents without a vocabulary word dropped."""
    word_index = {word: i for i, word in enumerate(vocabulary)}
    label_index = {label: i for i, label in enumerate(label_names)}
    counts = [c for _, _, c in documents]
    cols = np.array([word_index.get(w, -1) for c in counts for w in c], dtype=np.int64)
    vals = np.array([v for c in counts for v in c.values()], dtype=np.float32)
    rows = np.repeat(np.arange(len(counts)), [len(c) for c in counts])
    keep = cols >= 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, rows))  # by document, then word
    rows, cols, vals = rows[order], cols[order], vals[order]
    per_doc = np.bincount(rows, minlength=len(counts))
    kept = per_doc > 0  # documents left with at least one vocabulary word
    labels = np.array([label_index[label] for label, _, _ in documents], dtype=np.int64)
    crow = np.concatenate([[0], np.cumsum(per_doc[kept])]).astype(np.int64)
    return BowData(
        name,
        torch.from_numpy(crow),
        torch.from_numpy(cols),
        torch.from_numpy(vals),
        torch.from_numpy(labels[kept]),
        tuple(vocabulary),
        tuple(label_names),
        dropped_empty=int((~kept).sum()),
    )


def parse_corpus(path: Path, vocab_size: int, name: str) -> tuple[BowData, BowData]:
    """(train, test) read and processed from `path` (no cache)."""
    docs, label_names = read_corpus(path)
    vocabulary = build_vocabulary([counts for _, _, counts in docs["train"]], vocab_size)
    if not vocabulary:
        raise DataError(f"{path}: the training documents contain no words")
    return tuple(to_bow(name, docs[split], vocabulary, label_names) for split in SPLITS)


# --- cache -----------------------------------------------------------------------------------


def source_identity(path: Path) -> dict:
    """What the cache key hashes: an archive's size and mtime, or a folder's file listing."""
    if path.is_file():
        stat = path.stat()
        return {"archive": [stat.st_size, stat.st_mtime_ns]}
    listing = []
    for parts, file in _folder_files(path):
        stat = file.stat()
        listing.append(["/".join(parts), stat.st_size, stat.st_mtime_ns])
    return {"folder": listing}


def cache_path(path: Path, vocab_size: int, name: str) -> Path:
    key = json.dumps(
        {"source": source_identity(path), "vocab_size": vocab_size, "version": PROCESSING_VERSION},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "bow"
    return cache_dir() / "bow" / f"{safe}-{digest}.safetensors"


def save_cache(file: Path, source: Path, train: BowData, test: BowData) -> None:
    tensors = {
        f"{split}.{field}": getattr(data, field)
        for split, data in zip(SPLITS, (train, test))
        for field in ("crow_indices", "col_indices", "values", "labels")
    }
    metadata = {
        "format": CACHE_FORMAT,
        "version": PROCESSING_VERSION,
        "name": train.name,
        "source": str(source),
        "vocabulary": list(train.vocabulary),
        "label_names": list(train.label_names),
        "dropped_empty": {"train": train.dropped_empty, "test": test.dropped_empty},
    }
    save_checkpoint(file, tensors, metadata)


def load_cache(file: Path, name: str) -> tuple[BowData, BowData] | None:
    """The cached (train, test), or None when there is no usable cache (a bad one warns)."""
    if not file.is_file():
        return None
    try:
        tensors, meta = load_checkpoint(file)
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != PROCESSING_VERSION:
            raise DataError("not a vaelab bag-of-words cache of this version")
        return tuple(
            BowData(
                name,
                *(tensors[f"{split}.{f}"] for f in ("crow_indices", "col_indices", "values")),
                tensors[f"{split}.labels"],
                tuple(meta["vocabulary"]),
                tuple(meta["label_names"]),
                int(meta["dropped_empty"][split]),
            )
            for split in SPLITS
        )
    except (CheckpointError, DataError, KeyError, TypeError, ValueError) as exc:
        warnings.warn(
            f"{file}: unusable bag-of-words cache ({exc}); re-reading the corpus", stacklevel=3
        )
        return None


# --- entry points ----------------------------------------------------------------------------


def load_bow_corpus(
    path: str | os.PathLike,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    name: str | None = None,
    cache: bool = True,
) -> tuple[BowData, BowData]:
    """(train, test) word counts of the corpus at `path`: a folder or a tar archive in the
    layout <root>/<…train|…test>/<label>/<document> (see the module docstring).

    `name` defaults to the file or folder name without archive suffixes. With `cache`, the
    result is read from / written to ``cache_dir()/bow/`` (see the module docstring).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected a corpus folder or .tar.gz)")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ConfigError(f"vocab_size must be an integer ≥ 1, got {vocab_size!r}")
    if name is None:
        name = re.sub(r"(\.tar)?\.(gz|tgz|bz2|xz|tar)$", "", path.name) or "bow"
    if not cache:
        return parse_corpus(path, vocab_size, name)
    file = cache_path(path, vocab_size, name)
    cached = load_cache(file, name)
    if cached is not None:
        return cached
    train, test = parse_corpus(path, vocab_size, name)
    save_cache(file, path, train, test)
    return train, test


def sklearn_20news_home() -> Path:
    """Where scikit-learn's fetch_20newsgroups extracts the archive (it usually deletes it
    after pickling; the pickle itself is never read here)."""
    home = os.environ.get("SCIKIT_LEARN_DATA") or os.path.join("~", "scikit_learn_data")
    return Path(home).expanduser() / "20news_home"


def find_20news(cfg: DataConfig) -> Path:
    """The 20 Newsgroups archive or folder; else one line listing every place looked.

    An explicit ``cfg.path`` is the only place looked at; otherwise $VAELAB_20NEWS,
    $VAELAB_DATA/20news-bydate.tar.gz, $VAELAB_DATA/20news-bydate and scikit-learn's
    extracted download (~/scikit_learn_data/20news_home) in that order.
    """
    how = (
        f"provide {NEWS_ARCHIVE} ({NEWS_URL}) or its extracted folder with data.path=PATH or "
        f"{NEWS_ENV}=PATH, or put it in $VAELAB_DATA"
    )
    if cfg.path is not None:
        path = Path(cfg.path).expanduser()
        if path.exists():
            return path
        raise DataError(f"{NEWS_NAME}: data.path={cfg.path} does not exist; {how}")
    data_root = os.environ.get("VAELAB_DATA")
    places = [
        (f"${NEWS_ENV}", os.environ.get(NEWS_ENV)),
        (f"$VAELAB_DATA/{NEWS_ARCHIVE}", data_root and os.path.join(data_root, NEWS_ARCHIVE)),
        (f"$VAELAB_DATA/{NEWS_FOLDER}", data_root and os.path.join(data_root, NEWS_FOLDER)),
        ("scikit-learn download", str(sklearn_20news_home())),
    ]
    path, report = first_place(places, lambda p: None if p.exists() else "missing")
    if path is not None:
        return path
    raise DataError(f"{NEWS_NAME}: corpus not found; looked in: {'; '.join(report)}. To fix: {how}")


@DATASETS.register(NEWS_NAME)
def load(cfg: DataConfig) -> tuple[BowData, BowData]:
    """20 Newsgroups "bydate" (11,314 train / 7,532 test posts, 20 groups) as word counts over
    the top `data.vocab_size` (default 10,000) training words by document frequency."""
    return load_bow_corpus(find_20news(cfg), cfg.vocab_size or DEFAULT_VOCAB_SIZE, name=NEWS_NAME)
