"""Hyper-parameter search with Optuna against the mean walk-forward competition score.

Each trial trains the Transformer with `spread.trainer.train` on the walk-forward folds only, placed where a run
with the holdout places them: `split.holdout` is switched off inside the search and `data.train_end` set to the
holdout's training cutoff (`search_cutoff`), so no trial reads a row or a label of the holdout's dates, and the
competition-like holdout stays untouched by every choice made here. (Switching the holdout off alone would move the
walk-forward folds to the end of the data, onto the holdout's dates.) Each trial returns the mean of the folds'
honest scores (each fold scored at the epoch count the other folds choose, `spread.trainer`), never a best epoch
picked on the dates being scored; so a study needs `split.n_folds >= 2`. The space (`SearchSpace`) covers the window
L in {128, 192, 256} (the roadmap's comparison), d_model, depth, heads, the learning rate, the regression and ranking
loss weights and the feature-gate penalty lambda; d_model choices are multiples of 24 so every head count divides
them. Sampling is
TPE (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"; Akiba et al. 2019, "Optuna").

Storage: SQLite in the output folder by default (`sqlite:///OUT/optuna.db`); any Optuna RDB URL (e.g.
`postgresql://user@host/db`) lets several workers on several machines share one study: start
`python -m spread tune --storage URL --study-name NAME` on each, and `n_trials` counts the trials of the whole
study (a worker stops once the study has that many). A finished or interrupted study resumes where it stopped.

Each trial's run folder is `OUT/trials/<study>-<number>` (config.yaml, folds.csv, metrics.csv, summary.json); its
checkpoints are deleted once scored unless `keep_checkpoints`, since a search would otherwise fill the disk. The
best trial's config (the base config plus the best parameters, holdout restored) is written as YAML (by default
`configs/tuned.yaml`), loadable by `spread.config.load_config`; `OUT/trials.csv` lists every trial.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from spread.config import Config, config_from_dict, config_to_dict, save_config
from spread.errors import ConfigError, DataError, SpreadError
from spread.runfolder import write_json

log = logging.getLogger(__name__)

TRIALS_DIR, TRIALS_FILE, TUNE_SUMMARY = "trials", "trials.csv", "tune_summary.json"
CUTOFF_ATTR = "search_cutoff"
"""The study's record of the last date its trials read (`search_cutoff`): a stored study resumes on the same folds
only."""
DEFAULT_CONFIG_OUT = "configs/tuned.yaml"


@dataclass
class SearchSpace:
    """The hyper-parameters searched and their ranges (a one-element list fixes a choice)."""

    windows: list[int] = field(default_factory=lambda: [128, 192, 256])
    """data.window (L) choices."""
    d_models: list[int] = field(default_factory=lambda: [96, 144, 192, 240])
    """model.d_model choices (multiples of 24: divisible by every head count below)."""
    heads: list[int] = field(default_factory=lambda: [4, 6, 8])
    """model.n_heads choices."""
    layers: tuple[int, int] = (2, 6)
    """model.n_layers range (inclusive)."""
    lr: tuple[float, float] = (3e-5, 1e-3)
    """train.lr range, sampled on a log scale."""
    regression_weight: tuple[float, float] = (0.1, 3.0)
    """loss.regression_weight range, log scale."""
    rank_weight: tuple[float, float] = (0.1, 3.0)
    """loss.rank_weight range, log scale."""
    gate_lambda: tuple[float, float] = (1e-6, 1e-2)
    """loss.gate_lambda range, log scale."""
    ic_max_features: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    """screen.ic_max_features choices (the pre-screen's cap on inputs, best mean |IC| first)."""

    def __post_init__(self) -> None:
        for name in ("windows", "d_models", "heads", "ic_max_features"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ConfigError(f"search space: {name} must be a non-empty list of positive integers")
        bad = [(d, h) for d in self.d_models for h in self.heads if d % h]
        if bad:
            raise ConfigError(f"search space: d_model not divisible by n_heads for {bad[:5]}")
        for name in ("layers", "lr", "regression_weight", "rank_weight", "gate_lambda"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"search space: {name} must be a range 0 < low <= high, got {(low, high)}")

    def suggest(self, trial) -> dict[str, object]:
        """Dotted config key -> value drawn for `trial` (an optuna.Trial)."""
        return {
            "data.window": trial.suggest_categorical("data.window", self.windows),
            "model.d_model": trial.suggest_categorical("model.d_model", self.d_models),
            "model.n_heads": trial.suggest_categorical("model.n_heads", self.heads),
            "model.n_layers": trial.suggest_int("model.n_layers", *self.layers),
            "train.lr": trial.suggest_float("train.lr", *self.lr, log=True),
            "loss.regression_weight": trial.suggest_float("loss.regression_weight", *self.regression_weight, log=True),
            "loss.rank_weight": trial.suggest_float("loss.rank_weight", *self.rank_weight, log=True),
            "loss.gate_lambda": trial.suggest_float("loss.gate_lambda", *self.gate_lambda, log=True),
            "screen.ic_max_features": trial.suggest_categorical("screen.ic_max_features", self.ic_max_features),
        }


def with_params(cfg: Config, params: dict[str, object], holdout: bool | None = None) -> Config:
    """`cfg` with the dotted `params` set (and split.holdout when given); invalid values raise ConfigError."""
    data = config_to_dict(cfg)
    updates = dict(params) if holdout is None else {**params, "split.holdout": holdout}
    for key, value in updates.items():
        section, name = key.split(".")
        data[section][name] = value
    return config_from_dict(data)


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("tune needs optuna: pip install -r requirements-bench.txt") from exc
    return optuna


def _delete_checkpoints(run_dir: Path) -> None:
    for path in run_dir.rglob("*.pt"):
        path.unlink()


def check_config_target(path: Path, out: Path, overwrite: bool) -> None:
    """ConfigError before any trial unless the best config may be written to `path`: not a folder, and not an
    existing file (someone's config) unless an earlier invocation of this study (out/tune_summary.json) wrote it
    or `overwrite`."""
    if path.is_dir():
        raise ConfigError(f"--write-config {path}: is a folder")
    if not path.exists() or overwrite:
        return
    try:
        written = Path(json.loads((out / TUNE_SUMMARY).read_text())["config_path"]).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        written = None
    if written != path.resolve():
        raise ConfigError(f"--write-config {path}: exists and this study did not write it; refusing to overwrite "
                          "it (pass --overwrite, or another --write-config)")


def search_cutoff(cfg: Config, data_dir: Path) -> int | None:
    """The last date a trial may read: the holdout's training cutoff when `cfg` has a holdout (so the trials' walk-
    forward folds are the ones a run with the holdout trains), else the user's data.train_end."""
    from spread.competition import load_competition
    from spread.splits import HOLDOUT
    from spread.trainer import competition_folds

    folds = competition_folds(load_competition(data_dir, require_test=False), cfg)  # bad data or folds: an error now
    if not cfg.split.holdout:
        return cfg.data.train_end
    return next(fold.train_cutoff for fold in folds if fold.name == HOLDOUT)


def _objective(cfg: Config, space: SearchSpace, cutoff: int | None, trials_dir: Path, study_name: str,
               data_dir: Path, keep_checkpoints: bool):
    from spread.trainer import train

    # Trials serve nothing (no final fit) and never see the holdout's dates.
    fixed = {"train.final_fit": False, "data.train_end": cutoff}

    def objective(trial) -> float:
        params = space.suggest(trial)
        trial_cfg = with_params(cfg, params | fixed, holdout=False)
        run_dir = trials_dir / f"{study_name}-{trial.number:04d}"
        started = time.perf_counter()
        summary = train(trial_cfg, data_dir, run_dir)
        if not keep_checkpoints:
            _delete_checkpoints(run_dir)
        score, std = summary["mean"].get("honest_score"), summary["std"].get("honest_score")
        score = float("nan") if score is None else score
        trial.set_user_attr("score_std", std)
        trial.set_user_attr("n_folds", len(summary["folds"]))
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("run_dir", str(run_dir))
        log.info("trial %d: mean honest walk-forward score %.4f +- %.4f with %s", trial.number, score, std, params)
        return score

    return objective


def write_trials(study, path: Path) -> None:
    """One row per trial: number, state, value, the score's std over folds, seconds, parameters."""
    names = sorted({name for trial in study.trials for name in trial.params})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", "score_std", "seconds", *names])
        for trial in study.trials:
            attrs = trial.user_attrs
            writer.writerow([trial.number, trial.state.name, trial.value, attrs.get("score_std"),
                             attrs.get("seconds"), *(trial.params.get(name) for name in names)])


def tune(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    n_trials: int,
    storage: str | None = None,
    study_name: str = "spread",
    write_config: str | Path = DEFAULT_CONFIG_OUT,
    space: SearchSpace | None = None,
    seed: int | None = None,
    timeout_s: float | None = None,
    keep_checkpoints: bool = False,
    overwrite: bool = False,
) -> dict:
    """Search `space` around `cfg` until the study has `n_trials` trials (or `timeout_s` passes); write the best.

    `seed` seeds the TPE sampler (leave None when several workers share a study, so they explore differently).
    Returns {"best_value", "best_params", "best_trial", "n_trials", "config_path", "storage", "study_name"}.
    """
    optuna = _import_optuna()
    if n_trials < 1:
        raise ConfigError(f"tune: n_trials must be >= 1, got {n_trials}")
    if cfg.split.n_folds < 2:
        raise ConfigError(f"split.n_folds: tune scores the honest walk-forward score, which needs >= 2 folds, "
                          f"got {cfg.split.n_folds}")
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: competition folder not found")
    space = space or SearchSpace()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    check_config_target(Path(write_config), out, overwrite)
    cutoff = search_cutoff(cfg, Path(data_dir))  # the data and the folds are checked before anything is written
    trials_dir = out / TRIALS_DIR
    trials_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed),
        )
    except Exception as exc:  # optuna and sqlalchemy raise several types for a bad URL or database
        raise ConfigError(f"--storage {storage}: cannot open the study: {type(exc).__name__}: {exc}") from exc
    stored = study.user_attrs.get(CUTOFF_ATTR, "absent")
    if study.trials and stored != cutoff:
        raise ConfigError(f"tune: study {study_name!r} in {storage} holds {len(study.trials)} trial(s) scored on other "
                          f"folds (their last date {stored}, this search's {cutoff}; a study stored before trials "
                          "kept off the holdout's dates has none): give a new --study-name or another --out")
    study.set_user_attr(CUTOFF_ATTR, cutoff)
    done = len(study.trials)
    if done < n_trials:
        study.optimize(
            _objective(cfg, space, cutoff, trials_dir, study_name, Path(data_dir), keep_checkpoints),
            n_trials=n_trials - done, timeout=timeout_s, catch=(SpreadError,),
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=None)],
        )
    write_trials(study, out / TRIALS_FILE)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not complete:
        raise ConfigError(f"tune: no trial of study {study_name!r} completed (see {out / TRIALS_FILE})")
    best = study.best_trial
    config_path = Path(write_config)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    save_config(with_params(cfg, best.params), config_path)
    result = {
        "best_value": best.value, "best_params": best.params, "best_trial": best.number,
        "best_std": best.user_attrs.get("score_std"), "n_trials": len(study.trials),
        "config_path": str(config_path), "storage": storage, "study_name": study_name,
    }
    write_json(out / TUNE_SUMMARY, result)
    log.info("best trial %d: mean honest walk-forward score %.4f; config written to %s", best.number, best.value, config_path)
    return result
