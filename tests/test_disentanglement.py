"""Disentanglement metrics (BetaVAE, FactorVAE, MIG, SAP, DCI): a perfect representation
scores near the top, independent noise near chance, on a synthetic data set with small factor
grids; the same on procedural dSprites with a tiny budget; the DCI and MIG building blocks."""

import json
import math

import numpy as np
import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.data.ground_truth import DSpritesGroundTruth, SyntheticGroundTruth
from vaelab.evaluation.disentanglement import (
    beta_vae_score,
    dci,
    dci_from_importance,
    disentanglement_metrics,
    encoder_mean_representation,
    factor_vae_score,
    histogram_discretize,
    mig,
    sap_score,
)
from vaelab.models import build_vae

GT = SyntheticGroundTruth((3, 4, 5, 6), seed=0)
K = GT.num_factors


def perfect(observations):
    """The factor classes themselves, plus a constant nuisance dimension."""
    return np.c_[GT.unmix(observations), np.ones(len(observations))]


def random_representation(dim, seed=123):
    """Independent noise of the given dimensionality, whatever the observation."""
    rng = np.random.default_rng(seed)
    return lambda observations: rng.standard_normal((len(observations), dim))


SMALL = {
    beta_vae_score: dict(num_train=500, num_eval=300),
    factor_vae_score: dict(num_train=500, num_eval=300, num_variance_estimate=1000),
    mig: dict(num_train=2000),
    sap_score: dict(num_train=1000, num_test=500),
    dci: dict(num_train=600, num_test=300),
}


def test_synthetic_ground_truth_is_invertible_and_uniform():
    rng = np.random.default_rng(0)
    factors, obs = GT.sample(4000, rng)
    assert factors.dtype == np.int64 and factors.shape == (4000, K) and obs.shape == (4000, K)
    np.testing.assert_allclose(GT.unmix(obs), factors, atol=1e-5)
    for k, size in enumerate(GT.factor_sizes):
        counts = np.bincount(factors[:, k], minlength=size)
        assert len(counts) == size and counts.min() > 4000 / size * 0.8


def test_perfect_representation_scores_near_the_top():
    beta = beta_vae_score(GT, perfect, 0, **SMALL[beta_vae_score])
    assert beta["eval_accuracy"] >= 0.95
    factor = factor_vae_score(GT, perfect, 0, **SMALL[factor_vae_score])
    assert factor["eval_accuracy"] >= 0.95
    assert factor["num_active_dims"] == K  # the constant dimension is pruned
    m = mig(GT, perfect, 0, **SMALL[mig])
    assert m["discrete_mig"] >= 0.9
    assert all(m[f"mig_{name}"] >= 0.9 for name in GT.factor_names)
    d = dci(GT, perfect, 0, **SMALL[dci])
    assert d["disentanglement"] >= 0.9 and d["completeness"] >= 0.9
    assert d["informativeness_test"] >= 0.95
    assert sap_score(GT, perfect, 0, **SMALL[sap_score])["SAP_score"] >= 0.3


def test_random_representation_scores_near_chance():
    noise = random_representation(K + 1)
    chance = 1.0 / K
    beta = beta_vae_score(GT, noise, 0, **SMALL[beta_vae_score])
    assert abs(beta["eval_accuracy"] - chance) < 0.1
    factor = factor_vae_score(GT, noise, 0, **SMALL[factor_vae_score])
    assert abs(factor["eval_accuracy"] - chance) < 0.1
    assert mig(GT, noise, 0, **SMALL[mig])["discrete_mig"] < 0.03
    assert sap_score(GT, noise, 0, **SMALL[sap_score])["SAP_score"] < 0.05
    d = dci(GT, noise, 0, num_train=300, num_test=200, n_estimators=30)
    assert d["disentanglement"] < 0.1 and d["completeness"] < 0.1
    assert d["informativeness_test"] < chance + 0.15


def test_a_seed_gives_the_same_score_and_a_generator_is_accepted():
    kw = SMALL[beta_vae_score]
    a = beta_vae_score(GT, random_representation(K), 7, **kw)
    b = beta_vae_score(GT, random_representation(K), 7, **kw)
    assert a == b
    c = beta_vae_score(GT, random_representation(K), np.random.default_rng(7), **kw)
    assert c == a  # a seed and default_rng(seed) are the same stream


