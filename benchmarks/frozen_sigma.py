"""Test terms with σ_x frozen from training against σ_x fitted to each test batch — the
protocol vaelab used before (DESIGN §1a): for every run with an optimal σ mode below a folder,
at its β (a β-conditional run at each of --betas), the test distortion and −ELBO with the
frozen σ_x and with σ_x fitted to every evaluation batch, at several batch sizes.

    python benchmarks/frozen_sigma.py /tmp/runs/rd-study --output benchmarks/results/frozen_sigma.json

The frozen terms are the same at every batch size (a density of the test point); the
batch-fitted ones look at the test data's errors, so they are no bound on −log p(x) and move
with the batch size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vaelab.evaluation import evaluate
from vaelab.files import write_json
from vaelab.runs import load_runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

TERMS = ("distortion", "rate", "negative_elbo")


@torch.no_grad()
def batch_fitted(model, data, beta, batch_size: int) -> dict[str, float]:
    """The test terms with σ_x fitted to each batch (the likelihood in training mode; its
    running estimate restored afterwards, so the model is left as it was)."""
    saved = {k: v.clone() for k, v in model.likelihood.state_dict().items()}
    model.eval()
    model.likelihood.train()
    totals = dict.fromkeys(TERMS, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for start in range(0, len(data), batch_size):
            terms = model(data.batch(slice(start, start + batch_size)), beta=beta)
            for name in TERMS:
                totals[name] += float(getattr(terms, name).sum())
    model.likelihood.load_state_dict(saved)
    model.eval()
    return {name: total / len(data) for name, total in totals.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a folder of runs (e.g. an rd-study run directory)")
    p.add_argument("--betas", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[50, 500, 10_000])
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    rows = []
    for run in load_runs(args.run_dir, device="cpu"):
        model = run.model
        if not model.likelihood.batch_dependent:
            continue
        for beta in args.betas if model.conditional else [model.beta]:
            frozen = {
                n: evaluate(model, run.test_data, batch_size=n, beta=beta) for n in args.batch_sizes
            }
            fitted = {n: batch_fitted(model, run.test_data, beta, n) for n in args.batch_sizes}
            row = {
                "run": str(run.run_dir.relative_to(args.run_dir)),
                "sigma_mode": model.likelihood.describe()["sigma_mode"],
                "beta": beta,
                "test_examples": len(run.test_data),
                "frozen_sigma": model.likelihood.describe(model.condition(1, beta, "cpu")[1])[
                    "sigma"
                ],
                "frozen": {str(n): {t: frozen[n][t] for t in TERMS} for n in args.batch_sizes},
                "batch_fitted": {str(n): fitted[n] for n in args.batch_sizes},
            }
            rows.append(row)
            reference = str(
                args.batch_sizes[1] if len(args.batch_sizes) > 1 else args.batch_sizes[0]
            )
            print(
                f"{row['run']:28s} β={beta:<6g} −ELBO frozen {row['frozen'][reference]['negative_elbo']:9.2f}"
                + "".join(
                    f"  fitted@{n} {fitted[n]['negative_elbo']:9.2f}" for n in args.batch_sizes
                )
            )
    result = {"benchmark": "frozen_sigma", "run_dir": args.run_dir, "rows": rows} | provenance()
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
