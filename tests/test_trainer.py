"""The training loop end to end on the `small` synthetic preset, with tiny models: run folder, determinism,
resume == uninterrupted, the whole-pipeline leak test, pruning and the final fit, and the smoke config."""

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
from spread.checkpoint import build_model, load_checkpoint, verify_manifest
from spread.config import load_config
from spread.errors import ArtifactError, ConfigError
from spread.metrics import rank_correlation_sharpe
from spread.model import GatedTransformer, ModelOutput
from spread.pruning import gate_table, select_features
from spread.fit import Learner, train_step
from spread.forecast import forward, predict_dataset, predictions
from spread.losses import rank_targets, regression_loss, unit_ranks
from spread.optim import build_optimizer, learning_rate
from spread.runlog import add_honest_scores, score_headline, summarize
from spread.runtime import Runtime, inference_dtype, make_grad_scaler, resolve_amp
from spread.train_config import TrainConfig
from spread.trainer import train
from spread.windows import EpochSampler, prepare_fold

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_run(small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    return run, train(load_config(None, TINY_RUN), small, run)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(run_a: Path, run_b: Path, names: list[str]) -> None:
    for name in names:
        a, b = weights(run_a / name), weights(run_b / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"


def holdout_replay(ckpt: dict, small: Path, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(dates, predictions, truth, feature names) of a holdout checkpoint on its fold's validation dates, the model
    rebuilt from the checkpoint alone and the fold from its record."""
    from spread.competition import load_competition
    from spread.splits import Fold

    record = ckpt["fold"]
    fold = Fold("holdout", tuple(record["train_dates"]), tuple(record["val_dates"]), record["embargo"], record["cutoff"])
    data = prepare_fold(load_competition(small), fold, cfg.features, cfg.screen, cfg.scaling, cfg.data)
    dates, pred = predict_dataset(build_model(ckpt), data.val, torch.tensor(ckpt["target_scale"]), cfg.train, 7, "cpu")
    truth = data.val.targets[torch.as_tensor(data.val.rows)].double().numpy()
    assert len(dates) == len(data.val) == len(truth)
    return dates, pred, truth, data.feature_names


def crash_after_first_epoch(monkeypatch: pytest.MonkeyPatch, cfg, small: Path, run: Path) -> None:
    """Train `cfg` into `run`, crashing right after fold0's first last.pt (the save itself completes)."""
    real_save = fit.save_checkpoint
    saved_last = []

    def save_then_crash(path: Path, state: dict) -> None:
        real_save(path, state)
        if Path(path).name == "last.pt":
            saved_last.append(path)
            if len(saved_last) == 1:
                raise KeyboardInterrupt("simulated crash after epoch 1 of fold0")

    monkeypatch.setattr(fit, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, small, run)
    monkeypatch.setattr(fit, "save_checkpoint", real_save)


# ----------------------------------------------------------------------------------------------------------------
# pieces


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg.train, TrainConfig)
    assert cfg.model.d_model % cfg.model.n_heads == 0


def test_configs_include_smoke_and_default() -> None:
    assert {"smoke.yaml", "default.yaml"} <= {p.name for p in CONFIGS}
    default = load_config(CONFIGS[0].parent / "default.yaml")
    shape = (default.data.window, default.model.patch_len, default.model.d_model, default.model.n_layers,
             default.model.n_heads)
    assert shape == (192, 8, 160, 3, 4)  # issue 15's measured defaults (bench/RESULTS.md "Levers")


@pytest.mark.parametrize("override", ["train.amp=fp8", "train.schedule=step", "train.predict_with=mean",
                                      "train.epochs=0", "train.betas=[0.9, 1.5]", "train.device=tpu"])
def test_train_config_rejects_bad_values(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


def test_learning_rate_schedules() -> None:
    cosine = TrainConfig(lr=1e-3, warmup_steps=4, min_lr_frac=0.1)
    rates = [learning_rate(step, 20, cosine) for step in range(20)]
    assert rates[0] == pytest.approx(2.5e-4) and rates[3] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))
    onecycle = TrainConfig(lr=1e-3, warmup_frac=0.25, schedule="onecycle")
    rates = [learning_rate(step, 20, onecycle) for step in range(20)]
    assert rates[0] > 1e-3 / 25 and max(rates) == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-3 / 2.5e5)


def test_epoch_sampler_shards_rebuild_the_single_process_batches() -> None:
    single = list(EpochSampler(37, seed=3, epoch=1))
    assert sorted(single) == list(range(37))
    assert single != list(EpochSampler(37, seed=3, epoch=2)) and single == list(EpochSampler(37, seed=3, epoch=1))
    ranks = [list(EpochSampler(37, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 19
    global_batch, per_rank = 8, 4
    for k in range(4):  # full batches: the ranks' k-th batches together are the single-process k-th batch
        union = ranks[0][k * per_rank : (k + 1) * per_rank] + ranks[1][k * per_rank : (k + 1) * per_rank]
        assert sorted(union) == sorted(single[k * global_batch : (k + 1) * global_batch])


def test_predictions_from_the_heads() -> None:
    out = ModelOutput(reg=torch.tensor([[1.0, -1.0, float("nan")]]), score=torch.tensor([[0.0, 3.0, 1.0]]))
    scale = torch.tensor([0.5, 2.0, 1.0])
    reg = predictions(out, scale, TrainConfig(predict_with="reg"))
    assert reg[0, :2].tolist() == [0.5, -2.0] and torch.isnan(reg[0, 2])  # unscaled to label units, NaN kept
    assert predictions(out, scale, TrainConfig(predict_with="score")).tolist() == [[0.0, 3.0, 1.0]]
    finite = ModelOutput(reg=torch.tensor([[1.0, -1.0, 0.0]]), score=out.score)
    blend = predictions(finite, scale, TrainConfig(predict_with="blend", blend_weight=1.0))
    assert torch.isfinite(blend).all() and blend[0, 0] > blend[0, 2] > blend[0, 1]


def test_predictions_add_the_weighted_prior_to_the_per_date_z_score() -> None:
    score = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.5, 3.0]])
    out = ModelOutput(reg=torch.zeros_like(score), score=score, prior=torch.tensor([1.0, -1.0, 0.0]))
    pred = predictions(out, torch.ones(3), TrainConfig(predict_with="score"))
    centred = score - score.mean(dim=1, keepdim=True)
    expected = centred / centred.square().mean(dim=1, keepdim=True).sqrt() + out.prior
    torch.testing.assert_close(pred, expected)
    assert score[1].argsort().tolist() == [0, 1, 2] and pred[1].argsort().tolist() == [1, 0, 2]  # the prior reorders


