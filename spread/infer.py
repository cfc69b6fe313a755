"""Inference under the evaluation API: a predictor that keeps its own history and never fails a call.

The competition calls `predict(test, lag1, lag2, lag3, lag4)` once per date with a one-row `test` frame and the
labels released that day (shared COMPETITION.md, "The evaluation API"); no history is passed, and the score only
exists if every call returns a valid row in time. So:

- `Predictor.from_run` verifies the run folder's `manifest.json` (sha256 of every artefact) before loading
  anything: a corrupt or altered file is an `ArtifactError` naming it, never a silently wrong prediction. Each
  listed checkpoint becomes one ensemble member (its model, config, scaler and input features); their
  predictions are averaged.
- `History` holds the raw feature rows of `train.csv` and of every served date, and the labels of
  `train_labels.csv` and of every lag batch, keyed by date_id: a served row re-covering a train date replaces it
  (latest wins, never counted twice); a lag-k batch row served on date t holds the labels of date
  t - k - 1 (`spread.targets.release_date`). The window for date t is built by `spread.windows.window_for_latest`,
  the code that built the training windows, from rows up to t only: the revealed-label features place each label
  on its release date, so nothing released after t can reach the window. Only the raw columns and targets that the
  models' (screened) input features come from are read (`spread.features.panel_inputs`): same values, less work.
- `predict` never raises. Any failure (a malformed batch, a model error, a non-finite or constant output) is
  logged and answered with the fallback: each target's mean historical daily rank (`spread.prior`, 0.387 on the
  private leaderboard as a constant). Calls and fallbacks are counted and logged.
- `make_predict` returns the function handed to the inference server: it loads the predictor inside its first
  call (which has no deadline), so the server starts in seconds; if loading fails, every call falls back.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from spread.errors import ArtifactError, DataError

if TYPE_CHECKING:
    from spread.config import Config
    from spread.scaling import Scaler

# The package's heavier modules are imported inside the functions that use them: if one cannot be imported on
# the Kaggle image, `import spread.infer` still succeeds, the server still starts and the calls fall back.

log = logging.getLogger(__name__)

LAGS = (1, 2, 3, 4)
"""Lag of each of the four label batches, in argument order."""
SUMMARY_EVERY = 50
"""Log a calls/fallbacks summary every this many calls."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto": the first CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------------------------
# history


