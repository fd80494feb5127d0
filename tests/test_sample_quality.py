"""Sample-quality metrics: FID against closed forms (and scipy's sqrtm), KID's unbiasedness,
MMD, the FID Inception network's weight layout and loader, and the data-set classifier
(trained on sklearn's digits, then loaded from the cache)."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import pdist

from vaelab import DataConfig
from vaelab.data import ImageData, cache_dir, load_data
from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
from vaelab.evaluation import classifier_features as cf
from vaelab.evaluation import inception
from vaelab.evaluation import sample_quality as sq
from vaelab.evaluation.classifier_features import DatasetClassifierFeatures
from vaelab.evaluation.feature_extractors import get_feature_extractor
from vaelab.evaluation.inception import FIDInceptionV3, InceptionV3Features
from vaelab.evaluation.sample_quality import (
    frechet_distance,
    gaussian_frechet_distance,
    kernel_inception_distance,
    mmd,
    sample_quality,
)
from vaelab.registry import FEATURE_EXTRACTORS


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small networks run faster on one thread, and far faster when other jobs share the cores
    (two threads then spin against each other: 98 s instead of 6 s to train the classifier)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def closed_form_fid(mu_a, cov_a, mu_b, cov_b) -> float:
    """‖Δμ‖² + Tr(Σa + Σb − 2 sqrtm(Σa Σb)), by scipy's general matrix square root."""
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def random_covariance(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- FID -----------------------------------------------------------------------------------


def test_fid_of_diagonal_gaussians_is_mean_gap_plus_std_gaps():
    # N(μ, diag σ²): Tr(Σa + Σb − 2(ΣaΣb)^½) = Σ (σa² + σb² − 2σaσb) = Σ (σa − σb)²
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
    expected = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()  # 4.25 + 5 = 9.25
    assert gaussian_frechet_distance(
        mu_a, np.diag(sd_a**2), mu_b, np.diag(sd_b**2)
    ) == pytest.approx(expected, rel=1e-12)

    rng = np.random.default_rng(0)
    a = mu_a + sd_a * rng.normal(size=(100_000, 3))
    b = mu_b + sd_b * rng.normal(size=(100_000, 3))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_fid_of_non_commuting_covariances_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    d = 6
    cov_a, cov_b = random_covariance(rng, d), random_covariance(rng, d)
    assert not np.allclose(cov_a @ cov_b, cov_b @ cov_a)  # the general case
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    expected = closed_form_fid(mu_a, cov_a, mu_b, cov_b)
    assert gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, 1e-10)
    assert gaussian_frechet_distance(mu_b, cov_b, mu_a, cov_a) == pytest.approx(expected, 1e-10)

    a = rng.multivariate_normal(mu_a, cov_a, size=100_000)
    b = rng.multivariate_normal(mu_b, cov_b, size=100_000)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    # and on the samples' own Gaussian fits, exactly scipy's value
    fit = lambda x: (x.mean(0), np.cov(x, rowvar=False))  # noqa: E731
    assert frechet_distance(a, b) == pytest.approx(closed_form_fid(*fit(a), *fit(b)), 1e-9)


