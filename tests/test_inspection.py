"""Looking at a model (issue 16 item 6): `evaluation.inspection`'s sample / traverse /
interpolate decode the codes they say, from the codes they say; the commands `vaelab sample |
traverse | interpolate` write those decodes; the run report's traversal; `vaelab eval
--weights ema` loads the `ema.*` tensors; bad invocations are one line and exit 2."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_env
from PIL import Image

import vaelab
from vaelab import runs
from vaelab.checkpoint import load_checkpoint, save_checkpoint
from vaelab.cli import main
from vaelab.config import DataConfig, ModelConfig
from vaelab.data import load_data
from vaelab.errors import CheckpointError, VaelabError
from vaelab.evaluation import evaluate, figures
from vaelab.evaluation.inspection import (
    find_second_stage,
    interpolate,
    load_second_stage,
    sample,
    slerp,
    traverse,
    traverse_betas,
)
from vaelab.evaluation.kl_decomposition import latent_usage
from vaelab.experiments.study import fit_second_stage
from vaelab.models import build_vae
from vaelab.models.two_stage import two_stage_generate
from vaelab.runs import load_run
from vaelab.training import CHECKPOINT

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits", train_limit=64, test_limit=64))


def tiny(seed: int = 0, **fields):
    torch.manual_seed(seed)
    return build_vae(ModelConfig(latent_dim=4, hidden=[32], **fields), SHAPE).eval()


def conditional_tiny(seed: int = 0):
    """A FiLM β-conditional model whose conditioning is not the identity (as at
    initialisation), so its output depends on β."""
    model = tiny(seed, conditioning="film", beta_range=[0.1, 10.0], sigma_mode="learned-beta")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "condition" in name or "film" in name:
                p.copy_(torch.randn_like(p))
    return model


def decode_one_by_one(model, codes, cond=None):
    """E[x|z] of each code separately (not the batched path under test)."""
    flat = codes.reshape(-1, codes.shape[-1])
    means = [model.likelihood.mean(model.decode(z[None], cond))[0] for z in flat]
    return torch.stack(means).reshape(*codes.shape[:-1], *SHAPE)


# --- traverse ------------------------------------------------------------------------------


def test_traversal_codes_differ_from_the_base_only_in_their_dimension(digits):
    _, test = digits
    model = tiny()
    x = test.batch(slice(3, 4))
    t = traverse(model, x[0], dims=[2, 0], steps=5, span=2.0)
    base = model.encode(x).mean[0].detach()
    assert t.codes.shape == (2, 5, 4) and t.means.shape == (2, 5, *SHAPE) and t.dims == [2, 0]
    for d, j in enumerate([2, 0]):
        others = [k for k in range(4) if k != j]
        assert torch.equal(t.codes[d][:, others], base[others].expand(5, 3))
        expected = base[j] + torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
        assert torch.allclose(t.codes[d, :, j], expected, atol=1e-6)
        assert torch.allclose(t.values[d], expected, atol=1e-6)
    assert torch.allclose(t.means, decode_one_by_one(model, t.codes), atol=1e-6)
    # around the origin: the grid itself
    at_zero = traverse(model, None, dims=[1], steps=3, span=1.5)
    assert torch.equal(
        at_zero.codes[0], torch.tensor([[0, -1.5, 0, 0], [0, 0, 0, 0], [0, 1.5, 0, 0]])
    )


def test_dimensions_are_the_active_ones_ordered_by_kl(digits):
    """An encoder made by hand: μ_2 = 3 μ_0 (KL_2 = 9 KL_0), μ_1 = 0, μ_3 = 5 for every x (the
    largest KL, but inactive), log σ² = 0, so KL_j = ½ E[μ_j²]."""
    _, test = digits
    model = tiny()
    head = model.encoder.head
    x = test.batch(slice(0, 64))
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0] = torch.randn(head.weight.shape[1])
        scale = model.encode(x).mean[:, 0].std()
        head.weight[0] /= 2 * scale  # sd of μ_0 over the examples: ½
        head.weight[2] = 3 * head.weight[0]
        head.bias[3] = 5.0
    mu = model.encode(x).mean.detach().double()
    assert mu[:, 0].var() > 0.1 and torch.all(mu[:, 3] == 5.0)
    t = traverse(model, None, steps=3, data=x)
    assert t.dims == [2, 0]
    assert t.kl == pytest.approx(
        [0.5 * (mu[:, 2] ** 2).mean().item(), 0.5 * (mu[:, 0] ** 2).mean().item()], rel=1e-5
    )
    assert traverse(model, None, steps=3, data=x, max_dims=1).dims == [2]
    # the report's latent usage gives the same order
    assert traverse(model, None, steps=3, usage=latent_usage(model, x)).dims == [2, 0]
    with torch.no_grad():
        head.weight.zero_()
    with pytest.raises(VaelabError, match="no active latent dimension"):
        traverse(model, None, data=x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": [4]}, "dimension 4 does not exist"),
        ({"dims": [1, 1]}, "twice"),
        ({"steps": 1}, "steps must be an integer ≥ 2"),
        ({"span": 0.0}, "span must be a positive"),
        ({"dims": None}, "give dims, or data"),
        ({"dims": [0], "beta": 2.0}, "not β-conditional"),
    ],
)
def test_traverse_refuses_in_one_line(kwargs, message):
    with pytest.raises(VaelabError, match=message):
        traverse(tiny(), None, **({"dims": [0]} | kwargs))


def test_discrete_latents_have_no_traversal_or_interpolation_nor_temperature():
    model = tiny(posterior="bernoulli", prior="uniform-bernoulli", estimator="disarm")
    x = torch.rand(1, *SHAPE)
    with pytest.raises(VaelabError, match="discrete"):
        traverse(model, x, dims=[0])
    with pytest.raises(VaelabError, match="discrete"):
        interpolate(model, x, x)
    with pytest.raises(VaelabError, match="temperature"):
        sample(model, 4, temperature=0.5)
    assert set(sample(model, 4).codes.unique().tolist()) <= {0.0, 1.0}


# --- interpolate ---------------------------------------------------------------------------


def test_slerp_by_hand():
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])
    codes, spherical = slerp(a, b, torch.linspace(0, 1, 5))
    assert spherical
    assert torch.allclose(codes.norm(dim=1), torch.full((5,), 2.0), atol=1e-6)  # on the arc
    assert torch.allclose(codes[2], torch.tensor([math.sqrt(2), math.sqrt(2)]), atol=1e-6)
    angles = torch.atan2(codes[:, 1], codes[:, 0])
    assert torch.allclose(angles, torch.linspace(0, math.pi / 2, 5), atol=1e-6)  # evenly
    # parallel endpoints or a zero one: linear
    codes, spherical = slerp(a, 3 * a, torch.tensor([0.0, 0.5, 1.0]))
    assert not spherical and torch.allclose(codes[1], 2 * a)
    assert not slerp(torch.zeros(2), b, torch.tensor([0.5]))[1]


def test_interpolation_endpoints_midpoints_and_decodes(digits):
    _, test = digits
    model = tiny()
    x_a, x_b = test.batch(slice(0, 1)), test.batch(slice(1, 2))
    a, b = model.encode(torch.cat([x_a, x_b])).mean.detach()
    linear = interpolate(model, x_a, x_b, steps=5)
    assert linear.codes.shape == (5, 4) and linear.means.shape == (5, *SHAPE)
    assert linear.mode == "linear" and torch.allclose(linear.t, torch.linspace(0, 1, 5))
    assert torch.allclose(linear.codes[2], (a + b) / 2, atol=1e-6)
    spherical = interpolate(model, x_a, x_b, steps=5, mode="spherical")
    assert spherical.mode == "spherical"
    half = math.acos(torch.dot(a, b) / (a.norm() * b.norm())) / 2
    assert torch.allclose(spherical.codes[2], (a + b) / (2 * math.cos(half)), atol=1e-5)
    for result in (linear, spherical):
        assert torch.allclose(result.codes[0], a, atol=1e-6)
        assert torch.allclose(result.codes[-1], b, atol=1e-6)
        assert torch.allclose(result.means, decode_one_by_one(model, result.codes), atol=1e-6)
        ends = model.reconstruct(torch.cat([x_a, x_b]))
        assert torch.allclose(result.means[[0, -1]], ends, atol=1e-6)
    with pytest.raises(VaelabError, match="mode 'cubic' unknown"):
        interpolate(model, x_a, x_b, mode="cubic")
    with pytest.raises(VaelabError, match="one example of shape"):
        interpolate(model, test.batch(slice(0, 2)), x_b)


# --- sample --------------------------------------------------------------------------------


def test_sample_codes_scale_with_the_temperature_under_a_fixed_seed():
    model = tiny()
    state = torch.get_rng_state()
    one, half = sample(model, 6, seed=3), sample(model, 6, temperature=0.5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is left alone
    torch.manual_seed(3)
    assert torch.equal(one.codes, torch.randn(6, 4))
    assert torch.allclose(half.codes, 0.5 * one.codes)
    assert not torch.allclose(sample(model, 6, seed=4).codes, one.codes)
    assert torch.allclose(half.means, decode_one_by_one(model, half.codes), atol=1e-6)
    for bad, message in (({"temperature": 0.0}, "temperature"), ({"n": 0}, "n must be"),
                         ({"sampler": "gan"}, "unknown")):  # fmt: skip
        with pytest.raises(VaelabError, match=message):
            sample(model, **({"n": 2} | bad))


def test_two_stage_sampling_from_a_study_layout(digits, tmp_path):
    """A second stage fitted where the rd-study keeps it is found from the run's path, and
    sampling from it equals `two_stage_generate` (T = 1); T scales the second stage's u."""
    train, _ = digits
    first = tiny()
    study = tmp_path / "study"
    stage_dir = study / "second-stage" / "classic" / "beta1" / "seed0"
    fitted = fit_second_stage(first, train, [16], steps=2, run_dir=stage_dir, progress=False)
    (study / "classic" / "beta1" / "seed0").mkdir(parents=True)
    found = find_second_stage(study / "classic" / "beta1" / "seed0")
    assert found == stage_dir.resolve()
    assert find_second_stage(study / "classic" / "beta2" / "seed0") is None
    loaded = load_second_stage(first, found)
    for p, q in zip(loaded.state_dict().values(), fitted.state_dict().values()):
        assert torch.equal(p, q)
    result = sample(first, 5, sampler="two-stage", second_stage=found, seed=7)
    torch.manual_seed(7)
    assert torch.allclose(result.means, two_stage_generate(first, fitted, 5), atol=1e-6)
    torch.manual_seed(7)  # u from the second stage's prior, then its decoder's noise
    codes = loaded.likelihood.sample(loaded.decode(0.5 * loaded.prior.sample(5)))
    cooled = sample(first, 5, temperature=0.5, sampler="two-stage", second_stage=loaded, seed=7)
    assert torch.allclose(cooled.codes, codes, atol=1e-6)
    assert not torch.allclose(cooled.codes, result.codes, atol=1e-3)
    shutil.copytree(stage_dir, tmp_path / "other")
    tensors, meta = load_checkpoint(tmp_path / "other" / CHECKPOINT)
    meta["config"]["fit"] = {}
    save_checkpoint(tmp_path / "other" / CHECKPOINT, tensors, meta)
    with pytest.raises(CheckpointError, match="not a second-stage fit"):
        load_second_stage(first, tmp_path / "other")
    with pytest.raises(VaelabError, match="needs a second stage"):
        sample(first, 2, sampler="two-stage")