class History:
    """Raw feature rows and known labels keyed by date_id (latest write wins), from train files and served batches."""

    def __init__(self, feature_names: list[str], target_names: list[str], target_lags: Sequence[int]):
        self.feature_names = list(feature_names)
        self.target_names = list(target_names)
        self.target_lags = np.asarray(target_lags, dtype=np.int64)
        self.features: dict[int, np.ndarray] = {}
        """date_id -> (F,) float64 raw values, NaN where missing."""
        self.labels: dict[int, np.ndarray] = {}
        """label date_id -> (N,) float64 labels, NaN where unknown."""
        self.columns_by_lag = {int(lag): np.flatnonzero(self.target_lags == lag) for lag in np.unique(self.target_lags)}

    @classmethod
    def from_frames(cls, train: pl.DataFrame, labels: pl.DataFrame, pairs: pl.DataFrame) -> History:
        """The published history: train.csv rows and train_labels.csv rows (Float64 frames with date_id)."""
        feature_names = [c for c in train.columns if c != "date_id"]
        history = cls(feature_names, pairs["target"].to_list(), pairs["lag"].to_list())
        values = train.select(feature_names).to_numpy().astype(np.float64)
        for date_id, row in zip(train["date_id"].to_list(), values):
            history.features[int(date_id)] = row
        label_values = labels.select(history.target_names).to_numpy().astype(np.float64)
        for date_id, row in zip(labels["date_id"].to_list(), label_values):
            history.labels[int(date_id)] = row
        return history

    @property
    def last_date(self) -> int | None:
        return max(self.features) if self.features else None

    def add_features(self, date_id: int, values: np.ndarray) -> None:
        """Store one served row (replacing any earlier row of the same date)."""
        self.features[int(date_id)] = np.asarray(values, dtype=np.float64)

    def add_labels(self, label_date_id: int, columns: np.ndarray, values: np.ndarray) -> None:
        """Store released labels of `label_date_id` in target `columns`; a null never erases a known value."""
        row = self.labels.get(int(label_date_id))
        if row is None:
            row = np.full(len(self.target_names), np.nan)
            self.labels[int(label_date_id)] = row
        known = ~np.isnan(values)
        row[columns[known]] = values[known]

    def raw_frame(self, last_date: int, n_rows: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """date_id + raw features (`columns`, default all) for the consecutive dates ending at `last_date` (at most
        `n_rows`, none before the first stored date); a date without a stored row is all null."""
        first = max(last_date - n_rows + 1, min(self.features))
        dates = np.arange(first, last_date + 1)
        return stored_frame(self.features, dates, self.feature_names, columns)

    def label_frame(self, first_row_date: int, last_date: int, targets: Sequence[str] | None = None) -> pl.DataFrame:
        """date_id + targets (default all) for every label date whose release can land on a row
        first_row_date..last_date."""
        max_lag = int(self.target_lags.max()) if len(self.target_lags) else 0
        dates = np.arange(first_row_date - max_lag - 1, last_date)
        return stored_frame(self.labels, dates, self.target_names, targets)


def stored_frame(
    rows: dict[int, np.ndarray], date_ids: np.ndarray, names: list[str], columns: Sequence[str] | None
) -> pl.DataFrame:
    """date_id + `columns` (names of the stored rows' entries; default all) for `date_ids`, NaN where not stored."""
    empty = np.full(len(names), np.nan)
    matrix = np.stack([rows.get(int(d), empty) for d in date_ids]) if len(date_ids) else np.empty((0, len(names)))
    if columns is None:
        return frame_from_matrix(matrix, names, date_ids)  # NaN reads as missing, like null
    position = {name: j for j, name in enumerate(names)}
    return frame_from_matrix(matrix[:, [position[c] for c in columns]], list(columns), date_ids)


# ----------------------------------------------------------------------------------------------------------------
# parsing the served batches (never trusted: every column is optional and may be of any type)


def _as_float(value: object) -> float:
    """A served cell as a float: numbers and numeric text convert, anything else (None, "n/a") is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _numeric_row(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """(len(frame), len(names)) float64 values of `names`: absent columns, text, nulls and +-inf become NaN.

    The served frames have one row, so converting the row's Python values beats a polars cast per column
    (an all-empty column arrives as String: its None cells become NaN like any other null).
    """
    position = {name: j for j, name in enumerate(frame.columns)}
    pairs = [(j, position[name]) for j, name in enumerate(names) if name in position]
    values = np.full((frame.height, len(names)), np.nan)
    if pairs and frame.height:
        targets, sources = [j for j, _ in pairs], [k for _, k in pairs]
        for row_index, row in enumerate(frame.rows()):
            values[row_index, targets] = [_as_float(row[k]) for k in sources]
        values[~np.isfinite(values)] = np.nan
    return values


def float_frame(matrix: np.ndarray, names: list[str]) -> pl.DataFrame:
    """One Float64 column per name from a (T, len(names)) float64 matrix (NaN kept).

    Built as one Array series unnested into columns (a few ms for 557 columns, 2-3x faster than a column-wise
    constructor); any polars version without that path gets the plain constructor.
    """
    try:
        frame = pl.Series("values", matrix).arr.to_struct(fields=names).struct.unnest()
    except Exception:  # older polars: no 2-D Array series or no to_struct(fields=...)
        frame = pl.DataFrame(matrix, schema=names, orient="row")
    if frame.columns != names or frame.height != len(matrix) or set(frame.dtypes) - {pl.Float64}:
        frame = pl.DataFrame(matrix, schema=dict.fromkeys(names, pl.Float64), orient="row")
    return frame


def frame_from_matrix(matrix: np.ndarray, names: list[str], date_ids: np.ndarray) -> pl.DataFrame:
    """date_id + one Float64 column per name from a (T, len(names)) float64 matrix (NaN kept)."""
    return float_frame(matrix, names).insert_column(0, pl.Series("date_id", date_ids, dtype=pl.Int64))


def _date_ids(frame: pl.DataFrame, where: str) -> list[int]:
    if "date_id" not in frame.columns:
        raise DataError(f"{where}: no date_id column")
    dates = frame["date_id"].cast(pl.Int64, strict=False)
    if dates.null_count():
        raise DataError(f"{where}: date_id {frame['date_id'].to_list()} is not an integer")
    return [int(d) for d in dates.to_list()]


# ----------------------------------------------------------------------------------------------------------------
# ensemble members


@dataclass
class Member:
    """One checkpoint of the ensemble, ready to run."""

    name: str
    """Checkpoint path relative to the run folder (for the log)."""
    model: torch.nn.Module
    """The rebuilt model in eval mode, on the predictor's device."""
    cfg: Config
    """The run's `spread.config.Config`, as saved in the checkpoint."""
    scaler: Scaler
    """The fold's `spread.scaling.Scaler` (its names are the model's input features)."""
    target_scale: torch.Tensor
    """(N,) per-target scale the trainer divided the targets by."""

    def raw_rows(self) -> int:
        """Raw rows the latest window needs: L + the features' lookback."""
        return self.cfg.data.window + self.cfg.features.lookback()


def load_member(run_dir: Path, name: str, target_names: list[str], device: torch.device) -> Member:
    """Load one listed checkpoint; ArtifactError when it was trained for other targets."""
    from spread.checkpoint import build_model, load_checkpoint
    from spread.config import config_from_dict
    from spread.scaling import Scaler

    ckpt = load_checkpoint(run_dir / name)
    if list(ckpt["target_names"]) != target_names:
        raise ArtifactError(f"{run_dir / name}: trained for other targets than target_pairs.csv lists")
    if "scaler" not in ckpt:
        raise ArtifactError(f"{run_dir / name}: checkpoint has no scaler statistics")
    scaler = Scaler.from_dict(ckpt["scaler"])
    if scaler.names != list(ckpt["feature_names"]):
        raise ArtifactError(f"{run_dir / name}: scaler features differ from the model's input features")
    model = build_model(ckpt).to(device)
    scale = torch.as_tensor(ckpt["target_scale"], dtype=torch.float32).to(device)
    return Member(name=name, model=model, cfg=config_from_dict(ckpt["config"]), scaler=scaler, target_scale=scale)


def model_inputs(members: Sequence[Member], history: History) -> tuple[list[str], list[str]]:
    """(raw columns, targets) of `history`, in its order, that the members' input features derive from."""
    from spread.features import panel_inputs

    features = {name for member in members for name in member.scaler.names}
    return panel_inputs(history.feature_names, history.target_names, features)


def run_member(member: Member, batch: dict[str, torch.Tensor], device: torch.device) -> np.ndarray:
    """(B, N) float64 submitted predictions of one member for a window batch, exactly as the trainer scores."""
    from spread.forecast import predict_batch

    return predict_batch(member.model, batch, member.target_scale, member.cfg.train, device)


# ----------------------------------------------------------------------------------------------------------------
# the fallback


def prior_from_run(run_dir: Path, target_names: list[str], prior_file: str = "prior.json") -> np.ndarray:
    """The run's prior.json values in `target_names` order (a target it lacks gets the middle rank)."""
    from spread.prior import UNSEEN, read_prior

    names, values = read_prior(run_dir / prior_file)
    by_name = dict(zip(names, values.tolist()))
    return np.array([by_name.get(name, UNSEEN) for name in target_names], dtype=np.float64)


def prior_from_labels(labels: pl.DataFrame, target_names: list[str]) -> np.ndarray:
    """The mean-historical-rank prior computed from a label frame."""
    from spread.prior import mean_rank_prior

    return mean_rank_prior(labels.select(target_names).to_numpy().astype(np.float64))


def usable(values: np.ndarray) -> bool:
    """Finite everywhere and not constant (the scorer raises on a constant prediction)."""
    return values.size > 0 and bool(np.isfinite(values).all()) and float(values.max() - values.min()) > 0


def spread_out(values: np.ndarray) -> np.ndarray:
    """`values` with a tiny index-ordered tie-break when constant, so that the answer is never constant."""
    if usable(values):
        return values
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.5, posinf=1.0, neginf=0.0)
    return values + np.linspace(0.0, 1e-6, len(values))


