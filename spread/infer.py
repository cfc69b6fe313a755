"""Inference under the evaluation API: a predictor that keeps its own history, never fails a call, serves the model
wherever the model can run, and counts everything that made it serve less.

The competition calls `predict(test, lag1, lag2, lag3, lag4)` once per date with a one-row `test` frame and the
labels released that day (shared COMPETITION.md, "The evaluation API"); no history is passed, and the score only
exists if every call returns a valid row in time. The serving path, in the order a call meets it:

- `spread.served`: the `History` of raw rows and known labels, and the `Intake` that reads each call's untrusted
  batches into it. `spread.problems`: every problem counted by kind, the first of each kind logged in full.
- `spread.members`: the `--members` selection loaded member by member, verified against the run's manifest,
  placed on the device (else the CPU), run exactly as the trainer scores.
- `spread.fallback`: the run's prior (checked), else one from train_labels.csv, else the placeholder.
- `spread.online`: the online update of the model's answer from the labels released so far (`serve.update`),
  under a wall-clock guard; a failed or overrun update answers the model's own output.
- Here: `Predictor.from_run` reads the competition's training files tolerantly (`load_competition(serving=True)`:
  test.csv and the lag files are what the API serves, never a reason to drop the model) and loads the members.
  The window for date t is built by `spread.windows.window_for_latest`, the code that built the training windows,
  from only the raw columns and targets the members' (screened) input features come from
  (`spread.features.panel_inputs`): same values, less work. `predict` never raises: a member that fails or whose
  raw output is not finite is dropped for that call, and a call no member can answer (or a malformed batch that
  leaves no row) is answered by the fallback. Every answer is counted by source (`SOURCES`);
  `LazyPredictor.summary` holds the end-of-run numbers (also latency); `summary_text` writes them as one paragraph
  and `exit_status` makes a degraded run (`degradation`) exit 1 outside the competition's rerun
  (`KAGGLE_IS_COMPETITION_RERUN`), never in it.
- `make_predict` returns the function handed to the inference server: it loads the predictor inside its first
  call (which has no deadline), so the server starts in seconds; if loading fails, every call falls back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from spread.errors import ArtifactError
from spread.fallback import break_ties, emergency_values, served_prior, usable
from spread.members import Member, RunMismatch, load_members, model_inputs, run_member
from spread.online import OnlineUpdate, ServeConfig
from spread.problems import Problems
from spread.served import History, Intake, float_frame

# The package's heavier modules are imported inside the functions that use them: if one cannot be imported on
# the Kaggle image, `import spread.infer` still succeeds, the server still starts and the calls fall back.

log = logging.getLogger(__name__)

SUMMARY_EVERY = 50
"""Log a calls/answers/problems summary every this many calls."""
SOURCES = ("all_members", "some_members", "prior", "placeholder")
"""How a call can be answered: every loaded member, some of them (the others failed on it), the prior, the
placeholder (distinct values; only when not even a prior can be had)."""
RERUN_VARIABLE = "KAGGLE_IS_COMPETITION_RERUN"
WINDOW_ROWS_MISSING = "window-rows-missing"
"""The problem kind of a call whose window spans dates with no stored row (a degradation: the model answers
without those rows)."""


# ----------------------------------------------------------------------------------------------------------------
# the predictor


def answer_frame(target_names: list[str], values: np.ndarray) -> pl.DataFrame:
    """The one-row answer: one Float64 column per target, in order."""
    return float_frame(np.asarray(values, dtype=np.float64).reshape(1, -1), target_names)


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
        serve: ServeConfig | None = None,
        answer_names: list[str] | None = None,
    ):
        self.history = history
        self.pairs = pairs.select("target", "lag", "pair")
        self.members = members
        self.prior = break_ties(np.asarray(prior, dtype=np.float64))
        self.prior_source = prior_source
        """Where the prior came from: "run" (its prior.json), "labels" (train_labels.csv) or "given"."""
        self.device = torch.device(device)
        self.target_names = history.target_names
        self.answer_names = list(answer_names or self.target_names)
        """The answer's columns: target_pairs.csv's order, which may differ from the run's (`target_names`)."""
        position = {name: j for j, name in enumerate(self.target_names)}
        self.answer_index = np.array([position[name] for name in self.answer_names], dtype=np.int64)
        self.raw_columns, self.label_targets = model_inputs(members, history)
        """The raw feature columns and targets some member's input features are computed from."""
        self.problems = problems or Problems()
        self.failed = dict(failed or {})
        """Checkpoints that were selected but not loaded: name -> why."""
        self.calls = 0
        self.fallback_calls = 0
        self.answers = dict.fromkeys(SOURCES, 0)
        """Calls answered by each source (see SOURCES); the predictor itself never answers the placeholder."""
        self.intake = Intake(history, self.problems)
        """Reads each call's batches into `history`, counting their problems."""
        self.last_source = "none"
        """"model" or "fallback": how the latest call was answered."""
        self.online = OnlineUpdate(serve or ServeConfig(), history, self.problems)
        """The online update of the model's answers (`serve.update`; `spread.online`)."""

    # construction

    @classmethod
    def from_run(
        cls, run_dir: str | Path, competition_dir: str | Path, device: str | torch.device = "auto",
        members: str = "served", problems: Problems | None = None, update: str | None = None,
    ) -> Predictor:
        """Load the `members` selection of a run (see `spread.members.member_candidates`) and the competition's
        published history. The online update is the run's `serve` section (its first member's config), with
        `update` (a `spread.online.POLICIES` name) replacing its policy when given.

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
        served_names = comp.target_names
        order = run_target_order(run_dir, manifest)
        if order is not None and order != served_names and sorted(order) == sorted(served_names):
            problems.report("target-order-differs", f"{Path(competition_dir) / 'target_pairs.csv'} lists the run's "
                            "targets in another order: the model serves in the run's order, answers in the file's")
            comp = comp.in_target_order(order)
        loaded, failed = load_members(run_dir, manifest, comp, device, members, problems)
        if not loaded:
            reasons = "; ".join(failed.values())
            error = RunMismatch if "member-pairs-differ" in problems.counts else ArtifactError
            raise error(f"no member of {run_dir} loads: {reasons}")
        history = History.from_frames(comp.train, comp.labels, comp.pairs)
        cutoff = replay_cutoff(loaded) if members == "holdout" else None  # the honest replay (gateway --members)
        if cutoff is None:
            prior, source = served_prior(run_dir, comp.target_names, lambda: comp.labels, problems)
        else:  # a replay of fold or holdout members: a fallback answer must not know what they did not
            from spread.prior import mean_rank_prior
            from spread.windows import released_labels

            prior, source = mean_rank_prior(released_labels(comp, cutoff)), f"labels released by {cutoff}"
        serve = loaded[0].cfg.serve if update is None else replace(loaded[0].cfg.serve, update=update)
        log.info(
            "predictor: %d of %d member(s) (%s) from %s on %s, history of %d dates, prior from the %s, online update "
            "%s, loaded in %.1f s", len(loaded), len(loaded) + len(failed), members, run_dir, device,
            len(history.features), source, serve.update, time.perf_counter() - started,
        )
        return cls(history, comp.pairs, loaded, prior, device, problems, failed, source, serve, served_names)

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
            date_id = self.intake.ingest(test, label_batches, self.calls)
            result = self.model_prediction(date_id)
            if result is not None:
                result = self.online.answer(date_id, result[0]), result[1]
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
        return answer_frame(self.answer_names, np.asarray(values)[self.answer_index])


    def model_prediction(self, date_id: int) -> tuple[np.ndarray, int] | None:
        """(ensemble mean for `date_id`, members that answered), or None (logged) when there is no model or no
        member gives a usable output. A member that fails or gives a non-finite output is dropped for the call."""
        if not self.members:
            return None
        from spread.windows import window_for_latest

        # One raw and one label frame for every member, of the inputs some member reads: each window keeps the tail
        # and the columns it needs.
        n_rows = max(member.raw_rows() for member in self.members)
        missing = self.history.missing_dates(date_id, n_rows)
        if missing:  # a gap in the history (e.g. served dates that do not continue train.csv): said, then answered
            self.problems.report(
                WINDOW_ROWS_MISSING, f"window for date {date_id}: {len(missing)} of its {n_rows} dates, from "
                f"{missing[0]} to {missing[-1]}, have no row in train.csv or the served batches; the model answers "
                "without them")
        raw = self.history.raw_frame(date_id, n_rows, self.raw_columns)
        labels = self.history.label_frame(int(raw["date_id"][0]), date_id, self.label_targets)
        outputs, windows = [], {}  # members with the same inputs (a seed ensemble) share one window
        for member in self.members:
            try:
                batch = windows.get(member.inputs_key)
                if batch is None:
                    batch = window_for_latest(
                        raw, labels, self.pairs, member.cfg.features, member.scaler, member.scaler.names,
                        member.cfg.data, member.own_scaler,
                    )
                    windows[member.inputs_key] = batch
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


def replay_cutoff(members: list[Member]) -> int | None:
    """The earliest training cutoff of `members` when each has one and none is a final-fit member, else None.

    With `--members holdout` (the honest replay of the scored dates) the fallback prior is computed from the labels
    released by that cutoff, not read from the run's prior.json (which knows every labelled date, the scored ones
    included): a call that falls back then knows no more than the members do."""
    cutoffs = [(m.fold or {}).get("cutoff") for m in members]
    if any(m.role == "final" for m in members) or any(c is None for c in cutoffs):
        return None
    return int(min(cutoffs))


def run_target_order(run_dir: Path, manifest: dict) -> list[str] | None:
    """The run's targets in its own order (those of its manifest-verified prior.json), None when unreadable."""
    from spread.checkpoint import verify_artifact
    from spread.prior import read_prior
    from spread.runfolder import PRIOR_FILE

    try:
        names, _ = read_prior(verify_artifact(run_dir, manifest, manifest["inference"].get("prior", PRIOR_FILE)))
    except (ArtifactError, KeyError, TypeError, ValueError, OSError):
        return None
    return list(names)


