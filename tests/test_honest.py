"""Honest model selection (issue 13): `data.train_end = T` keeps everything after T out of every weight and every
selection, the holdout's epoch count comes from the walk-forward folds only, each walk-forward fold reports its
honest score beside its best-epoch score, the final fit is a seed ensemble, and a resume cleans temporaries."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import TINY_RUN

import spread.fit as fit
from spread.checkpoint import load_checkpoint, verify_manifest
from spread.competition import load_competition
from spread.config import load_config
from spread.trainer import epoch_count, train
from spread.train_config import TrainConfig

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
END = 250
"""data.train_end of the leak tests (the small preset has dates 0..319, scored test dates 280..304)."""
FULL = [*TINY_RUN, "split.n_folds=2", "train.finetune_pruned=true", "train.finetune_epochs=1", "train.prune_top_k=20",
        "train.final_fit=true", "train.seeds=[0, 1]", "train.holdout_members=2"]
"""Holdout (two members), two walk-forward folds (so honest scores exist), pruned fine-tunes and a two-seed final
fit."""


def noise_after(source: Path, target: Path, end: int) -> Path:
    """A copy of a competition folder where every price dated after end + 5 (train.csv, test.csv) and every label
    not released by `end` (train_labels.csv: label of date d, lag k is released at d + k + 1; the served
    lagged_test_labels) is random noise."""
    shutil.copytree(source, target)
    rng = np.random.default_rng(7)
    lags = dict(pl.read_csv(target / "target_pairs.csv").select("target", "lag").iter_rows())

    def noised(frame: pl.DataFrame, late_of: dict[str, np.ndarray]) -> pl.DataFrame:
        columns = []
        for column, late in late_of.items():
            values = frame[column].cast(pl.Float64).to_numpy().copy()
            values[late] = rng.normal(1.0, 0.5, size=int(late.sum())) * (1.0 + np.abs(values[late]))
            columns.append(pl.Series(column, values))
        return frame.with_columns(columns)

    for name in ("train.csv", "test.csv"):
        frame = pl.read_csv(target / name)
        late = (frame["date_id"] > end + 5).to_numpy()
        prices = [c for c in frame.columns if c not in ("date_id", "is_scored")]
        noised(frame, dict.fromkeys(prices, late)).write_csv(target / name)
    labels = pl.read_csv(target / "train_labels.csv")
    dates = labels["date_id"].to_numpy()
    unreleased = {name: dates + lag + 1 > end for name, lag in lags.items()}
    noised(labels, unreleased).write_csv(target / "train_labels.csv")
    for path in sorted((target / "lagged_test_labels").glob("*.csv")):
        frame = pl.read_csv(path)
        late = (frame["date_id"] > end).to_numpy()
        noised(frame, dict.fromkeys([c for c in frame.columns if c in lags], late)).write_csv(path)
    return target


def tensors_equal(a: object, b: object, where: str) -> None:
    """torch.equal over every tensor of two nested checkpoint values, and == over every other value."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a.keys() - {"seconds"}:  # the wall-clock time of an epoch row
            tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


SEEN_AFTER_T = ("data_fingerprint",)
"""Checkpoint keys that may differ: the hash of the data files (they differ by construction)."""
HOLDOUT_SCORES = ("best_score", "state")
"""... and, for the holdout, its validation scores (its validation dates lie after T; they select nothing)."""


def assert_identical_runs(clean: Path, noisy: Path) -> list[str]:
    """Every checkpoint bit-identical (every tensor; every other value but the scores of dates after T), and the
    screening, scaling, gate and prior artefacts equal. Returns the checkpoints compared."""
    names = sorted(p.relative_to(clean).as_posix() for p in clean.rglob("*.pt"))
    assert names == sorted(p.relative_to(noisy).as_posix() for p in noisy.rglob("*.pt"))
    for name in names:
        a, b = load_checkpoint(clean / name), load_checkpoint(noisy / name)
        skip = SEEN_AFTER_T + (HOLDOUT_SCORES if a["role"] == "holdout" else ())
        tensors_equal({k: v for k, v in a.items() if k not in skip}, {k: v for k, v in b.items() if k not in skip},
                      name)
        assert "scaler" in a and "screen_dropped" in a and "gate" in a
    for artefact in ("gate_weights.csv", "pruned_features.csv", "prior.json", "folds.csv"):
        assert (clean / artefact).read_bytes() == (noisy / artefact).read_bytes(), artefact
    return names


