"""Every bad invocation is answered in at most two lines (an error, or a warning and an error)
with exit code 2 and no traceback, before any training starts; and no file vaelab loads can
run code (a malicious pickle is refused and its payload never runs).

The table below is one row per distinct invocation: an id, the argv (placeholders {name} are
the fixture files and directories of `paths`), and a fragment the message must contain. The
CLI's `main(argv)` runs in-process; an optimiser step raises, so a case that reached training
would fail loudly instead of passing by accident.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_env
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaelab.cli import RECIPES, main
from vaelab.training import CHECKPOINT

# --- fixture files ----------------------------------------------------------------------------

GOOD = """
[data]
name = "digits"
train_limit = 128
test_limit = 64
[model]
latent_dim = 2
hidden = [16]
[train]
epochs = 1
batch_size = 64
progress = false
"""

CONFIGS = {  # name → (file name, text)
    "cfg": ("good.toml", GOOD),
    "other_cfg": ("other.toml", GOOD.replace("latent_dim = 2", "latent_dim = 3")),
    "bad_toml": ("bad.toml", "[model\nbeta = 1\n"),
    "dup_toml": ("dup.toml", "[model]\nbeta = 1\nbeta = 2\n"),
    "inf_toml": ("inf.toml", "[model]\nbeta = inf\n"),
    "nan_toml": ("nan.toml", "[train]\nlr = nan\n"),
    "seed_toml": ("seed.toml", "[train]\nseed = 100000000000000000000000\n"),
    "section_toml": ("section.toml", "model = 3\n"),
    "unknown_toml": ("unknown.toml", "[modle]\nbeta = 1\n"),
    "datakey_toml": ("datakey.toml", "[data]\nnmae = 'digits'\n"),
    "type_toml": ("type.toml", "[data]\nname = 5\n"),
    "ini": ("c.ini", "x = 1\n"),
    "nosuffix": ("config", "[model]\nbeta = 1\n"),
    "bad_yaml": ("bad.yaml", "model: [1, 2\n"),
    "tab_yaml": ("tab.yaml", "model:\n\tbeta: 1\n"),
    "list_yaml": ("list.yaml", "- 1\n- 2\n"),
    "scalar_yaml": ("scalar.yaml", "just a string\n"),
    "nan_yaml": ("nan.yaml", "model:\n  sigma: .nan\n"),
    "ninf_yaml": ("ninf.yaml", "model:\n  beta: -.inf\n"),
    "intkey_yaml": ("intkey.yml", "1: 2\n"),
    "seedstr_yaml": ("seedstr.yaml", "train:\n  seed: 1e23\n"),
    "bad_json": ("bad.json", '{"model": {"beta": 1,}}'),
    "list_json": ("list.json", "[1, 2]"),
    "nan_json": ("nan.json", '{"model": {"beta": NaN}}'),
    "inf_json": ("inf.json", '{"train": {"lr": Infinity}}'),
    "str_json": ("str.json", '{"train": {"epochs": "ten"}}'),
}


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> None:
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(bytes([0, 0, code, array.ndim]) + dims + array.astype(">u1").tobytes())


def idx_folder(root: Path, name: str, images=None, labels=None, drop=None) -> Path:
    """A folder of the four MNIST IDX files (images [N, H, W], labels [N])."""
    folder = root / name
    folder.mkdir()
    images = np.zeros((4, 8, 8), np.uint8) if images is None else images
    labels = np.arange(len(images), dtype=np.uint8) if labels is None else labels
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels)
    if drop:
        (folder / drop).unlink()
    return folder


def image_folder(root: Path, name: str, sizes=((8, 8),) * 3, corrupt=False, mixed=False) -> Path:
    folder = root / name
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.fromarray(np.full(size, 40 * i, np.uint8)).save(folder / f"{i}.png")
    if corrupt:
        (folder / "broken.png").write_bytes(b"not a png")
    if mixed:
        (folder / "cats").mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "cats" / "c.png")
    return folder


class Evil:
    """Unpickling this creates `marker` (what a malicious pickle would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def rewrite_checkpoint(source: Path, run: Path, edit_meta=None, edit_tensors=None) -> str:
    """A copy of the run `source` whose checkpoint's metadata or tensors are edited (written
    with safetensors directly: vaelab's own writer refuses non-finite tensors)."""
    run.mkdir()
    tensors = load_file(str(source / CHECKPOINT))
    with safe_open(str(source / CHECKPOINT), framework="pt") as f:
        meta = json.loads(f.metadata()["vaelab"])
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(run / CHECKPOINT), metadata={"vaelab": json.dumps(meta)})
    return str(run)