def test_invariance_to_rescaling_codes_and_pruning():
    kw = SMALL[factor_vae_score]
    scaled = lambda obs: perfect(obs) * np.array([0.2, 1.0, 30.0, 1e3, 1.0])  # noqa: E731
    assert factor_vae_score(GT, scaled, 0, **kw) == factor_vae_score(GT, perfect, 0, **kw)
    # a dimension whose std falls below prune_threshold = 0.05 is dropped, as in
    # disentanglement_lib; its factor is then predicted by some other dimension
    shrunk = lambda obs: perfect(obs) * np.array([1e-3, 1.0, 1.0, 1.0, 1.0])  # noqa: E731
    pruned = factor_vae_score(GT, shrunk, 0, **kw)
    assert pruned["num_active_dims"] == K - 1
    assert pruned["eval_accuracy"] == pytest.approx(1 - 1 / K, abs=0.07)
    # MIG (equal-width bins over each code's range) is invariant to affine maps of each code
    affine = lambda obs: perfect(obs) * np.array([-3.0, 0.5, 10.0, 2.0, 1.0]) + 7.0  # noqa: E731
    a, b = mig(GT, affine, 0, num_train=1000), mig(GT, perfect, 0, num_train=1000)
    assert a["discrete_mig"] == pytest.approx(b["discrete_mig"], abs=1e-9)


def test_half_the_factors_captured_gives_about_half_the_scores():
    half = lambda obs: np.c_[GT.unmix(obs)[:, :2], np.random.default_rng(0).random((len(obs), 2))]  # noqa: E731
    m = mig(GT, half, 0, num_train=2000)
    assert m["mig_factor0"] >= 0.9 and m["mig_factor2"] < 0.05
    assert 0.4 < m["discrete_mig"] < 0.55


