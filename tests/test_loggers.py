"""The experiment trackers of train.loggers (training/callbacks.py), driven directly with a
tiny VAE and synthetic records, and read back with each tracker's own reader: TensorBoard's
EventAccumulator, W&B's `wandb leet inspect` of the offline run log, MLflow's client. No
network: the trackers run offline and a guard records any connection Python makes to an
address off this machine (W&B's Go core, a separate process, is outside that guard; it is
pointed at a closed local port)."""

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.vae import build_vae
from vaelab.registry import LOGGERS
from vaelab.training.callbacks import (
    Callback,
    build_callbacks,
    evaluation_images,
    flatten_config,
    image_examples,
    image_grid,
    require,
)

SHAPE = (1, 8, 8)
CONFIG = {
    "data": {"name": "digits", "path": "p" * 700},  # a value past MLflow's 500 characters
    "model": {"network": "mlp", "hidden": [16], "latent_dim": 2, "conditioning": None},
    "train": {"lr": 0.001, "progress": False},
}
# (step, record) of a synthetic run: train records every 10 steps, evaluations at 20 and 40
TRAIN = [(s, {"loss": 100.0 - s, "rate": s / 10, "grad_norm": 1.0 + s}) for s in (10, 20, 30, 40)]
TEST = {20: {"loss": 90.5, "negative_elbo": 91.0}, 40: {"loss": 70.25, "negative_elbo": 71.0}}
FINAL = {"loss": 70.25, "negative_elbo": 71.0}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_vae(
        ModelConfig(network="mlp", hidden=[16], latent_dim=2, likelihood="bernoulli"), SHAPE
    ).eval()


