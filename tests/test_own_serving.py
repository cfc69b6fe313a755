"""data.own_features, model.prior_weight, features.market_vol and features.vol_interaction end to end: trained,
checkpointed, rebuilt and served through the same code as validation (the market features and their interactions
with the returns read every price column over a longer lookback than the rest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spread.checkpoint import build_model, load_checkpoint
from spread.competition import load_competition
from spread.config import load_config
from spread.errors import ArtifactError
from spread.forecast import predict_dataset
from spread.gateway import generate_batches, read_served_files
from spread.infer import Predictor
from spread.members import build_member
from spread.prior import prior_input
from spread.splits import HOLDOUT
from spread.trainer import competition_folds, final_fold, final_name, label_limit, train
from spread.windows import dataset_labels, prepare_fold

from conftest import TINY_RUN

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def own_run(small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = load_config(None, [*TINY_RUN, "data.own_features=true", "model.target_head_dim=8", "model.prior_weight=1.0",
                             "train.ema_decay=0.9", "train.final_fit=true", "train.seeds=[0]",
                             "features.market_vol=[3,6]", "features.market_vol_base=30",
                             "features.vol_interaction=6", "screen.always_keep=[^market__,^regime__]"])
    run = tmp_path_factory.mktemp("own") / "run"
    summary = train(cfg, small, run)
    return {"cfg": cfg, "run": run, "summary": summary, "comp": load_competition(small)}


def test_the_checkpoint_carries_the_own_scaler_and_rebuilds_the_head(own_run) -> None:
    ckpt = load_checkpoint(own_run["run"] / HOLDOUT / "best.pt")
    comp = own_run["comp"]
    assert len(ckpt["own_scaler"]["names"]) == len(comp.target_names) * own_run["cfg"].data.own_channels() // 2
    model = build_model(ckpt)
    assert model.target_head is not None
    assert {"market__vol3", "market__vol6"} <= set(ckpt["feature_names"])  # kept by screen.always_keep
    assert any(name.startswith("regime__") and name.endswith("_xvol6") for name in ckpt["feature_names"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][name]), name


def test_served_answers_equal_the_trainers_validation_predictions(own_run, small: Path) -> None:
    """The predictor's answer for each scored date equals predict_dataset's on the holdout's validation set."""
    cfg, comp, run = own_run["cfg"], own_run["comp"], own_run["run"]
    ckpt = load_checkpoint(run / HOLDOUT / "best.pt")
    fold = next(f for f in competition_folds(comp, cfg) if f.name == HOLDOUT)
    data = prepare_fold(comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data)
    scale = torch.as_tensor(ckpt["target_scale"], dtype=torch.float32)
    dates, expected = predict_dataset(build_model(ckpt), data.val, scale, cfg.train, 16, "cpu")
    predictor = Predictor.from_run(run, small, device="cpu", members="holdout")
    served = {}
    for date_id, batches in generate_batches(*read_served_files(small)):
        served[date_id] = predictor.predict(*batches).to_numpy()[0]
    assert predictor.fallback_calls == 0 and set(dates) <= set(served)
    np.testing.assert_allclose(np.stack([served[d] for d in dates]), expected, atol=1e-5, rtol=0)
    assert set(predictor.label_targets) == set(comp.target_names)  # every target's labels feed its own features


def test_each_fit_reads_the_prior_of_its_own_training_labels(own_run) -> None:
    """The prior a served checkpoint carries (with train.ema_decay: the weight average's) is that of its fit's
    training labels as released at its cutoff (`prepare_fold` masks the rest: test_leakage), for the walk-forward
    fold, the holdout and the final fit alike; fits on other dates carry other values."""
    cfg, comp, run = own_run["cfg"], own_run["comp"], own_run["run"]
    fits = {fold.name: fold for fold in competition_folds(comp, cfg)}
    fits[final_name(0)] = final_fold(comp, label_limit(comp, cfg))
    carried = {}
    for name, fold in fits.items():
        data = prepare_fold(comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data)
        carried[name] = load_checkpoint(run / name / "best.pt")["model"]["target_prior"].numpy()
        expected = prior_input(dataset_labels(data.train))
        assert expected.std() > 0.5  # a signal, not the all-zero prior of constant values
        np.testing.assert_array_equal(carried[name], expected)
    first, *others = carried.values()
    assert len(others) == 2 and all(not np.array_equal(first, other) for other in others)


def test_a_checkpoint_without_the_own_scaler_is_refused(own_run) -> None:
    run, comp = own_run["run"], own_run["comp"]
    ckpt = load_checkpoint(run / HOLDOUT / "best.pt")
    del ckpt["own_scaler"]
    with pytest.raises(ArtifactError, match="own features"):
        build_member(run, "holdout/best.pt", ckpt, comp, torch.device("cpu"))


def test_a_member_whose_legs_train_csv_lacks_is_refused_at_load(own_run) -> None:
    """Every call would fail on the missing leg: the member is refused once, at load, naming the column."""
    from dataclasses import replace

    from spread.target_features import leg_columns

    run, comp = own_run["run"], own_run["comp"]
    leg = leg_columns(comp.pairs)[0]
    ckpt = load_checkpoint(run / HOLDOUT / "best.pt")
    with pytest.raises(ArtifactError, match=f"leg columns train.csv lacks: \\['{leg}'\\]"):
        build_member(run, "holdout/best.pt", ckpt, replace(comp, train=comp.train.drop(leg)), torch.device("cpu"))
