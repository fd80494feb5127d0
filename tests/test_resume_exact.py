"""Issue 14 items 1–4: a resumed run writes exactly what an uninterrupted one writes, stale
temporary files go, no checkpoint holds NaN/inf (and the message says what diverged and what
is on disk), and every JSON file is strict JSON."""

import json
import math
import os
import tempfile

import pytest
import torch
from safetensors import safe_open
from torch import nn

from vaelab.checkpoint import load_checkpoint, save_checkpoint
from vaelab.config import DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.data.base import TensorData
from vaelab.errors import CheckpointError, TrainingDiverged
from vaelab.estimators import ObjectiveTerms
from vaelab.evaluation import evaluate
from vaelab.files import (
    append_jsonl,
    read_jsonl,
    restore_nonfinite,
    stale_temporaries,
    write_json,
    write_jsonl,
)
from vaelab.models import build_vae
from vaelab.runs import seed_everything
from vaelab.training import CHECKPOINT, METRICS, Trainer, fit

DIGITS = DataConfig(name="digits", train_limit=600, test_limit=100)  # 10 steps per epoch


def strict_loads(text: str):
    """json.loads that refuses NaN/Infinity, as a strict parser does."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def vae_trainer(run_dir, evaluate_fn=None, beta: float = 1.0, **train) -> Trainer:
    """A tiny VAE on 600 digits (batch 64: 10 steps per epoch), seeded like runs.train_run."""
    settings = dict(epochs=3, batch_size=64, progress=False, device="cpu") | train
    cfg = TrainConfig(**settings)
    train_data, test_data = load_data(DIGITS)
    seed_everything(cfg.seed)
    model = build_vae(ModelConfig(latent_dim=3, hidden=[16], beta=beta), train_data.shape)
    evaluate_fn = evaluate_fn or (lambda m: evaluate(m, test_data))
    return Trainer(model, train_data, cfg, run_dir, {"train": settings}, evaluate=evaluate_fn)


def test_kill_between_an_epoch_end_checkpoint_and_its_evaluation_is_made_good(tmp_path):
    settings = dict(checkpoint_every=10, log_every=3)  # a checkpoint at every epoch end
    whole = vae_trainer(tmp_path / "whole", **settings)
    whole.fit()

    test_data = load_data(DIGITS)[1]
    calls = []

    def killed_at_first_evaluation(model):  # the kill lands after the step-10 checkpoint
        calls.append(1)
        raise KeyboardInterrupt

    first = vae_trainer(tmp_path / "resumed", killed_at_first_evaluation, **settings)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    _, meta = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)
    logged = read_jsonl(tmp_path / "resumed" / METRICS)
    assert meta["step"] == 10 and calls == [1]
    assert [r["step"] for r in logged if r["split"] == "test"] == []  # the record is missing

    resumed = vae_trainer(tmp_path / "resumed", lambda m: evaluate(m, test_data), **settings)
    resumed.fit()
    a = read_jsonl(tmp_path / "whole" / METRICS)
    b = read_jsonl(tmp_path / "resumed" / METRICS)
    assert [r["step"] for r in b if r["split"] == "test"] == [10, 20, 30]
    assert without_seconds(b) == without_seconds(a)
    assert resumed.state.last_test == whole.state.last_test
    for (name, p), q in zip(whole.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name


class _Regression(nn.Module):
    """(x, y) → per-example squared error and |error|; raises KeyboardInterrupt at call
    `stop_at` (a kill that lands there)."""

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
        error = self.linear(x)[:, 0] - y
        return ObjectiveTerms(error**2, {"abs_error": error.abs()})


def regression_data() -> TensorData:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    return TensorData(x, x @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(40, generator=g))


@pytest.mark.parametrize("checkpoint_every, stop_at", [(4, 7), (5, 12), (7, 9)])
def test_resuming_off_the_log_grid_gives_the_same_train_records(
    tmp_path, checkpoint_every, stop_at
):
    """Checkpoints at steps 4/8, 5/10 and 7 lie inside log windows of 3 steps."""
    cfg = TrainConfig(
        epochs=3, batch_size=8, lr=0.05, log_every=3, checkpoint_every=checkpoint_every,
        progress=False, device="cpu",
    )  # fmt: skip
    fit(_Regression(), regression_data(), cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(_Regression(stop_at), regression_data(), cfg, tmp_path / "resumed")
    step = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)[1]["step"]
    assert step % 3 and step < stop_at - 1  # resumes inside a window
    fit(_Regression(), regression_data(), cfg, tmp_path / "resumed")
    a = read_jsonl(tmp_path / "whole" / METRICS)
    b = read_jsonl(tmp_path / "resumed" / METRICS)
    assert [r["step"] for r in a] == [3, 6, 9, 12, 15]
    assert without_seconds(b) == without_seconds(a)


def test_a_run_killed_before_its_first_checkpoint_starts_its_log_afresh(tmp_path):
    cfg = TrainConfig(
        epochs=2, batch_size=8, log_every=2, checkpoint_every=100, progress=False, device="cpu"
    )
    fit(_Regression(), regression_data(), cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(_Regression(stop_at=6), regression_data(), cfg, tmp_path / "again")
    assert len(read_jsonl(tmp_path / "again" / METRICS)) == 2  # steps 2 and 4, no checkpoint
    fit(_Regression(), regression_data(), cfg, tmp_path / "again")
    a = without_seconds(read_jsonl(tmp_path / "whole" / METRICS))
    assert without_seconds(read_jsonl(tmp_path / "again" / METRICS)) == a


def test_stale_temporary_files_are_removed_at_start_and_a_finished_run_has_none(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = []
    for name in (CHECKPOINT, METRICS, "eval.json"):  # what atomic_write_bytes leaves on a kill
        fd, path = tempfile.mkstemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        stale.append(path)
    (run_dir / ".notes.tmp").write_text("not ours")  # no random part: not a vaelab temporary
    (run_dir / "notes.txt").write_text("kept")
    assert len(stale_temporaries(run_dir)) == 3
    cfg = TrainConfig(epochs=1, batch_size=8, checkpoint_every=2, progress=False, device="cpu")
    fit(_Regression(), regression_data(), cfg, run_dir)
    assert stale_temporaries(run_dir) == []
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [".notes.tmp", "notes.txt", CHECKPOINT, METRICS, "config.json"]
    )


def test_a_checkpoint_with_inf_in_the_adam_state_is_refused(tmp_path):
    """β = 1e30: every loss term and weight stays finite, the encoder's gradients (~1e29)
    overflow when squared, so Adam's second moment is inf — the old code saved it."""
    trainer = vae_trainer(tmp_path, beta=1e30, epochs=1, log_every=50, checkpoint_every=5)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith("training diverged by step 5 (found when checkpointing, not")
    assert "optimiser state 'exp_avg_sq' of parameter 'encoder." in message
    assert "is finite but its norm overflows float32" in message
    assert "no checkpoint was written" in message and "\n" not in message
    assert not (tmp_path / CHECKPOINT).exists()