@pytest.fixture
def examples():
    return torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def offline(tmp_path):
    """The trackers' environment for a test (restored after it) and a guard that records
    every connection to an address off this machine (and refuses it)."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("WANDB_", "MLFLOW_"))]:
        del os.environ[key]
    home = tmp_path / "home"
    os.environ.update(
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(home / "config"),
        WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_DATA_DIR=str(home / "data"),
        WANDB_BASE_URL="http://127.0.0.1:9",  # a closed local port, should anything try
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    attempts = []
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                attempts.append(address)
                raise OSError(f"test: no network ({address})")
        return connect(sock, address)

    socket.socket.connect = guarded
    try:
        yield attempts
    finally:
        socket.socket.connect = connect
        os.environ.clear()
        os.environ.update(saved)


def run_sessions(names, run_dir, model, examples, sessions, first=0):
    """Drive the loggers through `sessions`: [(start step, last step)], each logging the
    synthetic records of steps in (start, last] (train value + 1000 · session number,
    counted from `first`, so a record tells which session wrote it) and the end after the
    last step of the run."""
    for index, (start, last) in enumerate(sessions, first):
        callbacks = build_callbacks(names, examples)
        callbacks.on_start(run_dir, CONFIG, model, start)
        for step, record in TRAIN:
            if start < step <= last:
                callbacks.on_train_record(step, {k: v + 1000 * index for k, v in record.items()})
                if step in TEST:
                    callbacks.on_evaluation(step, TEST[step], model)
        if last == TRAIN[-1][0]:
            callbacks.on_end(last, FINAL)
        callbacks.close()


def expected_grids(model, examples):
    """The reconstruction and sample grids computed by hand."""
    recons = model.reconstruct(examples)
    rows = [examples[:8], recons[:8], examples[8:], recons[8:]]
    state = torch.get_rng_state()
    torch.manual_seed(0)
    samples = model.generate(16)
    torch.set_rng_state(state)
    return {
        "reconstructions": image_grid(torch.cat(rows)),
        "samples": image_grid(samples),
    }


def png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[..., 0].astype(np.int64)


# --- the interface ---------------------------------------------------------------------


def test_the_registry_declares_the_loggers_it_fills():
    assert sorted(LOGGERS.declared) == LOGGERS.names() == ["mlflow", "tensorboard", "wandb"]
    assert all(issubclass(LOGGERS.get(n), Callback) for n in LOGGERS.names())


def test_an_unknown_or_repeated_logger_is_one_line_naming_the_closest():
    with pytest.raises(
        ConfigError,
        match=r"^train.loggers: unknown logger 'tensorbord' \(did you mean \"tensorboard\"\?\)",
    ):
        build_callbacks(["tensorbord"], None)
    with pytest.raises(ConfigError, match=r"^train.loggers: 'tensorboard' is named twice$"):
        build_callbacks(["tensorboard", "tensorboard"], None)
    assert build_callbacks([], None) == []


@pytest.mark.parametrize(
    "name, module", [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")]
)
def test_a_logger_whose_package_is_missing_is_one_line_naming_the_extra(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if absent
    with pytest.raises(ConfigError) as error:
        build_callbacks([name], None)
    assert str(error.value) == (
        f"train.loggers: {name!r} needs the {module} package: pip install 'vaelab[{name}]'"
    )


def test_a_broken_package_keeps_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "brokentracker.py").write_text("import a_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_there"):
        require("brokentracker", "brokentracker")


def test_the_fixed_examples_are_the_first_16_images_and_none_for_other_data():
    from vaelab.data.base import ImageData, TensorData

    images = torch.randint(0, 256, (20, *SHAPE), dtype=torch.uint8)
    torch.testing.assert_close(image_examples(ImageData("x", images)), images[:16].float() / 255)
    assert image_examples(TensorData(torch.rand(20, 1, 8, 8)), n=4).shape == (4, 1, 8, 8)
    assert image_examples(TensorData(torch.rand(20, 5))) is None  # codes, word counts
    assert image_examples(TensorData(torch.rand(20, 1, 8, 8), torch.zeros(20))) is None  # pairs


def test_flattened_config_keeps_scalars_and_writes_the_rest_as_json():
    flat = flatten_config(CONFIG)
    assert flat["model.hidden"] == "[16]" and flat["model.conditioning"] == "null"
    assert flat["model.latent_dim"] == 2 and flat["train.progress"] is False
    assert flat["train.lr"] == 0.001 and len(flat) == 8


def test_evaluation_images_are_the_examples_their_reconstructions_and_seeded_samples(
    model, examples
):
    state = torch.get_rng_state()
    grids = evaluation_images(model, examples)
    assert torch.equal(torch.get_rng_state(), state)  # the trainer's draws are untouched
    expected = expected_grids(model, examples)
    assert grids.keys() == expected.keys()
    for tag in grids:
        assert grids[tag].shape == (
            1,
            4 * 9 + 1 if tag == "reconstructions" else 2 * 9 + 1,
            8 * 9 + 1,
        )
        torch.testing.assert_close(grids[tag], expected[tag])
    # the first row of the reconstruction grid is the first 8 examples, gaps in between
    torch.testing.assert_close(grids["reconstructions"][0, 1:9, 10:18], examples[1, 0])
    assert evaluation_images(model, None) == {}
    assert evaluation_images(torch.nn.Linear(2, 2), examples) == {}  # no reconstruct/generate


# --- TensorBoard -----------------------------------------------------------------------


def accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalar_series(events, tag):
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_event_file_holds_the_scalars_images_and_hyperparameters(
    tmp_path, model, examples, offline
):
    run_dir = tmp_path / "run"
    run_sessions(["tensorboard"], run_dir, model, examples, [(0, 40)])
    events = accumulator(run_dir / "tensorboard")
    tags = events.Tags()
    assert set(tags["scalars"]) == {f"train/{k}" for k in TRAIN[0][1]} | {
        "test/loss",
        "test/negative_elbo",
    }
    assert scalar_series(events, "train/loss") == [(s, r["loss"]) for s, r in TRAIN]
    assert scalar_series(events, "train/rate") == [
        (s, r["rate"]) for s, r in TRAIN
    ]  # float32-exact
    assert scalar_series(events, "test/loss") == [(20, 90.5), (40, 70.25)]
    assert set(tags["images"]) == {"reconstructions", "samples"}
    expected = expected_grids(model, examples)
    for tag, grid in expected.items():
        images = events.Images(tag)
        assert [i.step for i in images] == [20, 40]
        assert (images[0].height, images[0].width) == grid.shape[1:]
        pixels = png_pixels(images[-1].encoded_image_string)
        assert np.abs(pixels - grid[0].numpy() * 255).max() <= 1  # TensorBoard truncates to uint8

    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = accumulator(run_dir / "tensorboard" / "hparams")
    content = hparams.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["model.latent_dim"].number_value == 2
    assert start.hparams["model.hidden"].string_value == "[16]"
    assert start.hparams["data.name"].string_value == "digits"
    assert start.hparams["train.progress"].bool_value is False
    assert scalar_series(hparams, "final/loss") == [(40, 70.25)]
    assert not offline


def test_tensorboard_resume_drops_what_the_killed_session_logged_after_the_checkpoint(
    tmp_path, model, examples, offline
):
    """Session 0 logs to step 40 and 'dies'; the run resumes from its checkpoint at step 20:
    the reader sees session 0's steps ≤ 20, then the resumed session's, each step once,
    exactly what an uninterrupted run's reader sees (here with values marked by session)."""
    run_dir = tmp_path / "run"
    run_sessions(["tensorboard"], run_dir, model, examples, [(0, 40), (20, 40)])
    events = accumulator(run_dir / "tensorboard")
    losses = {s: r["loss"] for s, r in TRAIN}
    assert scalar_series(events, "train/loss") == [
        (10, losses[10]),
        (20, losses[20]),
        (30, losses[30] + 1000),
        (40, losses[40] + 1000),
    ]
    assert scalar_series(events, "test/loss") == [(20, 90.5), (40, 70.25)]
    assert [i.step for i in events.Images("samples")] == [20, 40]
    # a fresh start (step 0: no checkpoint, metrics.jsonl emptied) drops everything before it
    run_sessions(["tensorboard"], run_dir, model, examples, [(0, 20)])
    events = accumulator(run_dir / "tensorboard")
    assert scalar_series(events, "train/loss") == [(10, losses[10]), (20, losses[20])]
    assert not (run_dir / "tensorboard" / "hparams").exists()  # rewritten only at the end
    assert not offline


