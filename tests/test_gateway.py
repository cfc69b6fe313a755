"""The local gateway: served batches, the official answer checks, deadlines, the submission file and the score."""

from __future__ import annotations

import json
import logging
import threading
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread import gateway
from spread.errors import DataError
from spread.gateway import GatewayError, run_gateway, validate_answer

TARGETS = ["target_0", "target_1", "target_2", "target_3"]


def _drop_first_lag_rows(root: Path) -> None:
    """Make the lag files look like the real ones: no row for the first k + 1 served dates."""
    for lag in (1, 2):
        path = root / f"lagged_test_labels/test_labels_lag_{lag}.csv"
        pl.read_csv(path).slice(lag + 1).write_csv(path)


class Recorder:
    """A predict function that answers from the labels (plus noise) and records what it was given."""

    def __init__(self, root: Path) -> None:
        self.labels = pl.read_csv(root / "train_labels.csv")
        self.calls: list[tuple[pl.DataFrame, ...]] = []
        self.rng = np.random.default_rng(0)

    def __call__(self, test, lag1, lag2, lag3, lag4) -> pl.DataFrame:
        self.calls.append((test, lag1, lag2, lag3, lag4))
        truth = self.labels.filter(pl.col("date_id") == test["date_id"][0]).drop("date_id").to_numpy()[0]
        values = np.nan_to_num(truth) + self.rng.normal(0, 0.02, len(TARGETS))
        return pl.DataFrame({name: [float(v)] for name, v in zip(TARGETS, values)})


def test_serves_one_row_per_date_in_order_with_lag_batches(tiny_competition: Path, tmp_path: Path) -> None:
    _drop_first_lag_rows(tiny_competition)
    predict = Recorder(tiny_competition)
    out = tmp_path / "sub.parquet"
    result = run_gateway(tiny_competition, predict, out_file=out)

    test_dates = pl.read_csv(tiny_competition / "test.csv")["date_id"].to_list()
    assert [call[0]["date_id"].to_list() for call in predict.calls] == [[d] for d in test_dates]
    for index, (test, lag1, lag2, lag3, lag4) in enumerate(predict.calls):
        assert test.height == 1 and "is_scored" in test.columns
        assert lag1.height == (0 if index < 2 else 1) and lag2.height == (0 if index < 3 else 1)
        assert lag3.height == 0 and lag4.height == 0
        if lag1.height:
            assert lag1["label_date_id"][0] == test["date_id"][0] - 2
    submission = pl.read_parquet(out)
    assert submission.columns == ["date_id", *TARGETS]
    assert submission["date_id"].to_list() == test_dates
    assert result["latency"]["calls"] == len(test_dates)
    assert np.isfinite(result["score"]) and result["score"] > 0.5  # near-oracle answers score well
    assert result["fallback_calls"] is None


@pytest.mark.parametrize("cell", ["x", "", "283.5"])
@pytest.mark.parametrize("file", ["test.csv", "lagged_test_labels/test_labels_lag_1.csv"])
def test_a_date_id_that_is_not_an_integer_is_an_error_naming_file_and_line(tiny_competition: Path, file: str,
                                                                          cell: str) -> None:
    path = tiny_competition / file
    lines = path.read_text().splitlines()
    first = lines[3].split(",")
    lines[3] = ",".join([cell, *first[1:]])  # line 4 of the file: its third data row
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{file}: line 4, column date_id: .* is not an integer date_id"):
        gateway.read_served_files(tiny_competition)


def test_float_or_text_date_ids_that_are_integers_serve_as_integers(tiny_competition: Path) -> None:
    path = tiny_competition / "test.csv"
    frame = pl.read_csv(path)
    frame.with_columns(pl.col("date_id").cast(pl.Float64)).write_csv(path)  # 280.0, 281.0, ...
    test, _ = gateway.read_served_files(tiny_competition)
    assert test.schema["date_id"] == pl.Int64 and test["date_id"].to_list() == frame["date_id"].to_list()


