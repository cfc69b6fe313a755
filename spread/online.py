"""Learning while serving: a light correction of the served model, refitted inside `predict` from released labels.

In the forecasting phase the predictor keeps answering for months past its training data, and every call releases
up to four rows of labels. A model frozen at training time misses what those labels say about the present, above
all the slow drift of which targets rank high (the mean-rank prior alone scores about 0.35 on the real data). The
policy `prior_blend` (`ServeConfig.update`) adds to the model's answer a recency-weighted prior built from the
released labels, with a weight chosen online:

    prior(t)  = z( sum_d 2^(-(d_last - d) / halflife) r(d) / weights )   over the label dates d complete on t
    answer(t) = z(model(t)) + w(t) prior(t)        (w = 0: the model's answer itself, unchanged)

r(d) is the centred rank of date d's labels across targets (the score's scale), a date is complete on t when its
lag-max label is released (`spread.targets.release_date`, the package's one release rule), and w(t) is the
candidate of `ServeConfig.weights` whose blend scored best (Sharpe of the daily rank correlations, the
competition's `spread.metrics.daily_rank_rho`) over the latest served dates whose labels are complete on t: only
what is known on t is read, so the same served sequence gives the same answers and a truncated test set leaves the
earlier answers as they were.

A refit runs inside a `predict` call, every `ServeConfig.every` served dates, under a wall-clock guard
(`ServeConfig.max_seconds`, checked between the dates it reads). Its result (prior and weight) replaces the
serving state only when the refit completes; the caches it fills on the way hold values of complete dates only,
which no later call changes. If it raises or overruns, the call answers the model's own output (never worse than no
update) and the problem is counted (kinds `update-failed`, `update-overrun`, `spread.problems`). A failure makes the run degraded
(`spread.infer.degradation`: a bug, loud outside the rerun); an overrun does not (the guard did its job: the call
kept its deadline; it is counted in the summary's problems). The state lives in memory only: a kernel restart
starts again from the shipped run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spread.errors import ConfigError, check_choice, check_range
from spread.targets import release_date

if TYPE_CHECKING:
    from spread.problems import Problems
    from spread.served import History

# `spread.config` composes ServeConfig, so this module imports only what the config already loads; the metrics
# come inside the functions that rank.

log = logging.getLogger(__name__)

POLICIES = ("none", "prior_blend")
"""What `serve.update` may be: no update, or the online prior blend (see the module docstring)."""
PRIOR_HALFLIVES = 6
"""The prior reads the complete label dates of the last this many half-lives (older weights are under 2%)."""


@dataclass
class ServeConfig:
    """Serving: the predictor's online update from the labels the API releases (`spread.online`)."""

    update: str = "none"
    """The online update inside `predict`: none (serve the trained model as it is) | prior_blend (add a
    recency-weighted prior of the released labels with a weight chosen online; `spread.online`)."""
    every: int = 1
    """Refit the update every this many served dates (the latest refit serves the calls between)."""
    max_seconds: float = 10.0
    """Wall-clock budget of one refit inside a predict call (the API allows 300 s per call); an overrun answers
    the model's own output for that call and is counted (`update-overrun`)."""
    halflife: float = 60.0
    """Half-life, in label dates, of the prior's recency weights."""
    weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0])
    """Candidate weights of the prior's z-score in the blend (the model's z-score has weight 1)."""
    select_dates: int = 60
    """The weight is chosen on at most this many of the latest served dates whose labels are complete."""
    min_dates: int = 20
    """Fewest such dates before a weight other than 0 may be chosen (until then: the model's answer)."""

    def __post_init__(self) -> None:
        check_choice("serve", "update", self.update, POLICIES)
        for name in ("every", "select_dates", "min_dates"):
            check_range("serve", name, getattr(self, name), low=1)
        check_range("serve", "max_seconds", self.max_seconds, low=0, low_open=True)
        check_range("serve", "halflife", self.halflife, low=0, low_open=True)
        if not self.weights or not all(math.isfinite(w) and w >= 0 for w in self.weights):
            raise ConfigError(f"serve.weights: expected finite weights >= 0, got {self.weights}")


class Overrun(Exception):
    """A refit passed its wall-clock budget."""


def centred_ranks(labels: np.ndarray) -> np.ndarray:
    """(N,) one date's labels on the prior's rank scale (`spread.prior.daily_ranks`) centred to [-0.5, 0.5]; NaN
    where the label is unknown."""
    from spread.prior import daily_ranks

    return daily_ranks(np.asarray(labels, dtype=np.float64)[None, :])[0] - 0.5


def blend_correlations(ranks: np.ndarray, model: np.ndarray, prior: np.ndarray, weights: list[float]) -> np.ndarray:
    """(W,) the competition's daily rank correlation (`spread.metrics.daily_rank_rho`) of each candidate blend
    model + w prior with a date's label `ranks` (NaN where unknown); 0 where the day cannot be scored."""
    from spread.metrics import daily_rank_rho

    blends = model[None, :] + np.asarray(weights, dtype=np.float64)[:, None] * prior[None, :]  # (W, N)
    truth = np.broadcast_to(ranks, blends.shape)  # (W, N)
    return np.nan_to_num(daily_rank_rho(truth, blends), nan=0.0)