def _set(section, key, value):
    def edit(meta):
        meta["config"][section][key] = value

    return edit


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Every file and directory the table refers to, made once: configs, data folders, a
    trained tiny run and broken copies of it."""
    root = tmp_path_factory.mktemp("bad")
    P = {}
    for name, (file, text) in CONFIGS.items():
        (root / file).write_text(text)
        P[name] = str(root / file)
    (root / "latin1.toml").write_bytes(b"[model]\nname = '\xe9'\n")
    P["latin1_toml"] = str(root / "latin1.toml")
    os.mkfifo(root / "fifo.toml")
    P["fifo"] = str(root / "fifo.toml")
    (root / "dangling.toml").symlink_to(root / "nowhere.toml")
    P["dangling"] = str(root / "dangling.toml")
    for name in ("empty_dir", "cfg_dir.toml"):
        (root / name).mkdir()
        P[name.removesuffix(".toml")] = str(root / name)
    (root / "a_file").write_text("not a directory\n")
    P["a_file"] = str(root / "a_file")
    P["missing"] = str(root / "missing")

    # data
    P["idx_zero"] = str(idx_folder(root, "idx_zero", images=np.zeros((4, 0, 0), np.uint8)))
    P["idx_labels"] = str(idx_folder(root, "idx_labels", labels=np.zeros(3, np.uint8)))
    P["idx_partial"] = str(idx_folder(root, "idx_partial", drop="t10k-labels-idx1-ubyte"))
    P["idx_rank"] = str(idx_folder(root, "idx_rank", images=np.zeros((4, 64), np.uint8)))
    trunc = idx_folder(root, "idx_trunc")
    image_file = trunc / "train-images-idx3-ubyte"
    image_file.write_bytes(image_file.read_bytes()[:-10])
    P["idx_trunc"] = str(trunc)
    magic = idx_folder(root, "idx_magic")
    (magic / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(64))
    P["idx_magic"] = str(magic)
    gz = idx_folder(root, "idx_gzip", drop="train-images-idx3-ubyte")
    (gz / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 100)[:20])
    P["idx_gzip"] = str(gz)
    floats = idx_folder(root, "idx_float")
    (floats / "train-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 0x0D, 3]) + struct.pack(">III", 4, 2, 2) + bytes(4 * 16)
    )
    P["idx_float"] = str(floats)
    (root / "img_empty").mkdir()
    P["img_empty"] = str(root / "img_empty")
    P["img_corrupt"] = str(image_folder(root, "img_corrupt", corrupt=True))
    P["img_sizes"] = str(image_folder(root, "img_sizes", sizes=((8, 8), (6, 6))))
    P["img_single"] = str(image_folder(root, "img_single", sizes=((8, 8),)))
    P["img_mixed"] = str(image_folder(root, "img_mixed", mixed=True))

    # a trained run and broken copies of it
    run = root / "run"
    assert main(["train", P["cfg"], "--run-dir", str(run)]) == 0
    P["run"] = str(run)
    shutil.copytree(run, root / "run_copy")
    P["run_copy"] = str(root / "run_copy")
    data = (run / CHECKPOINT).read_bytes()
    for name, content in {
        "corrupt_run": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
        "truncated_run": data[: len(data) // 2],
        "empty_ckpt_run": b"",
        "header_only_run": data[:8],
        "pickle_run": pickle.dumps(Evil(root / "MARKER_pickle_run")),
    }.items():
        (root / name).mkdir()
        (root / name / CHECKPOINT).write_bytes(content)
        P[name] = str(root / name)
    (root / "torchsave_run").mkdir()
    torch.save(Evil(root / "MARKER_torchsave_run"), root / "torchsave_run" / CHECKPOINT)
    P["torchsave_run"] = str(root / "torchsave_run")
    (root / "ckpt_dir_run" / CHECKPOINT).mkdir(parents=True)
    P["ckpt_dir_run"] = str(root / "ckpt_dir_run")
    P["badkey_run"] = rewrite_checkpoint(run, root / "badkey_run", _set("model", "bogus", 1))
    P["badvalue_run"] = rewrite_checkpoint(run, root / "badvalue_run", _set("train", "seed", -1))
    P["mismatch_run"] = rewrite_checkpoint(
        run, root / "mismatch_run", _set("model", "latent_dim", 3)
    )
    P["nodata_run"] = rewrite_checkpoint(
        run,
        root / "nodata_run",
        lambda m: m["config"].update(data={"name": "mnist", "path": P["missing"]}),
    )
    P["noconfig_run"] = rewrite_checkpoint(run, root / "noconfig_run", lambda m: m.pop("config"))

    def poison(tensors):
        for k in tensors:
            if k.startswith("model.") and tensors[k].is_floating_point():
                tensors[k] = torch.full_like(tensors[k], float("nan"))

    P["nan_run"] = rewrite_checkpoint(run, root / "nan_run", edit_tensors=poison)
    (root / "rd_broken").mkdir()
    shutil.copytree(root / "corrupt_run", root / "rd_broken" / "a")
    P["rd_broken"] = str(root / "rd_broken")
    (root / "rd_pickle").mkdir()
    shutil.copytree(root / "pickle_run", root / "rd_pickle" / "a")
    P["rd_pickle"] = str(root / "rd_pickle")
    (root / "sweep_corrupt").mkdir()
    (root / "sweep_corrupt" / "sweep.json").write_text('{"cells": [')
    P["sweep_corrupt"] = str(root / "sweep_corrupt")
    (root / "sweep_list").mkdir()
    (root / "sweep_list" / "sweep.json").write_text("[1, 2]")
    P["sweep_list"] = str(root / "sweep_list")
    P["root"] = str(root)
    return P


# --- the table ----------------------------------------------------------------------------------

T = "train {cfg}"
S = "train {cfg} --set"

CASES = (
    [
        # argparse
        ("no command", "", "required"),
        ("unknown command", "trian", "invalid choice"),
        ("unknown option", "train {cfg} --bogus", "unrecognized arguments"),
        ("train without config", "train", "required: config"),
        ("train with two configs", "train {cfg} {cfg}", "unrecognized arguments"),
        ("train --set without value", "train {cfg} --set", "expected one argument"),
        ("eval without run", "eval", "required: run_dir"),
        ("eval --loglik unknown", "eval {run} --loglik elbo", "invalid choice"),
        ("eval --k zero", "eval {run} --k 0", "must be ≥ 1"),
        ("eval --k not a number", "eval {run} --k many", "is not an integer"),
        ("eval --examples negative", "eval {run} --examples -3", "must be ≥ 1"),
        ("eval --device without value", "eval {run} --device", "expected one argument"),
        ("rd --betas zero", "rd {run} --betas 0", "positive finite"),
        ("rd --betas negative", "rd {run} --betas 1 -1", "positive finite"),
        ("rd --betas inf", "rd {run} --betas inf", "positive finite"),
        ("rd --betas nan", "rd {run} --betas nan", "positive finite"),
        ("rd --betas text", "rd {run} --betas one", "is not a number"),
        ("consistency --examples zero", "consistency {run} --examples 0", "must be ≥ 1"),
        ("consistency --examples text", "consistency {run} --examples all", "is not an integer"),
        ("sweep --cpus-per-run zero", "sweep {cfg} --cpus-per-run 0", "must be ≥ 1"),
        ("sweep --gpus-per-run negative", "sweep {cfg} --gpus-per-run -1", "finite number ≥ 0"),
        ("sweep --gpus-per-run inf", "sweep {cfg} --gpus-per-run inf", "finite number ≥ 0"),
        ("sweep --max-concurrent zero", "sweep {cfg} --max-concurrent 0", "must be ≥ 1"),
        ("sweep-report without dir", "sweep-report", "required: run_dir"),
        ("run without name", "run", "required: experiment"),
        ("demo with a positional", "demo extra", "unrecognized arguments"),
        # config files
        ("config missing", "train {missing}", "does not exist"),
        ("config dangling symlink", "train {dangling}", "does not exist"),
        ("config is a directory", "train {empty_dir}", "is a directory"),
        ("config is a directory named .toml", "train {cfg_dir}", "is a directory"),
        ("config is a fifo", "train {fifo}", "not a regular file"),
        ("config .ini", "train {ini}", "use .toml"),
        ("config without suffix", "train {nosuffix}", "use .toml"),
        ("TOML malformed", "train {bad_toml}", "malformed"),
        ("TOML duplicate key", "train {dup_toml}", "malformed"),
        ("TOML not UTF-8", "train {latin1_toml}", "not UTF-8"),
        ("TOML inf", "train {inf_toml}", "model.beta: must be a finite number"),
        ("TOML nan", "train {nan_toml}", "train.lr: must be a finite number"),
        ("TOML huge seed", "train {seed_toml}", "train.seed: seeds must lie in [0, 2^63)"),
        ("TOML section is a value", "train {section_toml}", "model: expected a section"),
        ("TOML unknown section", "train {unknown_toml}", 'did you mean "model"'),
        ("TOML unknown data key", "train {datakey_toml}", 'did you mean "name"'),
        ("TOML wrong type", "train {type_toml}", "data.name: expected a string"),
        ("YAML malformed", "train {bad_yaml}", "malformed"),
        ("YAML tab indentation", "train {tab_yaml}", "malformed"),
        ("YAML list", "train {list_yaml}", "mapping"),
        ("YAML scalar", "train {scalar_yaml}", "mapping"),
        ("YAML .nan", "train {nan_yaml}", "model.sigma: must be a finite number"),
        ("YAML -.inf", "train {ninf_yaml}", "model.beta: must be a finite number"),
        ("YAML integer key", "train {intkey_yaml}", "unknown config key '1'"),
        ("YAML seed as 1e23", "train {seedstr_yaml}", "train.seed: expected an integer"),
        ("JSON malformed", "train {bad_json}", "malformed"),
        ("JSON list", "train {list_json}", "mapping"),
        ("JSON NaN", "train {nan_json}", "model.beta: must be a finite number"),
        ("JSON Infinity", "train {inf_json}", "train.lr: must be a finite number"),
        ("JSON string for an integer", "train {str_json}", "train.epochs: expected an integer"),
        # --set syntax
        ("--set without =", f"{S} model.beta", "expected KEY=VALUE"),
        ("--set without key", f"{S} =4", "expected KEY=VALUE"),
        ("--set empty leading key part", f"{S} .beta=1", "empty part"),
        ("--set empty inner key part", f"{S} model..beta=1", "empty part"),
        ("--set into a value", f"{S} model.beta.x=1", "model.beta: expected a number"),
        ("--set a section to a value", f"{S} model=3", "model: expected a section"),
        ("--set into a string", f"{S} data.name.x=1", "'name' is not a section"),
        ("--set unknown top-level key", f"{S} bogus=1", "unknown config key 'bogus'"),
        ("--set misspelt key", f"{S} model.latnt_dim=3", 'did you mean "latent_dim"'),
        ("--set unclosed list", f"{S} model.beta=[1", "model.beta: expected a number"),
        ("--set a number for a list", f"{S} model.hidden=5", "expected a list of int"),
        ("--set bad list element", f"{S} model.hidden=[64,x]", "model.hidden[1]"),
        ("--set zero width", f"{S} model.hidden=[0]", "widths must be ≥ 1"),
        ("--set zero conv channels", f"{S} model.channels=[8,0]", "widths must be ≥ 1"),
        # types
        ("latent_dim text", f"{S} model.latent_dim=abc", "model.latent_dim: expected an integer"),
        (
            "latent_dim fraction",
            f"{S} model.latent_dim=2.5",
            "model.latent_dim: expected an integer",
        ),
        ("latent_dim bool", f"{S} model.latent_dim=true", "model.latent_dim: expected an integer"),
        ("beta bool", f"{S} model.beta=true", "model.beta: expected a number"),
        ("beta text", f"{S} model.beta=abc", "model.beta: expected a number"),
        ("epochs list", f"{S} train.epochs=[1]", "train.epochs: expected an integer"),
        ("progress text", f"{S} train.progress=maybe", "train.progress: expected true or false"),
        ("progress number", f"{S} train.progress=1", "train.progress: expected true or false"),
        ("binarize number", f"{S} data.binarize=2", "data.binarize: expected true or false"),
        ("path number", f"{S} data.path=5", "data.path: expected a string"),
        ("beta_range number", f"{S} model.beta_range=1", "model.beta_range: expected a list"),
        ("beta_range text", f"{S} model.beta_range=[a,b]", "model.beta_range[0]"),
        ("adam_betas number", f"{S} train.adam_betas=0.9", "train.adam_betas: expected a list"),
        ("lr with junk", f"{S} train.lr=1e-3x", "train.lr: expected a number"),
        ("train_limit text", f"{S} data.train_limit=ten", "data.train_limit: expected an integer"),
        ("device number", f"{S} train.device=5", "train.device: expected a string"),
        # ranges
        ("lr negative", f"{S} train.lr=-1", "train.lr: must be > 0"),
        ("lr zero", f"{S} train.lr=0", "train.lr: must be > 0"),
        ("beta negative", f"{S} model.beta=-0.5", "model.beta: must be ≥ 0"),
        ("sigma zero", f"{S} model.sigma=0", "model.sigma: must be > 0"),
        ("sigma negative", f"{S} model.sigma=-1", "model.sigma: must be > 0"),
        ("sigma whose square overflows", f"{S} model.sigma=1e38", "σ² must be a normal float32"),
        ("sigma whose square underflows", f"{S} model.sigma=1e-30", "σ² must be a normal float32"),
        ("epochs zero", f"{S} train.epochs=0", "train.epochs: must be ≥ 1"),
        ("batch_size zero", f"{S} train.batch_size=0", "train.batch_size: must be ≥ 1"),
        ("log_every zero", f"{S} train.log_every=0", "train.log_every: must be ≥ 1"),
        ("checkpoint_every zero", f"{S} train.checkpoint_every=0", "must be ≥ 1"),
        ("eval_every zero", f"{S} train.eval_every=0", "train.eval_every: must be ≥ 1"),
        ("latent_dim zero", f"{S} model.latent_dim=0", "model.latent_dim: must be ≥ 1"),
        ("samples zero", f"{S} model.samples=0", "model.samples: must be ≥ 1"),
        ("train_limit zero", f"{S} data.train_limit=0", "data.train_limit: must be ≥ 1"),
        ("test_limit negative", f"{S} data.test_limit=-5", "data.test_limit: must be ≥ 1"),
        ("image_size too small", f"{S} data.image_size=2", "data.image_size: must be ≥ 4"),
        ("channels zero", f"{S} data.channels=0", "data.channels: must be ≥ 1"),
        ("vocab_size zero", f"{S} data.vocab_size=0", "data.vocab_size: must be ≥ 1"),
        ("grad_clip zero", f"{S} train.grad_clip=0", "train.grad_clip: must be > 0"),
        ("weight_decay negative", f"{S} train.weight_decay=-1", "must be ≥ 0"),
        ("momentum negative", f"{S} train.momentum=-0.1", "train.momentum: must be ≥ 0"),
        ("adam beta of 1", f"{S} train.adam_betas=[0.9,1.0]", "train.adam_betas"),
        ("one adam beta", f"{S} train.adam_betas=[0.9]", "train.adam_betas"),
        ("beta_range from 0", f"{S} model.beta_range=[0,1]", "model.beta_range"),
        ("beta_range reversed", f"{S} model.beta_range=[10,1]", "model.beta_range"),
        ("beta_range of one", f"{S} model.beta_range=[1]", "model.beta_range"),
        ("seed negative", f"{S} train.seed=-1", "train.seed: seeds must lie in [0, 2^63)"),
        ("seed huge", f"{S} train.seed=100000000000000000000000", "train.seed: seeds must lie"),
        ("seed 2^63", f"{S} train.seed=9223372036854775808", "train.seed: seeds must lie"),
        ("split_seed negative", f"{S} data.split_seed=-1", "data.split_seed: seeds must lie"),
        ("epochs beyond 64 bits", f"{S} train.epochs=100000000000000000000", "fit in 64 bits"),
        ("latent_dim beyond 64 bits", f"{S} model.latent_dim=99999999999999999999", "64 bits"),
        # NaN / inf
        ("sigma nan", f"{S} model.sigma=.nan", "model.sigma: must be a finite number"),
        ("beta inf", f"{S} model.beta=.inf", "model.beta: must be a finite number"),
        ("lr nan text", f"{S} train.lr=nan", "train.lr: must be a finite number"),
        ("lr inf text", f"{S} train.lr=inf", "train.lr: must be a finite number"),
        ("grad_clip -inf", f"{S} train.grad_clip=-.inf", "train.grad_clip: must be a finite"),
        (
            "log_sigma_min nan",
            f"{S} model.log_sigma_min=.nan",
            "model.log_sigma_min: must be a finite",
        ),
        (
            "beta_range inf",
            f"{S} model.beta_range=[0.1,.inf]",
            "model.beta_range[1]: must be a finite",
        ),
        (
            "adam_betas nan",
            f"{S} train.adam_betas=[.nan,0.9]",
            "train.adam_betas[0]: must be a finite",
        ),
        (
            "huge integer as a float",
            f"{S} model.beta=1" + "0" * 400,
            "model.beta: must be a finite",
        ),
        # names
        ("unknown dataset", f"{S} data.name=fashion", 'did you mean "fashion-mnist"'),
        ("unknown network", f"{S} model.network=transformer", "unknown network 'transformer'"),
        ("unknown likelihood", f"{S} model.likelihood=poisson", "unknown likelihood 'poisson'"),
        ("unknown sigma mode", f"{S} model.sigma_mode=learned", "unknown sigma mode"),
        ("unknown posterior", f"{S} model.posterior=gamma", "unknown posterior 'gamma'"),
        ("unknown prior", f"{S} model.prior=vamp", "unknown prior 'vamp'"),
        ("unknown estimator", f"{S} model.estimator=reinforc", 'did you mean "reinforce"'),
        ("unknown conditioning", f"{S} model.conditioning=films", 'did you mean "film"'),
        ("unknown beta sampling", f"{S} model.beta_sampling=batch", "choose one of: minibatch"),
        ("unknown NLL convention", f"{S} model.multinomial_convention=partial", "choose one of"),
        ("unknown optimizer", f"{S} train.optimizer=lbfgs", "choose one of: adam, adamw"),
        ("unknown lr schedule", f"{S} train.lr_schedule=onecycle", "choose one of: constant"),
        ("unknown device", f"{S} train.device=gpu", "unknown device 'gpu'"),
        # combinations
        (
            "binary codes reparameterised",
            f"{S} model.posterior=bernoulli",
            "cannot be reparameterised",
        ),
        ("discrete estimator on Gaussian codes", f"{S} model.estimator=disarm", "continuous"),
        (
            "exact on 32 bits",
            f"{S} model.posterior=bernoulli --set model.prior=uniform-bernoulli "
            "--set model.estimator=exact --set model.latent_dim=32",
            "too many",
        ),
        (
            "sigma of beta unconditioned",
            f"{S} model.sigma_mode=learned-beta",
            "needs model.conditioning",
        ),
        (
            "shared sigma with per-example beta",
            f"{S} model.conditioning=film --set model.sigma_mode=optimal-shared "
            "--set model.beta_sampling=example",
            "one β per batch",
        ),
        (
            "conv layers too deep for the image",
            f"{S} model.network=conv --set model.channels=[8,8,8,8]",
            "divisible",
        ),
        # data
        (
            "IDX folder missing",
            f"{S} data.name=mnist --set data.path={{missing}}",
            "no such folder",
        ),
        (
            "IDX path is a file",
            f"{S} data.name=mnist --set data.path={{a_file}}",
            "(a file, not a folder)",
        ),
        ("IDX zero-size images", f"{S} data.name=mnist --set data.path={{idx_zero}}", "zero size"),
        ("IDX truncated", f"{S} data.name=mnist --set data.path={{idx_trunc}}", "corrupt IDX"),
        ("IDX bad magic", f"{S} data.name=mnist --set data.path={{idx_magic}}", "bad magic"),
        ("IDX bad gzip", f"{S} data.name=mnist --set data.path={{idx_gzip}}", "bad gzip"),
        ("IDX label count", f"{S} data.name=mnist --set data.path={{idx_labels}}", "but 3 labels"),
        (
            "IDX file missing",
            f"{S} data.name=fashion-mnist --set data.path={{idx_partial}}",
            "3 of 4",
        ),
        ("IDX images of rank 2", f"{S} data.name=mnist --set data.path={{idx_rank}}", "[N, H, W]"),
        ("IDX float images", f"{S} data.name=mnist --set data.path={{idx_float}}", "uint8 images"),
        ("image folder unset", f"{S} data.name=image-folder", "set data.path"),
        (
            "image folder is a file",
            f"{S} data.name=image-folder --set data.path={{a_file}}",
            "not a folder",
        ),
        (
            "image folder empty",
            f"{S} data.name=image-folder --set data.path={{img_empty}}",
            "no image files",
        ),
        (
            "image folder corrupt",
            f"{S} data.name=image-folder --set data.path={{img_corrupt}}",
            "broken.png",
        ),
        (
            "image folder sizes",
            f"{S} data.name=image-folder --set data.path={{img_sizes}}",
            "differ in size",
        ),
        (
            "image folder single",
            f"{S} data.name=image-folder --set data.path={{img_single}}",
            "holds one image",
        ),
        (
            "image folder mixed",
            f"{S} data.name=image-folder --set data.path={{img_mixed}}",
            "mixes loose",
        ),
        (
            "image folder two channels",
            f"{S} data.name=image-folder --set data.path={{img_sizes}} --set data.channels=2",
            "channels must be 1",
        ),
        (
            "corpus missing",
            f"{S} data.name=20newsgroups --set data.path={{missing}}",
            "20newsgroups",
        ),
        ("Bernoulli on grey pixels", f"{S} model.likelihood=bernoulli", "set data.binarize = true"),
        # training options (issue 16)
        ("misspelt optimiser", f"{S} train.optimizer=adamx", 'did you mean "adam'),
        ("misspelt lr schedule", f"{S} train.lr_schedule=cosin", 'did you mean "cosine"'),
        ("negative lr warm-up", f"{S} train.lr_warmup_steps=-5", "must be ≥ 0"),
        ("negative β warm-up", f"{S} train.beta_warmup_steps=-1", "must be ≥ 0"),
        ("linear β warm-up of 0 steps", f"{S} train.beta_schedule=linear", "needs ≥ 1 step"),
        ("unknown β schedule", f"{S} train.beta_schedule=cyclic", 'did you mean "cyclical"'),
        ("cycle ratio above 1", f"{S} train.beta_cycle_ratio=1.5", "must lie in (0, 1]"),
        ("free bits zero", f"{S} train.free_bits=0", "must be > 0"),
        ("free bits negative", f"{S} train.free_bits=-0.5", "must be > 0"),
        ("free-bits groups alone", f"{S} train.free_bits_groups=2", "set train.free_bits"),
        (
            "free-bits groups not dividing",
            f"{S} train.free_bits=0.1 --set train.free_bits_groups=3",
            "do not split",
        ),
        (
            "β schedule on a β-conditional model",
            f"{S} model.conditioning=film --set train.beta_schedule=linear "
            "--set train.beta_warmup_steps=10",
            "takes β as an input",
        ),
        ("EMA decay 1", f"{S} train.ema_decay=1", "must lie in (0, 1)"),
        ("EMA decay 0", f"{S} train.ema_decay=0", "must be > 0"),
        (
            "Nesterov without momentum",
            f"{S} train.optimizer=sgd --set train.nesterov=true",
            "momentum > 0",
        ),
        ("fp16 on the CPU", f"{S} train.precision=16-mixed --set train.device=cpu", "needs CUDA"),
        ("unknown precision", f"{S} train.precision=fp16", "choose one of: 32, bf16, 16-mixed"),
        ("accumulate zero", f"{S} train.accumulate=0", "must be ≥ 1"),
        (
            "cosine floor above lr",
            f"{S} train.lr_schedule=cosine --set train.lr_min=1",
            "below train.lr",
        ),
        # run directories of train
        ("run dir is a file", f"{T} --run-dir {{a_file}}", "is a file, not a directory"),
        ("run dir below a file", f"{T} --run-dir {{a_file}}/sub", "is a file, not a directory"),
        ("run dir not writable", f"{T} --run-dir /sys/vaelab-run", "not writable"),
        ("run dir of another config", "train {other_cfg} --run-dir {run_copy}", "different config"),
        (
            "resume a checkpoint directory",
            f"{T} --run-dir {{ckpt_dir_run}}",
            "is a directory, not a file",
        ),
        ("resume a corrupt checkpoint", f"{T} --run-dir {{corrupt_run}}", "not a valid vaelab"),
        ("resume a truncated checkpoint", f"{T} --run-dir {{truncated_run}}", "not a valid vaelab"),
        # eval
        ("eval missing run", "eval {missing}", "does not exist"),
        ("eval a file", "eval {a_file}", "is a file, not a directory"),
        ("eval a folder without run", "eval {empty_dir}", "holds no checkpoint"),
        ("eval corrupt checkpoint", "eval {corrupt_run}", "not a valid vaelab"),
        ("eval truncated checkpoint", "eval {truncated_run}", "not a valid vaelab"),
        ("eval empty checkpoint", "eval {empty_ckpt_run}", "not a valid vaelab"),
        ("eval header-only checkpoint", "eval {header_only_run}", "not a valid vaelab"),
        ("eval checkpoint directory", "eval {ckpt_dir_run}", "is a directory, not a file"),
        (
            "eval stored unknown key",
            "eval {badkey_run}",
            "badkey_run/checkpoint.safetensors' stores an invalid config: unknown config key 'model.bogus'",
        ),
        ("eval stored bad value", "eval {badvalue_run}", "stores an invalid config: train.seed"),
        ("eval stored no config", "eval {noconfig_run}", "stores an invalid config"),
        ("eval weights that do not fit", "eval {mismatch_run}", "weights do not fit"),
        ("eval data missing", "eval {nodata_run}", "(no such folder)"),
        ("eval non-finite test loss", "eval {nan_run}", "is not finite"),
        ("eval unknown device", "eval {run} --device gpu", "--device: unknown device 'gpu'"),
        ("eval a sweep folder", "eval {sweep_corrupt}", "holds no checkpoint"),
        # consistency
        ("consistency missing run", "consistency {missing}", "does not exist"),
        ("consistency a file", "consistency {a_file}", "is a file, not a directory"),
        ("consistency corrupt", "consistency {corrupt_run}", "not a valid vaelab"),
        ("consistency stored unknown key", "consistency {badkey_run}", "stores an invalid config"),
        (
            "consistency too few examples",
            "consistency {run} --examples 50",
            "parameters per output but only 50",
        ),
        (
            "consistency unknown device",
            "consistency {run} --device tpu",
            "--device: unknown device 'tpu'",
        ),
        # rd
        ("rd missing folder", "rd {missing}", "does not exist"),
        ("rd a file", "rd {a_file}", "is a file, not a directory"),
        ("rd folder without runs", "rd {empty_dir}", "no readable trained run"),
        ("rd only a broken run", "rd {rd_broken}", "no readable trained run"),
        ("rd unknown device", "rd {run} --device gpu", "--device: unknown device 'gpu'"),
        # sweep
        ("sweep config missing", "sweep {missing}", "does not exist"),
        ("sweep config malformed", "sweep {bad_toml}", "malformed"),
        ("sweep grid without =", "sweep {cfg} --grid model.beta", "expected KEY=V1,V2"),
        ("sweep grid empty value", "sweep {cfg} --grid model.beta=1,", "empty value"),
        ("sweep grid repeated value", "sweep {cfg} --grid model.beta=1,1", "appears twice"),
        (
            "sweep grid key twice",
            "sweep {cfg} --grid model.beta=1 --grid model.beta=2",
            "given twice",
        ),
        ("sweep grid unknown key", "sweep {cfg} --grid model.bogus=1,2", "unknown config key"),
        ("sweep grid out of range", "sweep {cfg} --grid model.beta=-1,1", "must be ≥ 0"),
        ("sweep grid wrong type", "sweep {cfg} --grid model.beta=a,b", "expected a number"),
        ("sweep grid sigma overflow", "sweep {cfg} --grid model.sigma=1e38,1", "σ² must be"),
        ("sweep seeds negative", "sweep {cfg} --seeds -1", "--seeds"),
        ("sweep seeds repeated", "sweep {cfg} --seeds 1,1", "--seeds"),
        ("sweep seeds text", "sweep {cfg} --seeds a", "--seeds"),
        ("sweep seeds huge", "sweep {cfg} --seeds 100000000000000000000000", "seeds must lie"),
        ("sweep --set out of range", "sweep {cfg} --set model.beta=-1", "model.beta: must be ≥ 0"),
        ("sweep --set unknown dataset", "sweep {cfg} --set data.name=fashion", "unknown dataset"),
        ("sweep run dir is a file", "sweep {cfg} --run-dir {a_file}", "is a file, not a directory"),
        # sweep-report
        ("sweep-report missing", "sweep-report {missing}", "does not exist"),
        ("sweep-report a file", "sweep-report {a_file}", "is a file, not a directory"),
        ("sweep-report no sweep", "sweep-report {empty_dir}", "holds no sweep"),
        ("sweep-report corrupt spec", "sweep-report {sweep_corrupt}", "not a sweep spec"),
        ("sweep-report spec not a mapping", "sweep-report {sweep_list}", "not a sweep spec"),
        # run and demo
        ("unknown experiment", "run gmm-tyo", 'did you mean "gmm-toy"'),
        ("run recipe config missing", "run demo {missing}", "does not exist"),
        ("run recipe config is a directory", "run demo {empty_dir}", "is a directory"),
        ("run recipe config malformed", "run gmm-toy {bad_yaml}", "malformed"),
        ("run recipe seeds negative", "run demo --set seeds=[-1]", "seeds"),
        ("run recipe seeds repeated", "run demo --set seeds=[1,1]", "seeds"),
        ("run recipe seeds empty", "run demo --set seeds=[]", "seeds"),
        (
            "run recipe seed huge",
            "run demo --set seeds=[100000000000000000000000]",
            "seeds must lie",
        ),
        ("run recipe lr nan", "run demo --set lr=.nan", "lr: must be a finite number"),
        ("run recipe unknown network", "run demo --set network=transformer", "unknown network"),
        ("run recipe sweep option", "run demo --set sweep.max_concurrent=0", "must be ≥ 1"),
        (
            "run recipe sweep unknown",
            "run demo --set sweep.bogus=1",
            "unknown config key 'sweep.bogus'",
        ),
        (
            "run recipe run dir is a file",
            "run demo --run-dir {a_file}",
            "is a file, not a directory",
        ),
        ("run groundtruth sigma overflow", "run groundtruth --set sigma=1e38", "σ² must be"),
        ("run rd-study unknown dataset", "run rd-study --set dataset=fashion", "unknown dataset"),
        ("run gmm-toy seeds negative", "run gmm-toy --set seeds=[0,-2]", "seeds"),
        ("run semhash unknown estimator", "run semhash --set estimator=disarn", "did you mean"),
        (
            "run disentanglement zero scale",
            "run disentanglement --set metric_scale=0",
            "must be > 0",
        ),
        ("demo unknown setting", "demo --set epoch=3", 'did you mean "epochs"'),
        ("demo epochs negative", "demo --set epochs=-1", "epochs: must be ≥ 1"),
        ("demo run dir is a file", "demo --run-dir {a_file}", "is a file, not a directory"),
        ("demo run dir not writable", "demo --run-dir /sys/vaelab-demo", "not writable"),
    ]
    + [
        (f"run {name} unknown setting", f"run {name} --set bogus_setting=1", "unknown config key")
        for name in RECIPES
    ]
    + [
        (f"run {name} malformed config", f"run {name} {{bad_toml}}", "malformed")
        for name in RECIPES
    ]
    + [
        # the standard data sets (tests/test_datasets.py has their files in the real formats)
        ("storage unknown", f"{S} data.storage=disk", "data.storage: unknown value 'disk'"),
        ("workers negative", f"{S} data.workers=-1", "data.workers: must be ≥ 0"),
        ("workers word", f"{S} data.workers=many", 'data.workers: a number ≥ 0 or "auto"'),
        ("test split unknown", f"{S} data.test_split=val", 'did you mean "valid"'),
        ("crop negative", f"{S} data.crop=-1", "data.crop: must be ≥ 0"),
        ("attribute number", f"{S} data.attribute=5", "data.attribute: expected a string"),
        (
            "celeba missing",
            f"{S} data.name=celeba --set data.path={{missing}}",
            "celeba: not found",
        ),
        ("celeba download", f"{S} data.name=celeba --set data.download=true", "Google Drive"),
        (
            "celeba without partition file",
            f"{S} data.name=celeba --set data.path={{empty_dir}}",
            "no img_align_celeba.zip or img_align_celeba/",
        ),
        (
            "cifar10 not an archive",
            f"{S} data.name=cifar10 --set data.path={{a_file}}",
            "not a .tar.gz archive",
        ),
        ("cifar10 other size", f"{S} data.name=cifar10 --set data.image_size=64", "are 32×32"),
        (
            "svhn without mat files",
            f"{S} data.name=svhn --set data.path={{empty_dir}}",
            "no train_32x32.mat, test_32x32.mat",
        ),
        ("svhn valid split", f"{S} data.name=svhn --set data.test_split=valid", "no official"),
        (
            "shapes3d truncated file",
            f"{S} data.name=shapes3d --set data.path={{a_file}}",
            "bytes but the official 3dshapes.h5 has 267,573,662 (truncated)",
        ),
        (
            "shapes3d not HDF5",
            f"{S} data.name=shapes3d --set data.path={{a_file}} --set data.verify=false",
            "not a readable HDF5 file",
        ),
        (
            "dsprites-npz not npz",
            f"{S} data.name=dsprites-npz --set data.path={{a_file}}",
            "not a readable .npz file",
        ),
        (
            "binarized-mnist truncated IDX",
            f"{S} data.name=binarized-mnist --set data.path={{idx_trunc}}",
            "corrupt IDX",
        ),
        (
            "binarized-mnist partial IDX",
            f"{S} data.name=binarized-mnist --set data.path={{idx_partial}}",
            "3 of 4 MNIST IDX files",
        ),
    ]
)


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """An optimiser step fails the test: every case must be refused before training. Cases
    run in a fresh folder (a default run directory would land there)."""

    def step(*args, **kwargs):
        raise AssertionError("training started")

    for cls in (torch.optim.Adam, torch.optim.SGD):
        monkeypatch.setattr(cls, "step", step)
    monkeypatch.chdir(tmp_path)


def run_cli(argv: list[str], capfd) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits directly
        code = exc.code
    return code, capfd.readouterr().err.strip()


def test_the_guard_stops_an_invocation_that_reaches_training(paths, no_training, tmp_path):
    """What makes 'refused before training' checkable: a good invocation trips it."""
    with pytest.raises(AssertionError, match="training started"):
        main(["train", paths["cfg"], "--run-dir", str(tmp_path / "fresh")])


def test_the_table_has_at_least_150_distinct_invocations():
    assert len({case[0] for case in CASES}) == len(CASES)
    assert len({case[1] for case in CASES}) == len(CASES)
    assert len(CASES) >= 150


@pytest.mark.parametrize(("case", "template", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_invocation(case, template, expected, paths, no_training, capfd):
    argv = [part.format(**paths) for part in template.split()]
    code, err = run_cli(argv, capfd)
    assert code == 2, (case, code, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert 1 <= len(lines) <= 2, err
    assert all(line.startswith("vaelab") for line in lines), err
    assert expected in err, err


# --- malicious pickles: every file vaelab loads --------------------------------------------------


def evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """A plain pickle and a torch.save file whose unpickling would create `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    plain, saved = folder / "plain.pkl", folder / "saved.pt"
    plain.write_bytes(pickle.dumps(Evil(marker)))
    torch.save(Evil(marker), saved)
    return {"pickle": plain, "torch.save": saved}


@pytest.mark.parametrize("command", ["eval", "consistency", "rd", "train"])
@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickled_checkpoint_is_refused_by_every_command(command, kind, paths, tmp_path, capfd):
    marker = tmp_path / "MARKER"
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    shutil.move(evil_files(tmp_path / "evil", marker)[kind], run / CHECKPOINT)
    argv = {
        "eval": ["eval", str(run)],
        "consistency": ["consistency", str(run)],
        "rd": ["rd", str(run.parent)],
        "train": ["train", paths["cfg"], "--run-dir", str(run)],
    }[command]
    code, err = run_cli(argv, capfd)
    assert code == 2 and len(err.splitlines()) <= 2 and "Traceback" not in err, err
    assert "not a valid vaelab safetensors checkpoint" in err, err
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickled_inception_weights_are_refused(kind, tmp_path):
    from vaelab.config import DataConfig
    from vaelab.data import load_data
    from vaelab.errors import CheckpointError
    from vaelab.evaluation.feature_extractors import get_feature_extractor

    marker = tmp_path / "MARKER"
    weights = evil_files(tmp_path / "evil", marker)[kind]
    train, _ = load_data(DataConfig(train_limit=64, test_limit=8))
    with pytest.raises(CheckpointError) as info:
        get_feature_extractor(train, inception_weights=weights, device="cpu")
    assert len(str(info.value).splitlines()) == 1 and str(weights) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickled_classifier_cache_is_refused(kind, tmp_path, monkeypatch):
    from vaelab.config import DataConfig
    from vaelab.data import load_data
    from vaelab.errors import CheckpointError
    from vaelab.evaluation import classifier_features as cf

    train, _ = load_data(DataConfig(train_limit=64, test_limit=8))
    shape = "x".join(map(str, (train.shape[1], train.shape[2], train.shape[0])))
    key = cf._cache_key(train, cf.ClassifierConfig())
    cache = cf.cache_dir() / "feature-nets" / f"{train.name}-{shape}-{key}.safetensors"
    cache.parent.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "MARKER"
    shutil.copy(evil_files(tmp_path / "evil", marker)[kind], cache)
    try:
        with pytest.raises(CheckpointError, match="not a valid vaelab safetensors"):
            cf.DatasetClassifierFeatures(train, progress=False)
    finally:
        cache.unlink()
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickled_bag_of_words_cache_is_not_read(kind, tmp_path):
    from vaelab.data import bow

    marker = tmp_path / "MARKER"
    cache = evil_files(tmp_path / "evil", marker)[kind]
    with pytest.warns(UserWarning, match="unusable bag-of-words cache"):
        assert bow.load_cache(cache, "20newsgroups") is None
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickled_dsprites_cache_is_refused(kind, tmp_path, monkeypatch):
    from vaelab.data import dsprites
    from vaelab.errors import DataError

    marker = tmp_path / "MARKER"
    cache = tmp_path / "cache" / dsprites.CACHE_NAME
    cache.parent.mkdir()
    shutil.copy(evil_files(tmp_path / "evil", marker)[kind], cache)
    monkeypatch.setenv("VAELAB_CACHE", str(cache.parent))
    with pytest.raises(DataError, match="dsprites: .*cache"):
        dsprites.packed_images()
    assert not marker.exists()


def test_a_pickled_npy_dsprites_cache_is_refused(tmp_path, monkeypatch):
    """An .npy file of pickled objects (numpy's own pickle route) is refused too."""
    from vaelab.data import dsprites
    from vaelab.errors import DataError

    marker = tmp_path / "MARKER"
    cache = tmp_path / "cache" / dsprites.CACHE_NAME
    cache.parent.mkdir()
    np.save(cache, np.array([Evil(marker)], dtype=object), allow_pickle=True)
    monkeypatch.setenv("VAELAB_CACHE", str(cache.parent))
    with pytest.raises(DataError, match="dsprites: .*cache"):
        dsprites.packed_images()
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickled_generator_of_the_groundtruth_recipe_is_refused(kind, tmp_path):
    from vaelab.errors import CheckpointError
    from vaelab.experiments import groundtruth

    marker = tmp_path / "MARKER"
    path = tmp_path / "generator.safetensors"
    shutil.copy(evil_files(tmp_path / "evil", marker)[kind], path)
    with pytest.raises(CheckpointError, match="not a valid vaelab safetensors"):
        groundtruth.trained_once(torch.nn.Linear(2, 2), path, lambda: None)
    assert not marker.exists()


def test_a_yaml_config_cannot_construct_python_objects(tmp_path, capfd):
    marker = tmp_path / "MARKER"
    config = tmp_path / "evil.yaml"
    config.write_text(f"model: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    code, err = run_cli(["train", str(config)], capfd)
    assert code == 2 and "malformed" in err and len(err.splitlines()) == 1, err
    assert not marker.exists()


# --- the command line answers at once ---------------------------------------------------------


def test_recipe_names_of_the_cli_are_the_registered_experiments():
    from vaelab.registry import EXPERIMENTS

    assert tuple(EXPERIMENTS.names()) == RECIPES


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "/nonexistent/config.toml"],
        ["--help"],
        ["--version"],
        ["train", "{cfg}", "--set", "train.seed=-1"],
        ["train", "{cfg}", "--set", "model.sigma=1e38"],
        ["train", "{cfg}", "--run-dir", "{a_file}"],
        ["run", "gmm-tyo"],
        ["run", "demo", "--set", "epoch=3"],
        ["run", "rd-study", "--set", "dataset=fashion"],
        ["run", "groundtruth", "--set", "seeds=[-1]"],
        ["run", "disentanglement", "--set", "metric_scale=0"],
        ["eval", "/nonexistent/run"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_argument_and_config_errors_do_not_import_torch(argv, paths):
    """The answer comes before torch (or a recipe) is imported: what made a missing config
    take seconds."""
    argv = [a.format(**paths) for a in argv]
    script = (
        "import sys\nfrom vaelab.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'vaelab.experiments.recipes', 'sklearn') if m in sys.modules)\n"
        "print('IMPORTED', heavy, code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=run_env()
    )
    assert "IMPORTED [] " in proc.stdout, (proc.stdout, proc.stderr)
    code = int(proc.stdout.split()[-1])
    assert code == (0 if argv[0].startswith("--") else 2), proc.stderr
