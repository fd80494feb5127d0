"""Bad input gets one clear error line and exit code 2 — never a traceback."""

import subprocess
import sys

import pytest
from conftest import run_env

from vaelab.cli import main
from vaelab.training import CHECKPOINT


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits directly
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.fixture
def good_config(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text("[data]\nname = 'digits'\n[train]\nepochs = 1\nprogress = false\n")
    return path


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD = {
    "no command": (lambda t, g: [], "required"),
    "unknown command": (lambda t, g: ["trian"], "invalid choice"),
    "missing config file": (lambda t, g: ["train", str(t / "nope.toml")], "does not exist"),
    "config with unsupported suffix": (
        lambda t, g: ["train", write(t, "c.ini", "x=1")],
        "use .toml",
    ),
    "malformed TOML": (
        lambda t, g: ["train", write(t, "bad.toml", "[model\nbeta = 1")],
        "malformed",
    ),
    "malformed YAML": (lambda t, g: ["train", write(t, "bad.yaml", "model: [1, 2\n")], "malformed"),
    "YAML that is not a mapping": (
        lambda t, g: ["train", write(t, "list.yaml", "- 1\n- 2\n")],
        "mapping",
    ),
    "unknown key with suggestion": (
        lambda t, g: ["train", str(g), "--set", "model.latnt_dim=3"],
        'did you mean "latent_dim"',
    ),
    "unknown section": (
        lambda t, g: ["train", write(t, "s.toml", "[modle]\nbeta = 1\n")],
        'did you mean "model"',
    ),
    "wrong type": (
        lambda t, g: ["train", str(g), "--set", "model.latent_dim=abc"],
        "model.latent_dim: expected an integer",
    ),
    "bool where a number is expected": (
        lambda t, g: ["train", str(g), "--set", "model.beta=true"],
        "model.beta: expected a number",
    ),
    "wrong list element type": (
        lambda t, g: ["train", str(g), "--set", "model.hidden=[64, x]"],
        "model.hidden[1]",
    ),
    "out of range": (
        lambda t, g: ["train", str(g), "--set", "train.lr=-1"],
        "train.lr: must be > 0",
    ),
    "negative beta": (
        lambda t, g: ["train", str(g), "--set", "model.beta=-0.5"],
        "model.beta: must be ≥ 0",
    ),
    "non-finite number": (lambda t, g: ["train", str(g), "--set", "model.sigma=.nan"], "finite"),
    "unknown dataset": (
        lambda t, g: ["train", str(g), "--set", "data.name=fashion"],
        'did you mean "fashion-mnist"',
    ),
    "unknown sigma mode": (
        lambda t, g: ["train", str(g), "--set", "model.sigma_mode=learned"],
        "unknown sigma mode",
    ),
    "override without =": (
        lambda t, g: ["train", str(g), "--set", "model.beta"],
        "expected KEY=VALUE",
    ),
    "override into a value": (
        lambda t, g: ["train", str(g), "--set", "model.beta.x=1"],
        "model.beta: expected a number",
    ),
    "missing data folder": (
        lambda t, g: [
            "train",
            str(g),
            "--set",
            "data.name=mnist",
            "--set",
            f"data.path={t / 'none'}",
        ],
        "mnist",
    ),
    "conv layers that do not fit the image": (
        lambda t, g: [
            "train",
            str(g),
            "--set",
            "model.network=conv",
            "--set",
            "model.channels=[8,8,8,8]",
        ],
        "divisible",
    ),
    "eval of a missing run": (lambda t, g: ["eval", str(t / "no-run")], "does not exist"),
    "eval of a corrupt checkpoint": (
        lambda t, g: ["eval", _corrupt_run(t)],
        "not a valid vaelab safetensors checkpoint",
    ),
    "unknown experiment": (lambda t, g: ["run", "gmm-tyo"], "unknown experiment"),
    "unknown experiment setting": (
        lambda t, g: ["demo", "--set", "epoch=3"],
        'did you mean "epochs"',
    ),
}


def _corrupt_run(tmp_path):
    run = tmp_path / "corrupt"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return str(run)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_invocation_gives_one_error_line_and_exit_code_2(case, tmp_path, good_config, capsys):
    make_argv, expected = BAD[case]
    code, err = run_cli(make_argv(tmp_path, good_config), capsys)
    assert code == 2, (case, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("vaelab")
    assert expected in err, err


def test_bad_invocation_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaelab",
            "train",
            write(tmp_path, "c.toml", "[train]\nepochs = 0\n"),
        ],
        capture_output=True,
        text=True,
        env=run_env(),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "vaelab: error: train.epochs: must be ≥ 1, got 0"


def test_corrupt_image_file_is_refused(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    code, err = run_cli(
        ["train", write(tmp_path, "c.toml", f"[data]\nname = 'image-folder'\npath = '{folder}'\n")],
        capsys,
    )
    assert code == 2 and "broken.png" in err and len(err.splitlines()) == 1


# --- issue 14: answers at once, misuse named -------------------------------------------------


def test_version_and_help_answer_on_stdout(capsys):
    from vaelab import __version__

    for argv, expected in ((["--version"], f"vaelab {__version__}"), (["--help"], "usage: vaelab")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert expected in capsys.readouterr().out


TINY = (
    "[data]\nname = 'digits'\ntrain_limit = 128\ntest_limit = 200\n"
    "[model]\nlatent_dim = 2\nhidden = [16]\n"
    "[train]\nepochs = 1\nbatch_size = 64\nprogress = false\n"
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY)
    assert main(["train", str(config), "--run-dir", str(root / "runs" / "good")]) == 0
    return root / "runs" / "good"


def test_rd_skips_a_broken_run_with_a_warning_and_reports_the_rest(tiny_run, capsys):
    broken = tiny_run.parent / "broken"
    broken.mkdir()
    (broken / CHECKPOINT).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    capsys.readouterr()
    try:
        code = main(["rd", str(tiny_run.parent)])
    finally:
        (broken / CHECKPOINT).unlink()
        broken.rmdir()
    out, err = capsys.readouterr()
    assert code == 0, err
    (warning,) = err.strip().splitlines()
    assert warning.startswith("vaelab: warning: skipped") and "broken" in warning
    assert "not a valid vaelab safetensors checkpoint" in warning
    points = [line for line in out.splitlines() if "β=" in line]
    assert points and all(" good " in line for line in points), out  # a β-VAE: its own β
    assert "broken" not in (tiny_run.parent / "rd.csv").read_text()


def test_consistency_runs_with_more_examples_than_parameters(tiny_run, capsys):
    """The refusal is at the count of parameters (64 pixels → 2·64 Gaussian statistics + 1),
    not a blanket one: 130 examples are measured, 129 are refused."""
    assert main(["consistency", str(tiny_run), "--examples", "130"]) == 0
    out = capsys.readouterr().out
    residual = float(
        next(line for line in out.splitlines() if line.startswith("encoder_residual")).split()[1]
    )
    assert 0 < residual < 1
    code, err = run_cli(["consistency", str(tiny_run), "--examples", "129"], capsys)
    assert code == 2 and "129 parameters per output but only 129 examples" in err


def test_bernoulli_trains_on_binarized_data_and_is_refused_without(tmp_path, capsys):
    config = write(tmp_path, "b.toml", TINY + "")
    bernoulli = ["--set", "model.likelihood=bernoulli"]
    code, err = run_cli(["train", config, "--run-dir", str(tmp_path / "r1"), *bernoulli], capsys)
    assert code == 2 and "set data.binarize = true" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r1" / CHECKPOINT).exists()
    argv = ["train", config, "--run-dir", str(tmp_path / "r2"), *bernoulli]
    assert main([*argv, "--set", "data.binarize=true"]) == 0
    assert (tmp_path / "r2" / CHECKPOINT).is_file()


def test_a_run_directory_is_not_created_by_a_refused_invocation(tmp_path, capsys):
    run_dir = tmp_path / "new" / "run"
    config = write(tmp_path, "c.toml", "[data]\nname = 'fashon'\n")
    code, err = run_cli(["train", config, "--run-dir", str(run_dir)], capsys)
    assert code == 2 and "unknown dataset" in err
    assert not (tmp_path / "new").exists()