def test_last_printed_line_is_the_score(tiny_competition: Path, tmp_path: Path, capsys) -> None:
    result = run_gateway(tiny_competition, Recorder(tiny_competition), out_file=tmp_path / "s.parquet")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"score: {result['score']:.6f}"


def test_max_dates_truncates_and_keeps_earlier_answers(tiny_competition: Path, tmp_path: Path) -> None:
    full = run_gateway(tiny_competition, Recorder(tiny_competition), out_file=tmp_path / "full.parquet")
    part = run_gateway(tiny_competition, Recorder(tiny_competition), out_file=tmp_path / "part.parquet", max_dates=3)
    assert pl.read_parquet(part["submission"]).equals(pl.read_parquet(full["submission"]).head(3))


def test_first_call_has_no_deadline_later_calls_do(tiny_competition: Path, tmp_path: Path, monkeypatch) -> None:
    timeouts = []
    original = gateway._PredictThread.call

    def spy(self, predict, batches, timeout, date_id):
        timeouts.append(timeout)
        return original(self, predict, batches, timeout, date_id)

    monkeypatch.setattr(gateway._PredictThread, "call", spy)
    run_gateway(tiny_competition, Recorder(tiny_competition), out_file=tmp_path / "s.parquet", deadline_s=7.0)
    assert timeouts[0] is None and set(timeouts[1:]) == {7.0} and len(timeouts) == 8


def test_a_call_past_its_deadline_stops_the_run(tiny_competition: Path, tmp_path: Path) -> None:
    release = threading.Event()
    answers = Recorder(tiny_competition)

    def predict(*batches):
        if answers.calls:
            release.wait()  # hangs until the test releases it: the gateway must not wait for it
        return answers(*batches)

    try:
        with pytest.raises(GatewayError, match="deadline"):
            run_gateway(tiny_competition, predict, out_file=tmp_path / "s.parquet", deadline_s=0.05)
    finally:
        release.set()
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize(
    "answer, message",
    [
        (None, "DataFrame"),
        (pl.DataFrame({name: [0.1, 0.2] for name in TARGETS}), "exactly 1 row"),
        (pl.DataFrame({"date_id": [1], **{name: [0.1] for name in TARGETS[:3]}}), "date_id"),
        (pl.DataFrame({name: [0.1] for name in TARGETS[:3]}), "4 columns"),
        (pl.DataFrame({name: [0.1] for name in ["target_0", "target_2", "target_1", "target_3"]}), "names"),
        (pl.DataFrame({name: [float("nan") if name == "target_1" else 0.1] for name in TARGETS}), "non-finite"),
        (pl.DataFrame({name: [None if name == "target_1" else 0.1] for name in TARGETS}), "non-finite"),
        (pl.DataFrame({name: ["x"] for name in TARGETS}), "numeric"),
    ],
)
def test_invalid_answers_are_rejected(answer, message: str) -> None:
    with pytest.raises(GatewayError, match=message):
        validate_answer(answer, TARGETS, date_id=5)


def test_valid_answer_is_cast_to_float(tiny_competition: Path) -> None:
    row = validate_answer(pl.DataFrame({name: [i] for i, name in enumerate(TARGETS)}), TARGETS, date_id=5)
    assert row.dtypes == [pl.Float64] * 4 and row.row(0) == (0.0, 1.0, 2.0, 3.0)


def test_an_exception_in_predict_is_a_gateway_error(tiny_competition: Path, tmp_path: Path) -> None:
    def predict(*batches):
        raise ZeroDivisionError("boom")

    with pytest.raises(GatewayError, match="raised on date_id 22: ZeroDivisionError: boom"):
        run_gateway(tiny_competition, predict, out_file=tmp_path / "s.parquet")


def test_fallback_count_is_read_from_predict_stats(tiny_competition: Path, tmp_path: Path) -> None:
    answers = Recorder(tiny_competition)

    def predict(*batches):
        return answers(*batches)

    predict.stats = lambda: {"calls": len(answers.calls), "fallback_calls": 3}
    assert run_gateway(tiny_competition, predict, out_file=tmp_path / "s.parquet")["fallback_calls"] == 3