def answer_frame(target_names: list[str], values: np.ndarray) -> pl.DataFrame:
    """The one-row answer: one Float64 column per target, in order."""
    return float_frame(np.asarray(values, dtype=np.float64).reshape(1, -1), target_names)


# ----------------------------------------------------------------------------------------------------------------
# the predictor


class Predictor:
    """Answers one evaluation-API call at a time from its own history and an ensemble of checkpoints."""

    def __init__(
        self,
        history: History,
        pairs: pl.DataFrame,
        members: list[Member],
        prior: np.ndarray,
        device: torch.device | str = "cpu",
    ):
        self.history = history
        self.pairs = pairs.select("target", "lag", "pair")
        self.members = members
        self.prior = spread_out(np.asarray(prior, dtype=np.float64))
        self.device = torch.device(device)
        self.target_names = history.target_names
        self.raw_columns, self.label_targets = model_inputs(members, history)
        """The raw feature columns and targets some member's input features are computed from."""
        self.calls = 0
        self.fallback_calls = 0
        self.last_date: int | None = None
        self.last_source = "none"
        """"model" or "fallback": how the latest call was answered."""
        self._warned: set[str] = set()

    # construction

    @classmethod
    def from_run(
        cls, run_dir: str | Path, competition_dir: str | Path, device: str | torch.device = "auto"
    ) -> Predictor:
        """Verify the run's manifest, then load its checkpoints and the competition's published history.

        Raises ArtifactError (a missing, altered or unusable artefact, named) or DataError (competition files).
        """
        from spread.checkpoint import verify_manifest
        from spread.competition import load_competition

        run_dir, device = Path(run_dir), resolve_device(device)
        started = time.perf_counter()
        manifest = verify_manifest(run_dir)
        comp = load_competition(competition_dir, require_test=False)
        history = History.from_frames(comp.train, comp.labels, comp.pairs)
        names = manifest["inference"]["checkpoints"]
        if not names:
            raise ArtifactError(f"{run_dir / 'manifest.json'}: lists no inference checkpoint")
        members = [load_member(run_dir, name, comp.target_names, device) for name in names]
        prior = prior_from_run(run_dir, comp.target_names, manifest["inference"].get("prior", "prior.json"))
        log.info(
            "predictor: %d checkpoint(s) from %s on %s, history of %d dates, loaded in %.1f s",
            len(members), run_dir, device, len(history.features), time.perf_counter() - started,
        )
        return cls(history, comp.pairs, members, prior, device)

    @classmethod
    def prior_only(cls, competition_dir: str | Path, run_dir: str | Path | None = None) -> Predictor:
        """A predictor without a model: every call answers the prior (from the run if readable, else the labels)."""
        from spread.competition import load_competition

        comp = load_competition(competition_dir, require_test=False)
        history = History.from_frames(comp.train, comp.labels, comp.pairs)
        prior = None
        if run_dir is not None:
            try:
                prior = prior_from_run(Path(run_dir), comp.target_names)
            except ArtifactError as exc:
                log.warning("prior: %s; computing it from the training labels", exc)
        if prior is None:
            prior = prior_from_labels(comp.labels, comp.target_names)
        return cls(history, comp.pairs, [], prior)

    # one call

    def predict(
        self,
        test: pl.DataFrame,
        label_lags_1_batch: pl.DataFrame,
        label_lags_2_batch: pl.DataFrame,
        label_lags_3_batch: pl.DataFrame,
        label_lags_4_batch: pl.DataFrame,
    ) -> pl.DataFrame:
        """The answer for the date of `test`: one row, the targets in target_pairs order, finite. Never raises."""
        self.calls += 1
        values = None
        try:
            label_batches = (label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch)
            date_id = self.ingest(test, label_batches)
            values = self.model_prediction(date_id)
        except Exception as exc:  # the API call must be answered whatever happened
            self._log_failure(exc)
        if values is None:
            self.fallback_calls += 1
            self.last_source = "fallback"
            values = self.prior
        else:
            self.last_source = "model"
        if self.calls % SUMMARY_EVERY == 0:
            log.info("predictor: %d calls, %d answered by the fallback", self.calls, self.fallback_calls)
        return answer_frame(self.target_names, values)

    def ingest(self, test: pl.DataFrame, label_batches: Sequence[pl.DataFrame]) -> int:
        """Store the served rows and released labels; returns the date to predict (the latest served row's)."""
        for lag, batch in zip(LAGS, label_batches):
            try:
                self._ingest_labels(lag, batch)
            except Exception as exc:  # a bad label batch costs its labels, not the prediction
                self._warn_once(f"labels-{lag}", f"lag-{lag} batch ignored: {type(exc).__name__}: {exc}")
        self._check_columns(test)
        dates = _date_ids(test, "test batch")
        if not dates:
            raise DataError("test batch: no row")
        values = _numeric_row(test, self.history.feature_names)
        for date_id, row in zip(dates, values):
            self.history.add_features(date_id, row)
        self.last_date = max(dates)
        return self.last_date

    def _ingest_labels(self, lag: int, batch: pl.DataFrame | None) -> None:
        if batch is None or batch.height == 0 or lag not in self.history.columns_by_lag:
            return
        columns = self.history.columns_by_lag[lag]
        names = [self.target_names[j] for j in columns]
        values = _numeric_row(batch, names)
        served = _date_ids(batch, f"lag-{lag} batch")
        stated = None
        if "label_date_id" in batch.columns:
            stated = batch["label_date_id"].cast(pl.Int64, strict=False).to_list()
        for index, date_id in enumerate(served):
            label_date = date_id - lag - 1  # release rule: the lag-k label of date d is served on d + k + 1
            if stated is not None and stated[index] != label_date:
                self._warn_once(
                    f"label-date-{lag}",
                    f"lag-{lag} batch: label_date_id {stated[index]} on date {date_id}, expected {label_date}; "
                    "using the release rule",
                )
            self.history.add_labels(label_date, columns, values[index])

    def _check_columns(self, test: pl.DataFrame) -> None:
        known = set(self.history.feature_names) | {"date_id", "is_scored"}
        served = set(test.columns)
        extra = [c for c in test.columns if c not in known]
        missing = [c for c in self.history.feature_names if c not in served]
        if extra:
            self._warn_once("extra", f"test batch: ignoring {len(extra)} unknown column(s): {extra[:10]}")
        if missing:
            self._warn_once(
                "missing", f"test batch: {len(missing)} feature column(s) missing, taken as null: {missing[:10]}"
            )

    def model_prediction(self, date_id: int) -> np.ndarray | None:
        """The ensemble mean for `date_id`, or None (logged) when there is no model or its output is unusable."""
        if not self.members:
            return None
        from spread.windows import window_for_latest

        # One raw and one label frame for every member, of the inputs some member reads: each window keeps the tail
        # and the columns it needs.
        raw = self.history.raw_frame(date_id, max(member.raw_rows() for member in self.members), self.raw_columns)
        labels = self.history.label_frame(int(raw["date_id"][0]), date_id, self.label_targets)
        total = np.zeros(len(self.target_names))
        for member in self.members:
            batch = window_for_latest(
                raw, labels, self.pairs, member.cfg.features, member.scaler, member.scaler.names, member.cfg.data
            )
            total += run_member(member, batch, self.device)[0]
        values = total / len(self.members)
        if not usable(values):
            raise ArtifactError(f"model output for date_id {date_id} is not finite or is constant")
        return values

    # logging

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _log_failure(self, exc: Exception) -> None:
        key = f"failure-{type(exc).__name__}-{exc}"
        if key not in self._warned:
            self._warned.add(key)
            log.error(
                "predict call %d falls back to the prior: %s: %s", self.calls, type(exc).__name__, exc, exc_info=exc
            )
        else:
            log.warning("predict call %d falls back to the prior (%s, seen before)", self.calls, type(exc).__name__)

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "fallback_calls": self.fallback_calls}