def test_predict_dataset_scores_a_non_finite_output_as_zero() -> None:
    class NaNHead(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> ModelOutput:
            reg = x[:, -1, :2].clone()
            reg[:, 1] = float("nan")
            return ModelOutput(reg=reg, score=reg)

    from spread.windows import WindowDataset

    dataset = WindowDataset(torch.ones(6, 2), np.arange(6), np.zeros((6, 2)), np.arange(6), window=2, time_scale=1.0)
    dates, pred = predict_dataset(NaNHead(), dataset, torch.ones(2), TrainConfig(predict_with="reg"), 4, "cpu")
    assert dates.tolist() == list(range(6)) and pred[:, 0].tolist() == [1.0] * 6 and pred[:, 1].tolist() == [0.0] * 6


def test_precision_choice_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu)[0] is None and resolve_amp("off", cpu)[0] is None
    assert resolve_amp("bf16", cpu)[0] is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    assert inference_dtype(TrainConfig(amp="fp16"), cpu) is None  # a GPU-trained model still predicts on the CPU


def test_bf16_autocast_training_step_on_the_cpu() -> None:
    cfg = load_config(None, [*TINY_RUN, "train.amp=bf16"])
    lags = [1, 1, 2, 2]
    torch.manual_seed(0)
    model = GatedTransformer(cfg.model, n_features=5, target_lags=lags)
    runtime = Runtime(torch.device("cpu"), amp_dtype=torch.bfloat16)
    before = model.input_proj.weight.detach().clone()
    learner = Learner(model, model, build_optimizer(model, cfg.train), make_grad_scaler(runtime), runtime, cfg,
                      torch.full((4,), 0.01), torch.tensor(lags), torch.Generator())
    batch = {"x": torch.randn(3, 8, 5), "t": torch.rand(3, 8), "valid": torch.ones(3, 8, dtype=torch.bool),
             "y": 0.01 * torch.randn(3, 4), "y_mask": torch.ones(3, 4, dtype=torch.bool)}
    parts = train_step(learner, batch, lr=1e-3, epoch_position=0.0)
    assert np.isfinite(parts["total"]) and model.input_proj.weight.dtype == torch.float32
    assert not torch.equal(model.input_proj.weight, before)