def degradation(summary: dict) -> list[str]:
    """Why a run served less than its model: members that did not load, calls that fell back, calls answered by
    fewer members than loaded, calls answered from windows with dates that no stored row covers
    (`WINDOW_ROWS_MISSING`: a gap in the history), calls whose online update failed (an overrun is not a degradation:
    the guard kept the call's deadline, and the summary counts it among the problems). Empty when the model served
    every call with every member."""
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
    gaps = summary["problems"].get(WINDOW_ROWS_MISSING, 0)
    if gaps:
        reasons.append(f"{gaps} call(s) answered from a window with dates that no row of train.csv or the served "
                       "batches covers (a gap in the history; the log names the first window's dates)")
    failed_updates = summary["problems"].get("update-failed", 0)
    if failed_updates:
        reasons.append(f"the online update failed on {failed_updates} call(s) (they answered the model's own output)")
    return reasons


def summary_text(summary: dict) -> str:
    """The end-of-run summary as one paragraph."""
    answers = ", ".join(f"{source.replace('_', ' ')} {summary['answers'][source]}" for source in SOURCES)
    problems = ", ".join(f"{kind} {count}" for kind, count in sorted(summary["problems"].items())) or "none"
    latency = summary["latency"]
    timing = (f"first call {latency['first_s']:.3f} s, later p50 {latency['p50_ms']:.1f} ms, p99 "
              f"{latency['p99_ms']:.1f} ms" if summary["calls"] else "no call")
    members = summary["members"]
    update = summary.get("update") or {"policy": "none"}
    online = update["policy"] if update["policy"] == "none" else (
        f"{update['policy']} ({update['refits']} refit(s), latest weight {update['weight']:g}, longest "
        f"{update['worst_s']:.3f} s)")
    text = (
        f"predict: {summary['calls']} call(s); answers by source: {answers}; members loaded "
        f"{len(members['loaded'])}, failed {len(members['failed'])}; prior: {summary['prior_source']}; "
        f"online update: {online}; problems: {problems}; latency: {timing}."
    )
    reasons = summary["degraded"]
    if reasons:
        return f"{text} DEGRADED: {'; '.join(reasons)}."
    return text + (" Every call was answered by every member." if summary["calls"] else "")


