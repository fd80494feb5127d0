"""Issue 17 item 2: image sets streamed from disk by DataLoader workers train bit-identically
to the same set decoded into memory, and a streamed run killed with SIGKILL resumes exactly."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, run_env
from PIL import Image

from vaelab.checkpoint import load_checkpoint
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.data import streaming as streaming_module
from vaelab.data.base import ImageData
from vaelab.data.streaming import StreamedImages
from vaelab.errors import DataError
from vaelab.files import read_jsonl
from vaelab.runs import train_run
from vaelab.training import CHECKPOINT, METRICS


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """240 RGB PNGs of 16×16 in two class folders, with structure (a blob) and noise."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    for i in range(240):
        cls = "a" if i % 2 else "b"
        (root / cls).mkdir(exist_ok=True)
        cy, cx = rng.integers(3, 13, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        pixels = 200 * blob[..., None] * rng.uniform(0.3, 1.0, size=3) + rng.uniform(
            0, 40, (16, 16, 3)
        )
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / cls / f"{i:04d}.png")
    return root


def data_config(folder, storage, **kw) -> DataConfig:
    return DataConfig(name="image-folder", path=str(folder), storage=storage, **kw)


def test_streamed_and_in_memory_sets_hold_the_same_images_labels_and_split(folder):
    memory = load_data(data_config(folder, "memory"))
    streamed = load_data(data_config(folder, "stream", workers=2))
    for m, s in zip(memory, streamed):
        assert isinstance(m, ImageData) and isinstance(s, StreamedImages)
        assert len(m) == len(s) and m.shape == s.shape == (3, 16, 16)
        assert torch.equal(m.labels, s.labels)
        index = torch.tensor([0, 5, len(m) - 1])
        assert torch.equal(m.batch(index), s.batch(index))
        assert torch.equal(m.batch(slice(3, 9)), s.batch(slice(3, 9)))
        chunks = list(torch.randperm(len(m), generator=torch.Generator().manual_seed(1)).split(7))
        decoded = list(s.batches(chunks))  # by two worker processes
        assert all(torch.equal(d, m.batch(c)) for d, c in zip(decoded, chunks))
        assert s.nbytes == s.labels.nbytes and m.nbytes == len(m) * 3 * 16 * 16  # no images held


def test_auto_storage_streams_what_would_take_more_than_a_quarter_of_free_memory(
    folder, monkeypatch
):
    decoded = 240 * 3 * 16 * 16  # the folder, uint8 (split after the choice)
    monkeypatch.setattr(streaming_module, "available_memory", lambda: 4 * decoded - 4)
    assert isinstance(load_data(data_config(folder, "auto"))[0], StreamedImages)
    monkeypatch.setattr(streaming_module, "available_memory", lambda: 4 * decoded)
    assert isinstance(load_data(data_config(folder, "auto"))[0], ImageData)


def test_auto_workers_use_the_cores_training_leaves_free_and_one_where_none_is(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(streaming_module.os, "sched_getaffinity", lambda _: set(range(4)))
    for threads, workers in [(4, 1), (8, 1), (3, 1), (2, 2), (1, 2)]:
        monkeypatch.setattr(streaming_module.torch, "get_num_threads", lambda t=threads: t)
        assert streaming_module.worker_count("auto", cpu) == workers, threads
    assert streaming_module.worker_count("auto", gpu) == 2  # the device trains, not the cores
    assert streaming_module.worker_count(3, cpu) == 3  # a number is taken as given


def test_a_streamed_set_with_no_workers_decodes_in_the_main_process(folder, monkeypatch):
    (train, _) = load_data(data_config(folder, "stream", workers=0))
    monkeypatch.setattr(streaming_module, "DataLoader", None)  # would fail if used
    chunks = list(torch.arange(len(train)).split(50))
    assert all(torch.equal(b, train.batch(c)) for b, c in zip(train.batches(chunks), chunks))


def config(folder, storage, epochs=3) -> Config:
    return Config(
        data=data_config(folder, storage, workers=2),
        model=ModelConfig(network="conv", channels=[8, 8], hidden=[32], latent_dim=4),
        train=TrainConfig(epochs=epochs, batch_size=24, progress=False, device="cpu", log_every=3),
    )


def test_a_streamed_run_trains_bit_identically_to_the_in_memory_run(folder, tmp_path):
    a = train_run(config(folder, "memory"), tmp_path / "memory", report=False)
    b = train_run(config(folder, "stream"), tmp_path / "stream", report=False)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "memory" / METRICS)) == strip(
        read_jsonl(tmp_path / "stream" / METRICS)
    )


