"""One model's fit: optimiser steps over epochs, validation, best.pt / last.pt, and an exact resume.

    fit(ctx, job): for each epoch
      shuffle (seeded by seed and epoch), for each batch:
        lr = schedule(step); autocast forward; loss = total_loss(out, y / target_scale, ...) (with
        loss.target = rank: y's daily ranks); scaled backward; clip; step; with loss.gate_penalty = decoupled,
        lower the gate logits; with train.ema_decay, update the weight average (then the model validated, saved
        as the served weights and predicting)
      validate on rank 0: predictions -> spread.metrics.validation_metrics (competition score, IC, ICIR per lag,
      top-k, Q1-Q5, gate sparsity); a selecting fit (a walk-forward fold) keeps best.pt on the score (not the
      loss) and stops early on it; a fixed-length fit (the holdout, the final fit) keeps its last epoch
      write the metrics.csv row and last.pt (resume point)

`extend_fit` trains a finished fold on past its early stop, for its honest score only (best.pt stays).

Targets are scaled per lag by the std of that lag's training labels (so one Huber delta suits every horizon); the
scale is stored in the checkpoint and `spread.forecast.predictions` undoes it. A `Learner` holds what every
optimiser step needs (model, optimiser, GradScaler, pair generator); a `FitState` is the fit's progress (epochs
and optimiser steps done, the best epoch), saved in last.pt so that `resume` continues after the last completed
epoch with every RNG state restored and ends bit-identical to an uninterrupted fit.

Under torchrun the model is wrapped in DistributedDataParallel, each global batch is split interleaved over the
ranks (`spread.windows.EpochSampler`), rank 0 validates on the full validation set and alone writes files, and
its `EpochVerdict` is broadcast so every rank follows the same path.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from spread.checkpoint import load_checkpoint, save_checkpoint, serving_state
from spread.competition import Competition
from spread.errors import ConfigError
from spread.forecast import forward, predict_dataset
from spread.losses import gate_weight, rank_targets, total_loss
from spread.metrics import validation_metrics
from spread.model import GatedTransformer, ModelOutput
from spread.optim import build_optimizer, learning_rate, warmup_steps, weight_average
from spread.prior import prior_input
from spread.runfolder import BEST, LAST
from spread.runlog import ProgressLines, RunLog, is_terminal, progress
from spread.runtime import (
    Runtime, autocast, broadcast_from_rank0, make_grad_scaler, restore_rng_state, rng_state, seed_everything,
    to_device,
)
from spread.splits import Fold
from spread.windows import FoldData, dataset_labels, make_loader, target_scale

if TYPE_CHECKING:
    from spread.config import Config
    from spread.features import Panel

log = logging.getLogger(__name__)

TRAINED_WEIGHTS = "trained_model"
"""Key of last.pt's trained weights when `model` holds their average (train.ema_decay > 0): resume reads it (best.pt,
which nothing resumes from, leaves it out)."""
AVERAGE_UPDATES = "average_updates"
"""Key of last.pt's count of the average's updates (optimiser steps the fp16 scaler skipped do not update it)."""
RESUME_ONLY = (TRAINED_WEIGHTS, AVERAGE_UPDATES)
"""The keys of last.pt that best.pt leaves out."""


@dataclass
class RunContext:
    """What every fit of a run shares."""

    cfg: "Config"
    comp: Competition
    run_dir: Path
    runtime: Runtime
    runlog: RunLog
    panel: "Panel"
    fingerprint: str
    resume: bool
    oracle: np.ndarray | None = None
    """(dates, N) oracle predictions of a synthetic folder (rows = train date_ids), else None."""
    earlier_seconds: dict[str, float] = field(default_factory=dict)
    """Per fit resumed from an earlier session: the seconds of its epochs run then (so run.seconds is the whole
    run's)."""

    @property
    def target_lags(self) -> np.ndarray:
        return self.comp.target_lags


@dataclass
class FitJob:
    """One model to fit: a fold (or the final fit), how long, with which seed, and from where."""

    name: str
    fold: Fold
    data: FoldData
    epochs: int
    """Epochs to train (the most, when `selects`)."""
    seed: int
    """Seeds the initialisation, the shuffles and the pair sampling (`Config.seed`, or one of `train.seeds`)."""
    role: str = "fold"
    """One of `spread.runfolder.ROLES`; stored in the checkpoints."""
    selects: bool = True
    """True: validation picks best.pt and may stop the fit early (a walk-forward fold). False: a fixed-length fit
    whose best.pt is its last epoch, validated (when `validate`) only to report (the holdout, the final fit)."""
    validate: bool = True
    """Validate after the epochs (`train.eval_every`); False for the final fit, which has no validation dates."""
    schedule_epochs: int = 0
    """Epochs the LR schedule spans (0: `epochs`); a fixed-length fit follows the folds' schedule and stops early,
    so that it is trained exactly as a walk-forward fold's first `epochs` epochs."""
    init_checkpoint: Path | None = None
    """Start from these weights (the pruned fine-tune) instead of a fresh initialisation."""
    keep: np.ndarray | None = None
    """(F,) bool gate mask to freeze (the pruned fine-tune)."""


@dataclass
class FitState:
    """The progress of a fit, saved in last.pt so that a resumed fit continues exactly."""

    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimiser steps taken."""
    best_score: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_gate: list = field(default_factory=list)
    bad_validations: int = 0
    rows: list = field(default_factory=list)
    finished: bool = False
    """No more epochs: the fit ended (its last epoch or early stopping)."""


def validate(ctx: RunContext, job: FitJob, model: GatedTransformer, scale: torch.Tensor) -> dict:
    """Validation metrics of `model` on the job's validation set (rank 0 only)."""
    cfg = ctx.cfg.train
    val = job.data.val
    _, pred = predict_dataset(model, val, scale, cfg, cfg.eval_batch_size, ctx.runtime.device)
    gate = model.gate.values().detach().cpu().numpy()
    return validation_metrics(dataset_labels(val), pred, ctx.target_lags, gate=gate)  # rows ascend: date order


@dataclass
class Learner:
    """What every optimiser step of a fit needs besides the batch (the step counter is `FitState.step`)."""

    model: torch.nn.Module
    """The model to call: the DDP wrapper under torchrun, else the model itself."""
    raw_model: GatedTransformer
    optimizer: torch.optim.Optimizer
    grad_scaler: Any
    runtime: Runtime
    cfg: "Config"
    target_scale: torch.Tensor
    """(N,) on the device."""
    target_lags: torch.Tensor
    """(N,) on the device."""
    pair_generator: torch.Generator
    """Draws the sampled pairs of the rank loss (on the CPU, so its state is portable)."""
    average: AveragedModel | None = None
    """The weight average (train.ema_decay > 0), updated after every optimiser step, else None."""

    @property
    def served(self) -> GatedTransformer:
        """The model the fit validates, checkpoints for serving and predicts with: the average when kept."""
        return self.raw_model if self.average is None else self.average.module


def train_step(
    learner: Learner, batch: dict[str, torch.Tensor], lr: float, epoch_position: float
) -> dict[str, float]:
    """One optimiser step on a batch: autocast forward, fp32 loss, (scaled) backward, clipping, AdamW step; then
    the decoupled gate penalty (loss.gate_penalty) and the weight average's update (train.ema_decay), unless the
    fp16 GradScaler skipped the step."""
    for group in learner.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    batch = to_device(batch, learner.runtime.device)
    if learner.cfg.loss.target == "rank":
        y = rank_targets(batch["y"], batch["y_mask"])  # (B, N) the raw labels' daily unit ranks
    else:
        y = batch["y"] / learner.target_scale  # (B, N) per-lag scaled targets; unknown cells are 0 and masked
    with autocast(learner.runtime):
        out = forward(learner.model, batch)
    out = ModelOutput(reg=out.reg.float(), score=out.score.float())
    loss, parts = total_loss(out, y, batch["y_mask"], learner.raw_model.gate.l1(), epoch_position, learner.cfg.loss,
                             learner.target_lags, learner.pair_generator)
    learner.grad_scaler.scale(loss).backward()
    if learner.cfg.train.grad_clip > 0:
        learner.grad_scaler.unscale_(learner.optimizer)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(learner.model.parameters(), learner.cfg.train.grad_clip)
    scale = learner.grad_scaler.get_scale()  # 1.0 when disabled
    learner.grad_scaler.step(learner.optimizer)  # skipped by the scaler when fp16 gradients overflowed
    learner.grad_scaler.update()  # ... and then it lowers its scale
    learner.optimizer.zero_grad(set_to_none=True)
    if learner.grad_scaler.get_scale() < scale:
        return parts  # no optimiser step: no decoupled penalty, no weight average update either
    loss_cfg, gate = learner.cfg.loss, learner.raw_model.gate
    if loss_cfg.gate_penalty == "decoupled" and gate.logit.requires_grad:  # outside AdamW, like its weight decay
        gate.shrink(lr * learner.cfg.train.gate_lr_scale * gate_weight(epoch_position, loss_cfg))
    if learner.average is not None:
        learner.average.update_parameters(learner.raw_model)
    return parts


@dataclass
class FitPlan:
    """How many steps a fit takes."""

    steps_per_epoch: int
    total_steps: int

    @classmethod
    def make(cls, cfg: "Config", n_samples: int, epochs: int, world_size: int) -> FitPlan:
        per_rank_batch = cfg.data.batch_size // world_size
        full_epoch = math.ceil(math.ceil(n_samples / world_size) / per_rank_batch)
        steps = min(full_epoch, cfg.train.max_steps_per_epoch or full_epoch)
        return cls(steps, steps * epochs)


def progress_lines(ctx: RunContext, job: FitJob, plan: FitPlan) -> ProgressLines:
    """The plain progress lines of a fit: on rank 0 with train.progress, when stderr is not a terminal."""
    shown = ctx.cfg.train.progress and ctx.runtime.is_main and not is_terminal()
    return ProgressLines(job.name, ctx.cfg.train.log_every_s if shown else 0.0, job.epochs * plan.steps_per_epoch)


def train_epoch(ctx: RunContext, job: FitJob, learner: Learner, state: FitState, plan: FitPlan,
                lines: ProgressLines) -> dict[str, float]:
    """One epoch of optimiser steps over a fresh shuffle; returns the mean loss parts (this rank's) and the LR.

    Progress: a tqdm bar when stderr is a terminal, else `lines` (plain log lines every train.log_every_s)."""
    cfg, runtime = ctx.cfg, ctx.runtime
    loader = make_loader(job.data.train, cfg.data.batch_size // runtime.world_size, shuffle=True, seed=job.seed,
                         num_workers=cfg.data.num_workers, epoch=state.epoch, rank=runtime.rank,
                         world_size=runtime.world_size, pin_memory=runtime.device.type == "cuda")
    sums: dict[str, float] = {}
    n_steps = min(len(loader), plan.steps_per_epoch)
    learner.model.train()
    batches = progress(loader, n_steps, f"{job.name} epoch {state.epoch + 1}", cfg.train.progress and runtime.is_main)
    for batch_index, batch in enumerate(batches):
        if batch_index == n_steps:
            break
        lr = learning_rate(state.step, plan.total_steps, cfg.train)
        parts = train_step(learner, batch, lr, state.epoch + batch_index / plan.steps_per_epoch)
        state.step += 1
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        lines.update(state.step, state.epoch + 1, sums.get("total", float("nan")) / (batch_index + 1))
    return {f"train_{key}": value / n_steps for key, value in sums.items()} | {"lr": lr}


def start_fit(ctx: RunContext, job: FitJob, resume: bool, continued: bool = False) -> tuple[Learner, FitState]:
    """Model, optimiser and state of a fit: fresh (seeded), from `job.init_checkpoint`, or resumed from last.pt
    (`continued`: by `extend_fit`, within this session)."""
    cfg, runtime = ctx.cfg, ctx.runtime
    seed_everything(job.seed)
    raw_model = GatedTransformer(cfg.model, n_features=len(job.data.feature_names), target_lags=ctx.target_lags,
                                 window=cfg.data.window, own_channels=cfg.data.own_channels())
    if cfg.model.prior_weight:  # fixed for the fit: from its training labels as released at its cutoff
        raw_model.set_prior(torch.from_numpy(prior_input(dataset_labels(job.data.train))))
    if job.init_checkpoint is not None:
        raw_model.load_state_dict(load_checkpoint(job.init_checkpoint)["model"])
    if job.keep is not None:
        raw_model.gate.freeze_mask(torch.as_tensor(job.keep))
    raw_model.to(runtime.device)
    average = weight_average(raw_model, cfg.train.ema_decay, runtime.device)
    optimizer = build_optimizer(raw_model, cfg.train)
    grad_scaler = make_grad_scaler(runtime)
    pair_generator = torch.Generator()
    pair_generator.manual_seed(job.seed + 1)

    state = FitState()
    last_path = ctx.run_dir / job.name / LAST
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
        raw_model.load_state_dict(ckpt.get(TRAINED_WEIGHTS, ckpt["model"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        grad_scaler.load_state_dict(ckpt["grad_scaler"])
        state = FitState(**ckpt["state"])
        if average is not None:  # "model" holds the average
            average.module.load_state_dict(ckpt["model"])
            average.n_averaged.fill_(ckpt[AVERAGE_UPDATES])
        restore_rng_state(ckpt["rng_state"], pair_generator)
        ctx.runlog.restore(job.name, state.rows)
        if not continued:
            ctx.earlier_seconds[job.name] = sum(row.get("seconds", 0.0) for row in state.rows)
        if runtime.is_main and not continued:
            log.info("%s: resumed after epoch %d (step %d)%s", job.name, state.epoch, state.step,
                     ", already finished" if state.finished else "")

    model = raw_model
    if runtime.world_size > 1:  # DDP broadcasts rank 0's parameters and buffers here
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = DistributedDataParallel(raw_model, device_ids=device_ids)
    scale = (target_scale(job.data, ctx.target_lags) if cfg.loss.target == "scaled"
             else torch.ones(len(ctx.target_lags))).to(runtime.device)  # rank targets: the heads predict ranks
    lags = torch.as_tensor(ctx.target_lags, device=runtime.device)
    learner = Learner(model, raw_model, optimizer, grad_scaler, runtime, cfg, scale, lags, pair_generator, average)
    return learner, state


def checkpoint_state(ctx: RunContext, job: FitJob, learner: Learner, plan: FitPlan, state: FitState) -> dict:
    """Everything a checkpoint holds (see `spread.checkpoint`): what serving reads (the weight average when kept),
    then the training state (with an average, the trained weights and the average's update count too:
    `RESUME_ONLY`)."""
    model = learner.served
    average = learner.average
    trained = {} if average is None else {TRAINED_WEIGHTS: learner.raw_model.state_dict(),
                                          AVERAGE_UPDATES: int(average.n_averaged)}
    schedule = {"name": ctx.cfg.train.schedule, "step": state.step, "total_steps": plan.total_steps,
                "warmup_steps": warmup_steps(ctx.cfg.train, plan.total_steps)}
    return {
        **serving_state(model, ctx.cfg, job.data.feature_names, job.data.scaler, ctx.comp.target_names,
                        ctx.target_lags, learner.target_scale, own_scaler=job.data.own_scaler),
        **trained,
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": schedule,
        "grad_scaler": learner.grad_scaler.state_dict(),
        "screen_dropped": dict(job.data.screen.dropped),
        "gate": model.gate.values().detach().tolist(),
        "target_pairs": ctx.comp.pairs["pair"].to_list(),
        "fold": job.fold.record(),
        "role": job.role,
        "seed": job.seed,
        "epoch": state.epoch,
        "step": state.step,
        "best_score": state.best_score,
        "state": vars(state).copy(),
        "rng_state": rng_state(learner.pair_generator),
        "torch_version": torch.__version__,
        "data_fingerprint": ctx.fingerprint,
        "precision": ctx.runtime.precision,
    }


@dataclass
class EpochVerdict:
    """Rank 0's decision after an epoch (broadcast to every rank)."""

    stop: bool
    """The fit ends after this epoch (its last epoch, or early stopping)."""
    improved: bool = False
    """This epoch is the fit's best so far: save it as best.pt."""


def judge_epoch(ctx: RunContext, job: FitJob, learner: Learner, state: FitState, row: dict) -> EpochVerdict:
    """Rank 0, after an epoch: validate when due, track the best score, decide on early stopping."""
    cfg = ctx.cfg.train
    last = state.epoch == job.epochs
    verdict = EpochVerdict(stop=last)
    due = job.validate and (last or state.epoch % cfg.eval_every == 0)
    metrics = validate(ctx, job, learner.served, learner.target_scale) if due else {}
    row |= {f"val_{key}": value for key, value in metrics.items()}
    score = metrics["score"] if metrics and math.isfinite(metrics["score"]) else -math.inf
    if not job.selects:  # a fixed-length fit: its last epoch is its model, whatever the validation says
        if last:
            verdict.improved = True
            state.best_score, state.best_epoch, state.best_metrics = score, state.epoch, metrics
        return verdict
    if not due:
        return verdict
    verdict.improved = score > state.best_score or state.best_epoch == 0
    if verdict.improved:
        state.best_score, state.best_epoch, state.best_metrics, state.bad_validations = score, state.epoch, metrics, 0
    else:
        state.bad_validations += 1
    patience = cfg.early_stopping_patience
    verdict.stop |= bool(patience) and state.bad_validations >= patience
    return verdict


def fit(ctx: RunContext, job: FitJob) -> dict:
    """Train one model (resuming from its last.pt when asked), keep best.pt and last.pt; returns its result."""
    if len(job.data.train) == 0:
        raise ConfigError(f"{job.name}: no training sample (training dates {job.fold.train_dates})")
    runtime = ctx.runtime
    learner, state = start_fit(ctx, job, ctx.resume)
    plan = FitPlan.make(ctx.cfg, len(job.data.train), job.schedule_epochs or job.epochs, runtime.world_size)
    if runtime.is_main and not state.finished:
        log.info("%s: %d training / %d validation samples, %d features, %d parameters, %d epochs x %d steps "
                 "(seed %d, %s)", job.name, len(job.data.train), len(job.data.val), len(job.data.feature_names),
                 learner.raw_model.num_parameters(), job.epochs, plan.steps_per_epoch, job.seed,
                 "best epoch chosen on its validation dates" if job.selects else "fixed length")
    lines = progress_lines(ctx, job, plan)
    while not state.finished and state.epoch < job.epochs:
        verdict = run_epoch(ctx, job, learner, state, plan, judge_epoch, lines)
        state.finished = verdict.stop
        if runtime.is_main and verdict.stop and job.selects:
            announce_stop(job, state)
        save_epoch(ctx, job, learner, plan, state, verdict)
    return broadcast_from_rank0(fit_result(job, learner, state), runtime)


def extend_fit(ctx: RunContext, job: FitJob, to_epoch: int) -> dict:
    """Continue a finished fit from its last.pt to `to_epoch`, validating every epoch; best.pt stays as it is.

    For the honest score of a walk-forward fold that stopped early, before the epoch count the other folds choose:
    the same schedule and RNG stream continue, so the model at `to_epoch` is the one an uninterrupted fit of that
    length gives. The rows carry `after_stop` = 1 in metrics.csv. Returns the validation metrics at `to_epoch`.
    """
    runtime = ctx.runtime
    learner, state = start_fit(ctx, job, resume=True, continued=True)
    plan = FitPlan.make(ctx.cfg, len(job.data.train), job.schedule_epochs or job.epochs, runtime.world_size)
    if runtime.is_main and state.epoch < to_epoch:
        log.info("%s: stopped after epoch %d; training on to epoch %d for its honest score only", job.name,
                 state.epoch, to_epoch)

    def score_only(ctx: RunContext, job: FitJob, learner: Learner, state: FitState, row: dict) -> EpochVerdict:
        row |= {"after_stop": 1} | {f"val_{k}": v for k, v in validate(ctx, job, learner.served,
                                                                        learner.target_scale).items()}
        return EpochVerdict(stop=True)

    lines = progress_lines(ctx, job, plan)
    while state.epoch < to_epoch:
        save_epoch(ctx, job, learner, plan, state, run_epoch(ctx, job, learner, state, plan, score_only, lines))
    return epoch_metrics(state.rows, to_epoch)


def ensemble_metrics(ctx: RunContext, job: FitJob, checkpoints: list[Path]) -> dict:
    """Validation metrics (rank 0; broadcast) of the mean prediction of `checkpoints`, fits on `job`'s fold: the
    score of the ensemble the predictor would serve from them (it averages its members' predictions)."""
    from spread.checkpoint import build_model

    metrics = None
    if ctx.runtime.is_main:
        cfg, val = ctx.cfg.train, job.data.val
        preds = []
        for path in checkpoints:
            ckpt = load_checkpoint(path)
            model = build_model(ckpt).to(ctx.runtime.device)
            scale = torch.as_tensor(ckpt["target_scale"], dtype=torch.float32)
            preds.append(predict_dataset(model, val, scale, cfg, cfg.eval_batch_size, ctx.runtime.device)[1])
        metrics = validation_metrics(dataset_labels(val), np.mean(preds, axis=0), ctx.target_lags)
    return broadcast_from_rank0(metrics, ctx.runtime)


def epoch_metrics(rows: list[dict], epoch: int) -> dict:
    """The validation metrics (without the `val_` prefix) of `epoch` in a fit's rows; empty if not validated."""
    row = next(row for row in rows if row["epoch"] == epoch)
    return {key[4:]: value for key, value in row.items() if key.startswith("val_")}


Judge = Callable[[RunContext, FitJob, Learner, FitState, dict], EpochVerdict]


def run_epoch(ctx: RunContext, job: FitJob, learner: Learner, state: FitState, plan: FitPlan, judge: Judge,
              lines: ProgressLines) -> EpochVerdict:
    """Train one epoch, let rank 0 `judge` it (validation into the row), broadcast the verdict, record the row."""
    runtime = ctx.runtime
    started = time.perf_counter()
    row = {"fold": job.name, "epoch": state.epoch + 1} | train_epoch(ctx, job, learner, state, plan, lines)
    state.epoch += 1
    verdict = judge(ctx, job, learner, state, row) if runtime.is_main else None
    verdict = broadcast_from_rank0(verdict, runtime)
    state.rows.append(row | {"step": state.step, "seconds": round(time.perf_counter() - started, 3)})
    return verdict


def save_epoch(ctx: RunContext, job: FitJob, learner: Learner, plan: FitPlan, state: FitState,
               verdict: EpochVerdict) -> None:
    """Rank 0: best.pt when the epoch improved, the metrics.csv row, last.pt, and the epoch's log line."""
    if not ctx.runtime.is_main:
        return
    if verdict.improved:
        state.best_gate = learner.served.gate.values().detach().tolist()
    ckpt = checkpoint_state(ctx, job, learner, plan, state)
    if verdict.improved:  # the trained weights only matter to a resume, which reads last.pt
        save_checkpoint(ctx.run_dir / job.name / BEST, {k: v for k, v in ckpt.items() if k not in RESUME_ONLY})
    ctx.runlog.log_epoch(job.name, state.rows[-1])
    save_checkpoint(ctx.run_dir / job.name / LAST, ckpt)
    log_epoch_line(job, state.rows[-1], state)


def announce_stop(job: FitJob, state: FitState) -> None:
    """Log why a selecting fit ended and which epoch it keeps."""
    why = "early stopping" if state.epoch < job.epochs else "last epoch"
    log.info("%s: stopped after epoch %d (%s); best epoch %d, score %.4f (best.pt)", job.name, state.epoch, why,
             state.best_epoch, state.best_score)


def fit_result(job: FitJob, learner: Learner, state: FitState) -> dict:
    """The fit as it ended (epochs trained on by `extend_fit` for an honest score do not count)."""
    rows = [row for row in state.rows if not row.get("after_stop")]
    return {
        "best_epoch": state.best_epoch,
        "best_score": state.best_score if math.isfinite(state.best_score) else float("nan"),
        "epochs_run": len(rows),
        "steps": rows[-1]["step"] if rows else 0,
        "n_features": int(learner.raw_model.gate.mask.sum()),
        "metrics": state.best_metrics,
        "feature_names": list(job.data.feature_names),
        "gate": state.best_gate,
    }


def log_epoch_line(job: FitJob, row: dict, state: FitState) -> None:
    score = row.get("val_score")
    loss = row.get("train_total", float("nan"))
    text = f"{job.name} epoch {row['epoch']}/{job.epochs} step {row['step']} loss {loss:.4f}"
    if score is not None:
        ic = row.get("val_ic_mean", float("nan"))
        text += f" val score {score:.4f} ic {ic:.4f} (best {state.best_score:.4f} @ epoch {state.best_epoch})"
    log.info("%s lr %.2e %.1fs", text, row["lr"], row["seconds"])