def test_the_head_biases_learn_at_their_own_rate() -> None:
    """train.head_bias_lr_scale: the lag heads' biases in a group of their own, every parameter in exactly one group;
    at the default (1) the groups are those of earlier last.pt files, so they still resume."""
    lags = [1, 1, 2, 2]
    model = GatedTransformer(load_config(None, TINY_RUN).model, n_features=5, target_lags=lags)
    default = build_optimizer(model, TrainConfig())
    assert [group["lr_scale"] for group in default.param_groups] == [1.0, 1.0, 1.0]
    scaled = build_optimizer(model, TrainConfig(head_bias_lr_scale=30.0))
    *_, biases = scaled.param_groups
    assert biases["lr_scale"] == 30.0 and biases["weight_decay"] == 0.0
    assert {id(p) for p in biases["params"]} == {id(head.bias) for head in model.heads.values()}
    grouped = [id(p) for group in scaled.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    with pytest.raises(ConfigError, match="train.head_bias_lr_scale"):
        load_config(None, ["train.head_bias_lr_scale=-1"])


def test_rank_targets_are_what_the_losses_fit_and_the_scale_is_one(small: Path, tmp_path: Path,
                                                                  single_thread) -> None:
    """loss.target = rank: train_step's regression term is the loss against each date's unit ranks of the raw
    labels (ranked across lags, whatever their scale), and the fit's target scale (checkpointed, so serving
    predicts ranks too) is 1."""
    lags = [1, 1, 2, 2]
    y = torch.tensor([[0.01, -0.03, 0.2, -0.1], [0.02, 0.0, -0.05, 0.3], [-0.01, 0.04, 0.1, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, True, True], [True, True, True, True]])
    batch = {"x": torch.randn(3, 8, 5), "t": torch.rand(3, 8), "valid": torch.ones(3, 8, dtype=torch.bool),
             "y": torch.where(mask, y, torch.zeros_like(y)), "y_mask": mask}
    cfg = load_config(None, [*TINY_RUN, "model.dropout=0.0", "loss.target=rank", "loss.rank_weight=0"])
    torch.manual_seed(0)
    model = GatedTransformer(cfg.model, n_features=5, target_lags=lags)
    scale = torch.tensor([0.01, 0.01, 0.1, 0.1])  # dividing by a per-lag scale would reorder the lags' labels
    runtime = Runtime(torch.device("cpu"), amp_dtype=None)
    learner = Learner(model, model, build_optimizer(model, cfg.train), make_grad_scaler(runtime), runtime, cfg,
                      scale, torch.tensor(lags), torch.Generator().manual_seed(1))
    with torch.no_grad():
        reg = forward(model, batch).reg
    ranks = rank_targets(batch["y"], mask)
    assert torch.equal(ranks[0], unit_ranks(y[:1], torch.ones(1, 4, dtype=torch.bool))[0])
    assert ranks[1, 1] == 0 and not torch.equal(rank_targets(batch["y"] / scale, mask), ranks)
    part = train_step(learner, batch, lr=1e-3, epoch_position=0.5)["regression"]
    assert part == pytest.approx(float(regression_loss(reg, ranks, mask, cfg.loss)), rel=1e-5)
    train(load_config(None, [*TINY_RUN, "loss.target=rank", "split.n_folds=2", "train.final_fit=false"]), small,
          tmp_path / "run")
    saved = torch.as_tensor(load_checkpoint(tmp_path / "run/holdout/best.pt")["target_scale"])
    assert saved.numel() == 48 and bool((saved == 1).all())
    with pytest.raises(ConfigError, match="loss.target"):
        load_config(None, ["loss.target=ranks"])


def test_decoupled_gate_penalty_acts_outside_the_optimizer() -> None:
    """loss.gate_penalty = decoupled: no gate term in the loss; after the AdamW step every gate logit falls by
    lambda times the gate's LR (the step a gate_lambda = 0 fit takes, minus exactly that)."""
    lags = [1, 1, 2, 2]
    batch = {"x": torch.randn(3, 8, 5), "t": torch.rand(3, 8), "valid": torch.ones(3, 8, dtype=torch.bool),
             "y": 0.01 * torch.randn(3, 4), "y_mask": torch.ones(3, 4, dtype=torch.bool)}
    logits, gate_parts = {}, {}
    for penalty, lam in (("loss", 0.0), ("decoupled", 0.4)):
        cfg = load_config(None, [*TINY_RUN, "model.dropout=0.0", "train.gate_lr_scale=50", "loss.gate_warmup_epochs=0",
                                 "loss.gate_ramp_epochs=0", f"loss.gate_penalty={penalty}", f"loss.gate_lambda={lam}"])
        torch.manual_seed(0)
        model = GatedTransformer(cfg.model, n_features=5, target_lags=lags)
        runtime = Runtime(torch.device("cpu"), amp_dtype=None)
        learner = Learner(model, model, build_optimizer(model, cfg.train), make_grad_scaler(runtime), runtime, cfg,
                          torch.full((4,), 0.01), torch.tensor(lags), torch.Generator().manual_seed(1))
        gate_parts[penalty] = train_step(learner, batch, lr=1e-3, epoch_position=0.5)["gate"]
        logits[penalty] = model.gate.logit.detach().clone()
    assert gate_parts == {"loss": 0.0, "decoupled": 0.0}
    assert torch.allclose(logits["decoupled"], logits["loss"] - 1e-3 * 50 * 0.4, atol=1e-6)

    class SkippingScaler:  # what a GradScaler does when fp16 gradients overflow: no step, a lower scale
        def __init__(self) -> None:
            self.value = 2.0**16

        def scale(self, loss: torch.Tensor) -> torch.Tensor:
            return loss

        def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
            pass

        def step(self, optimizer: torch.optim.Optimizer) -> None:
            pass

        def update(self) -> None:
            self.value /= 2

        def get_scale(self) -> float:
            return self.value

    from spread.optim import weight_average

    cfg = load_config(None, [*TINY_RUN, "loss.gate_warmup_epochs=0", "loss.gate_ramp_epochs=0",
                             "loss.gate_penalty=decoupled", "loss.gate_lambda=0.4", "train.ema_decay=0.5"])
    model = GatedTransformer(cfg.model, n_features=5, target_lags=lags)
    average = weight_average(model, 0.5)
    for frozen, scaler in ((False, SkippingScaler()), (True, make_grad_scaler(runtime))):
        model.gate.logit.requires_grad_(not frozen)  # frozen: as bench_online freezes the gate of a served member
        before = model.gate.logit.detach().clone()
        learner = Learner(model, model, build_optimizer(model, cfg.train), scaler, runtime, cfg,
                          torch.full((4,), 0.01), torch.tensor(lags), torch.Generator(), average)
        train_step(learner, batch, lr=1e-3, epoch_position=0.5)
        assert torch.equal(model.gate.logit, before), f"frozen={frozen}"
    assert int(average.n_averaged) == 1  # the skipped step did not update the average, the real one did
    with pytest.raises(ConfigError, match="loss.gate_penalty"):
        load_config(None, ["loss.gate_penalty=prox"])


def test_gate_selection_and_table() -> None:
    gates = np.array([0.9, 0.01, np.nan, 0.3, 0.06])
    assert select_features(gates, threshold=0.05).tolist() == [True, False, False, True, True]
    assert select_features(gates, threshold=0.05, top_k=2).tolist() == [True, False, False, True, False]
    assert select_features(np.array([0.01, 0.02]), threshold=0.5).tolist() == [False, True]  # never empty
    table = gate_table({"fold0": (["a", "b"], np.array([0.2, 0.8])), "holdout": (["b", "c"], np.array([0.4, 0.1]))})
    assert table["feature"].to_list() == ["b", "a", "c"]
    assert table["mean"].to_list() == pytest.approx([0.6, 0.2, 0.1])
    assert table["holdout"].to_list()[1] is None  # "a" was screened out of the holdout


def test_summarize_means_and_stds_over_folds() -> None:
    summary = summarize({"a": {"metrics": {"score": 1.0, "ic": float("nan")}}, "b": {"metrics": {"score": 3.0, "ic": 0.1}}})
    assert summary["mean"]["score"] == 2.0 and summary["std"]["score"] == 1.0
    assert summary["mean"]["ic"] == pytest.approx(0.1)


def test_the_honest_summary_and_headline_count_no_best_epoch() -> None:
    # Two walk-forward folds whose best epochs score high on their own dates, and a two-member holdout.
    folds = {
        "fold0": {"metrics": {"score": 0.9}, "best_epoch_score": 0.9, "honest_score": 0.1, "oracle_score": 1.0},
        "fold1": {"metrics": {"score": 0.7}, "best_epoch_score": 0.7, "honest_score": 0.3, "oracle_score": 2.0},
        "holdout": {"metrics": {"score": 0.4}, "ensemble": {"score": 0.5}, "oracle_score": 1.0},
    }
    summary = summarize(folds)
    summary["mean"]["best_epoch_score"], summary["mean"]["honest_score"] = 0.8, 0.2  # build_summary's walk-forward
    add_honest_scores(summary, trained=True)
    assert summary["honest"]["folds"] == {"fold0": 0.1, "fold1": 0.3, "holdout": 0.5}
    assert summary["honest"]["score"] == pytest.approx(0.3) and summary["honest"]["n_folds"] == 3
    assert summary["mean"]["score"] == pytest.approx(2.0 / 3)  # each fold's reported epoch, kept as it was
    assert summary["oracle_fraction"] == pytest.approx(0.9 / 4.0)  # honest over the oracle on the same folds
    line = score_headline(summary)
    assert line.startswith("honest validation score: 0.300000 +- ") and "over 3 fold(s)" in line
    assert "walk-forward folds 0.200000 at the epoch count the other folds choose, 0.800000 at their best" in line

    # A single walk-forward fold has no honest score: it is left out, and so is its oracle score from the fraction.
    lone = summarize({"fold0": folds["fold0"] | {"honest_score": None}, "holdout": folds["holdout"]})
    add_honest_scores(lone, trained=True)
    assert lone["honest"]["n_folds"] == 1 and lone["oracle_fraction"] == pytest.approx(0.5)
    assert lone["mean"]["oracle_score"] == pytest.approx(1.0)
    # A baseline chooses no epoch: its fold scores are honest as they are.
    baseline = summarize({"fold0": {"metrics": {"score": 0.2}}, "holdout": {"metrics": {"score": 0.4}}})
    add_honest_scores(baseline, trained=False)
    baseline["baseline"] = "ridge"
    assert baseline["honest"]["score"] == pytest.approx(0.3) and "oracle_fraction" not in baseline
    assert "best epochs" not in score_headline(baseline)
    zero = summarize({"fold0": {"metrics": {"score": 0.2}, "oracle_score": 0.0}})
    add_honest_scores(zero, trained=False)
    assert np.isnan(zero["oracle_fraction"])  # an oracle scoring 0 leaves no fraction, and no division by zero
    empty = summarize({"fold0": {"metrics": {"score": 0.9}, "honest_score": None}})
    add_honest_scores(empty, trained=True)
    assert score_headline(empty).startswith("honest validation score: none")


# ----------------------------------------------------------------------------------------------------------------
# whole runs


def test_run_folder_contents(tiny_run: tuple[Path, dict], small: Path) -> None:
    run, summary = tiny_run
    for name in ["config.yaml", "folds.csv", "metrics.csv", "summary.json", "gate_weights.csv",
                 "pruned_features.csv", "prior.json", "manifest.json", "fold0/best.pt", "fold0/last.pt",
                 "holdout/best.pt", "holdout/last.pt"]:
        assert (run / name).is_file(), name
    metrics = pl.read_csv(run / "metrics.csv")
    epochs = summary["folds"]["fold0"]["best_epoch"]  # the holdout's epoch count: the walk-forward fold's choice
    holdout_rows = [("holdout", epoch) for epoch in range(1, epochs + 1)]
    assert metrics.select("fold", "epoch").rows() == [("fold0", 1), ("fold0", 2), *holdout_rows]
    assert {"val_score", "val_ic_lag1", "val_icir_lag4", "val_topk_precision", "val_q1_q5_spread",
            "val_gate_mean", "train_total", "lr"} <= set(metrics.columns)
    assert json.loads((run / "summary.json").read_text())["mean"]["score"] == pytest.approx(summary["mean"]["score"])
    assert set(summary["folds"]) == {"fold0", "holdout"} and "score" in summary["std"]
    assert summary["folds"]["holdout"]["best_epoch"] == summary["epoch_rule"]["epochs"] == epochs
    assert summary["public_leaderboard_estimate"]["score"] == summary["folds"]["holdout"]["best_score"]
    assert summary["folds"]["fold0"]["honest_score"] is None  # a single walk-forward fold: no other to choose from
    assert np.isfinite(summary["mean"]["oracle_score"])
    assert summary["honest"]["n_folds"] == 1  # the lone walk-forward fold has no honest score: the holdout counts
    assert summary["honest"]["score"] == pytest.approx(summary["public_leaderboard_estimate"]["score"])
    assert summary["oracle_fraction"] == pytest.approx(
        summary["honest"]["score"] / summary["folds"]["holdout"]["oracle_score"])  # the holdout alone is honest
    gates = pl.read_csv(run / "gate_weights.csv")["mean"].to_list()
    assert gates == sorted(gates, reverse=True)
    manifest = verify_manifest(run)
    assert manifest["inference"]["checkpoints"] == ["fold0/best.pt", "holdout/best.pt"]
    assert set(manifest["artifacts"]) >= {"fold0/best.pt", "metrics.csv", "prior.json", "summary.json"}
    prior = json.loads((run / "prior.json").read_text())
    assert len(prior["prior"]) == len(prior["target_names"]) == 48 and all(0 <= p <= 1 for p in prior["prior"])


def test_best_checkpoint_is_self_describing_and_reproduces_its_score(tiny_run: tuple[Path, dict], small: Path) -> None:
    run, summary = tiny_run
    ckpt = load_checkpoint(run / "holdout" / "best.pt")
    for key in ["model", "optimizer", "scheduler", "grad_scaler", "config", "feature_names", "scaler",
                "screen_dropped", "gate_mask", "target_names", "target_lags", "target_scale", "fold", "epoch", "step",
                "best_score", "rng_state", "torch_version", "data_fingerprint"]:
        assert key in ckpt, key
    assert ckpt["epoch"] == summary["folds"]["holdout"]["best_epoch"] and ckpt["fold"]["name"] == "holdout"
    assert len(ckpt["feature_names"]) == len(ckpt["scaler"]["names"]) == ckpt["gate_mask"].numel()

    dates, pred, truth, feature_names = holdout_replay(ckpt, small, load_config(None, TINY_RUN))
    assert feature_names == ckpt["feature_names"]
    assert np.all(np.diff(dates) > 0) and pred.shape == (len(dates), 48)
    assert rank_correlation_sharpe(truth, pred) == pytest.approx(summary["folds"]["holdout"]["best_score"], abs=1e-6)


def test_same_seed_same_data_gives_identical_weights(tiny_run: tuple[Path, dict], small: Path, tmp_path: Path) -> None:
    run, _ = tiny_run
    train(load_config(None, TINY_RUN), small, tmp_path / "again")
    assert_same_weights(run, tmp_path / "again", ["fold0/last.pt", "holdout/last.pt", "holdout/best.pt"])
    other = load_config(None, [*TINY_RUN, "seed=1", "split.n_folds=0", "train.tensorboard=true"])
    train(other, small, tmp_path / "seed1")
    assert not torch.equal(weights(run / "holdout/last.pt")["input_proj.weight"],
                           weights(tmp_path / "seed1/holdout/last.pt")["input_proj.weight"])
    events = list((tmp_path / "seed1" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and f"tensorboard/{events[0].name}" in verify_manifest(tmp_path / "seed1")["artifacts"]


def test_resume_after_a_crash_equals_the_uninterrupted_run(
    tiny_run: tuple[Path, dict], small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, summary = tiny_run
    resumed = tmp_path / "resumed"
    crash_after_first_epoch(monkeypatch, load_config(None, TINY_RUN), small, resumed)
    assert load_checkpoint(resumed / "fold0" / "last.pt")["epoch"] == 1
    assert not (resumed / "holdout").exists()

    resumed_summary = train(load_config(resumed / "config.yaml"), small, resumed, resume=True)
    assert_same_weights(run, resumed, ["fold0/last.pt", "fold0/best.pt", "holdout/last.pt", "holdout/best.pt"])
    columns = [c for c in pl.read_csv(run / "metrics.csv").columns if c != "seconds"]
    assert pl.read_csv(resumed / "metrics.csv").select(columns).equals(pl.read_csv(run / "metrics.csv").select(columns))
    assert resumed_summary["mean"]["score"] == summary["mean"]["score"]
    verify_manifest(resumed)
    # run.seconds counts the whole run: this session plus the epoch the crashed session ran
    first_epoch = pl.read_csv(resumed / "metrics.csv").filter(pl.col("fold") == "fold0")["seconds"][0]
    run_facts = resumed_summary["run"]
    assert run_facts["seconds"] == pytest.approx(run_facts["session_seconds"] + first_epoch, abs=0.02)


def test_weight_average_follows_its_recursion() -> None:
    from spread.optim import weight_average

    assert weight_average(torch.nn.Linear(2, 1), 0.0) is None
    model = torch.nn.Linear(2, 1, bias=False)
    average = weight_average(model, 0.75)
    history = []
    for value in (1.0, 3.0, -2.0):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update_parameters(model)
        history.append(value)
    expected = 1.0  # the first update copies, then avg = 0.75 avg + 0.25 w
    for value in history[1:]:
        expected = 0.75 * expected + 0.25 * value
    assert torch.allclose(average.module.weight, torch.full((1, 2), expected))
    assert model.weight[0, 0].item() == -2.0  # the trained weights are untouched


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_ema_decay_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="train.ema_decay"):
        load_config(None, [f"train.ema_decay={value}"])


def test_weight_average_is_validated_served_and_resumed_exactly(
    tiny_run: tuple[Path, dict], small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_thread
) -> None:
    """train.ema_decay > 0: best.pt's served weights and gates are the average's (its validation score is theirs),
    last.pt also holds the trained weights (TRAINED_WEIGHTS), and a crash after epoch 1 resumes bit-identical to
    the uninterrupted run, average, pruned fine-tunes and decoupled gate penalty included."""
    overrides = [*TINY_RUN, "train.ema_decay=0.8", "loss.gate_penalty=decoupled", "loss.gate_lambda=0.5",
                 "train.finetune_pruned=true", "train.finetune_epochs=2"]
    run = tmp_path / "run"
    summary = train(load_config(None, overrides), small, run)
    ckpt, last = load_checkpoint(run / "holdout" / "best.pt"), load_checkpoint(run / "holdout" / "last.pt")
    served, trained = ckpt["model"], last[fit.TRAINED_WEIGHTS]
    assert not set(fit.RESUME_ONLY) & ckpt.keys() and served.keys() == trained.keys()
    assert last[fit.AVERAGE_UPDATES] == last["step"]  # no step skipped on the CPU: one update per optimiser step
    assert all(torch.equal(served[k], last["model"][k]) for k in served)  # the holdout keeps its last epoch
    assert not torch.equal(served["input_proj.weight"], trained["input_proj.weight"])
    gate = torch.sigmoid(served["gate.logit"]) * served["gate.mask"]
    assert torch.allclose(torch.as_tensor(ckpt["gate"]), gate)
    plain = load_checkpoint(tiny_run[0] / "holdout" / "best.pt")  # the same run without the average
    assert fit.TRAINED_WEIGHTS not in plain and not torch.equal(plain["model"]["input_proj.weight"],
                                                                served["input_proj.weight"])
    _, pred, truth, _ = holdout_replay(ckpt, small, load_config(None, overrides))
    assert rank_correlation_sharpe(truth, pred) == pytest.approx(summary["folds"]["holdout"]["best_score"], abs=1e-6)

    resumed = tmp_path / "resumed"
    crash_after_first_epoch(monkeypatch, load_config(None, overrides), small, resumed)
    train(load_config(resumed / "config.yaml"), small, resumed, resume=True)
    names = [f"{fit_name}/{file}" for fit_name in ("fold0", "fold0-pruned", "holdout", "holdout-pruned")
             for file in ("last.pt", "best.pt")]
    for name in names:
        a, b = load_checkpoint(run / name), load_checkpoint(resumed / name)
        for key in ("model", fit.TRAINED_WEIGHTS) if name.endswith("last.pt") else ("model",):
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), f"{name}: {key} differs"
        assert a.get(fit.AVERAGE_UPDATES) == b.get(fit.AVERAGE_UPDATES), name
        assert a["gate"] == b["gate"], name


def test_holdout_ensemble_is_scored_as_the_gateway_replays_it(small: Path, tmp_path: Path, single_thread) -> None:
    """train.holdout_members = 2: a second holdout fit (seed + 1) on the same fold, and the public-leaderboard
    estimate is their ensemble's score, the one `gateway --members holdout` gets by serving both."""
    from spread.gateway import run_gateway
    from spread.infer import make_predict

    overrides = [*TINY_RUN, "train.holdout_members=2", "train.finetune_pruned=true", "train.finetune_epochs=1"]
    summary = train(load_config(None, overrides), small, tmp_path / "run")
    run = tmp_path / "run"
    first, second = load_checkpoint(run / "holdout/best.pt"), load_checkpoint(run / "holdout-s1/best.pt")
    assert (first["seed"], second["seed"]) == (0, 1) and first["role"] == second["role"] == "holdout"
    assert first["feature_names"] == second["feature_names"] and first["scaler"] == second["scaler"]
    assert not torch.equal(first["model"]["input_proj.weight"], second["model"]["input_proj.weight"])
    ensemble, estimate = summary["folds"]["holdout"]["ensemble"], summary["public_leaderboard_estimate"]
    assert estimate["members"] == ensemble["members"] == ["holdout", "holdout-s1"]
    assert estimate["score"] == ensemble["score"] not in set(ensemble["member_scores"].values())
    replay = run_gateway(small, make_predict(run, small, device="cpu", members="holdout"),
                         out_file=tmp_path / "s.parquet")
    assert (run / "holdout-pruned/best.pt").is_file()  # reported beside the holdout, not one of its members
    assert replay["summary"]["members"]["loaded"] == ["holdout-s1/best.pt", "holdout/best.pt"]
    assert replay["score"] == pytest.approx(estimate["score"], abs=1e-6)


def test_fold_members_score_each_walk_forward_fold_as_a_fixed_length_seed_ensemble(small: Path, tmp_path: Path,
                                                                                   single_thread) -> None:
    """train.fold_members = 2: every walk-forward fold is refitted twice at its honest epoch count (no selection),
    the first fit retraces the fold's own (its score is the honest score), and the pair's ensemble score is the
    fold's cell in the lab; none of them is served."""
    from spread.runlog import honest_fold_score

    overrides = [*TINY_RUN, "split.n_folds=2", "train.fold_members=2"]
    summary = train(load_config(None, overrides), small, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("fold0", "fold1"):
        fold = summary["folds"][name]
        ensemble = fold["honest_ensemble"]
        assert ensemble["members"] == [f"{name}-fixed", f"{name}-fixed-s1"] and ensemble["seeds"] == [0, 1]
        first = load_checkpoint(run / f"{name}-fixed/best.pt")
        assert first["epoch"] == fold["honest_epochs"] and first["seed"] == 0
        assert ensemble["member_scores"][f"{name}-fixed"] == pytest.approx(fold["honest_score"], abs=1e-9)
        assert ensemble["score"] not in set(ensemble["member_scores"].values())
        assert honest_fold_score(name, fold, trained=True)[0] == ensemble["score"]
    scores = [summary["folds"][name]["honest_ensemble"]["score"] for name in ("fold0", "fold1")]
    assert summary["mean"]["honest_ensemble_score"] == pytest.approx(sum(scores) / 2)
    assert not any("fixed" in path for path in summary["inference_checkpoints"])


def test_run_folder_guards(tiny_run: tuple[Path, dict], small: Path) -> None:
    run, _ = tiny_run
    with pytest.raises(ConfigError, match="not empty"):
        train(load_config(None, TINY_RUN), small, run)
    with pytest.raises(ConfigError, match="exists and is not a folder"):  # was a NotADirectoryError traceback
        train(load_config(None, TINY_RUN), small, run / "config.yaml")
    with pytest.raises(ConfigError, match="changed: model.d_model"):
        train(load_config(None, [*TINY_RUN, "model.d_model=16"]), small, run, resume=True)


def test_a_resume_on_other_data_or_of_a_folder_that_is_no_run_writes_nothing(
    tiny_run: tuple[Path, dict], small: Path, tmp_path: Path
) -> None:
    run, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(small, other)
    lines = (other / "train.csv").read_text().splitlines()
    cells = lines[5].split(",")
    lines[5] = ",".join([cells[0], str(float(cells[1] or 1.0) * 1.01), *cells[2:]])  # one price moved
    (other / "train.csv").write_text("\n".join(lines) + "\n")
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*") if path.is_file()}
    with pytest.raises(ConfigError, match="resuming on other data"):
        train(load_config(run / "config.yaml"), other, run, resume=True)
    assert {path: path.stat().st_mtime_ns for path in run.rglob("*") if path.is_file()} == before
    lone = tmp_path / "lone"  # a folder with a config.yaml only (e.g. a baseline's): not a training run
    lone.mkdir()
    shutil.copy(run / "config.yaml", lone / "config.yaml")
    with pytest.raises(ArtifactError, match="not a training run folder"):
        train(load_config(run / "config.yaml"), small, lone, resume=True)
    assert sorted(p.name for p in lone.iterdir()) == ["config.yaml"]


def test_resume_accepts_a_run_saved_before_a_field_was_added(tmp_path: Path) -> None:
    """A config.yaml without a field added since (here train.ema_decay) resolves it to its default: no change."""
    import yaml

    from spread.config import config_to_dict
    from spread.trainer import check_run_folder

    cfg = load_config(None, TINY_RUN)
    saved = config_to_dict(cfg)
    del saved["train"]["ema_decay"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    for name in ("data.json", "prior.json"):  # what a run writes before its first fit
        (tmp_path / name).write_text("{}")
    check_run_folder(tmp_path, cfg, resume=True)
    with pytest.raises(ConfigError, match="changed: train.ema_decay"):
        check_run_folder(tmp_path, load_config(None, [*TINY_RUN, "train.ema_decay=0.5"]), resume=True)


def noisy_copy(source: Path, target: Path, after: int) -> Path:
    """A copy of a competition folder whose feature rows and labels dated after `after` are random noise."""
    shutil.copytree(source, target)
    rng = np.random.default_rng(123)
    for name in ("train.csv", "train_labels.csv", "test.csv"):
        frame = pl.read_csv(target / name)
        late = (frame["date_id"] > after).to_numpy()
        columns = [c for c in frame.columns if c not in ("date_id", "is_scored")]
        noised = []
        for column in columns:
            values = frame[column].cast(pl.Float64).to_numpy().copy()
            values[late] = rng.lognormal(3.0, 1.0, size=late.sum())
            noised.append(pl.Series(column, values))
        frame.with_columns(noised).write_csv(target / name)
    return target


def test_leak_noise_after_train_end_plus_5_changes_nothing(small: Path, tmp_path: Path) -> None:
    """The whole pipeline (features, screening, scaling, folds, pruning, final fit, prior) with data.train_end = T
    gives bit-identical weights when every row and label after T + 5 is noise."""
    end = 250
    noisy = noisy_copy(small, tmp_path / "noisy", after=end + 5)
    overrides = [*TINY_RUN, f"data.train_end={end}", "split.holdout=false", "train.final_fit=true",
                 "train.finetune_pruned=true", "train.finetune_epochs=1", "train.prune_top_k=20"]
    cfg = load_config(None, overrides)
    clean_summary = train(cfg, small, tmp_path / "clean")
    train(cfg, noisy, tmp_path / "noisy_run")
    checkpoints = ["fold0/best.pt", "fold0/last.pt", "fold0-pruned/best.pt", "final-s0/best.pt", "final-s0/last.pt"]
    assert_same_weights(tmp_path / "clean", tmp_path / "noisy_run", checkpoints)
    assert (tmp_path / "clean/prior.json").read_text() == (tmp_path / "noisy_run/prior.json").read_text()

    # noise that starts inside the training data does change the weights (so the comparison above can fail)
    early = noisy_copy(small, tmp_path / "early", after=end - 10)
    train(load_config(None, overrides[:-3]), early, tmp_path / "early_run")
    assert not torch.equal(weights(tmp_path / "clean/final-s0/last.pt")["input_proj.weight"],
                           weights(tmp_path / "early_run/final-s0/last.pt")["input_proj.weight"])

    # pruning and the final fit, on the clean run
    pruned = load_checkpoint(tmp_path / "clean/fold0-pruned/best.pt")
    assert int(pruned["gate_mask"].sum()) == 20 and len(pruned["feature_names"]) > 20
    assert "pruned_mean" in clean_summary and clean_summary["folds"]["fold0"]["pruned"]["n_features"] == 20
    assert clean_summary["final_fit"]["epochs"] == clean_summary["folds"]["fold0"]["best_epoch"]
    final = load_checkpoint(tmp_path / "clean/final-s0/best.pt")
    assert final["fold"]["cutoff"] == end
    assert verify_manifest(tmp_path / "clean")["inference"]["checkpoints"] == ["final-s0/best.pt"]


@pytest.mark.slow
def test_smoke_config_beats_random_on_the_small_preset(small: Path, tmp_path: Path) -> None:
    summary = train(load_config(CONFIGS[0].parent / "smoke.yaml"), small, tmp_path / "smoke")
    rng = np.random.default_rng(0)
    random_scores = []
    comp_labels = pl.read_csv(small / "train_labels.csv")
    for name, fold in summary["folds"].items():
        ckpt = load_checkpoint(tmp_path / "smoke" / name / "best.pt")
        start, stop = ckpt["fold"]["val_dates"]
        truth = comp_labels.filter(pl.col("date_id").is_between(start, stop)).drop("date_id").to_numpy()
        random_scores.append([rank_correlation_sharpe(truth, rng.normal(size=truth.shape)) for _ in range(200)])
    random_mean = np.mean(random_scores, axis=0)  # the fold-mean score of random predictions, 200 draws
    print(f"smoke: mean score {summary['mean']['score']:.3f}, oracle {summary['mean']['oracle_score']:.3f}, "
          f"random 99th percentile {np.quantile(random_mean, 0.99):.3f}")
    assert summary["mean"]["score"] > max(np.quantile(random_mean, 0.99), 0.3)
    assert summary["mean"]["score"] < summary["mean"]["oracle_score"]


def test_resume_without_data_uses_the_recorded_folder(tiny_run: tuple[Path, dict], small: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from spread.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    record = json.loads((run / "data.json").read_text())
    assert record["data"] == str(small.resolve()) and len(record["fingerprint"]) == 64
    caplog.set_level(logging.INFO, logger="spread")
    assert main(["train", "--resume", str(run)]) == 0
    assert any(f"on the data folder {small.resolve()}" in r.getMessage() for r in caplog.records)
    (run / "data.json").unlink()
    assert main(["train", "--resume", str(run)]) == 2  # no record and no --data: a clear error
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")]) == 2  # two folders named


def test_a_failed_train_writes_nothing(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from spread.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(small, broken)
    (broken / "train_labels.csv").write_text("date_id,target_0\n0,abc\n")
    cases = {
        "bad data": ["--data", str(broken)],
        "no data": ["--data", str(tmp_path / "missing")],
        "bad config": ["--data", str(small), "split.min_train=100000"],
        "unknown key": ["--data", str(small), "model.d_modle=8"],
    }
    for name, argv in cases.items():
        run = tmp_path / name.replace(" ", "_")
        assert main(["train", "--out", str(run), *TINY_RUN, *argv]) == 2, name
        assert not run.exists(), name
        assert "error:" in capsys.readouterr().err
    # and the fixed command then runs in that same folder
    assert main(["train", "--out", str(tmp_path / "bad_config"), "--data", str(small), *TINY_RUN]) == 0
    # a screen that keeps nothing is a one-line error naming the fold and the keys, not a model's ValueError
    assert main(["train", "--out", str(tmp_path / "empty"), "--data", str(small), *TINY_RUN, "screen.min_std=1e9"]) == 2
    assert "fold0: the screen keeps no feature" in capsys.readouterr().err


def test_pruned_features_file_and_summary_agree(tiny_run: tuple[Path, dict]) -> None:
    run, summary = tiny_run
    decision = pl.read_csv(run / "pruned_features.csv")
    assert decision.columns == ["feature", "mean", "kept"]
    assert summary["pruned_features"] == decision.filter(~pl.col("kept")).height
    assert summary["kept_features"] == decision.filter(pl.col("kept")).height > 0
    assert decision["feature"].to_list() == pl.read_csv(run / "gate_weights.csv")["feature"].to_list()


def test_progress_lines_every_log_every_s(caplog: pytest.LogCaptureFixture) -> None:
    from spread import runlog

    caplog.set_level(logging.INFO, logger="spread.runlog")
    now = [0.0]
    lines = runlog.ProgressLines("fold0", every_s=30.0, total_steps=100, clock=lambda: now[0])
    for step in range(1, 41):
        now[0] = step * 2.0  # 0.5 steps/s
        lines.update(step, epoch=1, loss=0.25)
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 2  # at 30 s and 60 s
    assert logged[0] == "fold0 epoch 1 step 15/100 loss 0.2500, 0.50 steps/s, ETA 2m50s"
    silent = runlog.ProgressLines("fold0", every_s=0.0, total_steps=10, clock=lambda: now[0])
    silent.update(1, 1, 0.1)
    assert len(caplog.records) == 2  # 0 s: no lines


def test_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.auto import tqdm

    from spread import runlog

    monkeypatch.setattr(runlog, "is_terminal", lambda: True)
    bar = runlog.progress(range(5), 5, "fold0 epoch 1", enabled=True)
    assert isinstance(bar, tqdm) and bar.unit == "step" and list(bar) == list(range(5))
    assert list(runlog.progress(range(3), 3, "x", enabled=False)) == [0, 1, 2]
    monkeypatch.setattr(runlog, "is_terminal", lambda: False)
    assert not isinstance(runlog.progress(range(3), 3, "x", enabled=True), tqdm)