def test_a_streamed_run_killed_with_sigkill_resumes_bit_identically(folder, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f"[data]\nname = 'image-folder'\npath = '{folder}'\nstorage = 'stream'\nworkers = 2\n"
        "[model]\nnetwork = 'conv'\nchannels = [8, 8]\nhidden = [32]\nlatent_dim = 4\n"
        "[train]\nepochs = 60\nbatch_size = 24\ncheckpoint_every = 20\nlog_every = 10\n"
        "progress = false\ndevice = 'cpu'\n"
    )  # 9 steps per epoch → 540 steps
    command = [sys.executable, "-m", "vaelab", "train", str(cfg), "--run-dir"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([*command, str(straight)], check=True, env=run_env(), capture_output=True)
    proc = subprocess.Popen(
        [*command, str(killed)], env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        records = read_jsonl(killed / METRICS)
        if records and records[-1]["step"] >= 150:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # DataLoader workers exit when their parent dies
    proc.wait()
    _, meta = load_checkpoint(killed / CHECKPOINT)
    assert not meta["finished"] and 0 < meta["step"] < 540, meta["step"]
    resumed = subprocess.run([*command, str(killed)], env=run_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_checkpoint(straight / CHECKPOINT)
    b, _ = load_checkpoint(killed / CHECKPOINT)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_an_image_in_an_unsupported_mode_is_refused_when_the_set_is_scanned(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(tmp_path / "deep.png")  # 16 bits
    with pytest.raises(DataError, match="deep.png: image mode I.* is not supported"):
        load_data(data_config(tmp_path, "stream"))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_breaks_in_a_worker_stops_training_with_its_one_line(tmp_path, workers):
    """The header scan passes a truncated PNG; its DataError, raised in a worker or in the
    main process, reaches the user as the loader's own line (not as a worker traceback in
    text), exit 2."""
    rng = np.random.default_rng(0)
    for i in range(40):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i:02d}.png")
    broken = tmp_path / "07.png"
    broken.write_bytes(broken.read_bytes()[:-30])  # header intact, pixel data cut off
    load_data(data_config(tmp_path, "stream"))  # the scan reads headers only: it passes
    cmd = [sys.executable, "-m", "vaelab", "train", str(REPO / "configs" / "digits.toml")]
    cmd += ["--run-dir", str(tmp_path / "run"), "--set", "data.name=image-folder"]
    cmd += ["--set", f"data.path={tmp_path}", "--set", "data.storage=stream"]
    cmd += ["--set", f"data.workers={workers}"]
    cmd += ["--set", "train.epochs=1", "--set", "train.progress=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=run_env(), timeout=120)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"vaelab: error: {broken}: cannot read image ("), line


def test_a_decoded_cache_holds_every_image_once_and_reads_back_the_same_batches(folder, tmp_path):
    memory = load_data(data_config(folder, "memory"))
    cache = tmp_path / "cache"
    cached = load_data(data_config(folder, "stream", workers=2, decoded_cache=str(cache)))
    (file,) = cache.iterdir()
    assert file.stat().st_size == 240 * 3 * 16 * 16  # the whole folder, uint8, once
    for m, c in zip(memory, cached):
        assert isinstance(c, StreamedImages) and torch.equal(m.labels, c.labels)
        chunks = list(torch.randperm(len(m), generator=torch.Generator().manual_seed(2)).split(9))
        assert all(torch.equal(b, m.batch(k)) for b, k in zip(c.batches(chunks), chunks))
        assert torch.equal(c.batch(slice(2, 7)), m.batch(slice(2, 7)))


def test_a_decoded_cache_is_found_again_and_remade_when_an_image_changes(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    cfg = data_config(root, "stream", workers=0, decoded_cache=str(tmp_path / "cache"))
    load_data(cfg)
    (first,) = (tmp_path / "cache").iterdir()
    made = first.stat().st_mtime_ns
    load_data(cfg)  # the same images: the same file, not rewritten
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]
    assert first.stat().st_mtime_ns == made
    changed = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(changed).save(root / "0.png")
    os.utime(root / "0.png", ns=(made + 10**9, made + 10**9))  # a later mtime, whatever the clock
    train, test = load_data(cfg)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # a new key
    everything = torch.cat([train.batch(slice(None)), test.batch(slice(None))])
    assert any(torch.equal(row, torch.from_numpy(changed).permute(2, 0, 1).float() / 255)
               for row in everything)  # fmt: skip


def test_a_cut_off_cache_file_is_remade_and_a_bad_cache_folder_is_one_line(folder, tmp_path):
    cache = tmp_path / "cache"
    cfg = data_config(folder, "stream", workers=0, decoded_cache=str(cache))
    load_data(cfg)
    (file,) = cache.iterdir()
    file.write_bytes(file.read_bytes()[:1000])  # cut off, as by a full disk
    train, _ = load_data(cfg)
    assert file.stat().st_size == 240 * 3 * 16 * 16
    memory, _ = load_data(data_config(folder, "memory"))
    assert torch.equal(train.batch(slice(None)), memory.batch(slice(None)))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="data.decoded_cache: cannot write"):
        load_data(data_config(folder, "stream", decoded_cache=str(blocker / "cache")))
