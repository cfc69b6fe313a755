"""The online update while serving (`spread.online`): configuration, the release rule, the guard, determinism."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.config import config_from_dict, config_to_dict, load_config
from spread.errors import ConfigError
from spread.gateway import generate_batches, read_served_files
from spread.infer import Predictor, degradation, make_predict, summary_text
from spread.online import OnlineUpdate, ServeConfig
from spread.synth import generate
from spread.targets import release_date
from test_infer import TINY, truncated_replays, write_run

BLEND = {"update": "prior_blend", "weights": [1.0], "min_dates": 3, "select_dates": 10}
"""An update that blends as soon as 3 served dates have complete labels (on the small preset's 40 test dates)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, single_thread) -> dict:
    root = tmp_path_factory.mktemp("online")
    comp_dir = generate(root / "comp", seed=2, preset="small")
    write_run(root / "run", comp_dir, config={**TINY, "serve": BLEND})
    test, lagged = read_served_files(comp_dir)
    return {"root": root, "dir": comp_dir, "run": root / "run", "batches": list(generate_batches(test, lagged))}


def stream(run: Path, comp_dir: Path, batches, update: str | None = None) -> tuple[Predictor, np.ndarray]:
    """(predictor, (dates, N) answers) of one predictor over `batches`."""
    predictor = Predictor.from_run(run, comp_dir, device="cpu", update=update)
    return predictor, np.stack([predictor.predict(*b).to_numpy()[0] for _, b in batches])


@pytest.fixture(scope="module")
def answers(served: dict) -> dict:
    """Every test date through a predictor with the run's update (BLEND) and one without."""
    blend, with_update = stream(served["run"], served["dir"], served["batches"])
    _, without = stream(served["run"], served["dir"], served["batches"], update="none")
    return {"blend": blend, "with": with_update, "without": without}


# ----------------------------------------------------------------------------------------------------------------
# configuration


def test_the_serve_section_round_trips_and_defaults_to_no_update() -> None:
    cfg = load_config(None, ["serve.update=prior_blend", "serve.every=5", "serve.max_seconds=2.5"])
    assert (cfg.serve.update, cfg.serve.every, cfg.serve.max_seconds) == ("prior_blend", 5, 2.5)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    old = config_to_dict(config_from_dict({}))
    del old["serve"]  # a run trained before the section existed
    assert config_from_dict(old).serve == ServeConfig() and ServeConfig().update == "none"


@pytest.mark.parametrize("override, message", [
    ("serve.update=finetune", "serve.update: expected one of none|prior_blend"),
    ("serve.max_seconds=0", "serve.max_seconds"),
    ("serve.weights=[]", "serve.weights"),
    ("serve.updte=none", "did you mean serve.update"),
])
def test_a_bad_serve_key_is_an_error_naming_it(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_the_run_config_sets_the_update_and_the_gateway_flag_replaces_it(served: dict, answers: dict) -> None:
    assert answers["blend"].online.cfg == ServeConfig(**BLEND) and answers["blend"].online.refits == 40
    plain = Predictor.from_run(served["run"], served["dir"], device="cpu", update="none")
    assert plain.online.cfg.update == "none" and plain.online.cfg.min_dates == BLEND["min_dates"]


def test_an_unknown_update_flag_is_refused_before_serving(served: dict, tmp_path: Path, capsys) -> None:
    from spread.cli import main

    out = tmp_path / "s.parquet"
    command = ["gateway", "--data", str(served["dir"]), "--run", str(served["run"]), "--out", str(out)]
    assert main([*command, "--update", "finetune"]) == 2 and not out.exists()
    assert "--update: expected one of none|prior_blend, got 'finetune'" in capsys.readouterr().err


def test_the_gateway_flag_turns_the_update_on_and_the_summary_says_so(served: dict, tmp_path: Path, capsys) -> None:
    from spread.cli import main

    command = ["gateway", "--data", str(served["dir"]), "--run", str(served["run"]), "--out", str(tmp_path / "s.pq")]
    assert main([*command, "--update", "none"]) == 0
    assert "online update: none;" in capsys.readouterr().out
    assert main(command) == 0  # the run's config: BLEND
    assert "online update: prior_blend (40 refit(s), latest weight 1, longest" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------
# what the update does, and what it reads


def test_the_update_blends_in_the_released_prior_once_enough_dates_are_complete(served: dict, answers: dict) -> None:
    with_update, without = answers["with"], answers["without"]
    first_blend = 4 + BLEND["min_dates"]  # served dates 0..2 complete on call 4 + 3 (lag 4: released 5 dates later)
    assert np.array_equal(with_update[:first_blend], without[:first_blend])  # weight 0: the model's answer itself
    assert not np.allclose(with_update[first_blend + 1:], without[first_blend + 1:])
    assert answers["blend"].online.weight == 1.0 and answers["blend"].problems.counts == {}


def test_the_same_served_sequence_gives_the_same_answers(served: dict, answers: dict) -> None:
    _, again = stream(served["run"], served["dir"], served["batches"])
    assert np.array_equal(again, answers["with"])


def test_the_update_never_reads_a_label_before_its_release_date(served: dict, answers: dict, tmp_path: Path) -> None:
    """Every label released after date T is replaced by noise, in train_labels.csv and the lag files: the
    answers up to T stay identical. Negative control: noise on a label released on T itself moves the prior."""
    batches = served["batches"]
    cut = batches[25][0]

    def perturbed(name: str, released_by: int) -> Path:
        """A copy of the competition whose labels released after `released_by` are noise."""
        folder = tmp_path / name
        shutil.copytree(served["dir"], folder)
        rng = np.random.default_rng(0)
        pairs = pl.read_csv(folder / "target_pairs.csv")
        labels = pl.read_csv(folder / "train_labels.csv")
        noisy = []
        for target, lag in zip(pairs["target"], pairs["lag"]):
            late = release_date(labels["date_id"], lag) > released_by
            noise = pl.Series(rng.normal(size=labels.height))
            noisy.append(pl.when(late).then(noise).otherwise(pl.col(target)).alias(target))
        labels.with_columns(noisy).write_csv(folder / "train_labels.csv")
        for path in sorted((folder / "lagged_test_labels").glob("*.csv")):
            frame = pl.read_csv(path)
            names = [c for c in frame.columns if c not in ("date_id", "label_date_id")]
            late = pl.col("date_id") > released_by
            frame.with_columns(pl.when(late).then(pl.lit(rng.normal())).otherwise(pl.col(c)).alias(c)
                               for c in names).write_csv(path)
        return folder

    later = perturbed("later", cut)
    predictor, answers_later = stream(served["run"], later, generate_batches(*read_served_files(later)))
    assert np.array_equal(answers_later[:26], answers["with"][:26])
    assert not np.array_equal(answers_later[26:], answers["with"][26:])  # the noise is served after T
    early = perturbed("early", cut - 1)  # now also the labels released on T
    honest = Predictor.from_run(served["run"], served["dir"], device="cpu")
    moved = Predictor.from_run(served["run"], early, device="cpu")
    for (_, batch), (_, noisy_batch) in zip(batches[:26], generate_batches(*read_served_files(early))):
        honest.predict(*batch)
        moved.predict(*noisy_batch)
    assert not np.allclose(honest.online.prior, moved.online.prior)


def test_truncating_the_test_set_keeps_earlier_answers_with_the_update_on(served: dict, tmp_path: Path) -> None:
    full, full_rows, part_rows = truncated_replays(served["dir"], served["run"], served["batches"][20][0], tmp_path)
    assert part_rows.height == 21 and part_rows.equals(full_rows)
    assert full["summary"]["update"]["refits"] == 40 and full["summary"]["update"]["weight"] == 1.0


# ----------------------------------------------------------------------------------------------------------------
# the guard: a failing or slow update answers the model's own output, counted


def test_a_failing_update_answers_the_model_and_is_counted(served: dict, answers: dict, monkeypatch) -> None:
    def broken(self, date_id, started):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(OnlineUpdate, "refit", broken)
    lazy = make_predict(served["run"], served["dir"])
    rows = np.stack([lazy(*b).to_numpy()[0] for _, b in served["batches"]])
    assert np.array_equal(rows, answers["without"])
    summary = lazy.summary()
    assert summary["problems"] == {"update-failed": 40} and summary["update"]["refits"] == 0
    assert any("online update failed on 40 call(s)" in reason for reason in degradation(summary))
    assert "DEGRADED" in summary_text(summary) and "prior_blend (0 refit(s)" in summary_text(summary)


def test_a_slow_update_is_cut_by_the_guard_and_the_call_answers_the_model(served: dict, answers: dict) -> None:
    """A fake clock that advances 30 s at every reading: each refit passes its 10 s budget at its first check."""
    predictor = Predictor.from_run(served["run"], served["dir"], device="cpu")
    ticks = iter(range(0, 10**6, 30))
    predictor.online.clock = lambda: float(next(ticks))
    rows = np.stack([predictor.predict(*b).to_numpy()[0] for _, b in served["batches"]])
    assert np.array_equal(rows, answers["without"])
    assert predictor.problems.counts == {"update-overrun": 40} and predictor.online.refits == 0
    assert predictor.online.weight == 0.0 and not predictor.online.prior.any()  # nothing half-done swapped in
    summary = {"members": {"failed": {}}, "answers": dict(predictor.answers), "calls": 40,
               "problems": dict(predictor.problems.counts)}
    assert degradation(summary) == []  # an overrun kept the deadline: counted, not degraded


def test_the_guard_holds_an_update_that_turns_slow_midway(served: dict, answers: dict) -> None:
    """The clock jumps past the budget inside the 30th call's refit only: that call answers the model's output,
    the calls before and after blend as usual."""
    predictor = Predictor.from_run(served["run"], served["dir"], device="cpu")
    offset = {"value": 0.0}
    predictor.online.clock = lambda: offset["value"]
    rows = []
    for index, (_, batch) in enumerate(served["batches"]):
        if index == 29:
            readings = iter([0.0, 0.0] + [100.0] * 10**4)  # the call's start, the first check, then late
            predictor.online.clock = lambda: next(readings)
        elif index == 30:
            predictor.online.clock = lambda: 0.0
        rows.append(predictor.predict(*batch).to_numpy()[0])
    rows = np.stack(rows)
    assert np.array_equal(rows[29], answers["without"][29]) and not np.allclose(rows[29], answers["with"][29])
    assert np.array_equal(rows[:29], answers["with"][:29]) and predictor.problems.counts == {"update-overrun": 1}
    assert predictor.online.worst_s == 100.0


def test_served_dates_that_go_back_choose_the_weight_on_no_later_date() -> None:
    from spread.online import OnlineUpdate, ServeConfig
    from spread.problems import Problems
    from spread.served import History

    history = History(["a"], ["t0", "t1", "t2"], [1, 1, 1])
    for date in range(10):
        history.add_labels(date, np.arange(3), np.array([0.1, -0.2, 0.3]) * (date + 1))
    cfg = ServeConfig(update="prior_blend", min_dates=1, select_dates=5, weights=[0.0, 1.0])
    update = OnlineUpdate(cfg, history, Problems())
    update.scores = {100: np.array([0.0, 1.0]), 101: np.array([0.0, 0.9])}  # served before, later dates: weight 1
    _, weight = update.refit(date_id=10, started=update.clock())
    assert weight == 0.0 and set(update.scores) == {100, 101}  # not read on date 10, kept for when they come again
    _, weight = update.refit(date_id=106, started=update.clock())
    assert weight == 1.0
