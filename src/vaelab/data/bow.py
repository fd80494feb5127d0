"""Bag-of-words corpora (20 Newsgroups) as sparse word counts, for semantic hashing.

Layout: scikit-learn's ``load_files`` layout, ``<root>/<split>/<label>/<document>``, where the
two split folders are the ones whose names end in "train" and "test" (case-insensitive), e.g.
``20news-bydate-train`` and ``20news-bydate-test``. The corpus is read from that folder or
streamed straight out of a tar archive (``.tar.gz``, ``.tgz``, …) such as the standard
``20news-bydate.tar.gz`` (11,314 training and 7,532 test documents, 20 newsgroups); nothing is
extracted to disk. Hidden files and folders (names starting with ".") are ignored.

Text processing (deterministic; ``PROCESSING_VERSION`` is bumped whenever it changes). Two
presets (`PREPROCESSINGS`) share the steps and differ where marked:

1. [rainbow] a file that does not look like text is not a document (`looks_like_text`,
   Rainbow's check with ``--istext-avoid-uuencode``: binary or uuencoded posts; 22 files of
   20news-bydate);
2. bytes are decoded as latin-1 (every byte is a character; nothing fails to decode) and
   ``\\r\\n`` becomes ``\\n``;
3. the e-mail header is dropped as ``strip_headers`` says (`split_header`): "auto" (default)
   removes the text before the first blank line only when it is a block of RFC 822 header
   lines, so plain text keeps every word; true removes it always (scikit-learn's
   ``strip_newsgroup_header``; a document without a blank line is then all header, so
   empty); false never. Footers and quoted replies are kept;
4. the text is lowercased and split into tokens = maximal runs of ``[a-z]`` of length ≥ 2
   (non-ASCII letters separate tokens) [rainbow: and ≤ 99, as its lexer];
5. stop words are dropped: [vaelab] scikit-learn's ``ENGLISH_STOP_WORDS`` (318 words),
   [rainbow] the SMART list built into Rainbow (523 words, `stop_words.SMART_STOP_WORDS`);
6. [rainbow] a document left with fewer than 2 tokens is dropped (the processed corpus of
   the semantic-hashing papers dropped its empty and one-word documents);
7. vocabulary = the `vocab_size` words (default 10,000) with the highest document frequency in
   the *training* split, ties broken alphabetically; the vocabulary is stored in that order
   (word 0 is the most frequent). Fewer distinct words → a smaller vocabulary.
8. each document becomes its counts of vocabulary words. [vaelab] a document left without any
   vocabulary word is dropped; [rainbow] it is kept as a row of zeros (as the public
   reproduction keeps it). ``BowData.dropped_empty`` counts the documents of a split that are
   not rows, for any of these reasons.

The "rainbow" preset approximates the "processed" 20news-bydate of Rennie's matlab files that
Shekhovtsov et al. (2022) and its reproduction used (Rainbow's default lexer with
``--skip-header`` and ``--istext-avoid-uuencode``: alphabetic tokens, lowercased, SMART stop
list, no stemming); ``benchmarks/semhash_preset.py`` measures how close it comes.

Documents are ordered by label name, then file name (not shuffled); labels index the sorted
label-folder names of both splits.

The counts are cached after the first read in ``cache_dir()/bow/<name>-<key>.safetensors``
(safetensors + JSON metadata, written atomically), where the key hashes the source's identity
(an archive's size and modification time, or a folder's listing of paths, sizes and
modification times), the vocabulary size, the header mode, the preset and
``PROCESSING_VERSION``.

Count smoothing (`smooth_counts`, optional, applied after loading, never cached): every
document gets a pseudo-count vector added (``BowData.pseudo_counts``), as the reproduction
does.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import DataConfig
from ..distributions.multinomial import CONVENTIONS, convention_offset
from ..errors import CheckpointError, ConfigError, DataError
from ..registry import DATASETS
from .base import TrainingData, cache_dir, first_place
from .stop_words import SMART_STOP_WORDS

PROCESSING_VERSION = 2  # 2: strip_headers (default "auto"), presets, Rainbow's text check
DEFAULT_VOCAB_SIZE = 10_000
MIN_TOKEN_LENGTH = 2
TOKEN = re.compile(f"[a-z]{{{MIN_TOKEN_LENGTH},}}")  # maximal runs: [a-z]+ of length ≥ 2
SPLITS = ("train", "test")
CACHE_FORMAT = "vaelab-bow"

NEWS_NAME = "20newsgroups"
NEWS_RAINBOW_NAME = "20newsgroups-rainbow"
NEWS_ENV = "VAELAB_20NEWS"
NEWS_ARCHIVE = "20news-bydate.tar.gz"
NEWS_FOLDER = "20news-bydate"
NEWS_URL = "http://qwone.com/~jason/20Newsgroups/20news-bydate.tar.gz"


# --- the data --------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class BowData(TrainingData):
    """Word counts of N documents over a vocabulary of V words, as CSR arrays, with labels.

    Row i's counts are ``values[crow_indices[i]:crow_indices[i + 1]]`` at the vocabulary
    indices ``col_indices[…]`` (strictly increasing within a row). ``batch`` gives dense
    float32 rows [b, V] on the data's device: the stored counts plus ``pseudo_counts`` [V]
    when that is set (count smoothing, `smooth_counts`; every row gets the same vector, so
    no count is 0). ``dropped_empty`` is the number of documents of the source split that are
    not rows (no vocabulary word left; for the "rainbow" preset also: not text, or fewer than
    2 words; a subset keeps the number of its source).
    """

    name: str
    crow_indices: Tensor  # int64 [N + 1]
    col_indices: Tensor  # int64 [nnz]
    values: Tensor  # float32 [nnz], counts ≥ 0 (> 0 as read)
    labels: Tensor  # int64 [N]
    vocabulary: tuple[str, ...]
    label_names: tuple[str, ...]
    dropped_empty: int = 0
    pseudo_counts: Tensor | None = field(default=None)  # float32 [V] added to every row

    def __post_init__(self):
        self.vocabulary, self.label_names = tuple(self.vocabulary), tuple(self.label_names)
        check_csr(self)

    def __len__(self) -> int:
        return len(self.crow_indices) - 1

    def __repr__(self) -> str:
        smoothed = ", smoothed" if self.pseudo_counts is not None else ""
        return (
            f"BowData({self.name!r}, {len(self)} documents, {len(self.vocabulary)} words, "
            f"{len(self.values)} non-zeros, {len(self.label_names)} labels, "
            f"{self.dropped_empty} dropped empty{smoothed}, device={self.device})"
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
        """Every count of `batch` is 0 or 1."""
        if self.pseudo_counts is not None and bool((self.pseudo_counts != 0).any()):
            return False
        return bool(((self.values == 0) | (self.values == 1)).all())

    @property
    def counts(self) -> Tensor:
        """The stored counts (without `pseudo_counts`) as a torch sparse CSR tensor [N, V]
        (sharing memory with the arrays)."""
        return torch.sparse_csr_tensor(
            self.crow_indices,
            self.col_indices,
            self.values,
            (len(self), len(self.vocabulary)),
            check_invariants=False,  # checked by check_csr when the data was made
        )

    @property
    def lengths(self) -> Tensor:
        """Words per document (sum of its `batch` row, pseudo-counts included), float32 [N]."""
        total = torch.cat(
            [
                self.values.new_zeros(1, dtype=torch.float64),
                self.values.cumsum(0, dtype=torch.float64),
            ]
        )
        lengths = total[self.crow_indices[1:]] - total[self.crow_indices[:-1]]
        if self.pseudo_counts is not None:
            lengths = lengths + self.pseudo_counts.double().sum()
        return lengths.float()

    @property
    def nbytes(self) -> int:
        held = (self.crow_indices, self.col_indices, self.values, self.labels, self.pseudo_counts)
        return sum(t.nbytes for t in held if t is not None)

    def to(self, device: torch.device | str) -> BowData:
        """The same data on `device` (tensors already there are shared, as with Tensor.to)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return BowData(
            self.name,
            move(self.crow_indices),
            move(self.col_indices),
            move(self.values),
            move(self.labels),
            self.vocabulary,
            self.label_names,
            self.dropped_empty,
            move(self.pseudo_counts),
        )

    def batch(self, index: Tensor | slice | Sequence[int] | int) -> Tensor:
        """Dense float32 counts [b, V] of the rows at `index`, on the data's device, plus
        `pseudo_counts` when set.

        Vectorised: the rows' ranges of the CSR arrays are gathered at once and scattered into
        zeros (or the pseudo-counts). An int gives one row [V].
        """
        if isinstance(index, int):
            return self.batch([index])[0]
        rows = self._rows(index)
        row_ids, pos = self._gather(rows)
        if self.pseudo_counts is None:
            out = torch.zeros(len(rows), len(self.vocabulary), device=self.device)
        else:
            out = self.pseudo_counts.expand(len(rows), -1).clone()
        out[row_ids, self.col_indices[pos]] += self.values[pos]  # each (row, word) once
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
            self.pseudo_counts,
        )

    def limit(self, n: int | None) -> BowData:
        """The first n documents (all if n is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def with_pseudo_counts(self, pseudo_counts: Tensor | None) -> BowData:
        """The same documents with `pseudo_counts` [V] added to every row (None: none)."""
        return BowData(
            self.name,
            self.crow_indices,
            self.col_indices,
            self.values,
            self.labels,
            self.vocabulary,
            self.label_names,
            self.dropped_empty,
            None if pseudo_counts is None else pseudo_counts.to(self.device),
        )

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
    pseudo = data.pseudo_counts
    if pseudo is not None:
        if not isinstance(pseudo, Tensor) or pseudo.dtype != torch.float32:
            raise DataError(f"{name}: pseudo_counts must be float32 [{vocab}]")
        if pseudo.shape != (vocab,) or not torch.isfinite(pseudo).all() or (pseudo < 0).any():
            raise DataError(f"{name}: pseudo_counts must be [{vocab}] finite counts ≥ 0")


# --- reading a corpus ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """scikit-learn's ENGLISH_STOP_WORDS (the "vaelab" preset's)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def smart_stop_words() -> frozenset[str]:
    """The SMART list built into Rainbow (the "rainbow" preset's)."""
    return SMART_STOP_WORDS


