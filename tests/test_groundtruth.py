"""The groundtruth recipe end to end at toy scale (reads Fashion-MNIST from ../shared), and
its fits on fresh draws of the truth resuming inside a fit."""

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import SHARED_DATA

from vaelab.cli import main
from vaelab.errors import ConfigError
from vaelab.experiments.groundtruth import (
    Generator,
    GroundTruth,
    GroundTruthConfig,
    build_model,
    fit_on_draws,
    negative_elbo,
)

FASHION = SHARED_DATA / "fashion-mnist"


@pytest.mark.skipif(not FASHION.is_dir(), reason="../shared/data/fashion-mnist absent")
def test_groundtruth_recipe_writes_table_1(tmp_path):
    args = ["run", "groundtruth", "--run-dir", str(tmp_path), "--set", f"data_path={FASHION}",
            "--set", "train_limit=1000", "--set", "gan_epochs=1", "--set", "pretrain_steps=30",
            "--set", "joint_steps=30", "--set", "batch_size=32", "--set", "eval_samples=20",
            "--set", "iwae_k=8", "--set", "ais_examples=2", "--set", "ais_steps=10", "--set", "fid_samples=64", "--set", "progress=false",
            "--set", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["rows"]) == 4 and results["fid_features"].startswith("classifier(")
    for row in results["rows"]:
        assert set(row) >= {"experiment", "elbo", "fid", "iwae_loglik", "n_fid_samples"}
        assert row["iwae_loglik"] >= row["elbo"] - 1.0  # IWAE (k = 8) is the tighter bound
        assert row["ais_examples"] == 2 and math.isfinite(row["ais_loglik"])
    assert results["rows"][0]["ais_loglik"] == results["rows"][1]["ais_loglik"]  # same decoder
    assert results["rows"][0]["sigma"] == pytest.approx(0.1)
    assert "Table 1" in (tmp_path / "report.md").read_text()

    # resume: every finished stage is loaded, not retrained, and measures the same
    for path in [*tmp_path.glob("measure-*.json"), *tmp_path.glob("ais-*.json")]:
        path.unlink()
    stages = sorted(tmp_path.glob("**/*.safetensors"))
    assert [str(p.relative_to(tmp_path)) for p in stages] == [
        "elbo-encoder-only/checkpoint.safetensors", "elbo-fixed/checkpoint.safetensors",
        "elbo-learned-shared/checkpoint.safetensors", "encoder/checkpoint.safetensors",
        "generator.safetensors",
    ]  # fmt: skip
    assert (tmp_path / "elbo-fixed" / "metrics.jsonl").is_file()  # each fit is a run
    mtimes = [p.stat().st_mtime_ns for p in stages]
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in stages] == mtimes
    again = json.loads((tmp_path / "results.json").read_text())
    for row, row_again in zip(results["rows"], again["rows"]):
        assert row_again.pop("experiment") == row.pop("experiment")
        assert row_again == pytest.approx(row, rel=1e-5)


def tiny_truth_and_model(cfg: GroundTruthConfig):
    torch.manual_seed(0)
    generator = Generator(cfg.latent_dim)
    return GroundTruth(generator, cfg.sigma, cfg.latent_dim), build_model(
        cfg, generator, (1, 28, 28), "learned-shared"
    )


def test_a_fit_on_fresh_draws_resumes_inside_the_fit(tmp_path):
    cfg = GroundTruthConfig(latent_dim=2, encoder_channels=[4], encoder_hidden=[8], batch_size=8,
                            lr=1e-2, device="cpu", progress=False)  # fmt: skip
    truth, whole = tiny_truth_and_model(cfg)
    fit_on_draws(whole, truth, negative_elbo, 6, cfg, tmp_path / "whole")
    _, interrupted = tiny_truth_and_model(cfg)
    fit_on_draws(interrupted, truth, negative_elbo, 3, cfg, tmp_path / "split")
    _, resumed = tiny_truth_and_model(cfg)  # a new session: it continues from step 3
    fit_on_draws(resumed, truth, negative_elbo, 6, cfg, tmp_path / "split")
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=0, rtol=0)
    flat = torch.nn.utils.parameters_to_vector
    untrained = tiny_truth_and_model(cfg)[1]
    assert not torch.equal(flat(whole.parameters()), flat(untrained.parameters()))
    other_truth = replace(cfg, sigma=0.2)
    with pytest.raises(ConfigError, match="different config"):  # refused, not resumed
        fit_on_draws(resumed, truth, negative_elbo, 6, other_truth, tmp_path / "split")
