"""Table 2 of Shekhovtsov et al. (2022) at CPU scale: train/test NELBO and precision@100 of
semantic-hashing VAEs on 20 Newsgroups for encoders e1/e2/e3 × 8/16/32/64 bits.

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/semhash_table.py                      # depth 0, the short schedule
    python benchmarks/semhash_table.py --depths 0 1 2       # all 36 cells, as time allows

It runs the `semhash-table` recipe (cells on vaelab's grid runner: in parallel on a local
Ray, at most --max-concurrent at once; finished cells kept in --run-dir and not rerun) and
writes benchmarks/results/semhash_table.json: {"cells": [{"encoder", "bits", "depth",
"epochs", "estimator", "seeds", "train_nelbo", "test_nelbo", "precision_at_100" (means over
--seeds), "intervals", "convention", "paper_test_nelbo", …}], "e1_best_rows", "command", …}.
Goal: e1 has the lowest test NELBO in every (bits, depth) row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaelab.experiments.semhash import best_encoder_per_row, run_semhash_table
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
    cells = run_semhash_table(cfg, Path(args.run_dir))["cells"]
    winners = best_encoder_per_row(cells)
    result = {
        "benchmark": "semhash_table",
        "cells": cells,
        "e1_best_rows": sum(v == "e1" for v in winners.values()),
        "rows": len(winners),
        "goal": "e1 has the lowest test NELBO in every (bits, depth) row",
        "goal_met": all(v == "e1" for v in winners.values()),
        "seconds": time.perf_counter() - start,
        **provenance(),
    }
    write_json(args.output, result)
    print(f"e1 best in {result['e1_best_rows']}/{result['rows']} rows; wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
