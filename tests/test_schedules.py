"""Issue 16 items 1–4: optimisers and learning-rate schedules (against torch's schedulers),
β schedules and free bits (against hand computations), EMA (against a hand-rolled average),
exact resume of all of them, bf16 on the CPU, gradient accumulation."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_env
from torch import nn

from vaelab.checkpoint import load_checkpoint
from vaelab.config import (
    BETA_SCHEDULES,
    LR_SCHEDULE_NAMES,
    OPTIMIZER_NAMES,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
)
from vaelab.data import load_data
from vaelab.data.base import TensorData
from vaelab.errors import ConfigError, TrainingDiverged
from vaelab.estimators import ObjectiveTerms
from vaelab.evaluation import evaluate
from vaelab.files import read_jsonl
from vaelab.models import build_vae
from vaelab.runs import seed_everything, train_run
from vaelab.training import CHECKPOINT, METRICS, Trainer
from vaelab.training.schedules import (
    LR_SCHEDULES,
    OPTIMIZERS,
    RateShaping,
    free_bits_rate,
    rate_weight,
)

DIGITS = DataConfig(name="digits", train_limit=600, test_limit=100)  # batch 64: 10 steps/epoch


def schedule(total_steps=100, steps_per_epoch=10, **train):
    cfg = TrainConfig(**train)
    return LR_SCHEDULES[cfg.lr_schedule](cfg, steps_per_epoch, total_steps)


def torch_lrs(make_scheduler, steps: int, steps_per_epoch: int | None = None) -> list[float]:
    """The learning rate of each update under a torch scheduler, stepped per update (or per
    epoch of `steps_per_epoch` updates)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for step in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if steps_per_epoch is None or (step + 1) % steps_per_epoch == 0:
            scheduler.step()
    return lrs


def test_the_name_tables_of_the_config_are_the_trainers():
    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert set(LR_SCHEDULE_NAMES) == set(LR_SCHEDULES)
    assert set(BETA_SCHEDULES) == {"constant", "linear", "cyclical"}


def test_cosine_step_and_exponential_equal_torchs_schedulers():
    T = 100
    cosine = schedule(T, lr=0.1, lr_schedule="cosine", lr_min=0.01)
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T, eta_min=0.01), T
    )
    assert [cosine.lr(s) for s in range(T)] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    step = schedule(T, lr=0.1, lr_schedule="step", lr_step_epochs=3, lr_gamma=0.5)
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5), T, 10)
    assert [step.lr(s) for s in range(T)] == pytest.approx(expected, rel=1e-12)
    expo = schedule(T, lr=0.1, lr_schedule="exponential", lr_gamma=0.9)
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), T, 10)
    assert [expo.lr(s) for s in range(T)] == pytest.approx(expected, rel=1e-12)


def test_linear_warm_up_edges_then_the_cosine_over_the_remaining_steps():
    s = schedule(100, lr=0.2, lr_schedule="cosine", lr_warmup_steps=10)
    assert s.lr(0) == pytest.approx(0.02)  # (0 + 1)/10 of the rate: no wasted first update
    assert s.lr(4) == pytest.approx(0.1)
    assert s.lr(9) == pytest.approx(0.2)  # the last warm-up update is at full rate
    assert s.lr(10) == pytest.approx(0.2)  # the cosine starts at its top
    assert s.lr(55) == pytest.approx(0.1)  # halfway through the 90 cosine steps
    assert s.lr(99) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    constant = schedule(100, lr=0.2, lr_warmup_steps=4)
    assert [constant.lr(k) for k in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


def test_plateau_equals_torchs_reduce_on_plateau_and_round_trips_its_state():
    losses = [10.0, 9.0, 9.0, 8.9999, 9.5, 9.2, 9.1, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0]
    ours = schedule(lr=0.1, lr_schedule="plateau", plateau_patience=2, lr_gamma=0.5, lr_min=0.02)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=2, min_lr=0.02, threshold=1e-4
    )
    for loss in losses:
        ours.observe({"loss": loss})
        theirs.step(loss)
        assert ours.lr(0) == pytest.approx(optimizer.param_groups[0]["lr"]), loss
    assert ours.lr(0) < 0.1  # it did reduce
    copy = schedule(lr=0.1, lr_schedule="plateau", plateau_patience=2, lr_gamma=0.5)
    copy.load_state(ours.state())
    assert copy.state() == ours.state()
    with pytest.raises(ConfigError, match="no 'nelbo'"):
        schedule(lr_schedule="plateau", plateau_metric="nelbo").observe({"loss": 1.0})