@pytest.mark.slow
@pytest.mark.parametrize("config, overrides", [(SMOKE, []), (None, FULL)], ids=["smoke", "holdout+pruning+final"])
def test_nothing_after_train_end_reaches_a_weight_or_a_selection(
    config: Path | None, overrides: list[str], small: Path, tmp_path: Path, single_thread: None
) -> None:
    cfg = load_config(config, [*overrides, f"data.train_end={END}"])
    noisy = noise_after(small, tmp_path / "noisy", END)
    clean_summary = train(cfg, small, tmp_path / "clean")
    noisy_summary = train(cfg, noisy, tmp_path / "noisy_run")
    names = assert_identical_runs(tmp_path / "clean", tmp_path / "noisy_run")
    assert "holdout/best.pt" in names
    if config is None:
        assert {"fold1-pruned/best.pt", "holdout-pruned/best.pt", "final-s0/best.pt", "final-s1/best.pt",
                "holdout-s1/best.pt"} <= set(names)
    for summary in (clean_summary, noisy_summary):
        assert summary["folds"]["holdout"]["best_epoch"] == summary["epoch_rule"]["epochs"]
    # the noise did reach the data: the holdout validates on dates after T, and its score moves
    clean_score = clean_summary["public_leaderboard_estimate"]["score"]
    assert clean_score != noisy_summary["public_leaderboard_estimate"]["score"]


def test_epoch_rule() -> None:
    cfg = TrainConfig(epochs=10)
    assert epoch_count(cfg, [3, 8, 4]) == (4, "median of the walk-forward folds' best epochs")
    assert epoch_count(cfg, [2, 3])[0] == 3  # 2.5, rounded half up
    assert epoch_count(cfg, [])[0] == 10  # no walk-forward fold: train.epochs
    assert epoch_count(TrainConfig(epochs=10, final_fit_epochs=6), [3, 8])[0] == 6


@pytest.mark.slow
def test_the_holdout_epoch_count_ignores_its_own_validation_labels(small: Path, tmp_path: Path) -> None:
    """Labels of the holdout's validation dates (the scored test dates) changed: same epoch count, same weights."""
    overrides = [*TINY_RUN, "split.n_folds=2", "train.epochs=3"]
    changed = tmp_path / "changed"
    shutil.copytree(small, changed)
    labels = pl.read_csv(changed / "train_labels.csv")
    scored = labels["date_id"].is_between(280, 304)
    targets = [c for c in labels.columns if c != "date_id"]
    labels.with_columns(pl.when(scored).then(-pl.col(t)).otherwise(pl.col(t)).alias(t) for t in targets).write_csv(
        changed / "train_labels.csv")
    before = train(load_config(None, overrides), small, tmp_path / "a")
    after = train(load_config(None, overrides), changed, tmp_path / "b")
    assert before["folds"]["holdout"]["epochs"] == after["folds"]["holdout"]["epochs"]
    assert before["epoch_rule"] == after["epoch_rule"]
    a, b = load_checkpoint(tmp_path / "a/holdout/best.pt"), load_checkpoint(tmp_path / "b/holdout/best.pt")
    tensors_equal(a["model"], b["model"], "holdout/best.pt")
    assert before["folds"]["holdout"]["best_score"] != after["folds"]["holdout"]["best_score"]  # it saw the change


SCRIPT = {"fold0": [0.1, 0.2, 0.3, 0.4], "fold1": [0.5, 0.1, 0.6, 0.7], "holdout": [0.9, 0.1, 0.2, 0.3]}
"""Validation scores per fit and epoch: fold0 improves to epoch 4; fold1 peaks at 1 and (patience 1) stops at 2,
before the 4 epochs fold0 chooses, although it would score 0.7 there; the holdout peaks at 1, and must not care."""


