"""A local copy of the competition's evaluation gateway: plays the official API over a competition folder.

What the official `MitsuiGateway` does (shared COMPETITION.md, "The evaluation API"), reproduced here so that a
submission can be rehearsed with any polars version and without `kaggle_evaluation` installed:

- `test.csv` and `lagged_test_labels/test_labels_lag_{k}.csv` are read with `pl.read_csv` typed from all rows
  (an all-empty column arrives as String, as on Kaggle; a text cell anywhere makes its column String; trailing
  blank lines are dropped), and `predict(test, lag1, lag2, lag3, lag4)` is called once per test
  date_id in file order with the rows of each file whose date_id is the current one (the lag batches are empty at
  the start). A lag with no file gets an empty frame.
- The first call has no deadline (models load there); every later call must return within `deadline_s`.
- Each answer must be a pandas or polars DataFrame with exactly one row, no date_id and one column per target;
  this gateway also checks what the official one leaves to the scorer: the column names (target_pairs order) and
  that every value is finite. Any violation, an exception from `predict` or a missed deadline stops the run with a
  `GatewayError`, as the real rerun would fail the submission.

Afterwards it writes `submission.parquet` (date_id + targets, one row per served date), prints per-call latency
statistics, the predictor's end-of-run summary (answers by source, problems per kind: `spread.infer.summary_text`)
and, when a served member trained on the labels of a scored date it answers, says that the score is in-sample and
prints the honest replay (`--members holdout`); its last line is the competition score over the `is_scored` dates,
with the truths taken from `train_labels.csv` and, for dates it does not cover, from the lag files' released labels.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
import queue
import threading
from pathlib import Path
from typing import Any

import polars as pl

from spread.competition import as_date_id, drop_trailing_blank_rows
from spread.errors import DataError, SpreadError

log = logging.getLogger(__name__)

LAGS = (1, 2, 3, 4)
"""The predict function always receives four lag batches, lag 1 to 4, as in the official API."""
DEFAULT_DEADLINE_S = 300.0


class GatewayError(SpreadError):
    """An answer of `predict` would fail the official evaluation (wrong shape, raised, too slow, not finite)."""


def _read_csv(path: Path) -> pl.DataFrame:
    """A served file, typed from all its rows (a text cell past row 100 makes its column String instead of failing
    the read), trailing blank lines dropped."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pl.read_csv(path, infer_schema_length=None)
    except Exception as exc:  # polars raises several types for malformed csv
        raise DataError(f"{path}: cannot be parsed as CSV: {exc}") from exc
    return drop_trailing_blank_rows(frame)


def target_names_of(data_dir: Path) -> list[str]:
    """The target names of a competition folder, in `target_pairs.csv` order (the submission's column order)."""
    pairs = _read_csv(data_dir / "target_pairs.csv")
    if "target" not in pairs.columns:
        raise DataError(f"{data_dir / 'target_pairs.csv'}: missing column 'target'")
    return [str(name) for name in pairs["target"].to_list()]


def _empty_lag_frame() -> pl.DataFrame:
    return pl.DataFrame(schema={"date_id": pl.Int64, "label_date_id": pl.Int64})