class OnlineUpdate:
    """The update of one predictor: refits from the history's released labels, applies the latest refit.

    `history` is the predictor's `spread.served.History` (read only); `clock` is the guard's time source (seconds).
    """

    def __init__(self, cfg: ServeConfig, history: History, problems: Problems,
                 clock: Callable[[], float] = time.perf_counter):
        self.cfg = cfg
        self.history = history
        self.problems = problems
        self.clock = clock
        self.max_lag = int(history.target_lags.max()) if len(history.target_lags) else 0
        self.calls = 0
        self.refits = 0
        self.worst_s = 0.0
        """The longest time a call spent in the update (refit and blend), seconds."""
        self.weight = 0.0
        """The blend weight of the latest complete refit."""
        self.prior = np.zeros(len(history.target_names))
        """(N,) the prior's z-score of the latest complete refit."""
        self.ranks: dict[int, np.ndarray] = {}
        """Complete label date -> centred ranks of its labels (a complete date's labels are all released)."""
        self.served: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        """Served date -> (z-score of the model's answer, the prior's z-score used), until its labels complete."""
        self.scores: dict[int, np.ndarray] = {}
        """Served date with complete labels -> rank correlation of each candidate weight's blend."""

    @property
    def enabled(self) -> bool:
        return self.cfg.update != "none"

    def answer(self, date_id: int, values: np.ndarray) -> np.ndarray:
        """The served values for `date_id` from the model's ensemble mean `values`: refit when due, then apply the
        latest refit. The model's `values` themselves when the policy is none, the weight is 0, or the refit
        failed or overran (counted). Never raises."""
        if not self.enabled:
            return values
        from spread.prior import zscore  # function level, like daily_ranks: the config's imports stay light

        self.calls += 1
        started = self.clock()
        try:
            if (self.calls - 1) % self.cfg.every == 0:
                self.prior, self.weight = self.refit(date_id, started)
                self.refits += 1
            model = zscore(values)
            self.served[date_id] = (model, self.prior)
            return values if self.weight == 0 else model + self.weight * self.prior
        except Overrun as exc:
            self.problems.report("update-overrun", f"online update on date_id {date_id}: {exc}; the call answers "
                                 "the model's own output")
            return values
        except Exception as exc:  # the update must never cost the call
            self.problems.report(
                "update-failed", f"online update on date_id {date_id} failed, the call answers the model's own "
                f"output: {type(exc).__name__}: {exc}", logging.ERROR, key=type(exc).__name__, exc=exc,
            )
            return values
        finally:
            self.worst_s = max(self.worst_s, self.clock() - started)

    def refit(self, date_id: int, started: float) -> tuple[np.ndarray, float]:
        """(prior z-score, weight) from what is known on `date_id`; Overrun past the budget. The caches it fills
        hold values of complete dates only, which no later call changes, so an aborted refit leaves nothing
        half-done behind."""
        from spread.prior import zscore

        last = date_id - release_date(0, self.max_lag)  # release_date(last, max_lag) == date_id
        halflife = self.cfg.halflife
        first = last - PRIOR_HALFLIVES * halflife
        dates = sorted(d for d in self.history.labels if first <= d <= last)  # the known dates, whatever the half-life
        total, weight_sum = np.zeros(len(self.prior)), np.zeros(len(self.prior))
        for label_date in dates:
            ranks = self._ranks(label_date, started)
            weight = 0.5 ** ((last - label_date) / halflife)
            known = np.isfinite(ranks)
            total[known] += weight * ranks[known]
            weight_sum[known] += weight
        prior = zscore(np.divide(total, weight_sum, out=np.zeros_like(total), where=weight_sum > 0))
        for served_date in sorted(d for d in self.served if d <= last):
            if served_date in self.history.labels:  # a date without any released label scores nothing
                ranks = self._ranks(served_date, started)
                model, used = self.served[served_date]
                self.scores[served_date] = blend_correlations(ranks, model, used, self.cfg.weights)
            del self.served[served_date]
        for old in [d for d in self.ranks if d < last - PRIOR_HALFLIVES * halflife]:
            del self.ranks[old]
        known = sorted(d for d in self.scores if d <= last)  # served dates that went back read no later date's score
        recent = known[-self.cfg.select_dates:]
        for old in known[: -self.cfg.select_dates]:
            del self.scores[old]
        if len(recent) < self.cfg.min_dates:
            return prior, 0.0
        rho = np.stack([self.scores[d] for d in recent])  # (dates, weights)
        std = rho.std(axis=0)
        sharpe = np.where(std > 0, rho.mean(axis=0) / np.where(std > 0, std, 1.0), -np.inf)
        return prior, float(self.cfg.weights[int(np.argmax(sharpe))])

    def _ranks(self, label_date: int, started: float) -> np.ndarray:
        if self.clock() - started > self.cfg.max_seconds:
            raise Overrun(f"refit passed its budget of {self.cfg.max_seconds:g} s")
        if label_date not in self.ranks:
            self.ranks[label_date] = centred_ranks(self.history.labels[label_date])
        return self.ranks[label_date]

    def summary(self) -> dict:
        """{"policy", "refits", "weight" (the latest), "worst_s" (the longest call in the update)}."""
        return {"policy": self.cfg.update, "refits": self.refits, "weight": self.weight,
                "worst_s": round(self.worst_s, 6)}