def test_fid_of_one_distribution_is_near_zero_even_with_singular_covariances():
    rng = np.random.default_rng(2)
    cov = random_covariance(rng, 4)
    a, b = (rng.multivariate_normal(np.ones(4), cov, size=50_000) for _ in range(2))
    assert 0 <= frechet_distance(a, b) < 0.005
    # fewer samples than dimensions: covariance of rank 49 in 200-d, still exactly 0 to itself
    x = torch.rand(50, 200) * 10
    assert abs(frechet_distance(x, x)) < 1e-9 * float(x.var(0).sum())
    # two singular covariances, by the Gram matrices: with centred rows X [n, D], Y [m, D],
    # Σa Σb = XᵀX YᵀY / ((n − 1)(m − 1)) has the non-zero eigenvalues of K Kᵀ, K = X Yᵀ / √(…),
    # so Tr (Σa Σb)^½ = the sum of the singular values of the 50 × 60 matrix K
    y = torch.rand(60, 200)
    xc, yc = (t.double().numpy() - t.double().numpy().mean(0) for t in (x, y))
    k = xc @ yc.T / math.sqrt((len(xc) - 1) * (len(yc) - 1))
    traces = (xc**2).sum() / (len(xc) - 1) + (yc**2).sum() / (len(yc) - 1)
    mean_gap = ((x.double().mean(0) - y.double().mean(0)) ** 2).sum().item()
    expected = mean_gap + traces - 2 * np.linalg.svd(k, compute_uv=False).sum()
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_fid_refuses_too_few_samples_and_mismatched_dimensions():
    with pytest.raises(VaelabError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(DataError, match="dimension"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))


# --- KID and MMD ----------------------------------------------------------------------------