def test_honest_scores_and_the_holdout_epochs_come_from_the_other_folds(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spread")
    calls: dict[str, int] = {}

    def scripted(ctx, job, model, scale) -> dict:
        calls[job.name] = calls.get(job.name, 0) + 1
        return {"score": SCRIPT[job.name][calls[job.name] - 1], "ic_mean": 0.0}

    monkeypatch.setattr(fit, "validate", scripted)
    overrides = [*TINY_RUN, "split.n_folds=2", "train.epochs=4", "train.early_stopping_patience=1",
                 "train.log_every_s=1e-9"]
    summary = train(load_config(None, overrides), small, tmp_path / "run")
    folds = summary["folds"]
    assert (folds["fold0"]["best_epoch"], folds["fold0"]["epochs_run"]) == (4, 4)
    assert (folds["fold1"]["best_epoch"], folds["fold1"]["epochs_run"]) == (1, 2)  # early stopping
    assert (folds["fold0"]["honest_epochs"], folds["fold0"]["honest_score"]) == (1, 0.1)  # fold1's choice
    assert (folds["fold1"]["honest_epochs"], folds["fold1"]["honest_score"]) == (4, 0.7)  # trained on past its stop
    assert (folds["fold0"]["best_epoch_score"], folds["fold1"]["best_epoch_score"]) == (0.4, 0.5)
    assert (summary["mean"]["honest_score"], summary["std"]["honest_score"]) == pytest.approx((0.4, 0.3))
    assert summary["mean"]["best_epoch_score"] == pytest.approx(0.45)
    assert summary["epoch_rule"]["epochs"] == 3  # median of 4 and 1, rounded half up
    holdout = load_checkpoint(tmp_path / "run/holdout/best.pt")
    assert holdout["epoch"] == folds["holdout"]["best_epoch"] == 3 and holdout["role"] == "holdout"
    assert summary["public_leaderboard_estimate"]["score"] == 0.2  # its epoch-3 score, not its best (0.9)
    assert load_checkpoint(tmp_path / "run/fold1/best.pt")["epoch"] == 1  # best.pt untouched by the extension
    metrics = pl.read_csv(tmp_path / "run/metrics.csv")
    fold1 = metrics.filter(pl.col("fold") == "fold1")
    assert fold1["epoch"].to_list() == [1, 2, 3, 4] and fold1["after_stop"].to_list() == [None, None, 1, 1]
    logged = [record.getMessage() for record in caplog.records]
    assert "fold1: stopped after epoch 2 (early stopping); best epoch 1, score 0.5000 (best.pt)" in logged
    assert any(m.startswith("holdout score 0.2000: the true out-of-sample estimate of the public") for m in logged)
    assert any(m.startswith("fold0 epoch 1 step 1/12 loss ") and "steps/s, ETA" in m for m in logged)  # no terminal


def test_final_fit_members_and_the_manifest(small: Path, tmp_path: Path) -> None:
    summary = train(load_config(None, [*TINY_RUN, "train.final_fit=true", "train.seeds=[3, 5]"]), small,
                    tmp_path / "run")
    manifest = verify_manifest(tmp_path / "run")
    assert manifest["inference"]["checkpoints"] == ["final-s3/best.pt", "final-s5/best.pt"]
    members = manifest["inference"]["members"]
    assert [(m["role"], m["seed"], m["epochs"]) for m in members] == [("final", 3, summary["epoch_rule"]["epochs"]),
                                                                      ("final", 5, summary["epoch_rule"]["epochs"])]
    ckpts = [load_checkpoint(tmp_path / "run" / m["checkpoint"]) for m in members]
    assert [(c["role"], c["seed"], c["fold"]["train_dates"]) for c in ckpts] == [
        ("final", m["seed"], m["train_dates"]) for m in members]
    assert members[0]["train_dates"][1] == 319 - 1 - 1 and members[0]["cutoff"] == 319  # through the last date
    assert not torch.equal(ckpts[0]["model"]["input_proj.weight"], ckpts[1]["model"]["input_proj.weight"])
    assert summary["final_fit"]["seeds"] == [3, 5] and set(summary["final_fit"]["members"]) == {"final-s3", "final-s5"}
    assert load_checkpoint(tmp_path / "run/fold0/best.pt")["role"] == "fold"
    pairs = load_competition(small, require_test=False).pairs["pair"].to_list()
    assert all(c["target_pairs"] == pairs for c in ckpts)  # the predictor refuses a member trained on other pairs


def test_resume_removes_the_temporaries_of_an_interrupted_write(small: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(None, TINY_RUN), small, run)
    leftovers = [run / "fold0" / ".best.pt.tmp4242", run / ".manifest.json.tmp77", run / ".metrics.csv.tmp9"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    keep = run / "notes.tmp.txt"  # not a temporary of atomic_write
    keep.write_text("mine")
    train(load_config(run / "config.yaml"), small, run, resume=True)
    assert not any(path.exists() for path in leftovers) and keep.exists()
    assert "notes.tmp.txt" in json.loads((run / "manifest.json").read_text())["artifacts"]
    verify_manifest(run)
