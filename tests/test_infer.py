"""The predictor: manifest checks, history and release rule, train/serve parity, robustness and the fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from spread.checkpoint import save_checkpoint, serving_state, write_manifest
from spread.competition import load_competition
from spread.config import config_from_dict
from spread.errors import ArtifactError
from spread.gateway import generate_batches, read_served_files, run_gateway
from spread.infer import Predictor, make_predict
from spread.model import GatedTransformer
from spread.prior import mean_rank_prior, write_prior
from spread.scaling import Scaler
from spread.served import History
from spread.synth import generate
from spread.forecast import predict_dataset
from spread.target_features import own_features
from spread.windows import WindowDataset, competition_panel, fit_own_scaler, scaled_source

TINY = {
    "data": {"window": 12},
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2, "dropout": 0.0, "time2vec_dim": 4},
    "train": {"predict_with": "blend"},
}


def write_run(
    run: Path, comp_dir: Path, seed: int = 0, every: int = 1, members: dict[str, dict] | None = None,
    inference: list[str] | None = None, config: dict | None = None,
) -> dict:
    """A run folder with randomly initialised checkpoints written the way the trainer writes them: one per entry of
    `members` (folder -> extra checkpoint keys such as `fold` or `role`; default one plain `fold0`), seeds `seed`,
    `seed + 1`, ..., the manifest serving `inference` (default every member). Every model reads every `every`-th
    panel feature (as if screened); the checkpoints hold `config` (default TINY; with data.own_features the models
    get the per-target head and the checkpoints the own features' scaler); the parts returned are the first
    member's."""
    comp = load_competition(comp_dir)
    cfg = config_from_dict(TINY if config is None else config)
    panel = competition_panel(comp, cfg.features)
    keep = panel.names[::every]
    fit_rows = np.arange(30, 250)
    scaler = Scaler.fit(panel.values[fit_rows], keep, cfg.scaling, columns=panel.column_indices(keep))
    scale = np.where(comp.target_lags == 1, 0.01, 0.02 * comp.target_lags)
    members = members or {"fold0": {}}
    own_scaler = None
    if cfg.data.own_features:  # the targets' own features, scaled on the same rows
        values = own_features(comp.train, comp.labels, comp.pairs, cfg.features.ffill_limit)
        own_scaler = fit_own_scaler(values[fit_rows], comp.target_names, cfg.scaling)
    models = []
    for index, (folder, extra) in enumerate(members.items()):
        torch.manual_seed(seed + index)
        model = GatedTransformer(cfg.model, n_features=len(keep), target_lags=comp.target_lags.tolist(),
                                 own_channels=cfg.data.own_channels())
        ckpt = serving_state(model, cfg, keep, scaler, comp.target_names, comp.target_lags, scale, own_scaler)
        save_checkpoint(run / folder / "best.pt", {**ckpt, **extra})
        models.append(model.eval())
    write_prior(run / "prior.json", comp.target_names, mean_rank_prior(comp.labels.drop("date_id").to_numpy()))
    write_manifest(run, inference or [f"{folder}/best.pt" for folder in members])
    return {"comp": comp, "cfg": cfg, "panel": panel, "scaler": scaler, "model": models[0], "scale": scale}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("infer")
    comp_dir = generate(root / "comp", seed=1, preset="small")
    run = root / "run"
    parts = write_run(run, comp_dir)
    test, lagged = read_served_files(comp_dir)
    return {"dir": comp_dir, "run": run, "batches": list(generate_batches(test, lagged)), **parts}


@pytest.fixture(scope="module")
def streamed(small: dict) -> tuple[Predictor, np.ndarray, np.ndarray]:
    """Every test date streamed through one predictor: (predictor, date_ids, predictions)."""
    predictor = Predictor.from_run(small["run"], small["dir"], device="cpu")
    dates, rows = [], []
    for date_id, batches in small["batches"]:
        answer = predictor.predict(*batches)
        dates.append(date_id)
        rows.append(answer.to_numpy()[0])
    return predictor, np.array(dates), np.stack(rows)


def batch_predictions(parts: dict, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trainer's (date_ids, predictions) for `dates` with the weights and scaler of a `write_run`."""
    panel, cfg = parts["panel"], parts["cfg"]
    source = scaled_source(panel, parts["scaler"], cfg.data)
    rows = np.searchsorted(panel.date_ids, dates)
    dataset = WindowDataset(source, panel.date_ids, None, rows, cfg.data.window, cfg.data.time_scale)
    return predict_dataset(
        parts["model"], dataset, torch.as_tensor(parts["scale"], dtype=torch.float32), cfg.train, 16, "cpu"
    )


def test_streaming_equals_the_trainers_batch_predictions(small: dict, streamed) -> None:
    predictor, dates, streamed_preds = streamed
    batch_dates, batch_preds = batch_predictions(small, dates)
    assert np.array_equal(batch_dates, dates) and len(dates) == 40
    np.testing.assert_allclose(streamed_preds, batch_preds, atol=1e-5, rtol=0)
    assert predictor.fallback_calls == 0 and predictor.calls == 40


def test_a_screened_model_is_served_from_its_own_inputs_only(small: dict, tmp_path: Path) -> None:
    """A model reading a few features: the predictor builds frames of just the columns and targets they come
    from, and still answers exactly as the trainer."""
    parts = write_run(tmp_path / "run", small["dir"], every=9)
    predictor = Predictor.from_run(tmp_path / "run", small["dir"], device="cpu")
    comp = small["comp"]
    raw_columns = [c for c in comp.train.columns if c != "date_id"]
    assert 0 < len(predictor.raw_columns) < len(raw_columns) and set(predictor.raw_columns) <= set(raw_columns)
    assert 0 < len(predictor.label_targets) < len(comp.target_names)
    dates, rows = [], []
    for date_id, batches in small["batches"][:12]:
        rows.append(predictor.predict(*batches).to_numpy()[0])
        dates.append(date_id)
    _, expected = batch_predictions(parts, np.array(dates))
    np.testing.assert_allclose(np.stack(rows), expected, atol=1e-5, rtol=0)
    assert predictor.fallback_calls == 0


def test_members_with_the_same_inputs_share_one_window_per_call(small: dict, tmp_path: Path, monkeypatch) -> None:
    """A seed ensemble (same screen, scaler and config) builds its latest window once per call, and the answer is
    still the mean of its members' own predictions."""
    import spread.windows

    parts = write_run(tmp_path / "run", small["dir"], members={"fold0": {}, "fold1": {}, "fold2": {}})
    predictor = Predictor.from_run(tmp_path / "run", small["dir"], device="cpu")
    assert len({member.inputs_key for member in predictor.members}) == 1
    built = []
    original = spread.windows.window_for_latest
    monkeypatch.setattr(spread.windows, "window_for_latest", lambda *a, **k: built.append(1) or original(*a, **k))
    dates = [date_id for date_id, _ in small["batches"][:5]]
    rows = [predictor.predict(*batches).to_numpy()[0] for _, batches in small["batches"][:5]]
    assert len(built) == 5 and predictor.answers["all_members"] == 5
    scale = torch.as_tensor(parts["scale"], dtype=torch.float32)
    expected = []
    for member in predictor.members:
        source = scaled_source(parts["panel"], parts["scaler"], parts["cfg"].data)
        rows_at = np.searchsorted(parts["panel"].date_ids, dates)
        dataset = WindowDataset(source, parts["panel"].date_ids, None, rows_at, parts["cfg"].data.window,
                                parts["cfg"].data.time_scale)
        expected.append(predict_dataset(member.model, dataset, scale, parts["cfg"].train, 16, "cpu")[1])
    np.testing.assert_allclose(np.stack(rows), np.mean(expected, axis=0), atol=1e-5, rtol=0)


def test_answers_are_one_finite_non_constant_row_in_target_order(small: dict, streamed) -> None:
    _, _, preds = streamed
    assert np.isfinite(preds).all() and (preds.max(axis=1) > preds.min(axis=1)).all()
    predictor = Predictor.from_run(small["run"], small["dir"], device="cpu")
    answer = predictor.predict(*small["batches"][0][1])
    assert answer.height == 1 and answer.columns == small["comp"].target_names
    assert set(answer.dtypes) == {pl.Float64}


def test_served_rows_replace_train_rows_and_labels_follow_the_release_rule(small: dict) -> None:
    predictor = Predictor.from_run(small["run"], small["dir"], device="cpu")
    history = predictor.history
    n_dates = len(history.features)
    date_id, batches = small["batches"][5]
    test = batches[0].with_columns(pl.lit(123.0).alias(history.feature_names[0]))
    lag2 = batches[2].with_columns(pl.lit(0.5).alias(batches[2].columns[1]))
    predictor.predict(test, batches[1], lag2, batches[3], batches[4])
    predictor.predict(test, batches[1], lag2, batches[3], batches[4])  # the same date again: still one row
    assert len(history.features) == n_dates and history.features[date_id][0] == 123.0
    column = history.target_names.index(batches[2].columns[1])
    assert history.labels[date_id - 3][column] == 0.5  # lag 2, served on date t: the label of t - 3
    future = {"date_id": [10_000], **{name: [1.0] for name in history.feature_names}}
    predictor.predict(pl.DataFrame(future), *[b.clear() for b in batches[1:]])
    assert len(history.features) == n_dates + 1 and predictor.fallback_calls == 0


def test_label_nulls_never_erase_known_labels() -> None:
    history = History(["a"], ["t0", "t1"], [1, 1])
    history.add_labels(3, np.array([0, 1]), np.array([0.1, 0.2]))
    history.add_labels(3, np.array([0, 1]), np.array([np.nan, 0.3]))
    assert history.labels[3].tolist() == [0.1, 0.3]


def test_missing_dates_are_the_window_dates_no_file_has_a_row_for() -> None:
    train = pl.DataFrame({"date_id": [10, 11, 12, 13], "a": [1.0, 2.0, None, 4.0]})
    labels = pl.DataFrame({"date_id": [10, 11, 12, 13], "t0": [0.1, 0.2, 0.3, 0.4]})
    history = History.from_frames(train, labels, pl.DataFrame({"target": ["t0"], "lag": [1], "pair": ["a"]}))
    assert history.start == 10
    assert history.missing_dates(13, 3) == []  # a null cell is a stored row
    assert history.missing_dates(12, 8) == []  # early in the history a window is short, as in training
    history.add_features(16, np.array([5.0]))
    assert history.missing_dates(16, 5) == [14, 15]  # the served date does not continue train.csv
    assert history.missing_dates(5, 3) == [3, 4, 5]  # a date before the published history: nothing is stored


def _with_problems(test: pl.DataFrame, names: list[str]) -> dict[str, pl.DataFrame]:
    lme = [c for c in names if c.startswith("LME_")]
    return {
        "string all-null column": test.with_columns(pl.lit(None, dtype=pl.String).alias(names[1])),
        "text and inf cells": test.with_columns(pl.lit("n/a").alias(names[2]), pl.lit(float("inf")).alias(names[3])),
        "missing exchange": test.with_columns([pl.lit(None, dtype=pl.Float64).alias(c) for c in lme]),
        "unknown extra column": test.with_columns(pl.lit(1.0).alias("brand_new_feature")),
        "missing column": test.drop(names[4]),
        "no is_scored": test.drop("is_scored"),
    }


def test_malformed_rows_still_get_model_answers(small: dict) -> None:
    predictor = Predictor.from_run(small["run"], small["dir"], device="cpu")
    date_id, batches = small["batches"][10]
    empty = [b.clear() for b in batches[1:]]
    for problem, test in _with_problems(batches[0], predictor.history.feature_names).items():
        answer = predictor.predict(test, *empty)
        values = answer.to_numpy()[0]
        assert answer.height == 1 and np.isfinite(values).all() and values.max() > values.min(), problem
        assert predictor.last_source == "model", problem
    assert predictor.fallback_calls == 0


def test_internal_errors_fall_back_to_the_prior_and_are_counted(small: dict) -> None:
    predictor = Predictor.from_run(small["run"], small["dir"], device="cpu")
    _, batches = small["batches"][0]
    prior = predictor.predict(batches[0].drop("date_id"), *batches[1:])  # no date: cannot predict
    assert predictor.fallback_calls == 1 and predictor.last_source == "fallback"
    np.testing.assert_allclose(prior.to_numpy()[0], predictor.prior)

    def broken(*args):
        raise RuntimeError("CUDA out of memory")

    predictor.members[0].model.forward = broken
    answer = predictor.predict(*batches)
    assert predictor.fallback_calls == 2 and predictor.calls == 2
    assert answer.columns == small["comp"].target_names and np.isfinite(answer.to_numpy()).all()
    assert {k: predictor.stats()[k] for k in ("calls", "fallback_calls")} == {"calls": 2, "fallback_calls": 2}


def test_altered_artefact_is_an_error_at_load_naming_the_file(small: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small["run"], run)
    checkpoint = run / "fold0/best.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="fold0/best.pt: sha256 differs"):
        Predictor.from_run(run, small["dir"])

    predict = make_predict(run, small["dir"])  # the kernel's path: never raises, answers the prior
    for _, batches in small["batches"][:3]:
        assert np.isfinite(predict(*batches).to_numpy()).all()
    assert {k: predict.stats()[k] for k in ("calls", "fallback_calls")} == {"calls": 3, "fallback_calls": 3}
    assert isinstance(predict.lazy.load_error, ArtifactError)
    with pytest.raises(ArtifactError):
        make_predict(run, small["dir"], strict=True)(*small["batches"][0][1])


def test_make_predict_is_lazy_and_named_predict(small: dict) -> None:
    predict = make_predict(small["run"], small["dir"], device="cpu")
    assert predict.__name__ == "predict" and predict.lazy.predictor is None
    predict(*small["batches"][0][1])
    assert predict.lazy.predictor is not None and {k: predict.stats()[k] for k in ("calls", "fallback_calls")} == {"calls": 1, "fallback_calls": 0}


def test_without_run_or_competition_every_call_is_still_answered(small: dict, tmp_path: Path) -> None:
    no_run = make_predict(None, small["dir"])
    answer = no_run(*small["batches"][0][1])
    assert answer.columns == small["comp"].target_names and no_run.stats()["fallback_calls"] == 1

    nothing = make_predict(tmp_path / "missing-run", tmp_path / "missing-competition")
    answer = nothing(*small["batches"][0][1])  # names from the lag batches, in lag order
    expected = [c for b in small["batches"][0][1][1:] for c in b.columns if c not in ("date_id", "label_date_id")]
    values = answer.to_numpy()[0]
    assert answer.columns == expected and np.isfinite(values).all() and values.max() > values.min()
    assert nothing(*small["batches"][1][1]).columns == expected  # no retry of the load, same answer shape
    assert {k: nothing.stats()[k] for k in ("calls", "fallback_calls")} == {"calls": 2, "fallback_calls": 2} and nothing.lazy.predictor is None


def truncated_replays(
    comp_dir: Path, run: Path, last: int, tmp_path: Path
) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    """Gateway replays of `run` over `comp_dir` and over a copy without the test rows after date `last`: (the full
    replay's result, its answers up to `last`, the truncated replay's answers)."""
    cut = tmp_path / "cut"
    shutil.copytree(comp_dir, cut)
    for path in [cut / "test.csv", *sorted((cut / "lagged_test_labels").glob("*.csv"))]:
        pl.read_csv(path).filter(pl.col("date_id") <= last).write_csv(path)
    full = run_gateway(comp_dir, make_predict(run, comp_dir), out_file=tmp_path / "full.parquet")
    part = run_gateway(cut, make_predict(run, cut), out_file=tmp_path / "part.parquet")
    earlier = pl.read_parquet(full["submission"]).filter(pl.col("date_id") <= last)
    return full, earlier, pl.read_parquet(part["submission"])


def test_truncating_the_test_set_keeps_earlier_predictions_bit_identical(small: dict, tmp_path: Path) -> None:
    full, full_rows, part_rows = truncated_replays(small["dir"], small["run"], small["batches"][14][0], tmp_path)
    assert part_rows.height == 15 and part_rows.equals(full_rows)
    assert full["fallback_calls"] == 0 and np.isfinite(full["score"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loads_and_predicts_on_the_gpu(small: dict, streamed) -> None:
    predictor = Predictor.from_run(small["run"], small["dir"], device="cuda")
    assert next(predictor.members[0].model.parameters()).is_cuda
    _, _, cpu_preds = streamed
    for index, (_, batches) in enumerate(small["batches"][:5]):
        values = predictor.predict(*batches).to_numpy()[0]
        np.testing.assert_allclose(values, cpu_preds[index], atol=1e-3)
    assert predictor.fallback_calls == 0