def brute_force_mmd2(kernel, x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) by explicit loops over pairs."""
    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_estimators_match_brute_force_also_across_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.3
    poly = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    rbf = lambda u, v: np.exp(-((u - v) ** 2).sum() / (2 * 0.8**2))  # noqa: E731
    expected_poly, expected_rbf = brute_force_mmd2(poly, x, y), brute_force_mmd2(rbf, x, y)
    for block in (1024, 2):  # one block, and many (diagonal blocks off the diagonal too)
        monkeypatch.setattr(sq, "BLOCK_SIZE", block)
        assert mmd(x, y, kernel="polynomial") == pytest.approx(expected_poly, rel=1e-12)
        assert mmd(x, y, bandwidth=0.8) == pytest.approx(expected_rbf, rel=1e-12)
        # KID on a single subset holding all of the smaller set's rows
        assert kernel_inception_distance(x[:7], y[:7], subsets=1, subset_size=7) == (
            pytest.approx(brute_force_mmd2(poly, x, y[:7]), rel=1e-12),
            0.0,
        )
    # the default bandwidth is the median pairwise distance of the pooled sample
    median = np.median(pdist(np.concatenate([x, y])))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=median), rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    shifted = rng.normal(size=(1000, 8)) + 0.5
    same_mean, same_std = kernel_inception_distance(x, y, subsets=20, subset_size=500, rng=0)
    diff_mean, diff_std = kernel_inception_distance(x, shifted, subsets=20, subset_size=500, rng=0)
    assert abs(same_mean) < 0.02 and same_std < 0.05
    assert diff_mean > 0.5 and diff_mean > 10 * diff_std
    # the random state is explicit: same seed, same value; subset size capped at the set size
    assert kernel_inception_distance(x, y, subsets=3, rng=7) == kernel_inception_distance(
        x, y, subsets=3, rng=np.random.default_rng(7)
    )
    capped = kernel_inception_distance(x[:50], y[:50], subsets=1, subset_size=10**6)
    assert capped == (pytest.approx(mmd(x[:50], y[:50], kernel="polynomial"), rel=1e-10), 0.0)


def test_kid_on_small_subsets_is_unbiased_for_the_full_sample_value():
    # averaged over random subsets, each subset's unbiased MMD² has exactly the full-sample
    # U-statistic as its expectation; the biased (V-statistic) one would be off by O(1/m)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8)) + 0.3
    full = mmd(x, y, kernel="polynomial")
    mean, std = kernel_inception_distance(x, y, subsets=4000, subset_size=10, rng=0)
    standard_error = std / np.sqrt(4000)
    assert abs(mean - full) < 5 * standard_error
    # a V-statistic's k(x_i, x_i) terms would add (mean diagonal − mean off-diagonal) / m
    v_statistic_bias = sum(within_set_gap(z) for z in (x, y)) / 10
    assert 5 * standard_error < 0.1 * v_statistic_bias  # so this test would catch one


def within_set_gap(z: np.ndarray) -> float:
    k = sq.polynomial_kernel(z, z)
    n = len(z)
    return float(np.trace(k) / n - (k.sum() - np.trace(k)) / (n * (n - 1)))


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(800, 5)), rng.normal(size=(800, 5))
    assert abs(mmd(x, y)) < 0.005
    assert mmd(x, y + 0.5) > 0.05
    images = torch.rand(40, 1, 8, 8)  # raw pixels work too (flattened)
    assert mmd(images, torch.rand(40, 1, 8, 8)) < mmd(images, torch.rand(40, 1, 8, 8) * 0.5)
    with pytest.raises(ConfigError, match='did you mean "rbf"'):
        mmd(x, y, kernel="rbg")


# --- the FID Inception network --------------------------------------------------------------

# Parameter count of torchvision's Inception3 (27,161,264) minus its AuxLogits (3,326,696)
# and its 1000-way fc (2,049,000): pytorch-fid's network up to pool3.
INCEPTION_POOL3_PARAMETERS = 21_785_568


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random-weights state dict laid out like pytorch-fid's pt_inception file (with its
    1008-way `fc` layer), saved by torch.save."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    state = dict(network.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048) * 0.01, torch.zeros(1008)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(state, path)
    return path, state


def test_inception_state_dict_uses_pytorch_fid_names_and_shapes():
    network = FIDInceptionV3()
    state = network.state_dict()
    assert sum(p.numel() for p in network.parameters()) == INCEPTION_POOL3_PARAMETERS
    shapes = {
        "Conv2d_1a_3x3.conv.weight": [32, 3, 3, 3],
        "Conv2d_1a_3x3.bn.running_var": [32],
        "Conv2d_4a_3x3.conv.weight": [192, 80, 3, 3],
        "Mixed_5b.branch5x5_2.conv.weight": [64, 48, 5, 5],
        "Mixed_5b.branch_pool.conv.weight": [32, 192, 1, 1],
        "Mixed_6a.branch3x3.conv.weight": [384, 288, 3, 3],
        "Mixed_6e.branch7x7dbl_5.conv.weight": [192, 192, 1, 7],
        "Mixed_7a.branch7x7x3_4.conv.weight": [192, 192, 3, 3],
        "Mixed_7b.branch3x3dbl_3b.conv.weight": [384, 384, 3, 1],
        "Mixed_7c.branch_pool.conv.weight": [192, 2048, 1, 1],
        "Mixed_7c.branch_pool.bn.bias": [192],
    }
    for key, shape in shapes.items():
        assert list(state[key].shape) == shape, key
    assert not any(k.startswith(("fc.", "AuxLogits.")) for k in state)  # fc is not required
    assert not any(".bias" in k for k in state if ".conv." in k)  # convs have no bias


def test_inception_features_load_strictly_and_have_2048_dims(inception_file):
    path, state = inception_file
    extractor = InceptionV3Features(path)
    loaded = extractor.network.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert extractor.name.startswith(f"inception-v3-fid(pool3, 2048-d, {path.name}, sha256 ")

    grey = torch.rand(2, 1, 28, 28)
    feats = extractor.features(grey, batch_size=1)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert torch.allclose(feats, extractor.features(grey.expand(-1, 3, -1, -1)), atol=1e-5)
    assert extractor.features(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


def test_inception_file_without_fc_or_batch_counters_loads(inception_file, tmp_path):
    # pytorch-fid's file holds fc (1008 classes); an older PyTorch wrote no num_batches_tracked
    _, state = inception_file
    lean = {k: v for k, v in state.items() if not k.startswith("fc.")}
    lean = {k: v for k, v in lean.items() if not k.endswith("num_batches_tracked")}
    torch.save(lean, tmp_path / "lean.pth")
    network = inception.load_fid_inception(tmp_path / "lean.pth")
    weight = state["Mixed_7c.branch_pool.conv.weight"]
    assert torch.equal(network.Mixed_7c.branch_pool.conv.weight, weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_inception_files_fail_with_one_line(inception_file, tmp_path):
    _, state = inception_file
    missing = {k: v for k, v in state.items() if not k.startswith("Mixed_7c.")}
    torch.save(missing, tmp_path / "missing.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"\x80\x02not really a pickle" + os.urandom(64))

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "exploit.pth").write_bytes(pickle.dumps({"x": Exploit()}))
    cases = {
        "missing.pth": "missing \\(e.g. Mixed_7c",
        "corrupt.pth": "not a readable PyTorch weights file",
        "exploit.pth": "not a readable PyTorch weights file",
        "absent.pth": "do not exist",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            InceptionV3Features(tmp_path / name)
        assert "\n" not in str(info.value), name
    assert not (tmp_path / "pwned").exists()


def test_get_feature_extractor_takes_inception_weights_from_the_environment(
    inception_file, monkeypatch
):
    path, _ = inception_file
    data = ImageData("unlabelled", torch.rand(4, 1, 8, 8))
    monkeypatch.setenv(inception.INCEPTION_ENV, str(path))
    assert isinstance(get_feature_extractor(data), InceptionV3Features)
    monkeypatch.delenv(inception.INCEPTION_ENV)
    with pytest.raises(ConfigError, match=inception.INCEPTION_ENV):
        get_feature_extractor(data, kind="inception")
    with pytest.raises(DataError, match="no labels.*Inception weights"):
        get_feature_extractor(data)
    assert set(FEATURE_EXTRACTORS.names()) >= {"inception", "classifier"}


# --- the data-set classifier ----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(train, test, classifier features, cache folder) on sklearn's digits, trained into a
    cache folder of their own (other tests may have cached a digits classifier already)."""
    cache = tmp_path_factory.mktemp("feature-cache")
    with pytest.MonkeyPatch.context() as mp:  # (the autouse cache fixture is per test)
        mp.setenv("VAELAB_CACHE", str(cache))
        train, test = load_data(DataConfig(name="digits"))
        return train, test, DatasetClassifierFeatures(train, progress=False), cache


