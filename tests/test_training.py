"""The trainer: learning, exact resume after SIGKILL, refusing unsafe checkpoints, the NaN guard."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import run_env
from torch import nn

from vaelab.checkpoint import load_checkpoint
from vaelab.cli import main
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.data.base import ImageData, TensorData
from vaelab.errors import CheckpointError, TrainingDiverged
from vaelab.estimators import ObjectiveTerms
from vaelab.evaluation import evaluate
from vaelab.files import read_jsonl
from vaelab.models import build_vae
from vaelab.runs import find_runs, load_run, seed_everything, train_run
from vaelab.training import CHECKPOINT, METRICS, Trainer, fit

TINY_MODEL = ["model.latent_dim=4", "model.hidden=[32]"]


def small_config(**train) -> Config:
    settings = dict(
        epochs=3, batch_size=64, progress=False, log_every=10, checkpoint_every=20, device="cpu"
    )
    return Config(
        data=DataConfig(name="digits", train_limit=600),
        model=ModelConfig(latent_dim=4, hidden=[32]),
        train=TrainConfig(**(settings | train)),
    )


def model_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(run_dir / CHECKPOINT)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_training_on_digits_lowers_the_negative_elbo(tmp_path):
    cfg = small_config(epochs=15, lr=3e-3)
    train, test = load_data(cfg.data)
    seed_everything(0)
    before = evaluate(build_vae(cfg.model, train.shape), test)["negative_elbo"]
    run = train_run(cfg, tmp_path / "run")
    after = run.state.last_test["negative_elbo"]
    assert after < before - 20, (before, after)  # nats per example
    # the run directory holds what a run promises
    for name in (
        CHECKPOINT,
        METRICS,
        "config.json",
        "report.md",
        "reconstructions.png",
        "samples.png",
        "eval.json",
    ):
        assert (tmp_path / "run" / name).exists(), name
    # and reloads into the same numbers, also through `vaelab eval`
    reloaded = evaluate(load_run(tmp_path / "run", device="cpu").model, test)
    assert reloaded["negative_elbo"] == pytest.approx(after)
    (tmp_path / "run" / "eval.json").unlink()
    assert main(["eval", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == pytest.approx(reloaded)


def test_same_seed_same_numbers(tmp_path):
    a = train_run(small_config(epochs=1), tmp_path / "a", report=False)
    b = train_run(small_config(epochs=1), tmp_path / "b", report=False)
    assert a.state.last_test == b.state.last_test
    for k, v in model_tensors(tmp_path / "a").items():
        assert torch.equal(v, model_tensors(tmp_path / "b")[k]), k


def write_config(path: Path, epochs: int) -> Path:
    path.write_text(
        "[data]\nname = 'digits'\n"
        "[model]\nlatent_dim = 4\nhidden = [64]\n"
        f"[train]\nepochs = {epochs}\nbatch_size = 32\ncheckpoint_every = 25\nlog_every = 25\n"
        "progress = false\ndevice = 'cpu'\n"
    )
    return path


def vaelab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaelab", *args]


def test_run_killed_with_sigkill_resumes_to_the_same_parameters(tmp_path):
    config = write_config(tmp_path / "cfg.toml", epochs=40)  # 47 steps/epoch → 1880 steps
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(
        vaelab_cmd("train", str(config), "--run-dir", str(straight)),
        check=True,
        env=run_env(),
        capture_output=True,
    )

    proc = subprocess.Popen(
        vaelab_cmd("train", str(config), "--run-dir", str(killed)),
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few checkpoints have been written
        records = read_jsonl(killed / METRICS)  # skips a line torn mid-write
        if records and records[-1]["step"] >= 300:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, meta = load_checkpoint(killed / CHECKPOINT)
    assert not meta["finished"] and 0 < meta["step"] < 1880, meta["step"]  # really killed mid-run

    resumed = subprocess.run(
        vaelab_cmd("train", str(config), "--run-dir", str(killed)),
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = model_tensors(straight), model_tensors(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    steps = [r["step"] for r in read_jsonl(killed / METRICS) if r["split"] == "train"]
    assert steps == sorted(set(steps)), "metrics repeat steps after resume"


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = None


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(tmp_path):
    global MARKER
    MARKER = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CHECKPOINT).write_bytes(pickle.dumps({"model": _Payload()}))
    # torch.save-style zip pickles are refused just the same
    torch.save({"model": _Payload()}, tmp_path / "zip.safetensors")

    for path in (run_dir / CHECKPOINT, tmp_path / "zip.safetensors"):
        with pytest.raises(CheckpointError, match="not a valid vaelab safetensors checkpoint"):
            load_checkpoint(path)
    for args in (
        ("eval", str(run_dir)),
        ("train", str(write_config(tmp_path / "c.toml", 1)), "--run-dir", str(run_dir)),
    ):
        proc = subprocess.run(vaelab_cmd(*args), env=run_env(), capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0 and "refusing to load" in proc.stderr
    assert not MARKER.exists(), "the pickle payload ran"


@dataclass
class _Terms:
    loss: torch.Tensor

    def sums(self):
        return {"loss": self.loss.detach().sum()}


class _ExplodesAtStep(nn.Module):
    """A model whose loss turns NaN at a given step."""

    def __init__(self, at: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += 1
        loss = (x.flatten(1).sum(1) * self.w) ** 2
        return _Terms(loss * float("nan") if self.calls >= self.at else loss)


def test_nonfinite_tensors_counts_exactly_and_ignores_an_overflowing_sum():
    from vaelab.checkpoint import nonfinite_tensors

    big = torch.full((4,), 3e38)  # finite values whose float32 sum is inf
    tensors = {
        "big": big,
        "nan": torch.tensor([1.0, float("nan"), 2.0]),
        "both": torch.tensor([float("inf"), float("-inf"), 0.0]),
        "ints": torch.tensor([1, 2]),
    }
    assert nonfinite_tensors(tensors) == {"nan": 1, "both": 2}


def test_nan_guard_stops_with_step_and_term_and_writes_no_nan_weights(tmp_path):
    data = ImageData("toy", torch.rand(64, 1, 2, 2))
    cfg = TrainConfig(epochs=10, batch_size=8, checkpoint_every=5, progress=False, device="cpu")
    model = _ExplodesAtStep(at=13)
    trainer = Trainer(model, data, cfg, tmp_path, {"train": {}})
    with pytest.raises(TrainingDiverged, match=r"step 13: loss term 'loss' is nan"):
        trainer.fit()
    tensors, meta = load_checkpoint(tmp_path / CHECKPOINT)
    assert meta["step"] == 10 and all(torch.isfinite(t).all() for t in tensors.values())


def test_resuming_with_a_different_model_config_is_refused(tmp_path):
    train_run(small_config(epochs=1), tmp_path / "run", report=False)
    other = small_config(epochs=2)
    other.model.latent_dim = 5
    with pytest.raises(Exception, match="different config.*model.latent_dim"):
        train_run(other, tmp_path / "run", report=False)
    # a longer budget is allowed: training continues where it stopped
    longer = train_run(small_config(epochs=2), tmp_path / "run", report=False)
    assert longer.state.step == 2 * 10


@pytest.mark.timeout(240)
@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (7, 4), (2, 5), (1000, 2)])
def test_epoch_order_is_what_distributed_sampler_draws(n, world):
    """The trainer's order (a tensor, no Python list) equals DistributedSampler's, padding by
    wrap-around included, for every rank and epoch: old runs resume onto the same data."""
    from torch.utils.data import DistributedSampler

    from vaelab.training.distributed import Placement, epoch_order

    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, seed=3)
        for epoch in (0, 5):
            sampler.set_epoch(epoch)
            order = epoch_order(n, 3, epoch, Placement(torch.device("cpu"), rank, world))
            assert order.tolist() == list(sampler)


def test_torchrun_two_processes_keep_replicas_identical(tmp_path):
    config = write_config(tmp_path / "cfg.toml", epochs=2)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "vaelab",
        "train",
        str(config),
        "--run-dir",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=run_env(), capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = read_jsonl(tmp_path / "ddp" / METRICS)
    check = [r for r in records if r["split"] == "replicas"]
    assert check and check[-1]["identical"] is True and check[-1]["world_size"] == 2
    steps = max(r["step"] for r in records)
    assert steps == 2 * 24  # 1500 examples over 2 ranks, batch 32 per rank: 24 steps per epoch
    assert records[-2]["split"] == "test" and records[-2]["negative_elbo"] < 200


class _NanGradient(nn.Module):
    """Finite loss, NaN gradient: |w − 1|^½ at w = 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return _Terms((self.w - 1).abs().sqrt().expand(len(x)))