# --- β-conditional -------------------------------------------------------------------------


def test_beta_conditional_outputs_change_with_beta_and_decode_at_its_condition(digits):
    _, test = digits
    model = conditional_tiny()
    x_a, x_b = test.batch(slice(0, 1)), test.batch(slice(1, 2))
    cond = {b: model.condition(1, b, "cpu")[1] for b in (0.2, 5.0)}
    low, high = sample(model, 4, beta=0.2), sample(model, 4, beta=5.0)
    assert torch.equal(low.codes, high.codes)  # p(z) does not depend on β
    assert not torch.allclose(low.means, high.means, atol=1e-3)
    assert torch.allclose(high.means, decode_one_by_one(model, high.codes, cond[5.0]), atol=1e-6)
    for beta in (0.2, 5.0):
        t = traverse(model, x_a, dims=[0, 3], steps=3, beta=beta)
        assert torch.allclose(t.means, decode_one_by_one(model, t.codes, cond[beta]), atol=1e-6)
        base = model.encode(x_a, cond[beta]).mean[0].detach()
        assert torch.allclose(t.codes[0, 1], base)  # around the posterior mean at that β
        i = interpolate(model, x_a, x_b, steps=3, beta=beta)
        assert torch.allclose(i.codes[0], base, atol=1e-6)
        assert torch.allclose(i.means, decode_one_by_one(model, i.codes, cond[beta]), atol=1e-6)
    grids = traverse_betas(model, x_a, [0.2, 5.0], dims=[0, 3], steps=3)
    assert grids.means.shape == (2, 2, 3, *SHAPE) and grids.betas == [0.2, 5.0]
    for k, beta in enumerate(grids.betas):
        assert torch.equal(grids.means[k], traverse(model, x_a, [0, 3], 3, beta=beta).means)
    assert not torch.allclose(grids.means[0], grids.means[1], atol=1e-3)
    by_kl = traverse_betas(model, None, [0.2, 5.0], steps=3, data=test.batch(slice(0, 64)))
    mean_kl = [sum(k[d] for k in by_kl.kl) / 2 for d in range(len(by_kl.dims))]
    assert mean_kl == sorted(mean_kl, reverse=True) and len(by_kl.kl) == 2
    with pytest.raises(VaelabError, match="not β-conditional"):
        traverse_betas(tiny(), None, [1.0], dims=[0])
    with pytest.raises(VaelabError, match="not β-conditional"):
        sample(tiny(), 2, beta=1.0)