# --- Weights & Biases ------------------------------------------------------------------


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of the run's offline logs, read by W&B's own reader."""
    pytest.importorskip("wandb")
    records = []
    for log in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        out = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        records += [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return records


def test_wandb_offline_run_holds_config_scalars_images_and_summary(
    tmp_path, model, examples, offline
):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    run_sessions(["wandb"], run_dir, model, examples, [(0, 40)])
    (folder,) = (run_dir / "wandb").glob("offline-run-*")  # offline: nothing was sent
    records = wandb_records(run_dir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    config = run["config"]["update"]
    assert config["model"]["hidden"] == [16] and config["data"]["name"] == "digits"
    assert run["run_id"] == json.loads((run_dir / "wandb" / "vaelab-run.json").read_text())["id"]
    history = {
        r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"
    }
    assert sorted(history) == [10, 20, 30, 40]
    for step, record in TRAIN:
        assert {k: history[step][f"train/{k}"] for k in record} == pytest.approx(record)
    for step, record in TEST.items():
        assert history[step]["test/loss"] == record["loss"]
        for tag in ("reconstructions", "samples"):
            row = history[step]  # the reader flattens an image's fields as tag.field
            assert row[f"{tag}._type"] == "image-file"
            assert row[f"{tag}.height"] == expected_grids(model, examples)[tag].shape[1]
            assert (folder / "files" / row[f"{tag}.path"]).is_file()
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary |= r["summary"].get("update", {})
    assert summary["final/loss"] == 70.25 and summary["final/negative_elbo"] == 71.0
    pixels = png_pixels((folder / "files" / history[40]["samples.path"]).read_bytes())
    grid = expected_grids(model, examples)["samples"]
    assert np.abs(pixels - grid[0].numpy() * 255).max() <= 0.5 + 1e-6
    assert not offline


def test_wandb_resume_continues_the_same_run(tmp_path, model, examples, offline):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    run_sessions(["wandb"], run_dir, model, examples, [(0, 20), (20, 40)])
    ids = {r["run"]["run_id"] for r in wandb_records(run_dir) if r["type"] == "run"}
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1
    assert not offline


# --- MLflow ----------------------------------------------------------------------------


def mlflow_client(run_dir: Path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "mlflow.json").read_text())
    assert state["tracking_uri"] == (run_dir / "mlruns").resolve().as_uri()
    return MlflowClient(tracking_uri=state["tracking_uri"]), state["run_id"]


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_file_store_holds_params_metrics_and_image_artifacts(
    tmp_path, model, examples, offline
):
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    run_sessions(["mlflow"], run_dir, model, examples, [(0, 40)])
    client, run_id = mlflow_client(run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["model.hidden"] == "[16]" and params["model.latent_dim"] == "2"
    assert params["data.path"] == "p" * 499 + "…"  # cut to MLflow's 500 characters
    assert history(client, run_id, "train/loss") == [(s, r["loss"]) for s, r in TRAIN]
    assert history(client, run_id, "test/negative_elbo") == [(20, 91.0), (40, 71.0)]
    assert history(client, run_id, "final/loss") == [(40, 70.25)]
    expected = expected_grids(model, examples)
    for tag, grid in expected.items():
        paths = [a.path for a in client.list_artifacts(run_id, f"images/{tag}")]
        assert paths == [f"images/{tag}/step_00000020.png", f"images/{tag}/step_00000040.png"]
        local = client.download_artifacts(run_id, paths[-1], str(tmp_path))
        pixels = png_pixels(Path(local).read_bytes())
        assert np.abs(pixels - grid[0].numpy() * 255).max() <= 0.5 + 1e-6
    assert not offline


def test_mlflow_resume_continues_the_run_once_per_step_and_a_fresh_start_replaces_it(
    tmp_path, model, examples, offline
):
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    run_sessions(["mlflow"], run_dir, model, examples, [(0, 30)])  # dies after step 30
    client, first = mlflow_client(run_dir)
    assert client.get_run(first).info.status == "FAILED"  # closed without an end
    run_sessions(["mlflow"], run_dir, model, examples, [(20, 40)], first=1)  # resumes at 20
    client, resumed = mlflow_client(run_dir)
    assert resumed == first and client.get_run(first).info.status == "FINISHED"
    losses = {s: r["loss"] for s, r in TRAIN}
    # step 30 is held from the first session; 40 is new; no step twice
    assert history(client, first, "train/loss") == [
        (10, losses[10]),
        (20, losses[20]),
        (30, losses[30]),
        (40, losses[40] + 1000),
    ]
    run_sessions(["mlflow"], run_dir, model, examples, [(0, 10)])  # a fresh start
    client, fresh = mlflow_client(run_dir)
    assert fresh != first and client.get_run(first).info.lifecycle_stage == "deleted"
    assert history(client, fresh, "train/loss") == [(10, losses[10])]
    assert not offline


def test_a_run_trained_with_tensorboard_mirrors_its_metrics_log(tmp_path, offline):
    """The trainer's wiring: every train and test record of metrics.jsonl is in the event
    file at its step, and the evaluations' images are there too."""
    from vaelab.config import Config, DataConfig, TrainConfig
    from vaelab.files import read_jsonl
    from vaelab.runs import train_run
    from vaelab.training import METRICS

    cfg = Config(
        data=DataConfig(name="digits", train_limit=256, test_limit=64),
        model=ModelConfig(latent_dim=2, hidden=[16]),
        train=TrainConfig(
            epochs=2,
            batch_size=64,
            log_every=2,
            progress=False,
            device="cpu",
            loggers=["tensorboard"],
        ),
    )
    train_run(cfg, tmp_path / "run", report=False)
    events = accumulator(tmp_path / "run" / "tensorboard")
    records = read_jsonl(tmp_path / "run" / METRICS)
    for split in ("train", "test"):
        logged = [r for r in records if r["split"] == split]
        series = scalar_series(events, f"{split}/loss")
        assert [step for step, _ in series] == [r["step"] for r in logged]
        assert [v for _, v in series] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert len(events.Tags()["images"]) == 2
