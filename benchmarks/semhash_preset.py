"""How close the "rainbow" bag-of-words preset comes to the processed 20 Newsgroups of the
semantic-hashing papers, and the collapsed baseline of each preprocessing (issue 15 item 4).

The processed corpus (Rennie's matlab files, used by Shekhovtsov et al. 2022 and its public
reproduction): Rainbow lexing of 20news-bydate, 18,846 files → 18,824 lexed (Rainbow skips 22)
→ 18,774 documents after dropping empty and one-word ones = 11,269 train + 7,505 test; its
vocabulary has 61,188 words. For each preset of `vaelab.data.bow` (headers: data.strip_headers
"auto", which on 20news-bydate strips exactly what `true` does) this reads the archive once
and reports: files, files that are not text, documents per split, the vocabulary before the
top-10,000 cut (distinct words of all documents, of the training ones, and the words that
occur at least twice — the size closest to 61,188), rows after the cut, and the collapsed
baseline (training unigram, rate 0; `data.bow.collapsed_baseline`) per document in the three
conventions, with and without the reproduction's count smoothing.

    python benchmarks/semhash_preset.py [--data PATH] [--vocab-size 10000]

Output: results/semhash_preset.json. About a minute per preset on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, provenance  # noqa: E402

from vaelab.data import bow  # noqa: E402
from vaelab.files import write_json  # noqa: E402

PAPER = {
    "files": 18_846,
    "lexed": 18_824,
    "documents": {"train": 11_269, "test": 7_505},
    "vocabulary": 61_188,
    "source": "Rennie's 20news-bydate matlab files ('processed'), as used by Shekhovtsov "
    "et al. (2022) and its reproduction (ReScience C 9(2), 2023)",
}


def measure(path: Path, preprocessing: str, vocab_size: int) -> dict:
    started = time.perf_counter()
    docs, labels, stats = bow.read_corpus(path, "auto", preprocessing)
    seconds = time.perf_counter() - started
    occurrences: Counter[str] = Counter()
    train_words: set[str] = set()
    for split in bow.SPLITS:
        for _, _, counts in docs[split]:
            occurrences.update(counts)
            if split == "train":
                train_words.update(counts)
    vocabulary = bow.build_vocabulary([c for _, _, c in docs["train"]], vocab_size)
    preset = bow.PREPROCESSINGS[preprocessing]
    data = {
        split: bow.to_bow(
            f"20newsgroups-{preprocessing}",
            docs[split],
            vocabulary,
            labels,
            preset.drop_empty,
            stats[split].not_text + stats[split].too_short,
        )
        for split in bow.SPLITS
    }
    smoothed = dict(zip(bow.SPLITS, bow.smooth_counts(data["train"], data["test"])))
    return {
        "preprocessing": preprocessing,
        "strip_headers": "auto",
        "files": {split: stats[split].files for split in bow.SPLITS},
        "not_text": {split: stats[split].not_text for split in bow.SPLITS},
        "header_removed": {split: stats[split].header_removed for split in bow.SPLITS},
        "fewer_than_min_tokens": {split: stats[split].too_short for split in bow.SPLITS},
        "documents": {split: len(docs[split]) for split in bow.SPLITS},
        "vocabulary_before_cut": {
            "all_documents": len(occurrences),
            "training_documents": len(train_words),
            "occurring_at_least_twice": sum(1 for v in occurrences.values() if v >= 2),
        },
        "vocab_size": len(vocabulary),
        "rows_after_cut": {split: len(data[split]) for split in bow.SPLITS},
        "empty_rows_after_cut": {
            split: int((data[split].lengths == 0).sum()) for split in bow.SPLITS
        },
        "mean_words_per_document": {
            split: float(data[split].lengths.mean()) for split in bow.SPLITS
        },
        "collapsed_baseline": {
            split: bow.collapsed_baseline(data["train"], data[split]) for split in bow.SPLITS
        },
        "collapsed_baseline_count_smoothing": {
            split: bow.collapsed_baseline(smoothed["train"], smoothed[split])
            for split in bow.SPLITS
        },
        "read_seconds": seconds,
    }


def closeness(result: dict) -> dict:
    """The preset's counts minus the processed corpus's."""
    docs = result["documents"]
    return {
        "lexed_minus_paper": sum(result["files"].values())
        - sum(result["not_text"].values())
        - PAPER["lexed"],
        "documents_minus_paper": {s: docs[s] - PAPER["documents"][s] for s in bow.SPLITS},
        "vocabulary_minus_paper": {
            k: v - PAPER["vocabulary"] for k, v in result["vocabulary_before_cut"].items()
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_DATA / "20news-bydate.tar.gz"))
    p.add_argument("--vocab-size", type=int, default=bow.DEFAULT_VOCAB_SIZE)
    args = p.parse_args()
    path = Path(args.data).expanduser().resolve()
    presets = {}
    for name in bow.PREPROCESSINGS:
        presets[name] = measure(path, name, args.vocab_size)
        presets[name]["versus_paper"] = closeness(presets[name])
        r = presets[name]
        print(
            f"{name}: documents {r['documents']}, vocabulary {r['vocabulary_before_cut']}, "
            f"collapsed test NELBO (saturated) "
            f"{r['collapsed_baseline']['test']['nelbo_saturated']:.1f}",
            flush=True,
        )
    result = {
        "data": str(path),
        "paper": PAPER,
        "assumptions": [
            "Rainbow's default lexer (libbow lex-simple.c, the 'alpha' lexer): maximal runs "
            "of ASCII letters, lowercased, 2..99 letters, the SMART stop list built into "
            "libbow (stopwords.c, 523 distinct words), no stemming",
            "--skip-header (text before the first blank line dropped; vaelab's 'auto' strips "
            "the same on every 20news-bydate document) and --istext-avoid-uuencode (its text "
            "check then skips exactly 22 of the 18,846 files, as the processed corpus)",
            "documents with fewer than 2 tokens dropped before the vocabulary cut",
            "the processed vocabulary of 61,188 words is compared with the distinct words and "
            "with the words occurring at least twice (a Rainbow vocabulary pruned by "
            "occurrence count); the semantic-hashing runs use the top 10,000 training words "
            "by document frequency either way",
        ],
        "presets": presets,
        **provenance(),
    }
    write_json(RESULTS / "semhash_preset.json", result)
    print(f"wrote {RESULTS / 'semhash_preset.json'}")


if __name__ == "__main__":
    main()