def _integer_dates(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """`frame` with an integer date_id column (12, 12.0 and "12" alike), or DataError naming the file, line and cell
    of the first date_id that is not an integer (the batches are cut by date_id: "x", a blank or 12.5 cannot be)."""
    if "date_id" not in frame.columns:
        raise DataError(f"{path}: missing column 'date_id'")
    if frame.schema["date_id"].is_integer() and frame["date_id"].null_count() == 0:
        return frame
    dates = [as_date_id(value) for value in frame["date_id"].to_list()]
    bad = next((row for row, date in enumerate(dates) if date is None), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad + 2}, column date_id: {frame['date_id'][bad]!r} is not an integer date_id")
    return frame.with_columns(pl.Series("date_id", dates, dtype=pl.Int64))


def read_served_files(data_dir: Path) -> tuple[pl.DataFrame, dict[int, pl.DataFrame]]:
    """test.csv and the four lag files as the official gateway reads them (a missing lag file: empty frame), their
    date_ids checked to be integers."""
    test = _integer_dates(_read_csv(data_dir / "test.csv"), data_dir / "test.csv")
    lagged = {}
    for lag in LAGS:
        path = data_dir / "lagged_test_labels" / f"test_labels_lag_{lag}.csv"
        lagged[lag] = _integer_dates(_read_csv(path), path) if path.is_file() else _empty_lag_frame()
    return test, lagged


def generate_batches(
    test: pl.DataFrame, lagged: dict[int, pl.DataFrame], max_dates: int | None = None
) -> Iterator[tuple[int, tuple[pl.DataFrame, ...]]]:
    """(date_id, (test_batch, lag1, lag2, lag3, lag4)) per test date_id, in file order, like the official gateway."""
    date_ids = test["date_id"].unique(maintain_order=True).to_list()
    if max_dates is not None:
        date_ids = date_ids[:max_dates]
    for date_id in date_ids:
        batches = [test.filter(pl.col("date_id") == date_id)]
        batches += [lagged[lag].filter(pl.col("date_id") == date_id) for lag in LAGS]
        yield date_id, tuple(batches)


def validate_answer(answer: Any, target_names: list[str], date_id: int) -> pl.DataFrame:
    """The answer as a one-row Float64 polars frame, or GatewayError saying which check it fails."""
    where = f"predict answer for date_id {date_id}"
    if type(answer).__module__.split(".")[0] == "pandas" and type(answer).__name__ == "DataFrame":
        answer = pl.from_pandas(answer)
    if not isinstance(answer, pl.DataFrame):
        raise GatewayError(f"{where}: expected a pandas or polars DataFrame, got {type(answer).__name__}")
    if answer.height != 1:
        raise GatewayError(f"{where}: expected exactly 1 row, got {answer.height}")
    if "date_id" in answer.columns:
        raise GatewayError(f"{where}: must not contain a date_id column")
    if answer.width != len(target_names):
        raise GatewayError(f"{where}: expected {len(target_names)} columns, got {answer.width}")
    if answer.columns != target_names:
        wrong = [(got, want) for got, want in zip(answer.columns, target_names) if got != want]
        raise GatewayError(
            f"{where}: column names differ from target_pairs.csv order, first (got, expected): {wrong[0]}"
        )
    try:
        values = answer.select(pl.all().cast(pl.Float64)).to_numpy()[0]
    except Exception as exc:  # non-numeric cells
        raise GatewayError(f"{where}: values are not all numeric: {exc}") from exc
    bad = [name for name, value in zip(target_names, values) if not math.isfinite(value)]
    if bad:
        raise GatewayError(f"{where}: {len(bad)} non-finite value(s) (NaN, inf or null), first: {bad[:5]}")
    return pl.DataFrame([pl.Series(name, [float(value)]) for name, value in zip(target_names, values)])


class _PredictThread:
    """One daemon thread that runs every predict call, as behind the official gRPC server.

    A call that overruns its deadline is abandoned (the gateway stops, the thread cannot block interpreter exit).
    """

    def __init__(self) -> None:
        self.requests: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="predict", daemon=True).start()

    def _loop(self) -> None:
        while True:
            predict, batches, reply = self.requests.get()
            if predict is None:
                return
            try:
                reply.put((True, predict(*batches)))
            except BaseException as exc:  # handed back to the gateway thread, which decides
                reply.put((False, exc))

    def call(self, predict: Callable, batches: tuple, timeout: float | None, date_id: int) -> Any:
        """`predict(*batches)` within `timeout` seconds (None: no deadline)."""
        reply: queue.Queue = queue.Queue(maxsize=1)
        self.requests.put((predict, batches, reply))
        try:
            ok, value = reply.get(timeout=timeout)
        except queue.Empty:
            message = f"predict for date_id {date_id} did not return within its deadline of {timeout:g} s"
            raise GatewayError(message) from None
        if ok:
            return value
        if isinstance(value, SpreadError):
            raise value
        raise GatewayError(f"predict raised on date_id {date_id}: {type(value).__name__}: {value}") from value

    def close(self) -> None:
        self.requests.put((None, None, None))


def serve(
    data_dir: str | Path, predict: Callable, deadline_s: float = DEFAULT_DEADLINE_S, max_dates: int | None = None
) -> tuple[pl.DataFrame, list[float]]:
    """Serve every test date to `predict`; returns the submission frame and each call's seconds."""
    data_dir = Path(data_dir)
    target_names = target_names_of(data_dir)
    test, lagged = read_served_files(data_dir)
    rows, seconds = [], []
    worker = _PredictThread()
    try:
        for date_id, batches in generate_batches(test, lagged, max_dates):
            timeout = None if not seconds else deadline_s
            start = time.perf_counter()
            answer = worker.call(predict, batches, timeout, date_id)
            seconds.append(time.perf_counter() - start)
            row = validate_answer(answer, target_names, date_id)
            rows.append(row.insert_column(0, pl.Series("date_id", [int(date_id)], dtype=pl.Int64)))
    finally:
        worker.close()
    if not rows:
        raise DataError(f"{data_dir / 'test.csv'}: no test dates to serve")
    return pl.concat(rows, how="vertical"), seconds


