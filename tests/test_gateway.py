"""The local gateway: served batches, the official answer checks, deadlines, the submission file and the score."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread import gateway
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
