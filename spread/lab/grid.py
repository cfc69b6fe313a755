"""The bench's grid: what one mode runs, and running it with every finished run folder reused.

Per source (the synthetic `realistic` preset, where the generator's oracle gives a reference; in full mode also the
older `mitsui` preset, whose signal is linear in an observable state; and the real daily price panel of
`spread.lab.realdata`), per data seed, every model is scored on the same folds (the mode's walk-forward folds, at
least two, plus the competition-like holdout): the baselines and peers of `spread.lab.baselines` (lightgbm when
installed), the oracle on synthetic data, and the Transformer with the default and with the tuned config per
training seed. At least two walk-forward folds, because a Transformer's honest fold score is its score at the
epoch count the other folds choose (`spread.trainer.honest_scores`): with one fold there is none. The tuned config is
`configs/tuned.yaml` when it exists; otherwise a tuning study (`spread.lab.tune`) runs first on a synthetic draw
that is never scored (`TUNE_DATA_SEED`), in a folder named by its settings. A run folder whose config.yaml matches
is reused, so an interrupted bench resumes; a `RunTally` counts what ran and what was reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spread.errors import ConfigError, SpreadError
from spread.lab import REPO_ROOT
from spread.lab.stats import BASELINE_NAMES, ORACLE, summary_cells
from spread.runfolder import CONFIG_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)

SYNTHETIC, MITSUI, REAL = "synthetic", "mitsui", "real"
SYNTHETIC_PRESETS = {SYNTHETIC: "realistic", MITSUI: "mitsui"}
"""The synthetic sources and the `spread.synth` preset each is drawn from (each has the generator's oracle)."""
TUNE_DATA_SEED = 100
"""Synthetic data seed the bench tunes on when no configs/tuned.yaml exists (never a scored seed)."""
TUNED_CONFIG = Path("configs/tuned.yaml")
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
"""The config of `transformer_default`: the shipped default, as the README's main job trains it."""


@dataclass
class BenchConfig:
    """What one bench mode runs."""

    mode: str
    """"quick" or "full" (named in the report)."""
    sources: list[str]
    """Sources scored, in report order: keys of `SYNTHETIC_PRESETS` and/or `REAL` (skipped without skfolio)."""
    data_seeds: list[int]
    """Seeds of the competitions built per source (synthetic draw; real: the pair draw)."""
    train_seeds: list[int]
    """Config seeds of the Transformer runs (weights, shuffling) per data seed."""
    n_folds: int
    """Walk-forward folds before the holdout (split.n_folds)."""
    transformer_overrides: list[str] = field(default_factory=list)
    """Dotted overrides applied to both Transformer configs (no final fit: the bench scores folds); the default
    config is `configs/default.yaml`, the tuned one the tuning study's result, each at its own shape and budget."""
    tune_overrides: list[str] = field(default_factory=list)
    """Dotted overrides on the built-in defaults the tuning study starts from (quick: a small shape and budget)."""
    tune_trials: int = 30
    """Trials of the tuning study run when no configs/tuned.yaml exists."""
    tune_space_overrides: dict = field(default_factory=dict)
    """`SearchSpace` fields replaced for that study (quick: the shape fixed to the forced one)."""
    latency_calls: int = 300
    """Predict calls served to measure latency and memory growth."""
    data_bench_batches: int = 150
    """DataLoader batches timed by bench/bench_data.py."""

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ConfigError(f"bench {self.mode}: n_folds must be >= 2 (a walk-forward fold's honest score is chosen "
                              f"by the other folds), got {self.n_folds}")
        unknown = [s for s in self.sources if s not in SYNTHETIC_PRESETS and s != REAL]
        if unknown or SYNTHETIC not in self.sources:
            raise ConfigError(f"bench {self.mode}: sources must include {SYNTHETIC!r} and be among "
                              f"{[*SYNTHETIC_PRESETS, REAL]}, got {self.sources}")


QUICK_SHAPE = ["data.window=64", "model.d_model=64", "model.n_layers=2", "model.n_heads=4"]
SCORED_ONLY = ["train.final_fit=false", "train.progress=false"]
QUICK = BenchConfig(
    mode="quick", sources=[SYNTHETIC, REAL], data_seeds=[0], train_seeds=[0, 1, 2], n_folds=4,
    transformer_overrides=SCORED_ONLY,
    tune_overrides=[*QUICK_SHAPE, "train.epochs=4", "train.max_steps_per_epoch=40", *SCORED_ONLY],
    tune_trials=3, tune_space_overrides={"windows": [64], "d_models": [64], "heads": [4], "layers": (2, 2)},
    data_bench_batches=40,
)
FULL = BenchConfig(
    mode="full", sources=[SYNTHETIC, MITSUI, REAL], data_seeds=[0, 1, 2], train_seeds=[0, 1, 2], n_folds=6,
    transformer_overrides=SCORED_ONLY, tune_overrides=SCORED_ONLY,
)


def _same_config(run_dir: Path, cfg) -> bool:
    """The run's saved config, resolved by today's code, equals `cfg`: a field added since at its default (which
    behaves as the code did before it) does not invalidate a run; one the code no longer knows does."""
    from spread.config import config_to_dict, load_config

    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        return False
    try:
        return config_to_dict(load_config(saved)) == config_to_dict(cfg)
    except SpreadError:
        return False


@dataclass
class RunTally:
    """The runs `cached_run` returned during one bench invocation (summed in the report's header)."""

    runs: int = 0
    """Scored runs returned, reused or not."""
    reused: int = 0
    """Of those, the runs whose finished folder an earlier invocation left in the work folder."""
    seconds: float = 0.0
    """The runs' own compute time, as recorded in each summary.json."""

    def add(self, reused: bool, seconds: float) -> None:
        self.runs += 1
        self.reused += int(reused)
        self.seconds += seconds


def finished_summary(run_dir: Path, cfg) -> dict | None:
    """summary.json of `run_dir` when a run finished there with the config `cfg`; None otherwise."""
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file() and _same_config(run_dir, cfg):
        return json.loads(summary_path.read_text())
    return None


def cached_run(run_dir: Path, cfg, execute: Callable[[], dict], tally: RunTally) -> dict:
    """summary.json of `run_dir` when it was finished with the same config; otherwise (re)run it from scratch.

    Either way the run is counted in `tally`.
    """
    summary = finished_summary(run_dir, cfg)
    reused = summary is not None
    if reused:
        log.info("reusing %s", run_dir)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        summary = execute()
    seconds = float((summary.get("run") or {}).get("seconds") or 0.0)
    log.info("%s: %.0f s%s", run_dir, seconds, " (reused)" if reused else "")
    tally.add(reused, seconds)
    return summary


def bench_split(bench_cfg: BenchConfig) -> list[str]:
    """The split overrides every model of the bench shares, so that all are scored on the same folds."""
    return [f"split.n_folds={bench_cfg.n_folds}", "split.holdout=true"]


def build_source(source: str, out: Path, seed: int) -> Path:
    """The competition folder of `source` for `seed` (deterministic, rewritten every time)."""
    if source in SYNTHETIC_PRESETS:
        from spread.synth import generate

        return generate(out, seed=seed, preset=SYNTHETIC_PRESETS[source], overwrite=True)
    from spread.lab.realdata import realdata

    return realdata(out, seed=seed, overwrite=True)


def tuned_config_path(bench_cfg: BenchConfig, work: Path, base_overrides: list[str]) -> tuple[Path, str]:
    """configs/tuned.yaml when present, else the result of a tuning study run now; with a remark for the report."""
    tuned = REPO_ROOT / TUNED_CONFIG
    if tuned.is_file():
        return tuned, f"`{TUNED_CONFIG}`"
    from spread.config import load_config
    from spread.lab.tune import CUTOFF_ATTR, SearchSpace, tune

    data = build_source(SYNTHETIC, work / "data" / f"tune-s{TUNE_DATA_SEED}", TUNE_DATA_SEED)
    overrides = base_overrides + bench_cfg.tune_overrides
    # A finished study is reused only for the same settings: its folder is named by them.
    # CUTOFF_ATTR: studies whose trials kept off the holdout's dates only (one stored before read them).
    settings = json.dumps([overrides, bench_cfg.tune_trials, bench_cfg.tune_space_overrides, CUTOFF_ATTR],
                          sort_keys=True)
    study_dir = work / f"tune-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    out = study_dir / "tuned.yaml"
    if not out.is_file():
        space = SearchSpace(**bench_cfg.tune_space_overrides)
        result = tune(load_config(None, overrides), data, study_dir, bench_cfg.tune_trials,
                      study_name=f"bench-{bench_cfg.mode}", write_config=out, space=space, seed=0)
        log.info("bench tuning: best walk-forward score %.4f (trial %d)", result["best_value"], result["best_trial"])
    result = json.loads((study_dir / "tune_summary.json").read_text())
    remark = (f"tuned by this bench: {result['n_trials']} Optuna trials on synthetic data seed {TUNE_DATA_SEED} "
              f"(not a scored seed), best mean walk-forward score {result['best_value']:.3f}")
    return out, remark


def run_source(
    source: str, bench_cfg: BenchConfig, work: Path, tuned: Path, tally: RunTally
) -> tuple[list[dict], dict[str, Path]]:
    """Score every model on every data seed of `source`; returns the cells and the run folders by model and seeds."""
    from spread.lab.baselines import run_baseline
    from spread.config import load_config
    from spread.trainer import train

    split = bench_split(bench_cfg)
    cells, runs = [], {}
    for data_seed in bench_cfg.data_seeds:
        data = build_source(source, work / "data" / f"{source}-s{data_seed}", data_seed)
        run_root = work / "runs" / f"{source}-s{data_seed}"
        baseline_cfg = load_config(None, split)
        names = [name for name in BASELINE_NAMES if name != "lightgbm" or importlib.util.find_spec("lightgbm")]
        names += [ORACLE] if source in SYNTHETIC_PRESETS else []
        for name in names:
            run_dir = run_root / name
            summary = cached_run(run_dir, baseline_cfg, lambda: run_baseline(name, baseline_cfg, data, run_dir), tally)
            cells += summary_cells(summary, source, name, data_seed, None)
        for model, config_file in (("transformer_default", DEFAULT_CONFIG), ("transformer_tuned", tuned)):
            for train_seed in bench_cfg.train_seeds:
                cfg = load_config(config_file, [*bench_cfg.transformer_overrides, *split, f"seed={train_seed}"])
                run_dir = run_root / f"{model}-t{train_seed}"
                summary = cached_run(run_dir, cfg, lambda: train(cfg, data, run_dir), tally)
                cells += summary_cells(summary, source, model, data_seed, train_seed)
                runs[f"{source}/{model}/s{data_seed}/t{train_seed}"] = run_dir
    return cells, runs