def solution_frame(data_dir: Path, date_ids: list[int]) -> pl.DataFrame:
    """The truths of `date_ids` (date_id + targets): train_labels.csv rows, else the lag files' released labels."""
    from spread.competition import load_competition

    comp = load_competition(data_dir, require_test=True)
    known = comp.labels.filter(pl.col("date_id").is_in(date_ids))
    missing = sorted(set(date_ids) - set(known["date_id"].to_list()))
    if not missing:
        return known
    released = pl.DataFrame({"date_id": pl.Series(missing, dtype=pl.Int64)})
    for frame in comp.lagged_labels.values():
        columns = [c for c in frame.columns if c not in ("date_id", "label_date_id")]
        labels = frame.select(pl.col("label_date_id").alias("date_id"), *columns)
        released = released.join(labels, on="date_id", how="left")
    released = released.select(comp.labels.columns)
    return pl.concat([known, released.cast(known.schema)], how="vertical").sort("date_id")


def scored_served_dates(data_dir: Path, served: list[int]) -> list[int]:
    """The dates of `served` that test.csv marks is_scored."""
    test = _read_csv(data_dir / "test.csv")
    if "is_scored" not in test.columns:
        raise DataError(f"{data_dir / 'test.csv'}: missing column 'is_scored'")
    scored = test.filter(pl.col("is_scored").cast(pl.String).str.to_lowercase().is_in(["true", "1"]))
    return [d for d in scored["date_id"].to_list() if d in set(served)]


def score_submission(data_dir: str | Path, submission: pl.DataFrame) -> float:
    """Competition score of `submission` over the served is_scored dates; NaN (logged) when it cannot be scored."""
    from spread.metrics import score_frames

    data_dir = Path(data_dir)
    try:
        served = submission["date_id"].to_list()
        scored_dates = scored_served_dates(data_dir, served)
        return float(score_frames(solution_frame(data_dir, served), submission, scored_dates=scored_dates))
    except SpreadError as exc:
        log.warning("no score: %s", exc)
        return float("nan")


def in_sample(summary: dict, scored_dates: list[int]) -> dict[str, int]:
    """{served member: how many of `scored_dates` it trained on}, for the members that trained on any."""
    from spread.members import trained_dates

    counts = {m["name"]: len(trained_dates(m["role"], m["fold"], scored_dates)) for m in summary["members"]["served"]}
    return {name: count for name, count in counts.items() if count}


def run_gateway(
    data_dir: str | Path,
    predict: Callable,
    out_file: str | Path = "submission.parquet",
    deadline_s: float = DEFAULT_DEADLINE_S,
    max_dates: int | None = None,
) -> dict:
    """Serve the test set of `data_dir` to `predict`, write `out_file`, print latency, summary and score lines (the
    score last).

    Returns {"score": float (NaN when it cannot be computed), "latency": latency_stats(...), "fallback_calls":
    int or None, "summary": `predict.summary()` or None (calls, answers by source, members, problems, latency,
    degraded: see `spread.infer.LazyPredictor.summary`), "in_sample": {member: scored dates it trained on} (empty
    when every served member is out of sample on the scored dates), "honest_replay": the command serving the
    holdout members instead (None unless in-sample), "submission": Path}; `fallback_calls`, `summary` and the
    in-sample check come from `predict.stats()` / `predict.summary()` when the predict function has them.
    """
    from spread.infer import latency_stats

    data_dir = Path(data_dir)
    submission, seconds = serve(data_dir, predict, deadline_s=deadline_s, max_dates=max_dates)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    submission.write_parquet(out_file)
    latency = latency_stats(seconds)
    stats = getattr(predict, "stats", None)
    fallback = stats().get("fallback_calls") if callable(stats) else None
    summary = predict.summary() if callable(getattr(predict, "summary", None)) else None
    score = score_submission(data_dir, submission)
    flagged, replay, scored = {}, None, []
    if summary is not None:
        try:
            scored = scored_served_dates(data_dir, submission["date_id"].to_list())
            flagged = in_sample(summary, scored)
        except SpreadError as exc:
            log.warning("no in-sample check: %s", exc)
        if flagged:
            replay = f"python -m spread gateway --data {data_dir} --run {summary['run_dir']} --members holdout"
    print(f"wrote {out_file} ({submission.height} rows x {submission.width - 1} targets)")
    print(
        f"latency: first call {latency['first_s']:.3f} s; later calls p50 {latency['p50_ms']:.1f} ms, "
        f"p90 {latency['p90_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms"
    )
    if fallback is not None:
        print(f"fallback calls: {fallback} of {latency['calls']}")
    if summary is not None:
        from spread.infer import summary_text

        print(summary_text(summary))
    if flagged:
        members = ", ".join(f"{name} ({count})" for name, count in flagged.items())
        print(
            f"IN-SAMPLE: served member(s) trained on the labels of scored dates they answer: {members} of "
            f"{len(scored)} scored dates. The score below is not a validation. Honest replay (the holdout "
            f"model): {replay}"
        )
    print(f"score: {score:.6f}")
    return {
        "score": score, "latency": latency, "fallback_calls": fallback, "summary": summary, "in_sample": flagged,
        "honest_replay": replay, "submission": out_file,
    }