def test_the_package_exports_the_functions_lazily():
    assert vaelab.sample is sample and vaelab.traverse is traverse
    assert vaelab.interpolate is interpolate and vaelab.traverse_betas is traverse_betas


# --- the command line on trained runs ------------------------------------------------------

CONFIG = """
[data]
name = "digits"
train_limit = 500
test_limit = 64
[model]
latent_dim = 4
hidden = [32]
{model}
[train]
epochs = {epochs}
batch_size = 50
lr = 0.005
progress = false
device = "cpu"
"""
UNCONDITIONAL = 'sigma_mode = "fixed"\nsigma = 0.1'  # σ_x small enough for active latents
CONDITIONAL = 'conditioning = "film"\nbeta_range = [0.1, 10.0]\nsigma_mode = "learned-beta"'
CORPUS = {"a": "orbit rocket moon launch", "b": "engine wheel car brake", "c": "faith god belief"}


def write_bow_corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("news-train", 12), ("news-test", 4)):
        for label, words in CORPUS.items():
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                body = " ".join(rng.choice(words.split(), size=12))
                (root / split / label / str(i)).write_text(f"{body}\n")
    return root


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Trained tiny runs: an unconditional one (with active latents), a β-conditional one, a
    word-count one, and a copy of the first with EMA tensors written in by hand."""
    root = tmp_path_factory.mktemp("inspect")
    P = {"root": root, "missing": root / "missing", "a_file": root / "a_file"}
    P["a_file"].write_text("not a run\n")
    for name, model, epochs in (("run", UNCONDITIONAL, 6), ("cond", CONDITIONAL, 1)):
        (root / f"{name}.toml").write_text(CONFIG.format(model=model, epochs=epochs))
        assert main(["train", str(root / f"{name}.toml"), "--run-dir", str(root / name)]) == 0
        P[name] = root / name
    assert json.loads((P["run"] / "latents.json").read_text())["active_units"] >= 1
    corpus = write_bow_corpus(root / "corpus")
    (root / "bow.toml").write_text(
        f'[data]\nname = "20newsgroups"\npath = "{corpus}"\nvocab_size = 10\n'
        '[model]\nlatent_dim = 2\nhidden = [8]\nlikelihood = "multinomial"\n'
        '[train]\nepochs = 1\nbatch_size = 12\nprogress = false\ndevice = "cpu"\n'
    )
    assert main(["train", str(root / "bow.toml"), "--run-dir", str(root / "bow")]) == 0
    P["bow"] = root / "bow"
    shutil.copytree(P["run"], root / "ema")
    tensors, meta = load_checkpoint(root / "ema" / CHECKPOINT)
    for key in [k for k in tensors if k.startswith("model.")]:
        tensors[f"ema.{key[len('model.') :]}"] = 0.5 * tensors[key]
    meta["ema"] = {"decay": 0.9}
    save_checkpoint(root / "ema" / CHECKPOINT, tensors, meta)
    P["ema"] = root / "ema"
    trained = ["--run-dir", str(root / "ema_trained"), "--set", "train.epochs=1"]
    assert main(["train", str(root / "run.toml"), *trained, "--set", "train.ema_decay=0.9"]) == 0
    P["ema_trained"] = root / "ema_trained"
    return P


class Recorder:
    """Wraps a figure function: records its arguments, then writes the file."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.function(*args, **kwargs)