def test_solution_uses_released_labels_for_dates_past_train(tiny_competition: Path) -> None:
    labels = pl.read_csv(tiny_competition / "train_labels.csv")
    labels.head(25).write_csv(tiny_competition / "train_labels.csv")  # train covers dates 0..24 only now
    train = pl.read_csv(tiny_competition / "train.csv")
    train.head(25).write_csv(tiny_competition / "train.csv")
    solution = gateway.solution_frame(tiny_competition, [23, 24, 26, 27])
    assert solution["date_id"].to_list() == [23, 24, 26, 27]
    lag1 = pl.read_csv(tiny_competition / "lagged_test_labels/test_labels_lag_1.csv")
    released = lag1.filter(pl.col("label_date_id") == 26)["target_0"][0]
    assert solution.filter(pl.col("date_id") == 26)["target_0"][0] == pytest.approx(released)
    assert solution.filter(pl.col("date_id") == 26)["target_0"][0] == pytest.approx(labels["target_0"][26])


# ----------------------------------------------------------------------------------------------------------------
# serving a trained run: in-sample flag, --members, the summary, exit status and output order

SCORED = (280, 304)
"""The small preset's scored test dates (seed 1)."""


@pytest.fixture(scope="module")
def roles_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(competition, run): the small preset and a run of a walk-forward fold, two holdout members (one with a
    `role`, one known by its fold name only) and a two-seed final fit, which is what the manifest serves."""
    from spread.synth import generate
    from test_infer import write_run

    root = tmp_path_factory.mktemp("roles")
    comp = generate(root / "comp", seed=1, preset="small")
    holdout = {"name": "holdout", "train_dates": [0, 270], "val_dates": list(SCORED), "embargo": 5, "cutoff": 275}
    final = {"name": "final", "train_dates": [0, 317], "val_dates": [320, 319], "embargo": 0, "cutoff": 319}
    members = {
        "fold0": {"role": "fold", "fold": {"name": "fold0", "train_dates": [0, 200], "val_dates": [206, 240],
                                           "embargo": 5, "cutoff": 245}},
        "holdout": {"role": "holdout", "seed": 0, "fold": holdout},
        "holdout-s1": {"fold": holdout},
        "final-s0": {"role": "final", "seed": 0, "fold": final},
        "final-s1": {"role": "final", "seed": 1, "fold": final},
    }
    write_run(root / "run", comp, members=members, inference=["final-s0/best.pt", "final-s1/best.pt"])
    return comp, root / "run"


def _serve(comp: Path, run: Path, tmp_path: Path, members: str = "served") -> dict:
    from spread.infer import make_predict

    return run_gateway(comp, make_predict(run, comp, device="cpu", members=members), out_file=tmp_path / "s.parquet")


def test_in_sample_serving_is_flagged_with_the_honest_replay(roles_run, tmp_path: Path, capsys, single_thread) -> None:
    comp, run = roles_run
    result = _serve(comp, run, tmp_path)
    out = capsys.readouterr().out
    n_scored = SCORED[1] - SCORED[0] + 1
    assert result["in_sample"] == {"final-s0/best.pt": n_scored, "final-s1/best.pt": n_scored}
    assert result["honest_replay"] == f"python -m spread gateway --data {comp} --run {run} --members holdout"
    assert "IN-SAMPLE" in out and "not a validation" in out and result["honest_replay"] in out
    assert out.strip().splitlines()[-1] == f"score: {result['score']:.6f}"


def test_members_holdout_serves_only_the_holdout_members(roles_run, tmp_path: Path, capsys, single_thread) -> None:
    comp, run = roles_run
    result = _serve(comp, run, tmp_path, members="holdout")
    summary = result["summary"]
    assert summary["members"]["loaded"] == ["holdout-s1/best.pt", "holdout/best.pt"]
    assert {m["role"] for m in summary["members"]["served"]} == {"holdout"}
    assert result["in_sample"] == {} and result["honest_replay"] is None and "IN-SAMPLE" not in capsys.readouterr().out
    assert summary["answers"]["all_members"] == summary["calls"] == 40 and not summary["degraded"]
    assert summary["prior_source"] == "labels released by 275"  # a fallback would know no more than the members


def test_the_holdout_replay_falls_back_to_a_prior_of_the_labels_released_by_its_cutoff(roles_run) -> None:
    from spread.competition import load_competition
    from spread.infer import Predictor
    from spread.prior import mean_rank_prior
    from spread.windows import released_labels

    comp, run = roles_run
    replay = Predictor.from_run(run, comp, device="cpu", members="holdout")
    served = Predictor.from_run(run, comp, device="cpu")
    expected = mean_rank_prior(released_labels(load_competition(comp, serving=True), 275))
    np.testing.assert_allclose(replay.prior, expected)
    assert served.prior_source == "run" and not np.allclose(served.prior, replay.prior)


@pytest.mark.parametrize(
    "members, loaded",
    [("folds", ["fold0/best.pt"]), ("final", ["final-s0/best.pt", "final-s1/best.pt"]),
     ("fold0, holdout/", ["fold0/best.pt", "holdout/best.pt"])],
)
def test_members_select_by_role_or_folder(roles_run, members: str, loaded: list[str]) -> None:
    from spread.infer import Predictor

    comp, run = roles_run
    assert [m.name for m in Predictor.from_run(run, comp, device="cpu", members=members).members] == loaded


def test_an_unknown_member_folder_is_an_error_naming_it(roles_run) -> None:
    from spread.errors import ArtifactError
    from spread.infer import Predictor

    comp, run = roles_run
    with pytest.raises(ArtifactError, match="fold7/best.pt: not listed in manifest.json"):
        Predictor.from_run(run, comp, device="cpu", members="fold7")


def test_the_summary_counts_calls_sources_and_latency(roles_run, tmp_path: Path, single_thread) -> None:
    comp, run = roles_run
    summary = _serve(comp, run, tmp_path)["summary"]
    assert summary["calls"] == 40 and summary["answers"] == {
        "all_members": 40, "some_members": 0, "prior": 0, "placeholder": 0}
    assert summary["problems"] == {} and summary["prior_source"] == "run" and summary["degraded"] == []
    assert summary["latency"]["first_s"] > 0 and 0 < summary["latency"]["p50_ms"] <= summary["latency"]["p99_ms"]


def _corrupt_copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "final-s1/best.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return copy


def test_gateway_command_exits_1_when_degraded_outside_the_rerun(
    roles_run, tmp_path: Path, capsys, monkeypatch, single_thread
) -> None:
    from spread.cli import main

    comp, run = roles_run
    broken = _corrupt_copy(run, tmp_path)
    command = ["gateway", "--data", str(comp), "--run", str(broken), "--out", str(tmp_path / "s.parquet")]
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    assert main(command) == 1
    out = capsys.readouterr().out
    assert "DEGRADED: 1 member(s) did not load" in out and "final-s1/best.pt" in out
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    assert main(command) == 0  # the rerun never fails on it, and says the same
    assert "DEGRADED: 1 member(s) did not load" in capsys.readouterr().out
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN")
    assert main(["gateway", "--data", str(comp), "--run", str(run), "--out", str(tmp_path / "s.parquet")]) == 0


@pytest.mark.parametrize("arguments, message", [
    (["--members", "holdot"], "holdot/best.pt not in"),
    (["--members", "fold0,fold9"], "fold9/best.pt not in"),
    (["--deadline", "-1"], "--deadline: expected seconds > 0"),
    (["--out", "."], "expected a file in an existing folder"),
    (["--out", "nowhere/s.parquet"], "expected a file in an existing folder"),
])
def test_gateway_usage_errors_serve_nothing(roles_run, tmp_path: Path, capsys, monkeypatch, arguments: list,
                                            message: str) -> None:
    from spread.cli import main

    comp, run = roles_run
    monkeypatch.chdir(tmp_path)
    command = ["gateway", "--data", str(comp), "--run", str(run), "--out", "s.parquet", *arguments]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing served, nothing written


@pytest.mark.slow
def test_gateway_command_prints_its_score_once_and_last(roles_run, tmp_path: Path) -> None:
    """stdout and stderr together, as a terminal shows them: nothing (no log line) after the score."""
    import os
    import subprocess
    import sys

    comp, run = roles_run
    done = subprocess.run(
        [sys.executable, "-m", "spread", "gateway", "--data", str(comp), "--run", str(run), "--members", "holdout",
         "--out", str(tmp_path / "s.parquet")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout
    assert lines[-1].startswith("score: ") and sum(line.startswith("score") for line in lines) == 1, lines[-5:]
    assert sum(lines[-1].split(": ")[1] in line for line in lines) == 1


def test_gateway_help_shows_the_defaults(capsys) -> None:
    from spread.cli import main

    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("default submission.parquet", "default 300", "served (default", "holdout"):
        assert default in text, default


def test_infer_kernel_exits_1_when_degraded_outside_the_rerun(roles_run, tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    comp, run = roles_run
    path = Path(__file__).resolve().parents[1] / "kernel_infer.py"
    spec = importlib.util.spec_from_file_location("kernel_infer_loud", path)
    kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)
    monkeypatch.setattr(kernel, "import_inference_server", lambda data_dir: None)  # the project's gateway
    args = ["--data", str(comp), "--artifacts", str(_corrupt_copy(run, tmp_path)), "--out", str(tmp_path / "s.parquet")]
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    assert kernel.main(args) == 1
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    assert kernel.main(args) == 0
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN")
    assert kernel.main(["--data", str(comp), "--artifacts", str(run), "--out", str(tmp_path / "s.parquet")]) == 0


def test_infer_kernel_serves_the_rerun_even_without_a_competition_folder(roles_run, monkeypatch, caplog) -> None:
    """Under the rerun a missing folder is logged, never fatal: the server starts and every call is answered."""
    import importlib.util

    import polars as pl

    comp, run = roles_run
    path = Path(__file__).resolve().parents[1] / "kernel_infer.py"
    spec = importlib.util.spec_from_file_location("kernel_infer_nodata", path)
    kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel)
    pairs = pl.read_csv(comp / "target_pairs.csv")
    targets = pairs["target"].to_list()
    answers = []

    def lag_batch(lag: int) -> pl.DataFrame:  # the API's batch of lag `lag`: its targets only
        names = pairs.filter(pl.col("lag") == lag)["target"].to_list()
        return pl.DataFrame({"date_id": [0], "label_date_id": [0], **{name: [0.1] for name in names}})

    class Server:
        def __init__(self, predict) -> None:
            self.predict = predict

        def serve(self) -> None:
            test = pl.read_csv(comp / "test.csv").head(1)
            answers.append(self.predict(test, *(lag_batch(lag) for lag in (1, 2, 3, 4))))

    monkeypatch.setattr(kernel, "find_competition_dir", lambda given: None)
    monkeypatch.setattr(kernel, "import_inference_server", lambda data_dir: Server)
    at_exit = []  # the kernel logs its summary at exit under the rerun: run it here, not after pytest's last line
    monkeypatch.setattr(kernel, "atexit", types.SimpleNamespace(register=at_exit.append))
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    assert kernel.main(["--artifacts", str(run)]) == 2 and not answers  # outside the rerun: a clear refusal
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    assert kernel.main(["--artifacts", str(run)]) == 0
    (answer,) = answers
    assert answer.columns == targets and answer.height == 1
    assert answer.select(pl.all().is_finite().all()).row(0) == (True,) * len(targets)
    prior = json.loads((run / "prior.json").read_text())  # the run's prior, checked against the served targets
    assert list(answer.row(0)) == pytest.approx(prior["prior"]) and prior["target_names"] == targets
    (log_summary,) = at_exit
    with caplog.at_level(logging.INFO):
        log_summary()
    assert "no competition folder found" in caplog.text and "fell back (prior 1" in caplog.text
