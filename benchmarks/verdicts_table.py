"""Every computed verdict of the committed recipe results in one table.

    python benchmarks/verdicts_table.py

Reads the `verdict_details` of each recipe's results file under `benchmarks/results/` (each
entry made by `vaelab.evaluation.verdicts.verdict`: claim, claimed sign, mean effect over
seeds or examples with its 95 % interval, n, verdict, caveat) and writes
`results/verdicts.md`: one table per results file (with its seeds), one row per claim, and
the files that hold no computed verdicts yet. Nothing is recomputed here: the table shows
what the recipes decided.
"""

from __future__ import annotations

import json

from common import RESULTS, command_line

from vaelab.evaluation.verdicts import verdict_table
from vaelab.files import atomic_write_text
from vaelab.report import markdown_table

# results file (relative to RESULTS) → the recipe that makes it
SOURCES = {
    "gmm_toy/results.json": "gmm-toy",
    "groundtruth.json": "groundtruth",
    "disentanglement.json": "disentanglement",
    "rd_study_fashion_mnist/fid.json": "rd-study (Fashion-MNIST)",
    "rd_study_dsprites/fid.json": "rd-study (dSprites)",
    "semhash_table.json": "semhash-table (benchmarks/semhash_table.py)",
}


def details(results: dict) -> list[dict]:
    """A results file's verdicts as a list (rd-study keys them by claim name)."""
    found = results.get("verdict_details", [])
    return list(found.values()) if isinstance(found, dict) else list(found)


def main() -> None:
    sections, missing = [], []
    counts: dict[str, int] = {}
    for name, recipe in SOURCES.items():
        path = RESULTS / name
        results = json.loads(path.read_text()) if path.exists() else {}
        verdicts = details(results)
        if not verdicts:
            missing.append(f"- `{name}` ({recipe}): no computed verdicts in the committed file")
            continue
        for v in verdicts:
            counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
        seeds = results.get("seeds")
        sections.append(
            f"## {recipe} — `{name}`, seeds {seeds}\n\n" + markdown_table(*verdict_table(verdicts))
        )
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    text = "\n\n".join(
        [
            "# Verdicts of the committed results",
            f"Made by `{command_line()}` from the files below ({tally}). A verdict is "
            "*reproduced* when the 95 % interval of the effect excludes zero in the claimed "
            "direction, *contradicted* when it excludes zero the other way, *inconclusive* "
            "otherwise or when a caveat makes the measurement unfit to decide "
            "(`vaelab.evaluation.verdicts.verdict`).",
            *sections,
            *(["## Not yet regenerated\n\n" + "\n".join(missing)] if missing else []),
        ]
    )
    out = RESULTS / "verdicts.md"
    atomic_write_text(out, text + "\n")
    print(f"wrote {out} ({tally})")


if __name__ == "__main__":
    main()
