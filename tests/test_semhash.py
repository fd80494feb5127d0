"""Semantic-hashing recipes end to end on a small synthetic corpus (load_files layout)."""

import json
import math
import random

import pytest
import torch

from vaelab.cli import main
from vaelab.data.bow import collapsed_baseline, load_bow_corpus, smooth_counts

TOPICS = {
    "comp.graphics": "pixel image render shader polygon texture colour screen",
    "rec.autos": "engine brake wheel car tyre clutch gearbox driver",
    "sci.space": "orbit rocket launch planet moon satellite shuttle gravity",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    common = "the of and about really think".split()
    for split, n in (("news-train", 120), ("news-test", 15)):
        for label, words in TOPICS.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                body = " ".join(
                    rng.choice(words.split() + common) for _ in range(rng.randint(15, 40))
                )
                (folder / str(i)).write_text(f"From: someone\nSubject: {label}\n\n{body}\n")
    return root


def test_semhash_run_reports_every_convention_and_retrieval(corpus, tmp_path):
    args = ["run", "semhash", "--run-dir", str(tmp_path / "run"), "--set", f"data_path={corpus}",
            "--set", "vocab_size=40", "--set", "bits=6", "--set", "epochs_single=15",
            "--set", "epochs_multi=3", "--set", "samples_multi=4", "--set", "batch_size=20",
            "--set", "lr=0.01", "--set", "progress=false", "--set", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["epochs"] == 18 and r["documents"]["train"] == 360
    test = r["test"]
    # full ≥ no-coefficient? no: full = no-coefficient − log coefficient ≤ it; saturated ≥ 0
    assert (
        test["nelbo_full"] < test["nelbo_no_coefficient"]
        and 0 < test["nelbo_saturated"] < test["nelbo_no_coefficient"]
    )
    # the collapsed baseline differs from the model by the same constant in every convention
    base = r["collapsed_baseline"]["test"]
    for c in ("nelbo_full", "nelbo_no_coefficient"):
        assert base[c] - test[c] == pytest.approx(r["gain"]["test"], rel=1e-6)
    assert r["gain"]["test"] > 0  # the codes tell the topics apart: better than the unigram
    retrieval = r["retrieval"]
    # topics are easy to tell apart: far above chance (the label frequency, ~1/3)
    assert retrieval["precision_at_100"] > 0.6
    assert abs(retrieval["chance_precision_at_100"] - 1 / 3) < 0.05
    assert retrieval["map"] > retrieval["chance_map"]
    # resuming a finished run retrains nothing and gives the same numbers
    assert main(args) == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["test"] == pytest.approx(test)


def test_lowest_selection_takes_the_minimum_of_a_test_estimate_per_epoch(corpus, tmp_path):
    run = tmp_path / "run"
    args = ["run", "semhash", "--run-dir", str(run), "--set", f"data_path={corpus}",
            "--set", "vocab_size=40", "--set", "bits=6", "--set", "epochs_single=4",
            "--set", "epochs_multi=2", "--set", "samples_multi=3", "--set", "batch_size=40",
            "--set", "selection=lowest", "--set", "progress=false", "--set", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    r = json.loads((run / "results.json").read_text())
    records = {
        split: [
            rec["negative_elbo"]
            for phase in ("phase1", "phase2")
            for rec in map(json.loads, (run / phase / "metrics.jsonl").read_text().splitlines())
            if rec["split"] == split
        ]
        for split in ("train", "test")
    }
    # one test estimate and one train running mean per epoch over both phases (4 + 2)
    assert len(records["test"]) == 6 and len(records["train"]) == 6
    lowest = r["test_lowest"]
    assert lowest["nelbo_saturated"] == pytest.approx(min(records["test"]))
    assert lowest["epoch"] == 1 + records["test"].index(min(records["test"]))
    assert r["selected_test"] == lowest
    assert r["train_running_mean"]["nelbo_saturated"] == pytest.approx(records["train"][-1])
    shift = r["test"]["nelbo_full"] - r["test"]["nelbo_saturated"]
    assert lowest["nelbo_full"] - lowest["nelbo_saturated"] == pytest.approx(shift)
    # the learning curve over both phases: what was logged, epochs counted across phases
    curve = r["learning_curve"]
    assert [p["nelbo"] for p in curve["test"]] == pytest.approx(records["test"])
    assert [p["epoch"] for p in curve["train"]] == list(range(1, 7))
    assert "![learning curve](learning_curve.png)" in (run / "report.md").read_text()


def table_args(corpus, run_dir, *settings):
    return ["run", "semhash-table", "--run-dir", str(run_dir), "--set", f"data_path={corpus}",
            "--set", "vocab_size=40", "--set", "depths=[0]", "--set", "epochs_single=3",
            "--set", "epochs_multi=1", "--set", "samples_multi=2", "--set", "batch_size=30",
            *(arg for s in settings for arg in ("--set", s))]  # fmt: skip


@pytest.mark.parametrize(
    "where, seeds",
    [("sweep.in_process=true", [0, 1]), ("sweep.max_concurrent=2", [0])],
    ids=["in-process", "ray"],
)
def test_semhash_table_runs_cells_and_resumes_finished_ones(corpus, tmp_path, where, seeds):
    if "in_process" not in where:  # the default path: Ray
        pytest.importorskip("ray")
    run_dir = tmp_path / "table"
    args = table_args(corpus, run_dir, "encoders=[e1,e3]", "bits=[4]", where,
                      f"seeds=[{','.join(map(str, seeds))}]")  # fmt: skip
    assert main(args) == 0
    table = json.loads((run_dir / "table.json").read_text())
    assert [(c["encoder"], c["bits"], c["depth"], c["seeds"]) for c in table["cells"]] == [
        ("e1", 4, 0, seeds),
        ("e3", 4, 0, seeds),
    ]
    assert table["failed"] == []
    for c in table["cells"]:
        test, train, base = c["test_nelbo"], c["train_nelbo"], c["collapsed_baseline"]
        assert set(test) == set(train) == {"full", "no_coefficient", "saturated"}
        for split, nelbo in (("test", test), ("train", train)):
            assert nelbo["saturated"]["n"] == len(seeds)
            assert (nelbo["saturated"]["ci95"] is None) == (len(seeds) == 1)
            # a convention adds the same constant per document to model and baseline
            for conv in ("full", "no_coefficient"):
                shift = base[split][conv] - base[split]["saturated"]
                assert nelbo[conv]["mean"] - nelbo["saturated"]["mean"] == pytest.approx(shift)
        gain = base["test"]["saturated"] - test["saturated"]["mean"]
        assert c["gain"]["test"]["mean"] == pytest.approx(gain)
        assert 0 <= c["precision_at_100"]["mean"] <= 1 and 0 <= c["map"]["mean"] <= 1
        assert c["estimator"] == "disarm" and c["selection"] == "final" and c["epochs"] == 4
    # the row's verdict from the per-seed differences e2 − e1 (no e2 here: no pairs)
    (row,) = table["rows"]
    assert (row["bits"], row["depth"]) == (4, 0) and row["verdict"] == "inconclusive"
    assert [c["n"] for c in row["claims"]] == [0, 0]
    cells = [f"e1-4bit-depth0/seed{s}" for s in seeds] + [f"e3-4bit-depth0/seed{s}" for s in seeds]
    assert json.loads((run_dir / "sweep.json").read_text())["cells"] == cells
    stamps = {c: (run_dir / c / "results.json").stat().st_mtime_ns for c in cells}
    assert main(args) == 0  # finished cells are not rerun
    assert {c: (run_dir / c / "results.json").stat().st_mtime_ns for c in cells} == stamps
    report = (run_dir / "report.md").read_text()
    assert "Table 2" in report and ("±" in report) == (len(seeds) > 1)
    assert (run_dir / "sweep.md").is_file()


def test_semhash_table_writes_what_finished_and_names_a_failed_cell(corpus, tmp_path, capsys):
    run_dir = tmp_path / "table"
    # exact enumeration takes at most 16 bits: the 17-bit cell fails when it builds its model
    args = table_args(corpus, run_dir, "encoders=[e1]", "bits=[4,17]", "estimator=exact",
                      "sweep.in_process=true")  # fmt: skip
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "1 of 2 cells failed" in error and "e1-17bit-depth0/seed0" in error
    table = json.loads((run_dir / "table.json").read_text())
    done, broken = table["cells"]
    assert done["bits"] == 4 and done["seeds"] == [0]
    assert done["test_nelbo"]["saturated"]["mean"] > 0
    assert broken["bits"] == 17 and broken["seeds"] == []
    assert broken["test_nelbo"]["saturated"]["mean"] is None
    assert [f["cell"] for f in table["failed"]] == ["e1-17bit-depth0/seed0"]
    assert "16 bits" in table["failed"][0]["error"]
    report = (run_dir / "report.md").read_text()
    assert "Failed cells" in report and "e1-17bit-depth0/seed0" in report and "—" in report


@pytest.mark.parametrize("experiment", ["semhash", "semhash-table"])
def test_an_estimator_for_continuous_codes_is_refused_in_one_line(tmp_path, capsys, experiment):
    args = ["run", experiment, "--run-dir", str(tmp_path), "--set", "estimator=reparameterization"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not an estimator for binary codes" in error
    assert "disarm" in error and "exact" in error  # the estimators flagged discrete
    assert not any(tmp_path.iterdir())  # refused before anything ran


class Counts:
    """The part of `BowData` the collapsed baseline reads: dense rows of word counts."""

    def __init__(self, rows):
        self.x = torch.tensor(rows, dtype=torch.float32)
        self.shape = (self.x.shape[1],)

    def __len__(self):
        return len(self.x)

    def batch(self, index):
        return self.x[index]


def test_collapsed_baseline_is_the_training_unigram_in_every_convention_by_hand():
    train = Counts([[2, 0, 1], [0, 1, 1]])  # unigram π = (2, 1, 2) / 5
    test = Counts([[1, 1, 0]])  # n = 2
    b = collapsed_baseline(train, test)
    no_coefficient = -(math.log(0.4) + math.log(0.2))
    assert b["nelbo_no_coefficient"] == pytest.approx(no_coefficient)
    assert b["nelbo_full"] == pytest.approx(no_coefficient - math.log(2))  # 2!/(1! 1!) = 2
    assert b["nelbo_saturated"] == pytest.approx(no_coefficient + 2 * math.log(0.5))


def test_count_smoothing_run_keeps_its_checkpoint_and_vaelab_eval_reproduces_it(
    corpus, tmp_path, capsys
):
    run = tmp_path / "run"
    args = ["run", "semhash", "--run-dir", str(run), "--set", f"data_path={corpus}",
            "--set", "vocab_size=40", "--set", "bits=6", "--set", "epochs_single=3",
            "--set", "epochs_multi=1", "--set", "samples_multi=3", "--set", "batch_size=40",
            "--set", "count_smoothing=true", "--set", "preprocessing=rainbow",
            "--set", "progress=false", "--set", "device=cpu"]  # fmt: skip
    assert main(args) == 0
    r = json.loads((run / "results.json").read_text())
    assert r["count_smoothing"] is True and r["preprocessing"] == "rainbow"
    assert r["final_run"] == "phase2" and r["documents"]["train"] == 360
    report = (run / "report.md").read_text()
    assert "preprocessing 'rainbow'" in report and "count smoothing (the reproduction's)" in report
    # smoothing: every document gains one pseudo-word, so n is no integer; the conventions
    # stay finite and ordered, and the shifts between them are the data's, model or baseline
    test, base = r["test"], r["collapsed_baseline"]["test"]
    raw = load_bow_corpus(corpus, vocab_size=40, cache=False, preprocessing="rainbow")
    smoothed_train, smoothed_test = smooth_counts(*raw)
    assert base == pytest.approx(collapsed_baseline(smoothed_train, smoothed_test), rel=1e-9)
    unsmoothed = collapsed_baseline(*raw)
    assert abs(unsmoothed["nelbo_saturated"] - base["nelbo_saturated"]) > 0.1
    assert all(math.isfinite(v) for v in test.values())
    assert test["nelbo_full"] < test["nelbo_no_coefficient"] and test["nelbo_saturated"] > 0
    for c in ("nelbo_full", "nelbo_no_coefficient"):
        assert base[c] - test[c] == pytest.approx(r["gain"]["test"], rel=1e-6)

    capsys.readouterr()
    assert main(["eval", str(run)]) == 2  # the recipe's directory names its runs
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "phase1, phase2" in error and "phase2" in error
    # the final phase is a run of its own: eval re-applies the smoothing from its checkpoint
    # and gives the recipe's numbers again, without retraining
    stamp = (run / "phase2" / "checkpoint.safetensors").stat().st_mtime_ns
    assert main(["eval", str(run / "phase2"), "--device", "cpu"]) == 0
    measures = json.loads((run / "phase2" / "word_counts.json").read_text())
    for split in ("train", "test"):
        for c in ("nelbo_full", "nelbo_no_coefficient", "nelbo_saturated"):
            assert measures[split][c] == pytest.approx(r[split][c], rel=1e-9)
            assert measures["collapsed_baseline"][split][c] == pytest.approx(
                r["collapsed_baseline"][split][c], rel=1e-12
            )
    assert measures["retrieval"] == pytest.approx(r["retrieval"])
    assert measures["samples"] == 3
    flat = json.loads((run / "phase2" / "eval.json").read_text())
    assert flat["nelbo_full"] == pytest.approx(r["test"]["nelbo_full"], rel=1e-9)
    assert flat["precision_at_100"] == pytest.approx(r["retrieval"]["precision_at_100"])
    assert "Word counts" in (run / "phase2" / "report.md").read_text()
    assert (run / "phase2" / "checkpoint.safetensors").stat().st_mtime_ns == stamp


def test_the_row_verdict_follows_the_paired_intervals_of_the_encoders():
    from vaelab.experiments.semhash import order_verdicts

    def record(encoder, seed, nelbo, status="done"):
        point = {"encoder": encoder, "bits": 8, "depth": 0}
        return {"point": point, "seed": seed, "status": status,
                "metrics": {"test_nelbo_saturated": nelbo}}  # fmt: skip

    # e2 − e1 = 5, 6, 7 (above 0: reproduced); e3 − e2 = −3, −3.5, −2.5 (below: contradicted)
    records = [record("e1", s, 400 + s) for s in range(3)]
    records += [record("e2", s, 405 + 2 * s) for s in range(3)]
    records += [record("e3", s, v) for s, v in enumerate((402, 403.5, 406.5))]
    records.append(record("e3", 3, 0.0, status="failed"))  # left out
    (row,) = order_verdicts(records)
    first, second = row["claims"]
    assert first["verdict"] == "reproduced" and first["mean"] == pytest.approx(6.0)
    assert second["verdict"] == "contradicted" and second["mean"] == pytest.approx(-3.0)
    assert row["verdict"] == "contradicted" and row["paper_order_holds"] is True
    # e3 above e2 by a noisy margin: that claim inconclusive, and so the row
    records[6:9] = [record("e3", s, v) for s, v in enumerate((410, 404, 415))]
    (row,) = order_verdicts(records)
    assert [c["verdict"] for c in row["claims"]] == ["reproduced", "inconclusive"]
    assert row["verdict"] == "inconclusive"
