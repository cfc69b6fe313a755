"""Tuning: a tiny Optuna study on the small synthetic preset, SQLite storage, best config written and loadable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from spread.config import Config, load_config  # noqa: E402
from spread.errors import ConfigError  # noqa: E402
from spread.competition import load_competition  # noqa: E402
from spread.lab.tune import SearchSpace, search_cutoff, tune, with_params  # noqa: E402
from spread.splits import HOLDOUT  # noqa: E402
from spread.trainer import competition_folds  # noqa: E402

TINY = [
    "split.val_size=30", "split.step=30", "split.min_train=50", "split.n_folds=2", "train.epochs=1",
    "train.max_steps_per_epoch=2", "data.batch_size=8", "train.eval_batch_size=32", "train.progress=false",
    "train.device=cpu",
]
TINY_SPACE = SearchSpace(windows=[16, 32], d_models=[24], heads=[2, 4], layers=(1, 1))


@pytest.mark.slow
def test_two_trials_write_a_loadable_best_config_and_resume(small: Path, tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    best_yaml = tmp_path / "configs" / "tuned.yaml"
    result = tune(cfg, small, tmp_path / "tune", n_trials=2, space=TINY_SPACE, seed=0, write_config=best_yaml)
    assert result["n_trials"] == 2
    assert result["storage"] == f"sqlite:///{(tmp_path / 'tune' / 'optuna.db').resolve()}"
    assert (tmp_path / "tune" / "optuna.db").is_file()

    tuned = load_config(best_yaml)
    params = result["best_params"]
    assert tuned.data.window == params["data.window"] in TINY_SPACE.windows
    assert tuned.model.n_heads == params["model.n_heads"]
    assert tuned.train.lr == pytest.approx(params["train.lr"])
    assert tuned.loss.gate_lambda == pytest.approx(params["loss.gate_lambda"])
    assert tuned.split.holdout is True  # switched off inside the search only
    assert tuned.train.max_steps_per_epoch == cfg.train.max_steps_per_epoch  # the rest of the base config is kept

    with (tmp_path / "tune" / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    assert max(float(row["value"]) for row in rows) == pytest.approx(result["best_value"])
    trial_run = tmp_path / "tune" / "trials" / "spread-0000"
    assert (trial_run / "summary.json").is_file()
    assert not list(trial_run.rglob("*.pt"))  # checkpoints deleted once scored
    assert not list(trial_run.glob("holdout"))  # walk-forward folds only
    holdout_start = next(f.val_dates[0] for f in competition_folds(load_competition(small), cfg) if f.name == HOLDOUT)
    with (trial_run / "folds.csv").open() as handle:
        assert max(int(row["val_end"]) for row in csv.DictReader(handle)) < holdout_start  # nothing of the holdout
    summary = json.loads((trial_run / "summary.json").read_text())  # trials are ranked by the honest score
    assert float(rows[0]["value"]) == pytest.approx(summary["mean"]["honest_score"])

    again = tune(cfg, small, tmp_path / "tune", n_trials=3, space=TINY_SPACE, seed=1, write_config=best_yaml)
    assert again["n_trials"] == 3  # the stored study resumed: one more trial, not three


def test_trials_train_the_walk_forward_folds_of_a_run_with_the_holdout(small: Path) -> None:
    # Switching the holdout off alone would move the walk-forward folds to the end of the data, onto the holdout's
    # dates: the trials would then choose hyper-parameters on the dates the holdout reports.
    cfg = load_config(None, TINY)
    comp = load_competition(small)
    with_holdout = competition_folds(comp, cfg)
    cutoff = search_cutoff(cfg, small)
    holdout = next(fold for fold in with_holdout if fold.name == HOLDOUT)
    assert cutoff == holdout.train_cutoff < holdout.val_dates[0]
    trial_folds = competition_folds(comp, with_params(cfg, {"data.train_end": cutoff}, holdout=False))
    assert trial_folds == [fold for fold in with_holdout if fold.name != HOLDOUT]
    naive = competition_folds(comp, with_params(cfg, {}, holdout=False))
    assert naive[-1].val_dates[1] >= holdout.val_dates[0]  # what the trials trained before
    no_holdout = with_params(cfg, {"data.train_end": 250}, holdout=False)
    assert search_cutoff(no_holdout, small) == 250  # without a holdout, the user's train_end as it is


def test_a_study_scored_on_other_folds_is_not_resumed(small: Path, tmp_path: Path) -> None:
    import optuna

    out = tmp_path / "tune"
    out.mkdir()
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    stale = optuna.create_study(storage=storage, study_name="spread", direction="maximize")
    stale.add_trial(optuna.trial.create_trial(value=0.5))  # a trial of before: no record of its folds
    with pytest.raises(ConfigError, match="scored on other folds"):
        tune(load_config(None, TINY), small, out, n_trials=2, space=TINY_SPACE)
    assert len(optuna.load_study(study_name="spread", storage=storage).trials) == 1  # nothing ran


def test_the_best_config_never_overwrites_a_file_the_study_did_not_write(small: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("# my config\n")
    with pytest.raises(ConfigError, match="exists and this study did not write it"):
        tune(load_config(None, TINY), small, tmp_path / "tune", n_trials=1, space=TINY_SPACE, write_config=mine)
    with pytest.raises(ConfigError, match="is a folder"):
        tune(load_config(None, TINY), small, tmp_path / "tune", n_trials=1, space=TINY_SPACE, write_config=tmp_path)
    assert mine.read_text() == "# my config\n" and not (tmp_path / "tune").exists()  # checked before any trial
    with pytest.raises(ConfigError, match="split"):  # folds the data cannot hold: an error before anything is written
        tune(load_config(None, [*TINY, "split.n_folds=50"]), small, tmp_path / "tune", n_trials=1, space=TINY_SPACE,
             write_config=tmp_path / "new.yaml")
    assert not (tmp_path / "tune").exists()


def test_a_study_needs_two_walk_forward_folds_for_an_honest_score(small: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split.n_folds"):
        tune(load_config(None, [*TINY, "split.n_folds=1"]), small, tmp_path / "tune", n_trials=1, space=TINY_SPACE)
    assert not (tmp_path / "tune").exists()


def test_with_params_sets_dotted_keys() -> None:
    cfg = with_params(Config(), {"model.d_model": 96, "train.lr": 1e-05}, holdout=False)
    assert cfg.model.d_model == 96 and cfg.train.lr == 1e-05 and cfg.split.holdout is False
    with pytest.raises(ConfigError):
        with_params(Config(), {"model.d_model": "wide"})


def test_search_space_rejects_heads_that_do_not_divide_d_model() -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        SearchSpace(d_models=[100], heads=[3])
    with pytest.raises(ConfigError, match="lr"):
        SearchSpace(lr=(1e-3, 1e-5))