def exit_status(summary: dict) -> int:
    """The exit code of a serving command: 1 when the run was degraded outside the rerun, else 0 (under the rerun
    a degraded run is logged, never failed)."""
    return 1 if summary["degraded"] and not in_rerun() else 0



class LazyPredictor:
    """Loads a `Predictor` inside its first call; whatever fails, every call is answered."""

    def __init__(
        self, run_dir: str | Path | None, competition_dir: str | Path | None, device: str = "auto",
        strict: bool = False, members: str = "served", update: str | None = None,
    ):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.competition_dir = None if competition_dir is None else Path(competition_dir)  # None: answers fall back
        self.device = device
        self.strict = strict
        self.members = members
        self.update = update
        """The online update's policy replacing the run's `serve.update` (None: the run's)."""
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
            if self.competition_dir is None:
                raise ArtifactError("no competition folder found (the model needs train.csv and its labels)")
            self.predictor = Predictor.from_run(
                self.run_dir, self.competition_dir, self.device, self.members, self.problems, self.update
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
        (first call, p50/p99 of the later ones), the online update (`spread.online.OnlineUpdate.summary`, None
        without a predictor) and the reasons the run was degraded (`degradation`)."""

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
            "update": None if predictor is None else predictor.online.summary(),
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
    run_dir: str | Path | None, competition_dir: str | Path | None, device: str = "auto", strict: bool = False,
    members: str = "served", update: str | None = None,
) -> Callable[..., pl.DataFrame]:
    """The `predict` function for the inference server; loads the run in its first call and never raises.

    `members` selects the checkpoints (see `spread.members.member_candidates`); `update` replaces the run's
    online update policy (`serve.update`, `spread.online`) when given. With `strict`, a run that cannot be
    loaded raises from the first call instead of answering the fallback (for local checks). The function has
    `predict.stats()` -> {"calls", "fallback_calls", "answers", "problems"}, `predict.summary()` (the end-of-run
    numbers, see `LazyPredictor.summary`) and `predict.lazy` (the `LazyPredictor`).
    """
    lazy = LazyPredictor(run_dir, competition_dir, device=device, strict=strict, members=members, update=update)

    def predict(test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch):
        return lazy(test, label_lags_1_batch, label_lags_2_batch, label_lags_3_batch, label_lags_4_batch)

    predict.stats = lazy.stats
    predict.summary = lazy.summary
    predict.lazy = lazy
    return predict