@dataclass(frozen=True)
class Preprocessing:
    """How a corpus' files become word counts: a named preset (module docstring, steps 1–8)."""

    name: str
    stop_words: Callable[[], frozenset[str]]
    max_token_length: int | None  # longer tokens are dropped (None: kept)
    text_files_only: bool  # a file that fails `looks_like_text` is not a document
    min_tokens: int  # a document with fewer tokens (after the stop list) is dropped
    drop_empty: bool  # drop a document left without a vocabulary word (else a row of zeros)


PREPROCESSINGS = {
    "vaelab": Preprocessing("vaelab", stop_words, None, False, 0, True),
    # Rainbow's default lexer (libbow lex-simple.c: isalpha runs, lowercased, 2..99 letters,
    # SMART stop list) with --skip-header and --istext-avoid-uuencode
    "rainbow": Preprocessing("rainbow", smart_stop_words, 99, True, 2, False),
}

# RFC 822 field line: a name of printable ASCII but ":" (no space), then ":"
FIELD = re.compile(r"([!-9;-~]+):")
# names of which one must occur in a block for "auto" to take it for a mail/news header
MAIL_HEADERS = frozenset(
    """from subject newsgroups lines organization organisation message-id date path sender
    reply-to to cc bcc keywords summary distribution nntp-posting-host article-i.d. xref
    references in-reply-to followup-to expires supersedes approved originator return-path
    received mime-version content-type content-transfer-encoding x-newsreader x-mailer""".split()
)