# ----------------------------------------------------------------------------------------------------------------
# the function handed to the inference server


def emergency_answer(label_batches: Sequence[pl.DataFrame], target_names: list[str] | None) -> pl.DataFrame:
    """Last resort when not even the competition files load: distinct values for the known target names (from
    target_pairs, else the lag batches' columns, which the API always sends, empty or not)."""
    if not target_names:
        target_names = []
        for batch in label_batches:
            target_names += [c for c in batch.columns if c not in ("date_id", "label_date_id")]
    return answer_frame(target_names, np.linspace(0.25, 0.75, len(target_names)))


class LazyPredictor:
    """Loads a `Predictor` inside its first call; whatever fails, every call is answered."""

    def __init__(
        self, run_dir: str | Path | None, competition_dir: str | Path, device: str = "auto", strict: bool = False
    ):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.competition_dir = Path(competition_dir)
        self.device = device
        self.strict = strict
        self.predictor: Predictor | None = None
        self.load_error: Exception | None = None
        self.loaded = False
        """True once loading was attempted (it is never retried: a failure costs one try, not one per call)."""
        self.emergency_names: list[str] | None = None
        self.calls = 0
        self.fallback_calls = 0

    def load(self) -> None:
        """The predictor from the run; on failure (logged) a prior-only one; `strict` re-raises instead."""
        try:
            if self.run_dir is None:
                raise ArtifactError("no run folder given")
            self.predictor = Predictor.from_run(self.run_dir, self.competition_dir, self.device)
            return
        except Exception as exc:
            self.load_error = exc
            if self.strict:
                raise
            log.error("cannot load the run (%s: %s): every call answers the fallback prior", type(exc).__name__, exc)
        try:
            self.predictor = Predictor.prior_only(self.competition_dir, self.run_dir)
        except Exception as exc:
            self.load_error = exc
            log.error("no fallback prior either (%s: %s): emergency answers", type(exc).__name__, exc)

    def __call__(self, test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch):
        batches = (label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch)
        self.calls += 1
        try:
            if not self.loaded:
                self.loaded = True
                atexit.register(self.log_summary)
                self.load()
            if self.predictor is None:
                raise ArtifactError(f"no predictor: {self.load_error}")
            before = self.predictor.fallback_calls
            answer = self.predictor.predict(test, *batches)
            self.fallback_calls += self.predictor.fallback_calls - before
            return answer
        except Exception as exc:
            if self.strict:
                raise
            log.error("predict call %d: no predictor (%s: %s): emergency answer", self.calls, type(exc).__name__, exc)
            self.fallback_calls += 1
            if self.emergency_names is None:
                self.emergency_names = self._target_names() or []
            return emergency_answer(batches, self.emergency_names)

    def log_summary(self) -> None:
        """One line with the number of calls and of fallback answers (logged at exit, and callable any time)."""
        log.info("predict: %d calls, %d answered by the fallback", self.calls, self.fallback_calls)

    def _target_names(self) -> list[str] | None:
        try:
            return pl.read_csv(self.competition_dir / "target_pairs.csv")["target"].cast(pl.String).to_list()
        except Exception:  # the answer then takes the names from the lag batches
            return None

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "fallback_calls": self.fallback_calls}


def make_predict(
    run_dir: str | Path | None, competition_dir: str | Path, device: str = "auto", strict: bool = False
) -> Callable[..., pl.DataFrame]:
    """The `predict` function for the inference server; loads the run in its first call and never raises.

    With `strict`, a run that cannot be loaded raises from the first call instead of answering the fallback
    (for local checks). The function has `predict.stats()` -> {"calls", "fallback_calls"} and
    `predict.lazy` (the `LazyPredictor`).
    """
    lazy = LazyPredictor(run_dir, competition_dir, device=device, strict=strict)

    def predict(test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch):
        return lazy(test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch)

    predict.stats = lazy.stats
    predict.lazy = lazy
    return predict
