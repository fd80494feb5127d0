"""`vaelab demo`: one β-conditional run beside the two sweeps, its saving and its cost."""

import json
import math

from vaelab.cli import main
from vaelab.evaluation import evaluate
from vaelab.runs import load_run


def test_the_demo_reports_the_conditional_runs_cost_against_the_sweep(tmp_path):
    args = ["demo", "--run-dir", str(tmp_path), "--set", "epochs=3", "--set", "hidden=[32]",
            "--set", "betas=[0.3,3]", "--set", "rd_points=3", "--set", "progress=false",
            "--set", "sweep.in_process=true"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    conditional = load_run(tmp_path / "decoupled-conditional" / "seed0", device="cpu")
    for cost in results["cost"]:
        beta = cost["beta"]
        separate = load_run(tmp_path / "decoupled-sweep" / f"beta{beta:g}" / "seed0", device="cpu")
        expected = (
            evaluate(conditional.model, conditional.test_data, beta=beta)["loss"]
            - evaluate(separate.model, separate.test_data)["loss"]
        )
        assert math.isclose(cost["gap"]["mean"], expected, rel_tol=1e-6, abs_tol=1e-6)
    curve = results["curves"]["(iv) decoupled β-conditional"]
    assert sorted(p["beta"] for p in curve) == [0.1, 0.3, 0.548, 3.0]  # grid on [0.1, 3] ∪ betas
    assert results["seconds"]["ratio"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "less). Cost:" in report and "(iv) decoupled β-conditional" in report