def test_classifier_trains_to_high_held_out_accuracy_and_is_cached(digits, monkeypatch):
    train, test, extractor, cache = digits
    monkeypatch.setenv("VAELAB_CACHE", str(cache))
    assert extractor.trained and extractor.held_out_accuracy > 0.8
    assert extractor.name == (
        f"classifier(digits, 8x8x1, 128-d, held-out acc {extractor.held_out_accuracy:.3f})"
    )
    assert extractor.path.parent == cache_dir() / "feature-nets" and extractor.path.is_file()
    assert extractor.path.name.startswith("digits-8x8x1-")

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds the network")

    monkeypatch.setattr(cf, "train_classifier", no_training)
    again = get_feature_extractor(train, progress=False)
    assert isinstance(again, DatasetClassifierFeatures) and not again.trained
    assert again.name == extractor.name and again.path == extractor.path
    assert torch.equal(again.features(test.images), extractor.features(test.images))


def test_classifier_fid_separates_real_from_noise(digits):
    train, test, extractor, _ = digits
    real_test = extractor.features(test.images)
    assert abs(frechet_distance(real_test, real_test)) < 1e-6
    train_vs_test = frechet_distance(extractor.features(train.images), real_test)
    noise = torch.rand(len(test), *test.shape, generator=torch.Generator().manual_seed(0))
    report = sample_quality(extractor, test, noise, kid_subsets=10, kid_subset_size=200)
    assert report["fid"] > 10 * train_vs_test
    assert report["kid_mean"] > 3 * report["kid_std"] and report["mmd"] > 0
    assert report["n_real"] == report["n_fake"] == len(test)
    assert report["features"] == extractor.name
    same = sample_quality(extractor, test, test.images, kid_subsets=10, kid_subset_size=200)
    assert abs(same["fid"]) < 1e-6
    # a set against itself: the unbiased MMD² is −2/n · (mean k(x_i, x_i) − mean k(x_i, x_j))
    assert -0.01 < same["mmd"] < 0


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64)])
def test_classifier_works_for_other_image_sizes(shape):
    images = torch.rand(40, *shape)
    labels = torch.arange(40) % 2
    config = cf.ClassifierConfig(epochs=1, min_steps=1, batch_size=20)
    extractor = DatasetClassifierFeatures(
        ImageData("toy", images, labels), config=config, progress=False
    )
    c, h, w = shape
    assert extractor.name.startswith(f"classifier(toy, {h}x{w}x{c}, 128-d, held-out acc ")
    assert extractor.features(images[:3]).shape == (3, 128)
    # other labels, other network: the cache key covers the data
    other = DatasetClassifierFeatures(
        ImageData("toy", images, 1 - labels), config=config, progress=False
    )
    assert other.path != extractor.path and other.trained