def is_header_block(lines: Sequence[str]) -> bool:
    """The lines look like an RFC 822 mail/news header: every one is a field ``Name: value``
    (Name: printable ASCII without spaces or ":") or a continuation (starting with a space or
    tab; also before the first field — 20news-bydate's removal of the Path header left one
    first in 22 posts), and one field name is a known mail or news header (`MAIL_HEADERS`:
    From, Subject, Newsgroups, Lines, …, case-insensitive). So "Subject: x" alone is a
    header, while a first paragraph "Note: this is …", "Re: …", "Dear Sir: …" (a space in
    the name) or a URL is text, and so is any block with a line of plain text in it."""
    names = []
    for line in lines:
        match = FIELD.match(line)
        if match is not None:
            names.append(match.group(1).lower())
        elif line[:1] not in (" ", "\t"):
            return False
    return any(name in MAIL_HEADERS for name in names)


def split_header(text: str, strip_headers: bool | str = "auto") -> tuple[str, bool]:
    """(body, whether a header was removed) of a document's text (``\\n`` line ends).

    The leading block is the text before the first blank line, all of it when there is none;
    a text starting with a blank line has an empty one. `strip_headers`: True removes the
    block (scikit-learn's ``strip_newsgroup_header``); "auto" removes it only when
    `is_header_block` says it is a header; False removes nothing.
    """
    if strip_headers is False:
        return text, False
    head, blank, body = ("\n" + text).partition("\n\n")  # a leading "\n": an empty header
    if strip_headers is True:
        return body, bool(head[1:])
    block = head[1:].split("\n")
    if block[-1] == "":  # the text ends without a blank line after its last line
        block.pop()
    if is_header_block(block):
        return body, True
    return text, False