def test_save_checkpoint_refuses_any_non_finite_tensor(tmp_path):
    path = tmp_path / "c.safetensors"
    tensors = {"model.w": torch.ones(3), "optimizer.0.exp_avg_sq": torch.tensor([1.0, math.inf])}
    with pytest.raises(CheckpointError, match=r"'optimizer.0.exp_avg_sq' holds 1 non-finite"):
        save_checkpoint(path, tensors, {})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    tensors["optimizer.0.exp_avg_sq"][1] = 2.0
    save_checkpoint(path, tensors | {"steps": torch.tensor([3])}, {"last_test": {"loss": math.nan}})
    _, meta = load_checkpoint(path)
    assert math.isnan(meta["last_test"]["loss"])  # strict JSON on disk, restored on reading
    with safe_open(str(path), framework="pt") as f:
        raw = strict_loads(f.metadata()["vaelab"])
    assert raw["last_test"] == {"loss": None, "loss_nonfinite": "nan"}


class _Terms:
    """Terms like a VAE's (loss = distortion + β·rate), from given per-step values."""

    def __init__(self, loss, distortion, rate):
        self.loss, self.distortion, self.rate = loss, distortion, rate

    def sums(self):
        return {
            "loss": self.loss.detach().sum(),
            "distortion": self.distortion.detach().sum(),
            "rate": self.rate.detach().sum(),
        }