def test_beta_warm_up_and_cyclical_annealing_at_their_edges():
    linear = TrainConfig(beta_schedule="linear", beta_warmup_steps=20)
    assert [rate_weight(linear, s, 100) for s in (0, 1, 10, 19, 20, 99)] == pytest.approx(
        [0.0, 0.05, 0.5, 0.95, 1.0, 1.0]
    )
    # Fu et al.: T = 100, M = 4 cycles of 25 steps, the first R = 0.5 of each increasing
    cyclical = TrainConfig(beta_schedule="cyclical", beta_cycles=4, beta_cycle_ratio=0.5)
    weights = [rate_weight(cyclical, s, 100) for s in range(100)]
    assert weights[0] == weights[25] == weights[50] == weights[75] == 0.0  # cycle starts
    assert weights[12] == pytest.approx(12 / 12.5)
    assert weights[13] == weights[24] == 1.0  # τ > R: flat at 1
    assert weights[26] == pytest.approx(1 / 12.5)
    # T/M not an integer: cycles of ⌈T/M⌉ = 4 steps, τ measured in units of T/M = 10/3
    uneven = TrainConfig(beta_schedule="cyclical", beta_cycles=3, beta_cycle_ratio=1.0)
    assert [rate_weight(uneven, s, 10) for s in range(10)] == pytest.approx(
        [0.0, 0.3, 0.6, 0.9, 0.0, 0.3, 0.6, 0.9, 0.0, 0.3]
    )
    assert rate_weight(TrainConfig(), 5, 10) == 1.0


def test_free_bits_floor_the_minibatch_mean_kl_per_dimension_and_per_group():
    kl = torch.tensor([[0.1, 2.0, 0.0, 0.4], [0.3, 1.0, 0.2, 0.0]], requires_grad=True)
    # means over the batch: 0.2, 1.5, 0.1, 0.2 → max(0.5, ·) per dimension
    per_dimension = free_bits_rate(kl, 0.5, None)
    assert float(per_dimension.detach()) == pytest.approx(0.5 + 1.5 + 0.5 + 0.5)
    (grad,) = torch.autograd.grad(per_dimension, kl)
    assert torch.equal(grad, torch.tensor([[0.0, 0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]]))
    # two groups {0, 1}, {2, 3}: sums of means 1.7 and 0.3 → 1.7 + 0.5
    assert float(free_bits_rate(kl, 0.5, 2).detach()) == pytest.approx(2.2)
    assert float(free_bits_rate(kl, 0.01, None).detach()) == pytest.approx(
        float(kl.detach().sum(-1).mean())
    )


def tiny_vae(**model):
    torch.manual_seed(0)
    return build_vae(ModelConfig(latent_dim=4, hidden=[16], **model), (1, 8, 8))


def test_the_shaped_objective_is_distortion_plus_weighted_floored_rate():
    model = tiny_vae(beta=2.0)
    x = torch.rand(16, 1, 8, 8)
    cfg = TrainConfig(beta_schedule="linear", beta_warmup_steps=10, free_bits=0.3)
    shaping = RateShaping.build(cfg, total_steps=100)
    torch.manual_seed(1)
    terms = model(x)
    objective, logged = shaping.objective(terms, step=4)
    floored = free_bits_rate(terms.kl_per_dimension, 0.3, None)
    by_hand = terms.distortion.mean() + 2.0 * 0.4 * floored
    assert float(objective) == pytest.approx(float(by_hand), rel=1e-6)
    params = list(model.parameters())
    ours = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True)
    hand = torch.autograd.grad(by_hand, params, allow_unused=True)
    for a, b in zip(ours, hand):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert float(logged["rate_weight"]) == pytest.approx(0.4 * 16)
    assert float(logged["rate_penalised"]) == pytest.approx(float(floored) * 16)
    assert RateShaping.build(TrainConfig(), 100) is None  # the model's loss, untouched


def test_a_beta_conditional_model_refuses_a_beta_schedule_but_takes_free_bits():
    film = ModelConfig(latent_dim=4, conditioning="film")
    with pytest.raises(ConfigError, match="takes β as an input"):
        Config(model=film, train=TrainConfig(beta_schedule="linear", beta_warmup_steps=5))
    Config(model=film, train=TrainConfig(free_bits=0.1))
    with pytest.raises(ConfigError, match="one β per minibatch"):
        per_example = ModelConfig(latent_dim=4, conditioning="film", beta_sampling="example")
        Config(model=per_example, train=TrainConfig(free_bits=0.1))
    with pytest.raises(ConfigError, match="do not split"):
        Config(
            model=ModelConfig(latent_dim=4), train=TrainConfig(free_bits=0.1, free_bits_groups=3)
        )


def vae_trainer(run_dir, **train) -> Trainer:
    settings = dict(epochs=3, batch_size=64, progress=False, device="cpu", log_every=5) | train
    cfg = TrainConfig(**settings)
    train_data, test_data = load_data(DIGITS)
    seed_everything(cfg.seed)
    model = build_vae(ModelConfig(latent_dim=3, hidden=[16]), train_data.shape)
    return Trainer(
        model,
        train_data,
        cfg,
        run_dir,
        {"train": settings},
        evaluate=lambda m: evaluate(m, test_data),
    )