def words(text: str, preprocessing: Preprocessing) -> Counter[str]:
    """Token counts of a body: lowercased, maximal [a-z] runs of ≥ 2 (≤ the preset's maximum)
    letters, the preset's stop words dropped."""
    counts = Counter(TOKEN.findall(text.lower()))
    for word in preprocessing.stop_words() & counts.keys():
        del counts[word]
    if preprocessing.max_token_length is not None:
        for word in [w for w in counts if len(w) > preprocessing.max_token_length]:
            del counts[word]
    return counts


def tokenize(
    raw: bytes, strip_headers: bool | str = "auto", preprocessing: str = "vaelab"
) -> Counter[str]:
    """Word counts of one document (module docstring, steps 2–5)."""
    body, _ = split_header(raw.decode("latin-1").replace("\r\n", "\n"), strip_headers)
    return words(body, PREPROCESSINGS[preprocessing])


PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\n\v\f\r"  # C's isprint or isspace
WHITE_SPACE = b" \t\n\v\f\r"
TEXT_TEST_BYTES = 4096


def looks_like_text(raw: bytes) -> bool:
    """Rainbow's text test (libbow istext.c, with ``--istext-avoid-uuencode``) on the first
    4096 bytes: not empty, more than 95 % (in integer percent) printable ASCII or white space,
    and not a uuencoded block — not (more than half of the complete lines of one length, in
    50..80, the most common one, with white space under a tenth of the bytes)."""
    head = raw[:TEXT_TEST_BYTES]
    n = len(head)
    if n == 0 or (100 * (n - len(head.translate(None, PRINTABLE)))) // n <= 95:
        return False
    lines = head.split(b"\n")[:-1]  # complete lines only
    spaces = n - len(head.translate(None, WHITE_SPACE))
    histogram = Counter(len(line) for line in lines)
    common, height = 0, histogram.get(0, 0)  # ties: the shortest length wins
    for length in sorted(histogram):
        if histogram[length] > height:
            common, height = length, histogram[length]
    uuencoded = height > len(lines) // 2 and spaces < n // 10 and 50 <= common <= 80
    return not uuencoded


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


@dataclass
class SplitStats:
    """What happened to a split's files on the way to documents."""

    files: int = 0
    not_text: int = 0  # failed `looks_like_text` (rainbow)
    header_removed: int = 0  # a header block was stripped
    too_short: int = 0  # fewer than the preset's `min_tokens` tokens
    no_blank_line: int = 0  # no blank line at all (with strip_headers = true: all header)


Document = tuple[str, str, Counter[str]]  # (label, document name, word counts)


def read_corpus(
    path: Path, strip_headers: bool | str = "auto", preprocessing: str = "vaelab"
) -> tuple[dict[str, list[Document]], list[str], dict[str, SplitStats]]:
    """Per split, its documents sorted by label then name; the label names; per split, what
    happened to its files (`SplitStats`). Steps 1–6 of the module docstring.

    Exactly one folder must end in "train" and one in "test" (else a DataError).
    """
    preset = PREPROCESSINGS[preprocessing]
    documents = _archive_documents(path) if path.is_file() else _folder_documents(path)
    split_dirs: dict[str, set[str]] = {split: set() for split in SPLITS}
    docs: dict[str, list[Document]] = {split: [] for split in SPLITS}
    stats = {split: SplitStats() for split in SPLITS}
    for parts, raw in documents:
        split = _split_of(parts)
        split_dirs[split].add("/".join(parts[:-2]))
        stat = stats[split]
        stat.files += 1
        if preset.text_files_only and not looks_like_text(raw):
            stat.not_text += 1
            continue
        text = raw.decode("latin-1").replace("\r\n", "\n")
        stat.no_blank_line += "\n\n" not in "\n" + text
        body, removed = split_header(text, strip_headers)
        stat.header_removed += removed
        counts = words(body, preset)
        if preset.min_tokens and sum(counts.values()) < preset.min_tokens:
            stat.too_short += 1
            continue
        docs[split].append((parts[-2], parts[-1], counts))
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
    return docs, labels, stats


def build_vocabulary(documents: Sequence[Counter[str]], size: int) -> list[str]:
    """The `size` words of highest document frequency, ties alphabetical, in that order."""
    frequency: Counter[str] = Counter()
    for counts in documents:
        frequency.update(counts.keys())
    ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:size]]