class _Blows(nn.Module):
    """A one-weight model whose `term` ('distortion' or 'rate') becomes infinite at call `at`."""

    def __init__(self, at: int, term: str = "rate"):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.at, self.term, self.calls = at, term, 0

    def forward(self, x):
        self.calls += 1
        blown = math.inf if self.calls >= self.at else 1.0
        distortion = (x.flatten(1).sum(1) * self.w) ** 2 * (
            blown if self.term == "distortion" else 1
        )
        rate = self.w.abs().expand(len(x)) * (blown if self.term == "rate" else 1.0)
        return _Terms(distortion + rate, distortion, rate)


@pytest.mark.parametrize("term", ["distortion", "rate"])
def test_the_divergence_message_names_the_term_and_what_is_on_disk(tmp_path, term):
    data = TensorData(torch.rand(64, 4))
    cfg = TrainConfig(epochs=10, batch_size=8, checkpoint_every=5, progress=False, device="cpu")
    with pytest.raises(
        TrainingDiverged, match=rf"^training diverged at step 13: loss term '{term}' is inf; "
    ):
        Trainer(_Blows(13, term), data, cfg, tmp_path, {"train": {}}).fit()
    with pytest.raises(
        TrainingDiverged, match="; the checkpoint on disk is of step 10 and holds only"
    ):
        Trainer(_Blows(3, term), data, cfg, tmp_path, {"train": {}}).fit()  # resumes at step 10


def test_an_overflowing_total_with_finite_terms_is_named_as_such(tmp_path):
    class _Overflow(_Blows):
        def forward(self, x):
            t = super().forward(x)
            return _Terms(t.distortion + 1e38 * t.rate * 10, t.distortion, t.rate)

    data = TensorData(torch.rand(16, 4))
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False, device="cpu")
    with pytest.raises(
        TrainingDiverged,
        match=r"step 1: loss term 'loss' is inf \(finite, per example: distortion [\d.]+, rate 1\)"
        r"; no checkpoint was written",
    ):
        Trainer(_Overflow(99), data, cfg, tmp_path, {"train": {}}).fit()


def test_json_writers_are_strict_and_say_why_a_value_is_null(tmp_path):
    record = {
        "loss": math.inf,
        "sigma": torch.tensor(-math.inf),
        "rate": 2.5,
        "curve": [1.0, math.nan, (2.0, -math.inf)],
        "rows": [{"x": math.nan, "y": 1}],
        "nested": {"d": math.nan},
    }
    expected = {
        "loss": None,
        "loss_nonfinite": "inf",
        "sigma": None,
        "sigma_nonfinite": "-inf",
        "rate": 2.5,
        "curve": [1.0, None, [2.0, None]],
        "curve_nonfinite": {"1": "nan", "2.1": "-inf"},
        "rows": [{"x": None, "x_nonfinite": "nan", "y": 1}],
        "nested": {"d": None, "d_nonfinite": "nan"},
    }
    write_json(tmp_path / "a.json", record)
    write_jsonl(tmp_path / "b.jsonl", [record])
    append_jsonl(tmp_path / "b.jsonl", record)
    assert strict_loads((tmp_path / "a.json").read_text()) == expected
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert [strict_loads(line) for line in lines] == [expected, expected]
    back = restore_nonfinite(expected)
    assert back["loss"] == math.inf and back["sigma"] == -math.inf and back["rate"] == 2.5
    assert math.isnan(back["curve"][1]) and back["curve"][2] == [2.0, -math.inf]
    assert math.isnan(back["rows"][0]["x"]) and math.isnan(back["nested"]["d"])
    assert set(back) == set(record)
    with pytest.raises(ValueError, match="top-level list"):
        write_json(tmp_path / "c.json", [1.0, math.nan])
    assert not (tmp_path / "c.json").exists()


def test_a_checkpoint_path_that_is_a_directory_is_named_as_such(tmp_path):
    (tmp_path / CHECKPOINT).mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a file"):
        load_checkpoint(tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
