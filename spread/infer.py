"""Inference under the evaluation API: a predictor that keeps its own history, never fails a call, serves the model
wherever the model can run, and counts everything that made it serve less.

The competition calls `predict(test, lag1, lag2, lag3, lag4)` once per date with a one-row `test` frame and the
labels released that day (shared COMPETITION.md, "The evaluation API"); no history is passed, and the score only
exists if every call returns a valid row in time. So:

- Loading needs only what the model needs. `Predictor.from_run` reads the competition's training files tolerantly
  (`load_competition(serving=True)`: test.csv and the lag files are what the API serves, never a reason to drop the
  model) and checks against the run's `manifest.json` only the files it reads. Each selected checkpoint
  (`--members`: the manifest's inference checkpoints by default, or every holdout / fold / final checkpoint, or
  named folders) becomes one ensemble member on its own: a missing, altered or incomplete checkpoint, or one trained
  on other targets, lags or pairs, drops that member (loudly); a member that cannot be placed on the device is
  retried on the CPU; a differing data fingerprint is one warning. The model serves while one member loads.
- `History` holds the raw feature rows of `train.csv` and of every served date, and the labels of
  `train_labels.csv` and of every lag batch, keyed by date_id: a served row re-covering a stored date replaces its
  known values, a null never erases one (an all-null served row cannot overwrite a good train.csv row), and a value
  beyond `PLAUSIBLE_FACTOR` x train.csv's largest of its column (1e300) is read as null; a lag-k batch row served on
  date t holds the labels of date t - k - 1 (`spread.targets.release_date`). The window for date t is built by
  `spread.windows.window_for_latest`, the code that built the training windows, from rows up to t only: the
  revealed-label features place each label on its release date, so nothing released after t can reach the window.
  Only the raw columns and targets that the models' (screened) input features come from are read
  (`spread.features.panel_inputs`): same values, less work.
- `predict` never raises. A member that fails or whose raw output is not finite is dropped for that call; a call
  no member can answer (or a malformed batch that leaves no row) is answered by the fallback: the run's prior when
  its manifest vouches for it and it holds exactly the served targets, else one computed from train_labels.csv
  (`spread.prior`, 0.387 on the private leaderboard as a constant), else, when not even the competition's files
  read, the distinct-value placeholder; each step logged.
- Every problem is counted by kind (`Problems`; the first of each kind logged in full, then a running count) and
  every answer by source (`SOURCES`: all members, some members, prior, placeholder). `LazyPredictor.summary` holds
  the end-of-run numbers (also latency); `summary_text` writes them as one paragraph and `exit_status` makes a
  degraded run (`degradation`) exit 1 outside the competition's rerun (`KAGGLE_IS_COMPETITION_RERUN`), never in it.
- `make_predict` returns the function handed to the inference server: it loads the predictor inside its first
  call (which has no deadline), so the server starts in seconds; if loading fails, every call falls back.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from spread.errors import ArtifactError, DataError

if TYPE_CHECKING:
    from spread.competition import Competition
    from spread.config import Config
    from spread.scaling import Scaler

# The package's heavier modules are imported inside the functions that use them: if one cannot be imported on
# the Kaggle image, `import spread.infer` still succeeds, the server still starts and the calls fall back.

log = logging.getLogger(__name__)

LAGS = (1, 2, 3, 4)
"""Lag of each of the four label batches, in argument order."""
SUMMARY_EVERY = 50
"""Log a calls/answers/problems summary every this many calls."""
PLAUSIBLE_FACTOR = 1000.0
"""A served value more than this many times train.csv's largest |value| of its column (e.g. 1e300) is read as null."""
SOURCES = ("all_members", "some_members", "prior", "placeholder")
"""How a call can be answered: every loaded member, some of them (the others failed on it), the prior, the
placeholder (distinct values; only when not even a prior can be had)."""
ROLES = ("fold", "holdout", "final")
"""Checkpoint roles `--members` selects by (the checkpoint's `role`, else its fold record's name)."""
MEMBER_SETS = ("served", "holdout", "folds", "final")
"""Named member selections: the manifest's inference checkpoints, or every checkpoint of one role."""
RERUN_VARIABLE = "KAGGLE_IS_COMPETITION_RERUN"


# ----------------------------------------------------------------------------------------------------------------
# history