def run_cli(argv, capfd):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse exits directly
        code = exc.code
    out = capfd.readouterr()
    return code, out.out, out.err.strip()


def test_sample_command_writes_the_decodes_of_its_codes(paths, monkeypatch, capfd):
    grid = Recorder(figures.save_image_grid)
    monkeypatch.setattr(figures, "save_image_grid", grid)
    out = paths["root"] / "figs" / "s.png"
    code, stdout, err = run_cli(["sample", paths["run"], "--n", 6, "--temperature", 0.5,
                                 "--seed", 3, "--out", out, "--device", "cpu"], capfd)  # fmt: skip
    assert code == 0, err
    (written, images), kwargs = grid.calls[0][0][:2], grid.calls[0][1]
    assert written == out and f"wrote {out}" in stdout
    model = load_run(paths["run"], device="cpu").model
    assert torch.allclose(images, sample(model, 6, temperature=0.5, seed=3).means, atol=1e-6)
    assert "T = 0.5" in kwargs["title"] and kwargs["ncol"] == 6
    assert Image.open(out).format == "PNG"
    code, stdout, _ = run_cli(["sample", paths["run"], "--n", 2, "--device", "cpu"], capfd)
    assert code == 0 and grid.calls[1][0][0] == paths["run"] / "sample_prior.png"