def test_train_records_log_the_learning_rate_and_the_rate_weight(tmp_path):
    trainer = vae_trainer(
        tmp_path,
        lr_schedule="cosine",
        lr_warmup_steps=5,
        beta_schedule="linear",
        beta_warmup_steps=20,
        free_bits=0.05,
        log_every=1,
    )
    trainer.fit()
    train = [r for r in read_jsonl(tmp_path / METRICS) if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 31))
    for r in train:  # the record of step s is that of update s − 1
        assert r["lr"] == pytest.approx(trainer.lr_schedule.lr(r["step"] - 1))
        assert r["rate_weight"] == pytest.approx(min(1.0, (r["step"] - 1) / 20))
        assert r["rate_penalised"] >= 3 * 0.05 - 1e-6  # each of 3 dimensions floored at λ


def test_ema_equals_a_hand_rolled_average_of_the_weights_after_every_update(tmp_path):
    trainer = vae_trainer(tmp_path, ema_decay=0.8, epochs=1)
    seen = []
    step = trainer.optimizer.step

    def recording_step(*args, **kw):
        out = step(*args, **kw)
        seen.append({k: v.detach().double().clone() for k, v in trainer.model.state_dict().items()})
        return out

    trainer.optimizer.step = recording_step
    initial = {k: v.detach().double().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    average = initial
    for weights in seen:
        average = {k: 0.8 * average[k] + 0.2 * weights[k] for k in average}
    assert len(seen) == 10
    tensors, meta = load_checkpoint(tmp_path / CHECKPOINT)
    assert meta["ema"] == {"decay": 0.8}
    for k, v in average.items():
        torch.testing.assert_close(tensors[f"ema.{k}"].double(), v, rtol=1e-5, atol=1e-6)
        assert torch.equal(tensors[f"model.{k}"], trainer.model.state_dict()[k])  # raw kept
    test = [r for r in read_jsonl(tmp_path / METRICS) if r["split"] == "test"][-1]
    with trainer.ema.applied(trainer.model):
        by_ema = evaluate(trainer.model, load_data(DIGITS)[1])
    assert test["ema_loss"] == pytest.approx(by_ema["loss"]) and test["ema_loss"] != test["loss"]


def test_plateau_state_survives_a_kill_after_an_evaluation_it_reacted_to(tmp_path):
    """The checkpoint at an epoch end precedes that epoch's evaluation: a run killed after
    the evaluation (logged, the rate halved) but before the next checkpoint must resume at
    the halved rate."""
    settings = dict(
        epochs=4,
        lr_schedule="plateau",
        plateau_patience=0,
        plateau_threshold=0.5,  # only a halving of the test loss counts: every later epoch fails
        lr_gamma=0.5,
        checkpoint_every=10,
    )
    whole = vae_trainer(tmp_path / "whole", **settings)
    whole.fit()
    lrs = {r["step"]: r["lr"] for r in read_jsonl(tmp_path / "whole" / METRICS) if "lr" in r}
    assert lrs[10] == 1e-3 and lrs[25] == 5e-4 and lrs[40] == 2.5e-4

    first = vae_trainer(tmp_path / "killed", **settings)
    step = first._step

    def killed_at_step_25(*args):
        if first.state.step == 25:
            raise KeyboardInterrupt
        return step(*args)

    first._step = killed_at_step_25
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT)[1]["step"] == 20
    resumed = vae_trainer(tmp_path / "killed", **settings)
    resumed.fit()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "killed" / METRICS)) == strip(
        read_jsonl(tmp_path / "whole" / METRICS)
    )
    for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def write_config(path, epochs):
    path.write_text(
        "[data]\nname = 'digits'\n"
        "[model]\nlatent_dim = 4\nhidden = [64]\n"
        f"[train]\nepochs = {epochs}\nbatch_size = 32\ncheckpoint_every = 25\nlog_every = 25\n"
        "progress = false\ndevice = 'cpu'\noptimizer = 'adamw'\nweight_decay = 0.01\n"
        "lr_schedule = 'cosine'\nlr_warmup_steps = 100\nbeta_schedule = 'cyclical'\n"
        "beta_cycles = 3\nfree_bits = 0.05\nema_decay = 0.99\n"
    )
    return path