def test_dci_from_importance_matrices():
    assert dci_from_importance(np.eye(4)) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert dci_from_importance(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-6)
    # one code carries both factors, one carries nothing: D = 0 (the idle code has no
    # weight), C = 1 (each factor lives in one code)
    d, c = dci_from_importance(np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert d == pytest.approx(0.0, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
    # two codes per factor, each code pure: D = 1, C = 1 − log 2 / log 4 = 0.5
    d, c = dci_from_importance(np.kron(np.eye(2), np.ones((2, 1))))
    assert d == pytest.approx(1.0, abs=1e-6) and c == pytest.approx(0.5, abs=1e-6)


def test_histogram_discretize_uses_num_bins_equal_width_bins():
    x = np.linspace(0.0, 1.0, 1001)[:, None]
    bins = histogram_discretize(x, 20)
    assert bins.min() == 1 and bins.max() == 20
    assert np.all(np.diff(bins[:, 0]) >= 0)
    assert np.bincount(bins[:, 0])[1:].min() >= 49


def test_all_metrics_at_a_reduced_scale():
    scores = disentanglement_metrics(GT, perfect, 0, scale=0.03)
    assert scores["beta_vae.eval_accuracy"] >= 0.9
    assert scores["factor_vae.eval_accuracy"] >= 0.9
    assert scores["mig.discrete_mig"] >= 0.9
    assert scores["dci.disentanglement"] >= 0.9
    assert scores["sap.SAP_score"] > 0.2


def centroid(observations):
    """A hand-made dSprites representation: the shape's centroid (x, y) and √area."""
    image = observations[:, 0]
    mass = image.sum((1, 2))
    rows = (image.sum(2) * np.arange(64)).sum(1) / mass
    cols = (image.sum(1) * np.arange(64)).sum(1) / mass
    return np.c_[cols, rows, np.sqrt(mass)]


def test_dsprites_ground_truth_with_a_tiny_budget():
    gt = DSpritesGroundTruth()
    factors, obs = gt.sample(8, np.random.default_rng(0))
    assert obs.shape == (8, 1, 64, 64) and obs.dtype == np.float32
    assert set(np.unique(obs)) <= {0.0, 1.0}
    # the centroid knows position and scale, not orientation
    m = mig(gt, centroid, 0, num_train=2000)
    assert m["mig_posX"] > 0.5 and m["mig_posY"] > 0.5 and m["mig_orientation"] < 0.05
    noise = mig(gt, random_representation(3), 0, num_train=2000)
    assert noise["discrete_mig"] < 0.03 < m["discrete_mig"] - 0.3
    beta = beta_vae_score(gt, centroid, 0, batch_size=16, num_train=200, num_eval=100)
    assert beta["eval_accuracy"] > 0.5  # chance is 0.2
    factor = factor_vae_score(
        gt, centroid, 0, batch_size=16, num_train=200, num_eval=100, num_variance_estimate=500
    )
    assert 0.3 < factor["eval_accuracy"] <= 0.6 + 0.1  # 3 codes for 5 factors: at most ~3/5
    assert sap_score(gt, centroid, 0, num_train=500, num_test=250)["SAP_score"] > 0.05


def test_encoder_mean_representation_of_a_conditional_vae_on_dsprites():
    torch.manual_seed(0)
    cfg = ModelConfig(
        network="conv", channels=[4, 4, 8], hidden=[16], latent_dim=3, conditioning="film"
    )
    model = build_vae(cfg, (1, 64, 64))
    gt = DSpritesGroundTruth()
    obs = gt.sample_observations(10, np.random.default_rng(0))
    for beta in (0.1, 4.0):
        codes = encoder_mean_representation(model, beta=beta, batch_size=4)(obs)
        with torch.no_grad():
            x = torch.from_numpy(obs)
            _, cond = model.condition(len(x), beta, "cpu")
            expected = model.encode(x, cond).mean.double().numpy()
        assert codes.shape == (10, 3) and codes.dtype == np.float64
        np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)
    rep = encoder_mean_representation(model, beta=1.0)
    scores = beta_vae_score(gt, rep, 0, batch_size=8, num_train=30, num_eval=20)
    assert 0.0 <= scores["eval_accuracy"] <= 1.0


def test_disentanglement_recipe_end_to_end(tmp_path, monkeypatch):
    """`vaelab run disentanglement` at toy scale: the JSON the issue asks for, figures, report."""
    from functools import partial

    import vaelab.evaluation.classifier_features as cf
    import vaelab.evaluation.disentanglement as dis
    from vaelab.cli import main

    # toy-sized FID classifier and DCI trees (the real ones take minutes; tested above)
    monkeypatch.setattr(dis, "dci", partial(dis.dci, n_estimators=5))

    tiny = cf.ClassifierConfig(widths=(4, 8, 8), feature_dim=8, epochs=1, min_steps=10)
    monkeypatch.setattr(
        cf, "DatasetClassifierFeatures", partial(cf.DatasetClassifierFeatures, config=tiny)
    )

    args = ["run", "disentanglement", "--run-dir", str(tmp_path),
            "--set", "train_limit=600", "--set", "test_limit=200", "--set", "hidden=[32]",
            "--set", "latent_dim=3", "--set", "betas=[1,4]", "--set", "beta_range=[1,4]",
            "--set", "epochs=1", "--set", "metric_scale=0.01", "--set", "kl_examples=100",
            "--set", "second_stage_steps=20", "--set", "second_stage_hidden=[16]",
            "--set", "fid_samples=100", "--set", "slice_gammas=[0.1,0.01]",
            "--set", "progress=false", "--set", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    keys = {"beta", "beta_vae", "factor_vae", "mig", "sap", "dci_d", "dci_c", "dci_i", "rate",
            "tc", "mi", "dwkl"}  # fmt: skip
    for rows in results["regimes"].values():
        assert sorted(r["beta"] for r in rows) == [1.0, 4.0]
        for r in rows:
            assert keys <= set(r)
            assert r["mi"] + r["tc"] + r["dwkl"] == pytest.approx(r["rate"], rel=0.05, abs=0.5)
    for rows in (results["two_stage_fid"][k] for k in results["regimes"]):
        assert all(
            math.isfinite(r["fid_prior"]) and math.isfinite(r["fid_two_stage"]) for r in rows
        )
    for name in ("report.md", "metrics_vs_beta.png", "kl_vs_beta.png", "loss_slices.png"):
        assert (tmp_path / name).exists(), name