def test_traverse_command_writes_the_grid_and_the_gif_of_the_traversal(paths, monkeypatch, capfd):
    grid = Recorder(figures.save_traversal_grid)
    monkeypatch.setattr(figures, "save_traversal_grid", grid)
    out = paths["root"] / "trav"
    code, stdout, err = run_cli(["traverse", paths["run"], "--steps", 5, "--example", 2,
                                 "--out", out, "--device", "cpu"], capfd)  # fmt: skip
    assert code == 0, err
    run = load_run(paths["run"], device="cpu")
    expected = traverse(run.model, run.test_data.batch(slice(2, 3)), steps=5, data=run.test_data)
    (path, means, labels), kwargs = grid.calls[0][0], grid.calls[0][1]
    assert path == out / "traverse.png" and torch.allclose(means, expected.means, atol=1e-6)
    assert labels == [f"z{j}" for j in expected.dims] and "test example 2" in kwargs["title"]
    assert ", ".join(f"z{j} {k:.3g}" for j, k in zip(expected.dims, expected.kl)) in stdout
    gif = Image.open(out / "traverse.gif")
    assert gif.format == "GIF" and gif.n_frames == 2 * 5 - 2  # forth and back
    first = figures.traversal_frames(expected.means)[0]
    assert np.array_equal(np.asarray(gif.convert("L")), np.asarray(first))
    gif.seek(4)  # the last step
    last = figures.traversal_frames(expected.means)[4]
    assert np.array_equal(np.asarray(gif.convert("L")), np.asarray(last))


def test_traverse_betas_and_the_beta_outside_the_range_warning(paths, monkeypatch, capfd):
    grid = Recorder(figures.save_traversal_grid)
    monkeypatch.setattr(figures, "save_traversal_grid", grid)
    code, stdout, err = run_cli(["traverse", paths["cond"], "--betas", "0.01,1", "--dims", "1,0",
                                 "--steps", 3, "--origin", "--device", "cpu"], capfd)  # fmt: skip
    assert code == 0, err
    assert err.splitlines() == [
        "vaelab: warning: β = 0.01 is outside the model's training range [0.1, 10]: it "
        "extrapolates there"
    ]
    model = load_run(paths["cond"], device="cpu").model
    expected = traverse_betas(model, None, [0.01, 1.0], [1, 0], 3)
    (path, means, labels) = grid.calls[0][0]
    assert path == paths["cond"] / "traverse_betas.png"
    assert torch.allclose(means, expected.means.flatten(0, 1), atol=1e-6)
    assert labels == ["β=0.01 z1", "β=0.01 z0", "β=1 z1", "β=1 z0"]
    gif = Image.open(paths["cond"] / "traverse_betas.gif")
    frame = figures.traversal_frames(expected.means.flatten(0, 1), ncol=2)[0]
    assert np.array_equal(np.asarray(gif.convert("L")), np.asarray(frame))  # a row per β