def test_a_run_with_schedules_free_bits_and_ema_killed_with_sigkill_resumes_bit_identically(
    tmp_path,
):
    config = write_config(tmp_path / "cfg.toml", epochs=12)  # 47 steps/epoch → 564 steps
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    command = [sys.executable, "-m", "vaelab", "train", str(config), "--run-dir"]
    subprocess.run([*command, str(straight)], check=True, env=run_env(), capture_output=True)
    proc = subprocess.Popen(
        [*command, str(killed)], env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        records = read_jsonl(killed / METRICS)
        if records and records[-1]["step"] >= 200:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, meta = load_checkpoint(killed / CHECKPOINT)
    assert not meta["finished"] and 0 < meta["step"] < 564, meta["step"]
    resumed = subprocess.run([*command, str(killed)], env=run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_checkpoint(straight / CHECKPOINT)
    b, _ = load_checkpoint(killed / CHECKPOINT)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(killed / METRICS)) == strip(read_jsonl(straight / METRICS))


def test_bf16_on_the_cpu_trains_to_within_a_thousandth_of_float32(tmp_path):
    def final(precision):
        cfg = Config(
            data=DIGITS,
            model=ModelConfig(latent_dim=4, hidden=[64]),
            train=TrainConfig(
                epochs=5, batch_size=64, progress=False, device="cpu", precision=precision
            ),
        )
        return train_run(cfg, tmp_path / precision, report=False).state.last_test

    full, half = final("32"), final("bf16")
    assert half["negative_elbo"] == pytest.approx(
        full["negative_elbo"], rel=1e-3
    )  # measured: 2.5e-6
    assert half["negative_elbo"] != full["negative_elbo"]  # bf16 really ran


class _Regression(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        x, y = batch
        return ObjectiveTerms((self.linear(x)[:, 0] - y) ** 2)


def regression_data(n=50) -> TensorData:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return TensorData(x, x @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(n, generator=g))


@pytest.mark.parametrize("optimizer", OPTIMIZER_NAMES)
def test_two_micro_batches_per_update_equal_one_batch_of_both(tmp_path, optimizer):
    """50 examples: updates of 16 + 16 and a last one of 16 + 2, against batches of 32 / 18."""
    extra = {"momentum": 0.9, "nesterov": True} if optimizer == "sgd" else {}

    def trained(batch_size, accumulate, name):
        cfg = TrainConfig(
            epochs=3,
            batch_size=batch_size,
            accumulate=accumulate,
            lr=0.05,
            optimizer=optimizer,
            progress=False,
            device="cpu",
            log_every=1,
            **extra,
        )
        trainer = Trainer(_Regression(), regression_data(), cfg, tmp_path / name, {})
        trainer.fit()
        return trainer.model, read_jsonl(tmp_path / name / METRICS)

    big, big_log = trained(32, 1, "big")
    small, small_log = trained(16, 2, "small")
    assert [r["step"] for r in small_log] == [r["step"] for r in big_log] == list(range(1, 7))
    for p, q in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in small_log] == pytest.approx([r["loss"] for r in big_log], rel=1e-5)


def test_compile_falls_back_to_eager_with_one_line(tmp_path, monkeypatch, capsys):
    def broken(module):
        def fails(x):
            raise RuntimeError("no compiler\nhere")

        return fails

    monkeypatch.setattr(torch, "compile", broken)
    cfg = TrainConfig(epochs=1, batch_size=25, progress=False, device="cpu", compile=True)
    trainer = Trainer(_Regression(), regression_data(), cfg, tmp_path, {})
    trainer.fit()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["train.compile: torch.compile failed here (no compiler here); training eagerly"]
    assert trainer.state.step == 2


def test_float16_needs_cuda(tmp_path):
    cfg = TrainConfig(precision="16-mixed", device="cpu")
    with pytest.raises(ConfigError, match="needs CUDA"):
        Trainer(_Regression(), regression_data(), cfg, tmp_path, {})
    assert TrainConfig(precision=32).precision == "32"


def test_under_bf16_the_nan_guard_and_the_soft_bound_on_sigma_still_hold(tmp_path):
    def config(**train):
        return Config(
            data=DIGITS,
            model=ModelConfig(
                latent_dim=4, hidden=[32], sigma_mode="optimal-shared", log_sigma_min=0.0
            ),
            train=TrainConfig(
                **dict(
                    epochs=2,
                    batch_size=64,
                    progress=False,
                    device="cpu",
                    precision="bf16",
                    log_every=1,
                )
                | train
            ),
        )

    def sigmas(name, **train):
        train_run(config(**train), tmp_path / name, report=False)
        return [r["sigma"] for r in read_jsonl(tmp_path / name / METRICS) if r["split"] == "train"]

    half, full = sigmas("bf16"), sigmas("32", precision="32")
    assert min(half) > 1.0  # log σ_x = 0 + softplus(·) > 0, although the optimum falls below 1
    assert half == pytest.approx(full, rel=1e-2)  # and bf16 follows float32's σ_x
    with pytest.raises(TrainingDiverged, match="training diverged"):
        train_run(config(lr=1e12), tmp_path / "diverged", report=False)