def to_bow(
    name: str,
    documents: Sequence[Document],
    vocabulary: Sequence[str],
    label_names: Sequence[str],
    drop_empty: bool = True,
    dropped_before: int = 0,
) -> BowData:
    """CSR counts of `documents` over `vocabulary`; a document without a vocabulary word is
    dropped when `drop_empty` (else a row of zeros). `dropped_before`: documents of the split
    already dropped (added to ``dropped_empty``)."""
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
    kept = per_doc > 0 if drop_empty else np.ones(len(counts), dtype=bool)
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
        dropped_empty=dropped_before + int((~kept).sum()),
    )


def parse_corpus(
    path: Path,
    vocab_size: int,
    name: str,
    strip_headers: bool | str = "auto",
    preprocessing: str = "vaelab",
) -> tuple[BowData, BowData]:
    """(train, test) read and processed from `path` (no cache)."""
    docs, label_names, stats = read_corpus(path, strip_headers, preprocessing)
    vocabulary = build_vocabulary([counts for _, _, counts in docs["train"]], vocab_size)
    if not vocabulary:
        raise DataError(f"{path}: {why_empty(stats['train'], strip_headers, preprocessing)}")
    drop_empty = PREPROCESSINGS[preprocessing].drop_empty
    return tuple(
        to_bow(
            name,
            docs[split],
            vocabulary,
            label_names,
            drop_empty,
            stats[split].not_text + stats[split].too_short,
        )
        for split in SPLITS
    )


def why_empty(stats: SplitStats, strip_headers: bool | str, preprocessing: str) -> str:
    """Why no training document has a word, naming the option that can change it."""
    n, mode = stats.files, json.dumps(strip_headers)
    if n == 0:
        return "no training documents"
    if stats.not_text == n:
        return f"none of the {n} training files looks like text (preprocessing {preprocessing!r})"
    said = (
        f"every one of the {n} training documents is empty after processing "
        f"(data.strip_headers = {mode} removed a header block from {stats.header_removed})"
    )
    if strip_headers is True and stats.header_removed:
        return (
            f"{said}: {stats.no_blank_line} have no blank line, so all of their text counts as "
            'header; set data.strip_headers = "auto" to strip only RFC 822 header lines, or '
            "false to keep everything"
        )
    keep = "; data.strip_headers = false keeps the header text" if stats.header_removed else ""
    return f"{said}: no word of ≥ {MIN_TOKEN_LENGTH} letters outside the stop list is left{keep}"


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