def test_interpolate_command_writes_the_ends_and_the_decodes_between(paths, monkeypatch, capfd):
    grid = Recorder(figures.save_traversal_grid)
    monkeypatch.setattr(figures, "save_traversal_grid", grid)
    code, _, err = run_cli(["interpolate", paths["run"], "--pair", "4,7", "--steps", 4,
                            "--mode", "spherical", "--device", "cpu"], capfd)  # fmt: skip
    assert code == 0, err
    run = load_run(paths["run"], device="cpu")
    x_a, x_b = run.test_data.batch(slice(4, 5)), run.test_data.batch(slice(7, 8))
    expected = interpolate(run.model, x_a, x_b, 4, "spherical")
    path, (images,), labels = grid.calls[0][0][:3]
    assert path == paths["run"] / "interpolate.png" and labels == ["4 → 7"] and len(images) == 6
    assert torch.equal(images[0], x_a[0]) and torch.equal(images[-1], x_b[0])
    assert torch.allclose(images[1:-1], expected.means, atol=1e-6)


def test_the_run_report_shows_a_traversal_and_says_how_it_was_made(paths, monkeypatch):
    grid = Recorder(figures.save_traversal_grid)
    monkeypatch.setattr(runs, "save_traversal_grid", grid)
    run = load_run(paths["run"], device="cpu")
    runs.write_run_report(run)
    usage = json.loads((paths["run"] / "latents.json").read_text())
    expected = traverse(run.model, run.test_data.batch(slice(0, 1)), steps=9, span=3.0, usage=usage)
    path, means, labels = grid.calls[0][0][:3]
    assert path == paths["run"] / "traversal.png" and len(expected.dims) <= 8
    assert torch.allclose(means, expected.means, atol=1e-6)
    kl = usage["kl_per_dimension"]
    assert labels == [f"z{j} (KL {kl[j]:.2f})" for j in expected.dims]
    assert [kl[j] for j in expected.dims] == sorted((kl[j] for j in expected.dims), reverse=True)
    report = (paths["run"] / "report.md").read_text()
    assert "![latent traversal](traversal.png)" in report
    assert f"the {len(expected.dims)} active dimension(s) (of at most 8) by mean KL" in report
    assert (
        "from −3 to +3 prior standard deviations around the posterior mean of test example 0"
        in report
    )


def test_eval_with_ema_weights_loads_the_ema_tensors_beside_the_raw_report(paths, capfd):
    tensors, _ = load_checkpoint(paths["ema"] / CHECKPOINT)
    ema = load_run(paths["ema"], device="cpu", weights="ema")
    raw = load_run(paths["ema"], device="cpu")
    assert ema.weights == "ema" and ema.ema_decay == 0.9 and raw.weights == "raw"
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, tensors[f"ema.{key}"]) and torch.equal(
            value, 0.5 * tensors[f"model.{key}"]
        )
        assert torch.equal(raw.model.state_dict()[key], tensors[f"model.{key}"])
    raw_eval = (paths["ema"] / "eval.json").read_text()
    code, stdout, err = run_cli(
        ["eval", paths["ema"], "--weights", "ema", "--device", "cpu"], capfd
    )
    assert code == 0, err
    written = json.loads((paths["ema"] / "eval_ema.json").read_text())
    assert written == pytest.approx(evaluate(ema.model, ema.test_data))
    assert written != pytest.approx(json.loads(raw_eval))
    assert (paths["ema"] / "eval.json").read_text() == raw_eval  # the raw report stays
    report = (paths["ema"] / "report_ema.md").read_text()
    assert "moving average of the training weights (decay 0.9)" in report
    assert "![latent traversal](traversal_ema.png)" in report and "eval_ema.json" in stdout
    with pytest.raises(CheckpointError, match="holds no EMA weights .*train.ema_decay"):
        load_run(paths["run"], device="cpu", weights="ema")


def test_eval_with_ema_weights_of_a_run_trained_with_ema_measures_what_the_trainer_did(
    paths, capfd
):
    """The trainer's last test record holds the EMA weights' terms as ema_<term>; `vaelab eval
    --weights ema` measures the same weights from the checkpoint."""
    run = paths["ema_trained"]
    logged = load_run(run, device="cpu").state.last_test
    code, _, err = run_cli(["eval", run, "--weights", "ema", "--device", "cpu"], capfd)
    assert code == 0, err
    written = json.loads((run / "eval_ema.json").read_text())
    assert written == pytest.approx(
        {k[len("ema_") :]: v for k, v in logged.items() if k.startswith("ema_")}
    )
    assert written["negative_elbo"] != pytest.approx(logged["negative_elbo"])  # not the raw ones


