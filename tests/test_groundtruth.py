"""The groundtruth recipe end to end at toy scale (reads Fashion-MNIST from ../shared)."""

import json
import math

import pytest
from conftest import SHARED_DATA

from vaelab.cli import main

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
    stages = sorted(tmp_path.glob("*.safetensors"))
    assert [p.name for p in stages] == [
        "elbo-encoder-only.safetensors", "elbo-fixed.safetensors",
        "elbo-learned-shared.safetensors", "encoder.safetensors", "generator.safetensors",
    ]  # fmt: skip
    mtimes = [p.stat().st_mtime_ns for p in stages]
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in stages] == mtimes
    again = json.loads((tmp_path / "results.json").read_text())
    for row, row_again in zip(results["rows"], again["rows"]):
        assert row_again.pop("experiment") == row.pop("experiment")
        assert row_again == pytest.approx(row, rel=1e-5)