@pytest.mark.parametrize(
    "log_every, step, what",
    [
        (1, 1, r"the gradient of 'w' is not finite \(1 of 1 values\)"),  # measured every step
        (50, 1, r"the update made parameter 'w' non-finite \(1 values\)"),  # seen at step 2
    ],
)
def test_nan_gradient_with_finite_loss_is_caught(tmp_path, log_every, step, what):
    data = ImageData("toy", torch.rand(64, 1, 2, 2))
    cfg = TrainConfig(epochs=1, batch_size=8, log_every=log_every, progress=False, device="cpu")
    with pytest.raises(TrainingDiverged, match=rf"step {step}: {what}; no checkpoint was written"):
        Trainer(_NanGradient(), data, cfg, tmp_path, {"train": {}}).fit()
    assert not (tmp_path / CHECKPOINT).exists()


def test_a_config_key_added_after_a_run_started_reads_as_its_default(tmp_path):
    from vaelab.config import Config
    from vaelab.errors import ConfigError
    from vaelab.training.trainer import check_same_run

    current = Config().to_dict()
    saved = Config().to_dict()
    del saved["model"]["multinomial_convention"]  # a run saved before the field existed
    check_same_run(saved, current, tmp_path)  # the default: the same run
    current["model"]["multinomial_convention"] = "full"  # not the default ("saturated")
    with pytest.raises(ConfigError, match="model.multinomial_convention"):
        check_same_run(saved, current, tmp_path)


