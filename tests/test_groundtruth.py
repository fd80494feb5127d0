"""The groundtruth recipe end to end at toy scale over two seeds (reads Fashion-MNIST from
../shared), and its fits on fresh draws of the truth resuming inside a fit."""

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import SHARED_DATA

from vaelab.cli import main
from vaelab.errors import ConfigError, VaelabError
from vaelab.experiments import groundtruth as groundtruth_module
from vaelab.experiments.groundtruth import (
    Generator,
    GroundTruth,
    GroundTruthSeedConfig,
    build_model,
    fit_on_draws,
    negative_elbo,
)

FASHION = SHARED_DATA / "fashion-mnist"


# a cell's torch threads (sweep.cpus_per_run): 2, most of the time is the feature classifier
TINY = ["train_limit=256", "gan_epochs=1", "pretrain_steps=20", "joint_steps=20",
        "batch_size=32", "eval_samples=20", "iwae_k=8", "ais_examples=2", "ais_steps=10",
        "fid_samples=64", "sweep.in_process=true", "sweep.progress=false",
        "sweep.cpus_per_run=2"]  # fmt: skip


def groundtruth(run_dir, seeds: str) -> int:
    sets = [f"data_path={FASHION}", *TINY, f"seeds={seeds}"]
    return main(["run", "groundtruth", "--run-dir", str(run_dir)] + [
        a for s in sets for a in ("--set", s)
    ])  # fmt: skip


def read(path):
    return json.loads(path.read_text())


@pytest.mark.skipif(not FASHION.is_dir(), reason="../shared/data/fashion-mnist absent")
def test_groundtruth_recipe_writes_table_1_over_seeds(tmp_path, monkeypatch):
    two, one = tmp_path / "two", tmp_path / "one"
    assert groundtruth(two, "[0,1]") == 0
    results = read(two / "results.json")
    assert results["done"] == 2 and results["fid_features"].startswith("classifier(")
    assert [(s["seed"], s["dir"]) for s in results["per_seed"]] == [(0, "seed0"), (1, "seed1")]
    for seed in results["per_seed"]:
        rows = seed["rows"]
        assert len(rows) == 4 and rows[0]["sigma"] == pytest.approx(0.1)
        assert rows[0]["ais_loglik"] == rows[1]["ais_loglik"]  # same decoder
        for row in rows:
            assert set(row) >= {"experiment", "elbo", "fid", "iwae_loglik", "n_fid_samples"}
            assert row["iwae_loglik"] >= row["elbo"] - 1.0  # IWAE (k = 8) is the tighter bound
            assert row["ais_examples"] == 2 and math.isfinite(row["ais_loglik"])
    for row in results["rows"]:  # over the two seeds, with the 95 % interval
        assert row["elbo"]["n"] == 2 and row["elbo"]["low"] < row["elbo"]["high"]
    report = (two / "report.md").read_text()
    assert "Table 1" in report and " ± " in report and "of 2 finished seeds" in report
    cells = read(two / "seed1" / "cell.json")
    assert cells["status"] == "done" and "truth_elbo" in cells["metrics"]
    assert (two / "sweep.md").is_file()

    # a failed seed is reported with its error (the finished ones are kept, not rerun)
    def fails_for_seed_2(cfg, cell_dir):
        if cfg.seed == 2:
            raise VaelabError("seed 2 broke")
        return groundtruth_module.run_groundtruth_seed(cfg, cell_dir)

    failing = replace(groundtruth_module.TARGET, run=fails_for_seed_2)
    with monkeypatch.context() as patch:  # in-process, so the function is not shipped
        patch.setattr(groundtruth_module, "TARGET", failing)
        assert groundtruth(two, "[0,1,2]") == 0
    with_failure = read(two / "results.json")
    assert with_failure["done"] == 2 and with_failure["rows"] == results["rows"]
    assert with_failure["per_seed"][2] == {"seed": 2, "status": "failed", "dir": "seed2",
                                           "error": "seed 2 broke"}  # fmt: skip
    assert "- seed 2: failed — seed 2 broke" in (two / "report.md").read_text()

    # a seed's cell is that seed's run alone; one seed's report reads as that run's own
    assert groundtruth(one, "[1]") == 0
    single = read(one / "seed1" / "results.json")
    assert single["rows"] == read(two / "seed1" / "results.json")["rows"]
    own = (one / "seed1" / "report.md").read_text()
    assert (one / "report.md").read_text() == own.replace("(samples.png)", "(seed1/samples.png)")

    # resume inside an interrupted cell: every finished stage is loaded, not retrained, and
    # measures the same
    for path in [*one.glob("seed1/measure-*.json"), *one.glob("seed1/ais-*.json")]:
        path.unlink()
    record = read(one / "seed1" / "cell.json")
    (one / "seed1" / "cell.json").write_text(json.dumps(record | {"status": "running"}))
    stages = sorted((one / "seed1").glob("**/*.safetensors"))
    assert [str(p.relative_to(one / "seed1")) for p in stages] == [
        "elbo-encoder-only/checkpoint.safetensors", "elbo-fixed/checkpoint.safetensors",
        "elbo-learned-shared/checkpoint.safetensors", "encoder/checkpoint.safetensors",
        "generator.safetensors",
    ]  # fmt: skip
    assert (one / "seed1" / "elbo-fixed" / "metrics.jsonl").is_file()  # each fit is a run
    mtimes = [p.stat().st_mtime_ns for p in stages]
    assert groundtruth(one, "[1]") == 0
    assert [p.stat().st_mtime_ns for p in stages] == mtimes
    again = read(one / "seed1" / "results.json")
    for row, row_again in zip(single["rows"], again["rows"]):
        assert row_again.pop("experiment") == row.pop("experiment")
        assert row_again == pytest.approx(row, rel=1e-5)


def tiny_truth_and_model(cfg: GroundTruthSeedConfig):
    torch.manual_seed(0)
    generator = Generator(cfg.latent_dim)
    return GroundTruth(generator, cfg.sigma, cfg.latent_dim), build_model(
        cfg, generator, (1, 28, 28), "learned-shared"
    )


def test_a_fit_on_fresh_draws_resumes_inside_the_fit(tmp_path):
    cfg = GroundTruthSeedConfig(latent_dim=2, encoder_channels=[4], encoder_hidden=[8], batch_size=8,
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