def cache_path(
    path: Path,
    vocab_size: int,
    name: str,
    strip_headers: bool | str = "auto",
    preprocessing: str = "vaelab",
) -> Path:
    key = json.dumps(
        {
            "source": source_identity(path),
            "vocab_size": vocab_size,
            "version": PROCESSING_VERSION,
            "strip_headers": strip_headers,
            "preprocessing": preprocessing,
        },
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
    strip_headers: bool | str = "auto",
    preprocessing: str = "vaelab",
) -> tuple[BowData, BowData]:
    """(train, test) word counts of the corpus at `path`: a folder or a tar archive in the
    layout <root>/<…train|…test>/<label>/<document> (see the module docstring).

    `name` defaults to the file or folder name without archive suffixes. With `cache`, the
    result is read from / written to ``cache_dir()/bow/`` (see the module docstring).
    `strip_headers`: "auto", True or False (`split_header`); `preprocessing`: a preset of
    `PREPROCESSINGS`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected a corpus folder or .tar.gz)")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ConfigError(f"vocab_size must be an integer ≥ 1, got {vocab_size!r}")
    if not (isinstance(strip_headers, bool) or strip_headers == "auto"):
        raise ConfigError(f'strip_headers must be "auto", true or false, got {strip_headers!r}')
    if preprocessing not in PREPROCESSINGS:
        raise ConfigError(
            f"preprocessing: unknown preset {preprocessing!r}; one of {', '.join(PREPROCESSINGS)}"
        )
    if name is None:
        name = re.sub(r"(\.tar)?\.(gz|tgz|bz2|xz|tar)$", "", path.name) or "bow"
    options = (strip_headers, preprocessing)
    if not cache:
        return parse_corpus(path, vocab_size, name, *options)
    file = cache_path(path, vocab_size, name, *options)
    cached = load_cache(file, name)
    if cached is not None:
        return cached
    train, test = parse_corpus(path, vocab_size, name, *options)
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
        raise DataError(f"{cfg.name}: data.path={cfg.path} does not exist; {how}")
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
    raise DataError(f"{cfg.name}: corpus not found; looked in: {'; '.join(report)}. To fix: {how}")


def load_20news(cfg: DataConfig, preprocessing: str) -> tuple[BowData, BowData]:
    return load_bow_corpus(
        find_20news(cfg),
        cfg.vocab_size or DEFAULT_VOCAB_SIZE,
        name=cfg.name,
        strip_headers=cfg.strip_headers,
        preprocessing=preprocessing,
    )


@DATASETS.register(NEWS_NAME)
def load(cfg: DataConfig) -> tuple[BowData, BowData]:
    """20 Newsgroups "bydate" (11,314 train / 7,532 test posts, 20 groups) as word counts over
    the top `data.vocab_size` (default 10,000) training words by document frequency."""
    return load_20news(cfg, "vaelab")


@DATASETS.register(NEWS_RAINBOW_NAME)
def load_rainbow(cfg: DataConfig) -> tuple[BowData, BowData]:
    """20 Newsgroups "bydate" processed like the papers' Rainbow-lexed corpus (the "rainbow"
    preset of the module docstring: SMART stop list, text files only, documents of ≥ 2
    words, empty rows kept), top `data.vocab_size` training words."""
    return load_20news(cfg, "rainbow")


# --- statistics of a corpus --------------------------------------------------------------------


def smooth_counts(train: BowData, test: BowData) -> tuple[BowData, BowData]:
    """The count smoothing of the public reproduction of Shekhovtsov et al. (proger/vae,
    va/newsgroups.py): with c_v the training count of word v, f = (c + 1/V) / Σ_v (c_v + 1/V),
    and every document of both splits gets x + f — one pseudo-word spread by the smoothed
    training unigram (so no count is 0, no document empty, and n grows by 1)."""
    if train.pseudo_counts is not None or test.pseudo_counts is not None:
        raise DataError(f"{train.name}: the counts are smoothed already")
    vocab = len(train.vocabulary)
    totals = torch.zeros(vocab, dtype=torch.float64, device=train.device)
    totals.index_add_(0, train.col_indices, train.values.double())
    smoothed = totals + 1.0 / vocab
    frequencies = (smoothed / smoothed.sum()).float()
    return train.with_pseudo_counts(frequencies), test.with_pseudo_counts(frequencies)


def _chunks(data, size: int = 2000) -> Iterator[Tensor]:
    """Dense float64 CPU rows of `data` (anything with len and batch), `size` at a time."""
    for start in range(0, len(data), size):
        yield data.batch(slice(start, start + size)).double().cpu()


def convention_shifts(data) -> dict[str, float]:
    """Per convention of `distributions.multinomial`: the mean per-document constant to add
    to a `saturated` NELBO of `data` (`convention_offset` relative to saturated)."""
    sums = dict.fromkeys(CONVENTIONS, 0.0)
    for x in _chunks(data):
        saturated = convention_offset(x, "saturated")
        for c in CONVENTIONS:
            sums[c] += float((convention_offset(x, c) - saturated).sum())
    return {c: v / len(data) for c, v in sums.items()}


def in_conventions(saturated: float, shifts: dict[str, float]) -> dict[str, float]:
    """A `saturated` NELBO per document as {"nelbo_<convention>": value} for every one."""
    return {f"nelbo_{c.replace('-', '_')}": saturated + shifts[c] for c in CONVENTIONS}


@torch.no_grad()
def collapsed_baseline(train, data) -> dict[str, float]:
    """Mean NELBO per document of `data`, in every convention, of the collapsed model: z
    carries nothing (rate 0) and every document is decoded by the training unigram
    π_v ∝ Σ_train x_v (pseudo-counts included; every vocabulary word occurs in training, or
    has a pseudo-count, so π_v > 0). `train`, `data`: anything with len, shape and batch."""
    totals = torch.zeros(train.shape[0], dtype=torch.float64)
    for x in _chunks(train):
        totals += x.sum(0)
    log_unigram = (totals / totals.sum()).log()
    sums = dict.fromkeys(CONVENTIONS, 0.0)
    for x in _chunks(data):
        no_coefficient = -(x * log_unigram).sum(-1)
        for c in CONVENTIONS:
            sums[c] += float((no_coefficient + convention_offset(x, c)).sum())
    return {f"nelbo_{c.replace('-', '_')}": v / len(data) for c, v in sums.items()}