class History:
    """Raw feature rows and known labels keyed by date_id (latest known value wins), from train files and served
    batches."""

    def __init__(self, feature_names: list[str], target_names: list[str], target_lags: Sequence[int]):
        self.feature_names = list(feature_names)
        self.target_names = list(target_names)
        self.target_lags = np.asarray(target_lags, dtype=np.int64)
        self.features: dict[int, np.ndarray] = {}
        """date_id -> (F,) float64 raw values, NaN where missing."""
        self.labels: dict[int, np.ndarray] = {}
        """label date_id -> (N,) float64 labels, NaN where unknown."""
        self.columns_by_lag = {int(lag): np.flatnonzero(self.target_lags == lag) for lag in np.unique(self.target_lags)}
        self.bounds = np.full(len(self.feature_names), np.inf)
        """(F,) largest plausible |value| of each feature (PLAUSIBLE_FACTOR x train.csv's largest); beyond is null."""

    @classmethod
    def from_frames(cls, train: pl.DataFrame, labels: pl.DataFrame, pairs: pl.DataFrame) -> History:
        """The published history: train.csv rows and train_labels.csv rows (Float64 frames with date_id)."""
        feature_names = [c for c in train.columns if c != "date_id"]
        history = cls(feature_names, pairs["target"].to_list(), pairs["lag"].to_list())
        values = train.select(feature_names).to_numpy().astype(np.float64)
        for date_id, row in zip(train["date_id"].to_list(), values):
            history.features[int(date_id)] = row
        if len(values):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-null column has no bound
                largest = np.nanmax(np.abs(values), axis=0)
            history.bounds = np.where(np.isfinite(largest), PLAUSIBLE_FACTOR * (largest + 1.0), np.inf)
        label_values = labels.select(history.target_names).to_numpy().astype(np.float64)
        for date_id, row in zip(labels["date_id"].to_list(), label_values):
            history.labels[int(date_id)] = row
        return history

    @property
    def last_date(self) -> int | None:
        return max(self.features) if self.features else None

    def add_features(self, date_id: int, values: np.ndarray) -> None:
        """Store one served row: its known values replace those of an earlier row of the same date, a null never
        erases a known value (an all-null served row leaves the train.csv row as it was)."""
        values = np.asarray(values, dtype=np.float64)
        stored = self.features.get(int(date_id))
        self.features[int(date_id)] = values if stored is None else np.where(np.isnan(values), stored, values)

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


def _parse_cell(value: object) -> tuple[float, bool]:
    """(a served cell as a float, whether it was text that is not a number): numbers and numeric text convert,
    None and blank text are NaN, anything else ("n/a") is NaN and counted as text."""
    if value is None:
        return float("nan"), False
    try:
        return float(value), False
    except (TypeError, ValueError):
        return float("nan"), not (isinstance(value, str) and value.strip() == "")


@dataclass
class Cells:
    """A served frame's values of some named columns, and what was wrong with them."""

    values: np.ndarray
    """(rows, len(names)) float64; NaN where absent, null, text, non-finite or implausibly large."""
    missing: list[str]
    """Names the frame has no column for."""
    text: int
    """Cells that held text that is not a number ("n/a")."""
    infinite: int
    """Cells that held +-inf."""
    huge: int
    """Finite cells beyond their column's plausible bound."""


def _numeric_rows(frame: pl.DataFrame, names: list[str], bounds: np.ndarray | None = None) -> Cells:
    """The values of `names` in `frame`: absent columns, text, nulls, +-inf and values beyond `bounds` become NaN.

    The served frames have one row, so converting the row's Python values beats a polars cast per column
    (an all-empty column arrives as String: its None cells become NaN like any other null).
    """
    position = {name: j for j, name in enumerate(frame.columns)}
    pairs = [(j, position[name]) for j, name in enumerate(names) if name in position]
    values = np.full((frame.height, len(names)), np.nan)
    text = 0
    if pairs and frame.height:
        targets, sources = [j for j, _ in pairs], [k for _, k in pairs]
        for row_index, row in enumerate(frame.rows()):
            parsed = [_parse_cell(row[k]) for k in sources]
            values[row_index, targets] = [value for value, _ in parsed]
            text += sum(is_text for _, is_text in parsed)
    infinite = np.isinf(values)
    huge = np.zeros_like(infinite) if bounds is None else np.isfinite(values) & (np.abs(values) > bounds)
    values[infinite | huge] = np.nan
    missing = [name for name in names if name not in position]
    return Cells(values, missing, text, int(infinite.sum()), int(huge.sum()))


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
    """The frame's date_ids as integers (12, 12.0 and "12" alike); DataError when absent or not integral."""
    if "date_id" not in frame.columns:
        raise DataError(f"{where}: no date_id column")
    dates = []
    for value in frame["date_id"].to_list():
        number, _ = _parse_cell(value)
        if not np.isfinite(number) or number != round(number):
            raise DataError(f"{where}: date_id {value!r} is not an integer")
        dates.append(int(number))
    return dates


# ----------------------------------------------------------------------------------------------------------------
# problems: counted by kind, the first of each kind logged in full


