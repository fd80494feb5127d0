"""Table 2 of Shekhovtsov et al. (2022) at CPU scale: train/test NELBO and precision@100 of
semantic-hashing VAEs on 20 Newsgroups for encoders e1/e2/e3 × 8/16/32/64 bits.

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/semhash_table.py                      # depth 0, the short schedule
    python benchmarks/semhash_table.py --depths 0 1 2       # all 36 cells, as time allows

It runs the `semhash-table` recipe (cells on vaelab's grid runner: in parallel on a local
Ray, at most --max-concurrent at once; finished cells kept in --run-dir and not rerun, so an
interrupted grid resumes) and writes benchmarks/results/semhash_table.json: {"cells": [{"encoder",
"bits", "depth", "epochs", "schedule", "estimator", "selection", "seeds", "train_nelbo" and
"test_nelbo" ({"full", "no_coefficient", "saturated"} → {"mean", "ci95", …}),
"collapsed_baseline", "gain", "precision_at_100", "precision_within_radius_2", "map",
"paper_test_nelbo", …}], "rows": [{"bits", "depth", "claims", "verdict"}] (the paper's
ordering e1 < e2 < e3 of test NELBO, decided from the paired per-seed differences),
"verdicts" (counts), "command", …}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaelab.experiments.semhash import run_semhash_table
from vaelab.experiments.settings import SemhashTableConfig
from vaelab.files import write_json
from vaelab.sweeps import SweepOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, SHARED_DATA, provenance  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_DATA / "20news-bydate.tar.gz"))
    p.add_argument("--depths", type=int, nargs="+", default=[0])
    p.add_argument("--bits", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--estimator", default="disarm")
    p.add_argument("--epochs-single", type=int, default=None, help="default: the short schedule")
    p.add_argument("--epochs-multi", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-concurrent", type=int, default=None, help="default: as many as fit")
    p.add_argument("--run-dir", default=str(REPO / "runs" / "semhash-table"))
    p.add_argument("--output", default=str(RESULTS / "semhash_table.json"))
    args = p.parse_args(argv)
    cfg = SemhashTableConfig(
        data_path=args.data, depths=args.depths, bits=args.bits, estimator=args.estimator,
        epochs_single=args.epochs_single, epochs_multi=args.epochs_multi, seeds=args.seeds,
        sweep=SweepOptions(max_concurrent=args.max_concurrent),
    )  # fmt: skip
    start = time.perf_counter()
    table = run_semhash_table(cfg, Path(args.run_dir))
    outcomes = [row["verdict"] for row in table["rows"]]
    result = {
        "benchmark": "semhash_table",
        "seeds": table["seeds"],
        "cells": table["cells"],
        "rows": table["rows"],
        "verdicts": {v: outcomes.count(v) for v in ("reproduced", "contradicted", "inconclusive")},
        "verdict_details": [claim for row in table["rows"] for claim in row["claims"]],
        "claim": "e1 < e2 < e3 in test NELBO in every (bits, depth) row (the paper's Table 2)",
        "seconds": time.perf_counter() - start,
        **provenance(),
    }
    write_json(args.output, result)
    print(f"e1 < e2 < e3 per row: {result['verdicts']}; wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
