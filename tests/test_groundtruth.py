"""The groundtruth recipe end to end at toy scale over two seeds (reads Fashion-MNIST from
../shared): Table 1, the paired AIS differences on the same 100 held-out examples for every
decoder with BDMC gaps, the verdicts and the FID protocol; its fits on fresh draws of the
truth resuming inside a fit. (The effect itself at toy scale: test_groundtruth_toy.py.)"""

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import SHARED_DATA

from vaelab.cli import main
from vaelab.errors import ConfigError, VaelabError
from vaelab.evaluation.classifier_features import ClassifierConfig, DatasetClassifierFeatures
from vaelab.experiments import groundtruth as groundtruth_module
from vaelab.experiments.groundtruth import (
    Generator,
    GroundTruth,
    GroundTruthConfig,
    GroundTruthSeedConfig,
    build_model,
    fit_on_draws,
    negative_elbo,
)

FASHION = SHARED_DATA / "fashion-mnist"


# a cell's torch threads (sweep.cpus_per_run): 2. AIS on 100 held-out examples (the least
# the likelihood verdict accepts) with a 3-step, 1-chain, 1-leapfrog AIS: far too loose, which
# BDMC (2 simulated examples per decoder) shows, so the likelihood claims are inconclusive
TINY = ["train_limit=256", "gan_epochs=1", "pretrain_steps=10", "joint_steps=10",
        "batch_size=32", "eval_samples=100", "iwae_k=8", "ais_examples=100", "ais_steps=3",
        "ais_chains=1", "ais_leapfrog=1", "bdmc_examples=2", "fid_samples=64",
        "fid_bootstrap=4", "kid_subsets=5", "sweep.in_process=true", "sweep.progress=false",
        "sweep.cpus_per_run=2"]  # fmt: skip
OUTCOMES = {"reproduced", "contradicted", "inconclusive"}


def groundtruth(run_dir, seeds: str) -> int:
    sets = [f"data_path={FASHION}", *TINY, f"seeds={seeds}"]
    return main(["run", "groundtruth", "--run-dir", str(run_dir)] + [
        a for s in sets for a in ("--set", s)
    ])  # fmt: skip


def read(path):
    return json.loads(path.read_text())


@pytest.fixture
def quick_features(monkeypatch):
    """The data-set classifier of FID trained 40 steps instead of 800 (the recipe test's
    slowest part otherwise): weak features, so the FID claims carry that caveat."""

    def quick(train, weights, device, progress):
        config = ClassifierConfig(epochs=1, min_steps=40)
        return DatasetClassifierFeatures(train, device, config, progress=False)

    monkeypatch.setattr(groundtruth_module, "get_feature_extractor", quick)


def assert_close(a, b):
    """Equal up to float rounding, through nested dicts and lists."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    else:
        assert a == b


@pytest.mark.skipif(not FASHION.is_dir(), reason="../shared/data/fashion-mnist absent")
def test_groundtruth_recipe_writes_table_1_over_seeds(tmp_path, monkeypatch, quick_features):
    two, one = tmp_path / "two", tmp_path / "one"
    assert groundtruth(two, "[0,1]") == 0
    results = read(two / "results.json")
    assert results["done"] == 2 and results["fid_features"].startswith("classifier(")
    assert results["seeds"] == [0, 1] and results["ais_examples"] == 100
    assert (
        results["ais"].items()
        >= {"steps": 3, "chains": 1, "leapfrog": 1, "bdmc_examples": 2}.items()
    )
    assert [(s["seed"], s["dir"]) for s in results["per_seed"]] == [(0, "seed0"), (1, "seed1")]
    for seed in results["per_seed"]:
        rows = seed["rows"]
        assert len(rows) == 4 and rows[0]["sigma"] == pytest.approx(0.1)
        assert rows[0]["ais_loglik"] == rows[1]["ais_loglik"]  # same decoder
        assert rows[0]["bdmc_gap"] == rows[1]["bdmc_gap"]
        # the same 100 held-out examples for every decoder
        assert len({row["examples_sha256"] for row in rows}) == 1
        for row in rows:
            assert set(row) >= {"experiment", "elbo", "fid", "fid_se", "iwae_loglik",
                                "n_fid_samples", "ais_loglik", "bdmc_gap"}  # fmt: skip
            assert row["iwae_loglik"] >= row["elbo"] - 1.0  # IWAE (k = 8) is the tighter bound
            assert row["ais_examples"] == 100 and row["ais_loglik"]["n"] == 100
            assert math.isfinite(row["ais_loglik"]["mean"]) and row["ais_loglik"]["se"] > 0
            assert row["bdmc_gap"]["n"] == 2 and row["bdmc_gap"]["mean"] > 1.0  # 3 steps: loose
        seed_results = read(two / seed["dir"] / "results.json")
        assert seed_results["verdicts"] == seed["verdicts"]
        for d in seed["differences"].values():  # paired over the 100 AIS examples
            assert d["ais"]["n"] == 100 and d["elbo"]["n"] == 100
            assert d["ais_bound"] > 1.0
        ais_claims = [v for v in seed_results["verdict_details"] if "(AIS)" in v["claim"]]
        assert len(ais_claims) == 2
        assert all(v["verdict"] == "inconclusive" and "AIS too loose" in v["caveat"]
                   for v in ais_claims)  # fmt: skip
        assert not seed["reproduced"]
    for row in results["rows"]:  # over the two seeds, with the 95 % interval
        assert row["elbo"]["n"] == 2 and row["elbo"]["low"] < row["elbo"]["high"]
        assert row["ais_loglik"]["n"] == 2 and row["ais_loglik"]["se"] is not None
        assert row["bdmc_gap"]["over"] == "seeds"
    verdicts = results["verdicts"]
    assert len(verdicts) == 6 and set(verdicts.values()) <= OUTCOMES
    assert [v["n"] for v in results["verdict_details"]] == [2] * 6  # over seeds
    protocol = results["fid_protocol"]
    assert protocol["n_generated"] == protocol["n_reference"] == 64
    assert protocol["image_shape"] == [1, 28, 28] and len(protocol["weights_sha256"]) == 64
    assert protocol["reference"].startswith("ground-truth samples G(z) + 0 noise")
    assert protocol["weak_features"] == (protocol["held_out_accuracy"] < 0.8)
    for v in results["verdict_details"]:
        if "FID" in v["claim"] and protocol["weak_features"]:
            assert v["verdict"] == "inconclusive" and v["caveat"] == "weak features"
    report = (two / "report.md").read_text()
    assert "Table 1" in report and " ± " in report and "of 2 finished seeds" in report
    assert "## Verdicts" in report and "## Scale, beside the paper's" in report
    assert "100 examples, 3 steps, 1 chains, 1 leapfrog; BDMC 2" in report
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
    assert_close(again["rows"], single["rows"])
    assert_close(again["differences"], single["differences"])
    assert again["verdicts"] == single["verdicts"]


def test_ais_examples_are_checked():
    with pytest.raises(ConfigError, match="ais_examples = 200 > eval_samples = 100"):
        GroundTruthConfig(eval_samples=100, ais_examples=200)
    with pytest.raises(ConfigError, match="bdmc_examples: 0 .* or ≥ 2"):
        GroundTruthSeedConfig(bdmc_examples=1)
    assert GroundTruthConfig().ais_examples == 100


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
