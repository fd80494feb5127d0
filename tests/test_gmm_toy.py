"""The gmm-toy recipe end to end, with few steps."""

import json

from vaelab.cli import main


def test_gmm_toy_writes_results_and_the_elbo_rises_while_the_likelihood_falls(tmp_path):
    args = ["run", "gmm-toy", "--run-dir", str(tmp_path), "--set", "pretrain_steps=600",
            "--set", "joint_steps=600", "--set", "rbm_steps=300", "--set", "grid=30",
            "--set", "samples=1000", "--set", "progress=false"]  # fmt: skip
    assert main(args) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    for key in ("gt_negative_entropy", "elbo_before", "elbo_after", "loglik_before", "loglik_after",
                "rbm_loglik", "parallelogram_residual_before", "parallelogram_residual_after"):  # fmt: skip
        assert isinstance(r[key], float), key
    assert r["elbo_after"] > r["elbo_before"]
    assert r["loglik_before"] <= r["gt_negative_entropy"] + 1e-6  # the truth is the decoder here
    assert r["loglik_after"] < r["loglik_before"]
    assert r["parallelogram_residual_after"] < r["parallelogram_residual_before"]
    assert r["parallelogram_residual_rbm"] < 1e-5
    assert (tmp_path / "figure2.png").stat().st_size > 10_000 and "Figure 2" in (
        tmp_path / "report.md"
    ).read_text()