class _Regression(nn.Module):
    """(x, y) batches → per-example squared error; interrupts itself at `stop_at` calls."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)
        self.calls, self.stop_at = 0, stop_at

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        x, y = batch
        error = (self.linear(x)[:, 0] - y) ** 2
        return ObjectiveTerms(error, {"abs_error": error.sqrt()})


def test_fit_on_tensor_pairs_with_sgd_and_a_linear_schedule_resumes_exactly(tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    data = TensorData(x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(40, generator=g))
    cfg = TrainConfig(
        epochs=4, batch_size=8, optimizer="sgd", momentum=0.9, lr=0.05, lr_schedule="linear",
        checkpoint_every=3, log_every=2, progress=False, device="cpu",
    )  # fmt: skip
    whole = _Regression()
    fit(whole, data, cfg, tmp_path / "whole")
    interrupted = _Regression(stop_at=8)
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, data, cfg, tmp_path / "resumed")
    resumed = _Regression()
    state = fit(resumed, data, cfg, tmp_path / "resumed")
    assert state.step == 20 and resumed.calls == 20 - 6  # from the step-6 checkpoint
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    records = [r for r in read_jsonl(tmp_path / "whole" / METRICS) if r["split"] == "train"]
    assert records[0]["loss"] > 5 * records[-1]["loss"] and "abs_error" in records[-1]


def test_find_runs_lists_vae_runs_and_not_the_fits_beside_them(tmp_path):
    cfg = Config(
        data=DataConfig(name="digits", train_limit=64, test_limit=32),
        model=ModelConfig(latent_dim=2, hidden=[8]),
        train=TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu"),
    )
    train_run(cfg, tmp_path / "study" / "vae", report=False)
    data = TensorData(torch.randn(8, 3), torch.randn(8))
    fit(
        _Regression(),
        data,
        TrainConfig(epochs=1, progress=False, device="cpu"),
        tmp_path / "study" / "fit",
    )
    assert find_runs(tmp_path / "study") == [tmp_path / "study" / "vae"]