@pytest.mark.parametrize("size, pooled", [(8, 2), (28, 7), (32, 8), (64, 8), (128, 8)])
def test_the_classifier_downsamples_until_the_pooled_map_is_at_most_8_px(size, pooled):
    net = cf.SmallClassifier(1, 3, cf.ClassifierConfig(), size)
    pool = next(i for i, m in enumerate(net.body) if isinstance(m, torch.nn.AdaptiveAvgPool2d))
    assert net.body[:pool](torch.zeros(1, 1, size, size)).shape[-1] == pooled
    # images up to 32 px keep the three-convolution net (and so their cached weights)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.body) == 3 + (size > 32) * (
        1 + (size > 64)
    )


def test_classifier_trains_through_a_run_directory_it_resumes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path))
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 2
    data = ImageData("toy", images, labels)
    config = cf.ClassifierConfig(widths=(4, 8, 8), feature_dim=8, min_steps=4, batch_size=20)
    before = torch.get_rng_state()
    first = DatasetClassifierFeatures(data, config=config, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched
    run_dir = first.path.with_suffix(".fit")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "test"
    assert records[-1]["held_out_accuracy"] == first.held_out_accuracy
    # a training whose weights file was never written picks up the run directory's checkpoint
    first.path.unlink()
    again = DatasetClassifierFeatures(data, config=config, progress=False)
    assert again.trained and again.held_out_accuracy == first.held_out_accuracy
    assert torch.equal(again.features(images), first.features(images))


def test_fid_bootstrap_se_shrinks_with_more_samples_and_the_protocol_names_the_weights():
    import numpy as np
    from torch import nn

    from vaelab.evaluation.sample_quality import (
        WEAK_ACCURACY,
        FeatureExtractor,
        bootstrap_fid_se,
        fid_protocol,
    )

    rng = np.random.default_rng(0)
    small = bootstrap_fid_se(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 0.5, 30, 1)
    large = bootstrap_fid_se(rng.normal(size=(3200, 4)), rng.normal(size=(3200, 4)) + 0.5, 30, 1)
    assert 0 < large < small / 2  # ≈ 1/√n: 16× the samples, about ¼ the error

    net = nn.Linear(3, 2)
    extractor = FeatureExtractor("toy", net)
    first = fid_protocol(extractor, torch.zeros(5, 1, 2, 2), 7, "test split")
    with torch.no_grad():
        net.weight[0, 0] += 1.0
    second = extractor.protocol()
    assert first["weights_sha256"] != second["weights_sha256"]
    assert (
        first["n_generated"] == 7
        and first["n_reference"] == 5
        and first["image_shape"] == [1, 2, 2]
    )
    assert not first["weak_features"]
    extractor.held_out_accuracy = WEAK_ACCURACY - 0.01
    assert extractor.protocol()["weak_features"]