class Problems:
    """Counts of every problem kind met while loading and serving; logs the first of each kind (per `key`) in full,
    then a running count at 10, 100, 1000, ... occurrences."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()

    def report(
        self, kind: str, message: str, level: int = logging.WARNING, key: str = "", exc: BaseException | None = None
    ) -> None:
        """Count one `kind`; log `message` (at `level`, with `exc`'s traceback) the first time for `key`."""
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if (kind, key) not in self._logged:
            self._logged.add((kind, key))
            log.log(level, "[%s] %s", kind, message, exc_info=exc)
        elif count in (10, 100, 1000) or count % 10_000 == 0:
            log.log(level, "[%s] %d times so far", kind, count)


# ----------------------------------------------------------------------------------------------------------------
# ensemble members


class RunMismatch(ArtifactError):
    """The run was trained for another competition (targets, lags or pairs differ): none of it may be served."""


@dataclass
class Member:
    """One checkpoint of the ensemble, ready to run."""

    name: str
    """Checkpoint path relative to the run folder (for the log)."""
    model: torch.nn.Module
    """The rebuilt model in eval mode, on `device`."""
    cfg: Config
    """The run's `spread.config.Config`, as saved in the checkpoint."""
    scaler: Scaler
    """The fold's `spread.scaling.Scaler` (its names are the model's input features)."""
    target_scale: torch.Tensor
    """(N,) per-target scale the trainer divided the targets by."""
    device: torch.device = torch.device("cpu")
    """Where the model runs (the CPU when it could not be loaded on the requested device)."""
    role: str = "fold"
    """"fold", "holdout" or "final" (see `checkpoint_role`)."""
    fold: dict | None = None
    """The checkpoint's fold record: name, train_dates [first, last] (label dates trained on), val_dates, cutoff."""

    def raw_rows(self) -> int:
        """Raw rows the latest window needs: L + the features' lookback."""
        return self.cfg.data.window + self.cfg.features.lookback()


def trained_dates(role: str, fold: dict | None, date_ids: Sequence[int]) -> list[int]:
    """The dates of `date_ids` whose labels a member of `role` with fold record `fold` trained on: inside the
    record's train_dates [first, last], or for a final fit anything up to its cutoff (none without a record)."""
    fold = fold or {}
    first, last = (list(fold.get("train_dates") or []) + [None, None])[:2]
    if role == "final" and fold.get("cutoff") is not None:
        first, last = None, fold["cutoff"]
    if last is None:
        return []
    return [int(d) for d in date_ids if (first is None or d >= first) and d <= last]


def checkpoint_role(ckpt: dict | None, name: str) -> str:
    """The checkpoint's `role` when it has a known one, else from its fold record's name (or its folder's):
    "holdout*" -> holdout, "final*" -> final, anything else (fold0, fold0-pruned) -> fold."""
    role = (ckpt or {}).get("role")
    if role in ROLES:
        return role
    fold_name = str(((ckpt or {}).get("fold") or {}).get("name") or name.split("/")[0])
    for prefix in ("holdout", "final"):
        if fold_name.startswith(prefix):
            return prefix
    return "fold"


def member_candidates(run_dir: Path, manifest: dict, members: str) -> tuple[list[str], str | None]:
    """(checkpoint names to try, role they must have or None) for a `--members` value: "served" (the manifest's
    inference checkpoints), "holdout" / "folds" / "final" (every listed <folder>/best.pt of that role), or a comma
    list of run-relative folder names."""
    if members == "served":
        return list(manifest["inference"]["checkpoints"]), None
    listed = sorted(name for name in manifest["artifacts"] if name.endswith("/best.pt") and name.count("/") == 1)
    if members in MEMBER_SETS:
        return listed, {"folds": "fold"}.get(members, members)
    folders = [folder.strip().strip("/") for folder in members.split(",") if folder.strip()]
    if not folders:
        raise ArtifactError(f"--members {members!r}: give served, holdout, folds, final or folder names")
    return [folder if folder.endswith(".pt") else f"{folder}/best.pt" for folder in folders], None


def build_member(run_dir: Path, name: str, ckpt: dict, comp: Competition, device: torch.device) -> Member:
    """One member from its loaded checkpoint; RunMismatch when it was trained for other targets or pairs,
    ArtifactError when it is incomplete."""
    from spread.checkpoint import build_model
    from spread.config import config_from_dict
    from spread.scaling import Scaler

    where = run_dir / name
    if list(ckpt["target_names"]) != comp.target_names:
        raise RunMismatch(f"{where}: trained for other targets than target_pairs.csv lists")
    if [int(lag) for lag in ckpt["target_lags"]] != comp.target_lags.tolist():
        raise RunMismatch(f"{where}: trained for other target lags than target_pairs.csv lists")
    pairs = ckpt.get("target_pairs")
    if pairs is not None and list(pairs) != comp.pairs["pair"].to_list():
        differ = [name for name, a, b in zip(comp.target_names, pairs, comp.pairs["pair"]) if a != b]
        raise RunMismatch(f"{where}: trained on other target pairs than target_pairs.csv lists (first: {differ[:3]})")
    if "scaler" not in ckpt:
        raise ArtifactError(f"{where}: checkpoint has no scaler statistics")
    scaler = Scaler.from_dict(ckpt["scaler"])
    if scaler.names != list(ckpt["feature_names"]):
        raise ArtifactError(f"{where}: scaler features differ from the model's input features")
    model = build_model(ckpt).to(device)
    scale = torch.as_tensor(ckpt["target_scale"], dtype=torch.float32).to(device)
    return Member(
        name=name, model=model, cfg=config_from_dict(ckpt["config"]), scaler=scaler, target_scale=scale,
        device=device, role=checkpoint_role(ckpt, name), fold=ckpt.get("fold"),
    )


def place_member(
    run_dir: Path, name: str, ckpt: dict, comp: Competition, device: torch.device, problems: Problems
) -> Member:
    """`build_member` on `device`, retried on the CPU (logged) when it fails there for any reason but a mismatch."""
    try:
        return build_member(run_dir, name, ckpt, comp, device)
    except RunMismatch:
        raise
    except Exception as exc:
        if device.type == "cpu":
            raise
        problems.report(
            "device-retry-cpu", f"{run_dir / name}: cannot load on {device} ({type(exc).__name__}: {exc}); "
            "retrying on the CPU", logging.ERROR, key=name,
        )
        return build_member(run_dir, name, ckpt, comp, torch.device("cpu"))


def load_members(
    run_dir: Path, manifest: dict, comp: Competition, device: torch.device, members: str, problems: Problems
) -> tuple[list[Member], dict[str, str]]:
    """(loaded members, {name: why it was refused}) of a `--members` selection. Each member is verified against
    the manifest and loaded on its own (one bad checkpoint drops that member only); a member that cannot be placed on
    `device` is retried on the CPU; a data fingerprint differing from the competition's is one warning."""
    from spread.checkpoint import data_fingerprint, load_checkpoint, verify_artifact

    names, role = member_candidates(run_dir, manifest, members)
    loaded, failed = [], {}
    fingerprint = None
    for name in names:
        try:
            ckpt = load_checkpoint(verify_artifact(run_dir, manifest, name))
        except ArtifactError as exc:
            if role is None or checkpoint_role(None, name) == role:
                failed[name] = str(exc)
                problems.report("member-refused", f"{exc}: member dropped", logging.ERROR, key=name)
            continue
        if role is not None and checkpoint_role(ckpt, name) != role:
            continue
        try:
            member = place_member(run_dir, name, ckpt, comp, device, problems)
        except Exception as exc:
            kind = "member-pairs-differ" if isinstance(exc, RunMismatch) else "member-refused"
            failed[name] = f"{type(exc).__name__}: {exc}"
            problems.report(kind, f"{exc}: member dropped", logging.ERROR, key=name)
            continue
        fingerprint = fingerprint or data_fingerprint(comp)
        if ckpt.get("data_fingerprint") not in (None, fingerprint):
            problems.report(
                "fingerprint-differs", f"{run_dir / name}: trained on other training files than {comp.root} holds "
                "(data fingerprint differs); serving it", logging.WARNING,
            )
        loaded.append(member)
    if not names or (role is not None and not loaded and not failed):
        raise ArtifactError(f"{run_dir}: no checkpoint for --members {members}")
    return loaded, failed


def model_inputs(members: Sequence[Member], history: History) -> tuple[list[str], list[str]]:
    """(raw columns, targets) of `history`, in its order, that the members' input features derive from."""
    from spread.features import panel_inputs

    features = {name for member in members for name in member.scaler.names}
    return panel_inputs(history.feature_names, history.target_names, features)


def run_member(member: Member, batch: dict[str, torch.Tensor], device: torch.device) -> np.ndarray | None:
    """(B, N) float64 submitted predictions of one member for a window batch, exactly as the trainer scores; None
    when any is not finite (the trainer's validation would score those as zeros; the predictor drops the member)."""
    from spread.forecast import predict_batch

    values = predict_batch(member.model, batch, member.target_scale, member.cfg.train, device)
    return values if np.isfinite(values).all() else None


# ----------------------------------------------------------------------------------------------------------------
# the fallback: the run's prior (checked), else one from the labels, else the placeholder


def checked_prior(path: Path, target_names: list[str]) -> np.ndarray:
    """The prior.json values in `target_names` order; ArtifactError unless it holds exactly those targets, each a
    rank in [0, 1] (a prior of another competition is not served)."""
    from spread.prior import read_prior

    names, values = read_prior(path)
    missing = [name for name in target_names if name not in set(names)]
    unexpected = [name for name in names if name not in set(target_names)]
    if missing or unexpected:
        raise ArtifactError(
            f"{path}: its targets differ from the served ones: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    if ((values < 0) | (values > 1)).any():
        raise ArtifactError(f"{path}: prior values must be ranks in [0, 1]")
    by_name = dict(zip(names, values.tolist()))
    return np.array([by_name[name] for name in target_names], dtype=np.float64)


def prior_from_labels(labels: pl.DataFrame, target_names: list[str]) -> np.ndarray:
    """The mean-historical-rank prior computed from a label frame (a target it lacks gets the middle rank)."""
    from spread.prior import UNSEEN, mean_rank_prior

    present = [name for name in target_names if name in labels.columns]
    values = labels.select([pl.col(name).cast(pl.Float64, strict=False) for name in present]).to_numpy()
    by_name = dict(zip(present, mean_rank_prior(values.astype(np.float64)).tolist()))
    return np.array([by_name.get(name, UNSEEN) for name in target_names], dtype=np.float64)


def served_prior(
    run_dir: Path | None, target_names: list[str], labels: Callable[[], pl.DataFrame], problems: Problems,
    trust_run: bool = True,
) -> tuple[np.ndarray, str]:
    """(prior, "run" | "labels"): the run's prior.json when its manifest vouches for it and it holds exactly the
    served targets, else one computed from `labels()` (train_labels.csv), each step logged. `trust_run` False (a
    run trained for another competition) skips the run's prior."""
    from spread.checkpoint import read_manifest, verify_artifact

    if run_dir is not None and trust_run:
        try:
            manifest = read_manifest(run_dir)
            path = verify_artifact(run_dir, manifest, manifest["inference"].get("prior", "prior.json"))
            return checked_prior(path, target_names), "run"
        except ArtifactError as exc:
            problems.report("prior-from-labels", f"{exc}; computing the prior from train_labels.csv", logging.ERROR)
    elif run_dir is not None:
        problems.report("prior-from-labels", f"{run_dir} was trained for another competition: its prior is not "
                        "served; computing the prior from train_labels.csv", logging.ERROR)
    return prior_from_labels(labels(), target_names), "labels"


def usable(values: np.ndarray) -> bool:
    """Finite everywhere and not constant (the scorer raises on a constant prediction)."""
    return values.size > 0 and bool(np.isfinite(values).all()) and float(values.max() - values.min()) > 0


def break_ties(values: np.ndarray) -> np.ndarray:
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


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """First-call seconds and p50/p90/p99/max/mean milliseconds of the later calls."""
    later = np.asarray(seconds[1:] or seconds, dtype=np.float64) * 1000.0
    return {
        "calls": len(seconds),
        "first_s": float(seconds[0]) if seconds else float("nan"),
        "p50_ms": float(np.percentile(later, 50)),
        "p90_ms": float(np.percentile(later, 90)),
        "p99_ms": float(np.percentile(later, 99)),
        "max_ms": float(later.max()),
        "mean_ms": float(later.mean()),
    }


class Predictor:
    """Answers one evaluation-API call at a time from its own history and an ensemble of checkpoints."""

    def __init__(
        self,
        history: History,
        pairs: pl.DataFrame,
        members: list[Member],
        prior: np.ndarray,
        device: torch.device | str = "cpu",
        problems: Problems | None = None,
        failed: dict[str, str] | None = None,
        prior_source: str = "given",
    ):
        self.history = history
        self.pairs = pairs.select("target", "lag", "pair")
        self.members = members
        self.prior = break_ties(np.asarray(prior, dtype=np.float64))
        self.prior_source = prior_source
        """Where the prior came from: "run" (its prior.json), "labels" (train_labels.csv) or "given"."""
        self.device = torch.device(device)
        self.target_names = history.target_names
        self.raw_columns, self.label_targets = model_inputs(members, history)
        """The raw feature columns and targets some member's input features are computed from."""
        self.problems = problems or Problems()
        self.failed = dict(failed or {})
        """Checkpoints that were selected but not loaded: name -> why."""
        self.calls = 0
        self.fallback_calls = 0
        self.answers = dict.fromkeys(SOURCES, 0)
        """Calls answered by each source (see SOURCES); the predictor itself never answers the placeholder."""
        self.last_date: int | None = None
        self.last_source = "none"
        """"model" or "fallback": how the latest call was answered."""

    # construction

    @classmethod
    def from_run(
        cls, run_dir: str | Path, competition_dir: str | Path, device: str | torch.device = "auto",
        members: str = "served", problems: Problems | None = None,
    ) -> Predictor:
        """Load the `members` selection of a run (see `member_candidates`) and the competition's published history.

        Only what inference reads is checked against the manifest (each checkpoint, prior.json) and only the
        training files of the competition are read (tolerantly); one bad member drops that member. Raises
        ArtifactError (no member loads, named) or DataError (unreadable training files). Problems are counted into
        `problems` (default: a new counter), which outlives a failed load.
        """
        from spread.checkpoint import read_manifest
        from spread.competition import load_competition
        from spread.runtime import resolve_device

        run_dir, device = Path(run_dir), resolve_device(device, strict=False)
        started = time.perf_counter()
        problems = Problems() if problems is None else problems
        manifest = read_manifest(run_dir)
        comp = load_competition(competition_dir, serving=True)
        loaded, failed = load_members(run_dir, manifest, comp, device, members, problems)
        if not loaded:
            reasons = "; ".join(failed.values())
            error = RunMismatch if "member-pairs-differ" in problems.counts else ArtifactError
            raise error(f"no member of {run_dir} loads: {reasons}")
        history = History.from_frames(comp.train, comp.labels, comp.pairs)
        prior, source = served_prior(run_dir, comp.target_names, lambda: comp.labels, problems)
        log.info(
            "predictor: %d of %d member(s) (%s) from %s on %s, history of %d dates, prior from the %s, loaded in "
            "%.1f s", len(loaded), len(loaded) + len(failed), members, run_dir, device, len(history.features), source,
            time.perf_counter() - started,
        )
        return cls(history, comp.pairs, loaded, prior, device, problems, failed, source)

    @classmethod
    def prior_only(
        cls, competition_dir: str | Path, run_dir: str | Path | None = None, trust_run: bool = True,
        problems: Problems | None = None,
    ) -> Predictor:
        """A predictor without a model: every call answers the prior (the run's when it is checked good, else one
        from the labels; `trust_run` False skips the run's)."""
        from spread.competition import load_competition

        comp = load_competition(competition_dir, serving=True)
        history = History.from_frames(comp.train, comp.labels, comp.pairs)
        problems = Problems() if problems is None else problems
        run = None if run_dir is None else Path(run_dir)
        prior, source = served_prior(run, comp.target_names, lambda: comp.labels, problems, trust_run)
        return cls(history, comp.pairs, [], prior, problems=problems, prior_source=source)

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
        result = None
        try:
            label_batches = (label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch)
            date_id = self.ingest(test, label_batches)
            result = self.model_prediction(date_id)
        except Exception as exc:  # the API call must be answered whatever happened
            self.problems.report(
                "call-failed", f"predict call {self.calls} falls back to the prior: {type(exc).__name__}: {exc}",
                logging.ERROR, key=f"{type(exc).__name__}: {exc}", exc=exc,
            )
        if result is None:
            self.fallback_calls += 1
            self.last_source = "fallback"
            self.answers["prior"] += 1
            values = self.prior
        else:
            values, used = result
            self.last_source = "model"
            self.answers["all_members" if used == len(self.members) else "some_members"] += 1
        if self.calls % SUMMARY_EVERY == 0:
            log.info("predictor: %d calls, answers %s, problems %s", self.calls, self.answers, self.problems.counts)
        return answer_frame(self.target_names, values)

    def ingest(self, test: pl.DataFrame, label_batches: Sequence[pl.DataFrame]) -> int:
        """Store the served rows and released labels; returns the date to predict (the latest served row's)."""
        for lag, batch in zip(LAGS, label_batches):
            try:
                self._ingest_labels(lag, batch)
            except Exception as exc:  # a bad label batch costs its labels, not the prediction
                self.problems.report(
                    "lag-batch-unreadable", f"lag-{lag} batch ignored: {type(exc).__name__}: {exc}", key=str(lag)
                )
        if not isinstance(test, pl.DataFrame):
            raise DataError(f"test batch: expected a polars DataFrame, got {type(test).__name__}")
        self._check_columns(test)
        try:
            dates = _date_ids(test, "test batch")
        except DataError as exc:
            self.problems.report("test-bad-date", str(exc))
            raise
        if not dates:
            self.problems.report("test-no-row", "test batch: no row")
            raise DataError("test batch: no row")
        if len(dates) > 1:
            self.problems.report(
                "test-rows", f"test batch: {len(dates)} rows (date_ids {dates[:5]}); predicting the latest"
            )
        cells = _numeric_rows(test, self.history.feature_names, self.history.bounds)
        self._report_cells("test", "test batch", cells)
        for date_id, row in zip(dates, cells.values):
            if np.isnan(row).all():
                self.problems.report("test-all-null-row", f"test batch: date_id {date_id}: every feature is null"
                                     " (a stored row of that date is kept)")
            self.history.add_features(date_id, row)
        self._check_date(max(dates))
        self.last_date = max(dates)
        return self.last_date

    def _check_date(self, date_id: int) -> None:
        """Count a served date that repeats, goes back or skips ahead of the previous call's."""
        previous = self.last_date
        if previous is None:
            return
        if date_id == previous:
            self.problems.report("date-repeated", f"test batch: date_id {date_id} served again")
        elif date_id < previous:
            self.problems.report("date-backward", f"test batch: date_id {date_id} after {previous}")
        elif date_id > previous + 1:
            self.problems.report("date-gap", f"test batch: date_id {date_id} after {previous} (dates skipped)")

    def _report_cells(self, kind: str, where: str, cells: Cells) -> None:
        if cells.text:
            self.problems.report(f"{kind}-text", f"{where}: {cells.text} text cell(s) read as null")
        if cells.infinite:
            self.problems.report(f"{kind}-inf", f"{where}: {cells.infinite} +-inf cell(s) read as null")
        if cells.huge:
            self.problems.report(
                f"{kind}-implausible", f"{where}: {cells.huge} cell(s) beyond {PLAUSIBLE_FACTOR:g}x train.csv's "
                "largest value of their column read as null"
            )

    def _ingest_labels(self, lag: int, batch: pl.DataFrame | None) -> None:
        if batch is None:
            self.problems.report("lag-batch-none", f"lag-{lag} batch is None", key=str(lag))
            return
        if not isinstance(batch, pl.DataFrame):
            raise DataError(f"expected a polars DataFrame, got {type(batch).__name__}")
        if lag not in self.history.columns_by_lag:
            return
        if batch.height == 0:
            if self.calls > lag + 1:  # the first lag + 1 dates have no released label yet: empty is normal there
                self.problems.report("lag-batch-empty", f"lag-{lag} batch empty on call {self.calls}", key=str(lag))
            return
        columns = self.history.columns_by_lag[lag]
        names = [self.target_names[j] for j in columns]
        cells = _numeric_rows(batch, names)
        if cells.missing:
            self.problems.report(
                "lag-batch-missing-columns", f"lag-{lag} batch: {len(cells.missing)} target column(s) missing, "
                f"taken as null: {cells.missing[:10]}", key=str(lag),
            )
        self._report_cells("lag-batch", f"lag-{lag} batch", cells)
        served = _date_ids(batch, f"lag-{lag} batch")
        stated = None
        if "label_date_id" in batch.columns:
            stated = [_parse_cell(value)[0] for value in batch["label_date_id"].to_list()]
        for index, date_id in enumerate(served):
            label_date = date_id - lag - 1  # release rule: the lag-k label of date d is served on d + k + 1
            if stated is not None and stated[index] != label_date:
                self.problems.report(
                    "lag-batch-label-date",
                    f"lag-{lag} batch: label_date_id {stated[index]} on date {date_id}, expected {label_date}; "
                    "using the release rule", key=str(lag),
                )
            self.history.add_labels(label_date, columns, cells.values[index])

    def _check_columns(self, test: pl.DataFrame) -> None:
        known = set(self.history.feature_names) | {"date_id", "is_scored"}
        served = set(test.columns)
        extra = [c for c in test.columns if c not in known]
        missing = [c for c in self.history.feature_names if c not in served]
        if extra:
            self.problems.report(
                "test-extra-columns", f"test batch: ignoring {len(extra)} unknown column(s): {extra[:10]}"
            )
        if missing:
            self.problems.report(
                "test-missing-columns", f"test batch: {len(missing)} feature column(s) missing, taken as null: "
                f"{missing[:10]}"
            )

    def model_prediction(self, date_id: int) -> tuple[np.ndarray, int] | None:
        """(ensemble mean for `date_id`, members that answered), or None (logged) when there is no model or no
        member gives a usable output. A member that fails or gives a non-finite output is dropped for the call."""
        if not self.members:
            return None
        from spread.windows import window_for_latest

        # One raw and one label frame for every member, of the inputs some member reads: each window keeps the tail
        # and the columns it needs.
        raw = self.history.raw_frame(date_id, max(member.raw_rows() for member in self.members), self.raw_columns)
        labels = self.history.label_frame(int(raw["date_id"][0]), date_id, self.label_targets)
        outputs = []
        for member in self.members:
            try:
                batch = window_for_latest(
                    raw, labels, self.pairs, member.cfg.features, member.scaler, member.scaler.names, member.cfg.data
                )
                values = run_member(member, batch, member.device)
            except Exception as exc:  # one member's failure costs that member, not the call
                self.problems.report(
                    "member-failed", f"member {member.name} failed on date_id {date_id}, dropped for the call: "
                    f"{type(exc).__name__}: {exc}", logging.ERROR, key=member.name, exc=exc,
                )
                continue
            if values is None:
                self.problems.report(
                    "member-non-finite", f"member {member.name}: non-finite output on date_id {date_id}, dropped "
                    "for the call", logging.ERROR, key=member.name,
                )
                continue
            outputs.append(values[0])
        if not outputs:
            return None
        mean = np.mean(outputs, axis=0)
        if not usable(mean):
            self.problems.report(
                "ensemble-unusable", f"model output for date_id {date_id} is not finite or is constant"
            )
            return None
        return mean, len(outputs)

    def stats(self) -> dict:
        """{"calls", "fallback_calls", "answers": {source: calls}, "problems": {kind: count}}."""
        return {
            "calls": self.calls, "fallback_calls": self.fallback_calls, "answers": dict(self.answers),
            "problems": dict(self.problems.counts),
        }


# ----------------------------------------------------------------------------------------------------------------
# the function handed to the inference server, and the end-of-run summary


def in_rerun() -> bool:
    """True in the competition's rerun on the hidden test set (never fail a call there)."""
    return os.getenv(RERUN_VARIABLE) is not None


def degradation(summary: dict) -> list[str]:
    """Why a run served less than its model: members that did not load, calls that fell back, calls answered by
    fewer members than loaded. Empty when the model served every call with every member."""
    reasons = []
    failed = summary["members"]["failed"]
    if failed:
        reasons.append(f"{len(failed)} member(s) did not load ({'; '.join(f'{k}: {v}' for k, v in failed.items())})")
    answers = summary["answers"]
    fell_back = answers["prior"] + answers["placeholder"]
    if fell_back:
        reasons.append(f"{fell_back} of {summary['calls']} call(s) fell back (prior {answers['prior']}, "
                       f"placeholder {answers['placeholder']})")
    if answers["some_members"]:
        reasons.append(f"{answers['some_members']} call(s) answered by fewer members than loaded")
    return reasons


def summary_text(summary: dict) -> str:
    """The end-of-run summary as one paragraph."""
    answers = ", ".join(f"{source.replace('_', ' ')} {summary['answers'][source]}" for source in SOURCES)
    problems = ", ".join(f"{kind} {count}" for kind, count in sorted(summary["problems"].items())) or "none"
    latency = summary["latency"]
    timing = (f"first call {latency['first_s']:.3f} s, later p50 {latency['p50_ms']:.1f} ms, p99 "
              f"{latency['p99_ms']:.1f} ms" if summary["calls"] else "no call")
    members = summary["members"]
    text = (
        f"predict: {summary['calls']} call(s); answers by source: {answers}; members loaded "
        f"{len(members['loaded'])}, failed {len(members['failed'])}; prior: {summary['prior_source']}; "
        f"problems: {problems}; latency: {timing}."
    )
    reasons = summary["degraded"]
    if reasons:
        return f"{text} DEGRADED: {'; '.join(reasons)}."
    return text + (" Every call was answered by every member." if summary["calls"] else "")


def exit_status(summary: dict) -> int:
    """The exit code of a serving command: 1 when the run was degraded outside the rerun, else 0 (under the rerun
    a degraded run is logged, never failed)."""
    return 1 if summary["degraded"] and not in_rerun() else 0


def emergency_values(
    target_names: list[str], run_dir: Path | None, competition_dir: Path, problems: Problems
) -> tuple[np.ndarray, str]:
    """(values, "prior" | "placeholder") when no predictor could be built: the run's prior checked against
    `target_names`, else a prior from train_labels.csv, else distinct placeholder values; each step logged."""
    from spread.competition import LABELS, read_text_csv

    def labels() -> pl.DataFrame:
        return read_text_csv(competition_dir / LABELS)

    try:
        values, source = served_prior(run_dir, target_names, labels, problems)
        return break_ties(values), "prior"
    except Exception as exc:  # nothing left but the placeholder
        problems.report("placeholder", f"no prior either ({type(exc).__name__}: {exc}): placeholder answers",
                        logging.ERROR)
    return np.linspace(0.25, 0.75, len(target_names)), "placeholder"


class LazyPredictor:
    """Loads a `Predictor` inside its first call; whatever fails, every call is answered."""

    def __init__(
        self, run_dir: str | Path | None, competition_dir: str | Path, device: str = "auto", strict: bool = False,
        members: str = "served",
    ):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.competition_dir = Path(competition_dir)
        self.device = device
        self.strict = strict
        self.members = members
        self.predictor: Predictor | None = None
        self.load_error: Exception | None = None
        self.loaded = False
        """True once loading was attempted (it is never retried: a failure costs one try, not one per call)."""
        self.problems = Problems()
        """Every problem met: loading the run, serving (the predictor counts into it), the emergency answers."""
        self.emergency: tuple[list[str], np.ndarray, str] | None = None
        self.calls = 0
        self.fallback_calls = 0
        self.placeholder_calls = 0
        self.emergency_prior_calls = 0
        self.seconds: list[float] = []

    def load(self) -> None:
        """The predictor from the run; on failure (logged) a prior-only one; `strict` re-raises instead."""
        try:
            if self.run_dir is None:
                raise ArtifactError("no run folder given")
            self.predictor = Predictor.from_run(
                self.run_dir, self.competition_dir, self.device, self.members, self.problems
            )
            return
        except Exception as exc:
            self.load_error = exc
            if self.strict:
                raise
            self.problems.report(
                "run-not-loaded", f"cannot load the run ({type(exc).__name__}: {exc}): every call answers the "
                "fallback prior", logging.ERROR,
            )
        try:
            trust = not isinstance(self.load_error, RunMismatch)
            self.predictor = Predictor.prior_only(self.competition_dir, self.run_dir, trust, self.problems)
        except Exception as exc:
            self.problems.report("no-predictor", f"no history either ({type(exc).__name__}: {exc}): emergency "
                                 "answers", logging.ERROR)

    def __call__(self, test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch):
        started = time.perf_counter()
        try:
            return self._answer(test, (label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch))
        finally:
            self.seconds.append(time.perf_counter() - started)

    def _answer(self, test, batches):
        self.calls += 1
        try:
            if not self.loaded:
                self.loaded = True
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
            self.fallback_calls += 1
            names, values, source = self._emergency(batches)
            self.problems.report("emergency-answer", f"predict call {self.calls}: no predictor ({type(exc).__name__}: "
                                 f"{exc}): {source} answer", logging.ERROR)
            if source == "placeholder":
                self.placeholder_calls += 1
            else:
                self.emergency_prior_calls += 1
            return answer_frame(names, values)

    def _emergency(self, batches: Sequence[pl.DataFrame]) -> tuple[list[str], np.ndarray, str]:
        """(target names, values, source) of the emergency answer, computed once: names from target_pairs, else
        from the lag batches' columns (which the API always sends, empty or not)."""
        if self.emergency is None:
            names = self._target_names()
            if not names:
                names = []
                for batch in batches:
                    if isinstance(batch, pl.DataFrame):
                        names += [c for c in batch.columns if c not in ("date_id", "label_date_id")]
            values, source = emergency_values(names, self.run_dir, self.competition_dir, self.problems)
            self.emergency = (names, values, source)
        return self.emergency

    def _target_names(self) -> list[str] | None:
        from spread.competition import PAIRS, read_text_csv

        try:
            return read_text_csv(self.competition_dir / PAIRS)["target"].to_list()
        except Exception:  # the answer then takes the names from the lag batches
            return None

    def summary(self) -> dict:
        """The end-of-run numbers: calls, answers by source, members loaded/failed, problems per kind, latency
        (first call, p50/p99 of the later ones) and the reasons the run was degraded (`degradation`)."""

        predictor = self.predictor
        answers = dict.fromkeys(SOURCES, 0) if predictor is None else dict(predictor.answers)
        answers["prior"] += self.emergency_prior_calls
        answers["placeholder"] += self.placeholder_calls
        problems = dict(self.problems.counts)
        failed = {} if predictor is None else dict(predictor.failed)
        if self.load_error is not None and self.loaded:
            failed.setdefault(str(self.run_dir or "run folder"), f"{type(self.load_error).__name__}: {self.load_error}")
        members = [] if predictor is None else predictor.members
        latency = latency_stats(self.seconds) if self.seconds else {"first_s": float("nan"), "p50_ms": float("nan"),
                                                                     "p99_ms": float("nan")}
        summary = {
            "calls": self.calls,
            "answers": answers,
            "members": {
                "loaded": [member.name for member in members], "failed": failed,
                "served": [{"name": m.name, "role": m.role, "fold": m.fold} for m in members],
            },
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "prior_source": "none" if predictor is None else predictor.prior_source,
            "problems": problems,
            "latency": {key: latency[key] for key in ("first_s", "p50_ms", "p99_ms")},
        }
        summary["degraded"] = degradation(summary)
        return summary

    def log_summary(self) -> None:
        """The end-of-run summary paragraph, logged (an error when degraded)."""
        summary = self.summary()
        log.log(logging.ERROR if summary["degraded"] else logging.INFO, "%s", summary_text(summary))

    def stats(self) -> dict:
        """{"calls", "fallback_calls", "answers", "problems"} (see `summary` for everything)."""
        summary = self.summary()
        return {"calls": self.calls, "fallback_calls": self.fallback_calls, "answers": summary["answers"],
                "problems": summary["problems"]}


def make_predict(
    run_dir: str | Path | None, competition_dir: str | Path, device: str = "auto", strict: bool = False,
    members: str = "served",
) -> Callable[..., pl.DataFrame]:
    """The `predict` function for the inference server; loads the run in its first call and never raises.

    `members` selects the checkpoints (see `member_candidates`). With `strict`, a run that cannot be loaded raises
    from the first call instead of answering the fallback (for local checks). The function has `predict.stats()`
    -> {"calls", "fallback_calls", "answers", "problems"}, `predict.summary()` (the end-of-run numbers, see
    `LazyPredictor.summary`) and `predict.lazy` (the `LazyPredictor`).
    """
    lazy = LazyPredictor(run_dir, competition_dir, device=device, strict=strict, members=members)

    def predict(test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch):
        return lazy(test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch)

    predict.stats = lazy.stats
    predict.summary = lazy.summary
    predict.lazy = lazy
    return predict