BAD = [  # (id, argv, fragment of the one line)
    ("unknown run", "sample {missing}", "does not exist"),
    ("run is a file", "traverse {a_file}", "is a file"),
    ("n zero", "sample {run} --n 0", "must be ≥ 1"),
    ("temperature zero", "sample {run} --temperature 0", "--temperature must be a positive"),
    ("temperature negative", "sample {run} --temperature -1", "--temperature must be a positive"),
    ("beta on an unconditional model", "sample {run} --beta 2", "is not β-conditional"),
    ("betas on an unconditional model", "traverse {run} --betas 0.1,1", "is not β-conditional"),
    ("beta and betas", "traverse {cond} --beta 1 --betas 1,2", "not allowed with"),
    ("bad beta", "interpolate {cond} --beta -1", "β must be a positive"),
    ("dimension that does not exist", "traverse {run} --dims 0,7", "dimension 7 does not exist"),
    ("dimension twice", "traverse {run} --dims 1,1", "name one twice"),
    ("negative dimension", "traverse {run} --dims -1", "must be ≥ 0"),
    ("one step", "traverse {run} --steps 1", "must be ≥ 2"),
    ("zero span", "traverse {run} --span 0", "--span must be a positive"),
    ("example out of range", "traverse {run} --example 64", "test example 64 does not exist"),
    ("example and origin", "traverse {run} --example 1 --origin", "not allowed with"),
    ("pair of one", "interpolate {run} --pair 3", "expected 2 test example indices"),
    ("pair out of range", "interpolate {run} --pair 0,99", "test example 99 does not exist"),
    ("unknown mode", "interpolate {run} --mode cubic", "invalid choice"),
    ("interpolate one step", "interpolate {run} --steps 1", "must be ≥ 2"),
    ("no second stage", "sample {run} --sampler two-stage", "no second stage of"),
    (
        "second stage without its sampler",
        "sample {run} --second-stage {run}",
        "--sampler two-stage",
    ),
    (
        "second stage that is not one",
        "sample {run} --sampler two-stage --second-stage {run}",
        "not a second-stage fit",
    ),
    (
        "second stage missing",
        "sample {run} --sampler two-stage --second-stage {missing}",
        "does not exist",
    ),
    ("out not png", "sample {run} --out {root}/s.jpg", "name a .png file"),
    ("out a directory", "interpolate {run} --out {run}", "name a .png file"),
    ("traverse out a file", "traverse {run} --out {a_file}", "is a file"),
    ("word counts sample", "sample {bow}", "holds no images"),
    ("word counts traverse", "traverse {bow} --dims 0", "holds no images"),
    ("ema without ema weights", "eval {run} --weights ema", "train.ema_decay"),
    ("ema of sample without ema weights", "sample {run} --weights ema", "train.ema_decay"),
    ("unknown weights", "eval {run} --weights best", "invalid choice"),
]


@pytest.mark.parametrize(("case", "template", "expected"), BAD, ids=[c[0] for c in BAD])
def test_bad_invocation_is_one_line_and_exit_2(case, template, expected, paths, capfd):
    argv = [part.format(**paths) for part in template.split()]
    code, _, err = run_cli([*argv, "--device", "cpu"], capfd)
    assert code == 2, (case, code, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("vaelab") and expected in err, err


@pytest.mark.parametrize(
    "argv",
    [["sample", "/nonexistent/run"], ["traverse", "{run}", "--steps", "1"],
     ["interpolate", "{run}", "--pair", "1"], ["sample", "{run}", "--out", "x.jpg"]],
    ids=lambda argv: " ".join(argv),
)  # fmt: skip
def test_argument_errors_come_before_torch_is_imported(argv, paths):
    argv = [a.format(**paths) for a in argv]
    script = (
        "import sys\nfrom vaelab.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('IMPORTED', 'torch' in sys.modules, code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=run_env()
    )
    assert proc.stdout.split() == ["IMPORTED", "False", "2"], (proc.stdout, proc.stderr)


@pytest.mark.parametrize("command", ["sample", "traverse", "interpolate"])
def test_a_pickled_checkpoint_is_refused_and_never_unpickled(command, tmp_path, capfd):
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(pickle.dumps(Evil(marker)))
    code, _, err = run_cli([command, run, "--device", "cpu"], capfd)
    assert code == 2 and "not a valid vaelab safetensors checkpoint" in err, err
    assert not marker.exists()


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
