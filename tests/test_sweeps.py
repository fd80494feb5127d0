"""The grid runner: cells, intervals, Ray and in-process execution, resumption, failures."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_env
from safetensors.numpy import load_file
from scipy import stats

from vaelab import cli
from vaelab.config import ConfigError
from vaelab.files import read_jsonl
from vaelab.sweeps import (
    TRAIN,
    SweepOptions,
    Target,
    grid_cells,
    interval,
    parse_grid,
    parse_seeds,
    run_sweep,
    sweep,
)
from vaelab.sweeps import execute as sweep_execute

ray = pytest.importorskip("ray")

TINY = {
    "data": {"name": "digits", "train_limit": 256, "test_limit": 128},
    "model": {"network": "mlp", "hidden": [32], "latent_dim": 4, "sigma_mode": "learned-shared"},
    "train": {"epochs": 2, "batch_size": 64, "log_every": 4, "checkpoint_every": 3},
}
GRID = {"model.beta": [0.5, 2.0], "model.sigma_mode": ["learned-shared", "optimal-shared"]}


def weights(cell_dir):
    return load_file(str(cell_dir / "checkpoint.safetensors"))


def assert_same_weights(records_a, records_b):
    assert [r["name"] for r in records_a] == [r["name"] for r in records_b]
    for a, b in zip(records_a, records_b):
        wa, wb = weights(Path(a["dir"])), weights(Path(b["dir"]))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert np.array_equal(wa[key], wb[key]), (a["name"], key)


def write_config(path, mapping):
    lines = []
    for section, values in mapping.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- pure parts --------------------------------------------------------------------------------


def test_interval_is_the_student_t_interval_of_scipy():
    values = [1.0, 2.0, 3.0, 4.0]
    got = interval(values)
    se = stats.sem(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=se)
    assert got["n"] == 4 and got["mean"] == 2.5
    assert math.isclose(got["se"], math.sqrt(5 / 3) / 2)  # s² = 5/3 by hand
    assert math.isclose(got["low"], low) and math.isclose(got["high"], high)
    assert math.isclose(got["high"] - got["mean"], 3.182446305 * got["se"], rel_tol=1e-8)
    one = interval([7.0])
    assert one["mean"] == 7.0 and one["se"] is None and one["low"] is None
    assert interval([])["n"] == 0


def test_grid_values_and_seeds_are_parsed_or_refused():
    assert parse_grid("model.beta=0.1,1,10") == ("model.beta", [0.1, 1, 10])
    assert parse_grid("model.hidden=[64],[128,64]") == ("model.hidden", [[64], [128, 64]])
    assert parse_grid("model.sigma_mode=fixed, learned-shared")[1] == ["fixed", "learned-shared"]
    for bad in ("model.beta=", "model.beta=1,,2", "model.beta=1,1", "=1,2", "model.beta"):
        with pytest.raises(ConfigError):
            parse_grid(bad)
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("", "0,x", "-1", "1,1", "0.5"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_grid_cells_are_the_cartesian_product_checked_before_running():
    cells = grid_cells(TRAIN, TINY, GRID | {"train.lr": ["1e-3"]}, [0, 1])
    assert len(cells) == 2 * 2 * 1 * 2
    assert cells[0].name == "beta=0.5,sigma_mode=learned-shared,lr=0.001/seed0"
    assert cells[0].point["train.lr"] == 0.001  # as the config reads it (YAML's "1e-3")
    assert {c.config["train"]["seed"] for c in cells} == {0, 1}
    assert len({c.digest(TRAIN) for c in cells}) == len(cells)
    (default,) = grid_cells(TRAIN, TINY, {}, None)
    assert default.name == "base/seed0" and default.seed == 0
    with pytest.raises(ConfigError, match="model.bta"):
        grid_cells(TRAIN, TINY, {"model.bta": [1]}, None)
    with pytest.raises(ConfigError, match="model.beta"):
        grid_cells(TRAIN, TINY, {"model.beta": ["big"]}, None)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--grid", "model.bta=1,2"], "unknown config key 'model.bta'"),
        (["--grid", "model.beta="], "--grid model.beta"),
        (["--grid", "model.beta=a,b"], "expected a number"),
        (["--seeds", "0,a"], "--seeds"),
        (["--grid", "model.beta=1", "--grid", "model.beta=2"], "given twice"),
        (["--address", "127.0.0.1:{port}"], "no Ray cluster answers"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2_before_any_cell(tmp_path, capsys, argv, message):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path / "tiny.toml", TINY)
    argv = [a.format(port=port) for a in argv]
    code = cli.main(["sweep", str(config), "--run-dir", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


# --- running ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray cluster for the API tests of this module (the CLI tests start and
    stop their own)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def in_process_sweep(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("in-process")
    return sweep(TINY, GRID, [0, 1], run_dir, in_process=True, progress=False)


def test_a_grid_on_ray_completes_and_equals_the_in_process_sweep(
    local_ray, in_process_sweep, tmp_path
):
    records = sweep(TINY, GRID, [0, 1], tmp_path, progress=False)
    assert len(records) == 8 and all(r["status"] == "done" for r in records)
    assert_same_weights(records, in_process_sweep)
    assert [r["metrics"] for r in records] == [r["metrics"] for r in in_process_sweep]
    # every cell an ordinary run directory
    for r in records:
        cell = Path(r["dir"])
        assert {"config.json", "metrics.jsonl", "report.md", "cell.json"} <= {
            p.name for p in cell.iterdir()
        }
    # the summary: per grid point over the two seeds, checked against scipy
    table = json.loads((tmp_path / "sweep_table.json").read_text())
    assert len(table["summary"]) == 4
    first = table["summary"][0]
    values = [r["metrics"]["negative_elbo"] for r in records[:2]]
    low, high = stats.t.interval(0.95, 1, loc=np.mean(values), scale=stats.sem(values))
    stat = first["stats"]["negative_elbo"]
    assert math.isclose(stat["low"], low) and math.isclose(stat["high"], high)
    assert (tmp_path / "sweep_rd.png").stat().st_size > 0  # β is an axis
    summary = (tmp_path / "sweep_summary.csv").read_text().splitlines()
    assert summary[0].startswith("model.beta,model.sigma_mode,seeds,failed,loss_mean")
    assert len(summary) == 5


def test_a_failing_cell_is_recorded_and_the_others_finish(local_ray, tmp_path):
    grid = {"train.lr": [1e-3, 1e12]}  # the second diverges at once
    records = sweep(TINY, grid, [0], tmp_path, progress=False)
    good, bad = records
    assert good["status"] == "done" and bad["status"] == "failed"
    assert "diverged" in bad["error"] and "\n" not in bad["error"]
    cells_csv = (tmp_path / "sweep_cells.csv").read_text()
    assert "failed" in cells_csv and "diverged" in cells_csv
    assert "diverged" in (tmp_path / "sweep.md").read_text()


def test_a_changed_grid_keeps_its_cells_and_without_ray_runs_here(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_execute, "ray_or_none", lambda: None)  # as if not installed
    base = {"model.beta": [0.5]}
    sweep(TINY, base, [0], tmp_path)
    out = capsys.readouterr().out
    assert "one after another in this process (Ray is not installed)" in out
    first = Path(tmp_path / "beta=0.5" / "seed0" / "checkpoint.safetensors").stat().st_mtime_ns
    # a new value and a new axis whose first value is the base config's: one old cell kept
    records = sweep(
        TINY, {"model.beta": [0.5, 2.0], "model.sigma_mode": ["learned-shared"]}, [0], tmp_path
    )
    out = capsys.readouterr().out
    assert "2 cells, 1 done already; running 1" in out
    assert records[0]["dir"] == str((tmp_path / "beta=0.5" / "seed0").resolve())
    assert (tmp_path / "beta=0.5" / "seed0" / "checkpoint.safetensors").stat().st_mtime_ns == first
    # the report is rewritten from disk alone
    (tmp_path / "sweep_table.json").unlink()
    assert cli.main(["sweep-report", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "sweep_table.json").read_text())
    assert [c["name"] for c in table["cells"]] == [r["name"] for r in records]


def test_the_api_refuses_bad_options_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cpus_per_run"):
        sweep(TINY, {}, None, tmp_path, cpus_per_run=0)
    with pytest.raises(ConfigError, match="CUDA"):
        run_sweep(
            grid_cells(TRAIN, TINY, {}, None), tmp_path, TRAIN,
            SweepOptions(gpus_per_run=0.25, in_process=True),
        )  # fmt: skip


SLOW = json.loads(json.dumps(TINY))
SLOW["train"] |= {"epochs": 40, "checkpoint_every": 10}


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """An uninterrupted in-process sweep of 2 β × 2 seeds of 160 steps each."""
    run_dir = tmp_path_factory.mktemp("reference")
    return sweep(SLOW, {"model.beta": [0.5, 2.0]}, [0, 1], run_dir, in_process=True, progress=False)


def statuses(out: Path) -> dict[str, str]:
    found = {}
    for p in out.rglob("cell.json"):
        try:
            found[p.parent.relative_to(out).as_posix()] = json.loads(p.read_text())["status"]
        except (ValueError, KeyError):
            pass  # being written
    return found


def kill_when(argv: list[str], out: Path, ready) -> dict[str, str]:
    """Start `argv`, SIGKILL it once `ready(out)` holds; the cell statuses at the kill."""
    driver = subprocess.Popen(argv, cwd=REPO, env=run_env(), stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None and not ready(out):
        time.sleep(0.02)
    seen = statuses(out)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    return seen


def sweep_argv(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vaelab", "sweep", str(config), "--grid", "model.beta=0.5,2",
            "--seeds", "0,1", "--max-concurrent", "1", "--run-dir", str(out), *extra]  # fmt: skip


def finish_and_compare(argv: list[str], out: Path, reference: list[dict]) -> None:
    finished = subprocess.run(argv, cwd=REPO, env=run_env(), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "done already; running" in finished.stdout
    records = json.loads((out / "sweep_table.json").read_text())["cells"]
    assert all(r["status"] == "done" for r in records)
    assert_same_weights(records, reference)


def test_a_sweep_driver_killed_midway_resumes_to_the_same_weights(tmp_path, slow_reference):
    """SIGKILL of `vaelab sweep` (cells on a local Ray, one at a time) once a cell is done and
    the next is training; the same command again finishes every cell, bit for bit as the
    uninterrupted in-process sweep (a worker that outlives its driver holds its cell's lock
    until it ends, so the two never train one cell at once)."""
    config = write_config(tmp_path / "slow.toml", SLOW)
    out = tmp_path / "killed"
    argv = sweep_argv(config, out)
    seen = kill_when(argv, out, lambda d: {"done", "running"} <= set(statuses(d).values()))
    assert "running" in seen.values(), "the driver finished before it could be killed"
    finish_and_compare(argv, out, slow_reference)


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path, slow_reference):
    """The in-process sweep killed inside a cell's training (a checkpoint written, the cell
    not finished): the rerun resumes that cell from its checkpoint to the same weights."""
    config = write_config(tmp_path / "slow.toml", SLOW)
    out = tmp_path / "killed"
    argv = sweep_argv(config, out, "--in-process")

    def mid_cell(d: Path) -> bool:
        running = [name for name, status in statuses(d).items() if status == "running"]
        return any((d / name / "checkpoint.safetensors").exists() for name in running)

    seen = kill_when(argv, out, mid_cell)
    (interrupted,) = [name for name, status in seen.items() if status == "running"]
    steps = [r["step"] for r in read_jsonl(out / interrupted / "metrics.jsonl")]
    assert 0 < max(steps) < 160  # trained some of its 160 steps, not all
    finish_and_compare(argv, out, slow_reference)


def test_cells_fit_the_cluster_and_gpu_cells_run_on_cuda():
    options = SweepOptions(cpus_per_run=1, gpus_per_run=0.25)
    assert sweep_execute.slots({"CPU": 8.0, "GPU": 1.0}, options, 1) == 4  # four per GPU
    assert sweep_execute.slots({"CPU": 2.0}, SweepOptions(max_concurrent=1), 1) == 1
    assert sweep_execute.slots({"CPU": 8.0}, SweepOptions(), 2) == 4
    with pytest.raises(ConfigError, match="--gpus-per-run"):
        sweep_execute.slots({"CPU": 8.0}, options, 1)
    cores = os.cpu_count()
    assert SweepOptions().cpus(1) == cores and SweepOptions().cpus(10 * cores) == 1
    assert SweepOptions(cpus_per_run=3).cpus(1) == 3
    (cell,) = grid_cells(TRAIN, TINY, {}, None)
    assert TRAIN.placed(cell.config, options.device).train.device == "cuda"
    assert TRAIN.placed(cell.config, "cpu").train.progress is False


def crash(cfg, cell_dir):
    os._exit(3)  # the worker process dies mid-cell


def test_a_cell_whose_worker_dies_is_recorded_as_failed(local_ray, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    dying = Target("dying", TRAIN.config_cls, crash, "train.seed", "train.device")
    cells = grid_cells(dying, TINY, {"model.beta": [0.5, 2.0]}, [0])
    records = run_sweep(cells, tmp_path, dying, SweepOptions(progress=False))
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all("\n" not in r["error"] and r["point"] for r in records)
    assert "failed" in (tmp_path / "sweep.md").read_text()
