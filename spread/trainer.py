"""The training loop: walk-forward folds, gate pruning, an optional final fit, checkpoints and run logs.

One explicit loop, readable top to bottom (nanoGPT / torchtune style, no framework):

    train(cfg, data, run)
      load the competition, make the folds (split.fold_table is logged and saved as folds.csv), write prior.json
      for each fold:          fit(fold)  -> RUN/<fold>/best.pt (best validation competition score), last.pt
        if finetune_pruned:   fit(fold with the gate mask frozen to the kept features) -> RUN/<fold>-pruned/
      gate analysis:          gate_weights.csv (sorted), pruned_features.csv (threshold or top-k)
      if final_fit:           fit(all labelled dates, no validation, epochs = mean best epoch) -> RUN/final/
      summary.json, manifest.json (sha256 of every file; the checkpoints the predictor loads)

    fit(fold): for each epoch
      shuffle (seeded by seed and epoch), for each batch:
        lr = schedule(step); autocast forward; loss = total_loss(out, y / target_scale, ...); scaled backward;
        clip; step
      validate on rank 0: predictions -> spread.metrics.validation_metrics (competition score, IC, ICIR per lag,
      top-k, Q1-Q5, gate sparsity); keep best.pt on the score (not the loss); early stopping on the score
      write the metrics.csv row and last.pt (resume point)

Targets are scaled per lag by the std of that lag's training labels (so one Huber delta suits every horizon); the
scale is stored in the checkpoint and `predictions` undoes it. `predictions` is the one function that turns the two
heads into the submitted numbers, for validation here and for the predictor at inference.

Precision ("auto"): bf16 autocast on GPUs with bf16 (compute capability >= 8.0), fp16 autocast with a GradScaler
on older GPUs (Kaggle's T4), fp32 on the CPU. Determinism: every random draw comes from a seeded generator (weights,
dropout, the shuffle of each epoch, pair sampling), so on the CPU the same seed and data give bit-identical weights;
`resume` continues from the last completed epoch with every RNG state restored and ends bit-identical to an
uninterrupted run (on CUDA, `deterministic` also asks torch for deterministic kernels).

Multi-GPU: launched by torchrun (env RANK, WORLD_SIZE), the model is wrapped in DistributedDataParallel (NCCL on
GPUs, gloo on CPUs), each global batch is split interleaved over the ranks (the union of the ranks' batches is the
single-process batch), rank 0 validates on the full validation set and alone writes files; its decisions (best
epoch, early stop, results) are broadcast so every rank follows the same path.

References: Loshchilov & Hutter 2019 (AdamW); Loshchilov & Hutter 2017 (SGDR, cosine schedule); Smith & Topin
2019 (one-cycle schedule); Micikevicius et al. 2018 (mixed precision, loss scaling); Karpathy, nanoGPT (loop).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from spread.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint, write_manifest
from spread.competition import Competition, load_competition
from spread.errors import ArtifactError, ConfigError
from spread.features import released
from spread.losses import total_loss
from spread.metrics import validation_metrics
from spread.model import GatedTransformer, ModelOutput
from spread.prior import PRIOR_FILE, mean_rank_prior, write_prior
from spread.pruning import gate_table, select_features, write_gate_analysis
from spread.runlog import SUMMARY_FILE, RunLog, progress, summarize, write_json
from spread.splits import Fold, fold_table, lag_mapping, make_folds
from spread.windows import FoldData, competition_panel, label_matrix, prepare_fold

if TYPE_CHECKING:
    from spread.config import Config
    from spread.features import Panel

log = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
SCHEDULES = ("cosine", "onecycle")
PREDICT_CHOICES = ("reg", "score", "blend")
ONECYCLE_DIV = 25.0
"""One-cycle schedule: the LR starts at lr / 25 (torch's OneCycleLR div_factor) ..."""
ONECYCLE_FINAL_DIV = 1e4
"""... and ends at lr / 25 / 1e4 (its final_div_factor)."""
FINAL_FOLD = "final"
CONFIG_FILE = "config.yaml"
FOLDS_FILE = "folds.csv"
RESUME_MAY_CHANGE = ("train.device", "train.amp", "train.tensorboard", "train.progress", "train.eval_batch_size",
                     "data.num_workers")
"""Config fields that may differ when a run is resumed (they do not change what is computed on the CPU)."""


@dataclass
class TrainConfig:
    """Optimiser, schedule, precision, epochs, checkpoints, prediction head and pruning."""

    device: str = "auto"
    """"auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu", "cuda" or "cuda:N"."""
    amp: str = "auto"
    """Mixed precision: auto (bf16 on GPUs of compute capability >= 8, fp16 + GradScaler on older GPUs, off on
    the CPU) | bf16 | fp16 (CUDA only) | off."""
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay, applied to matrices only (not to biases, norms, gates, Time2Vec)."""
    gate_lr_scale: float = 1.0
    """LR multiplier of the feature-gate logits. Adam moves a parameter by about lr per step whatever its
    gradient, so at lr 1e-4 a gate starting at sigmoid(3) cannot close within a few thousand steps; a larger
    multiplier lets the L1 penalty actually prune."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""
    epochs: int = 20
    """Maximum epochs per fold (early stopping may end a fold sooner)."""
    schedule: str = "cosine"
    """LR schedule per step: cosine (linear warm-up from 0, cosine decay to min_lr_frac * lr) | onecycle (warm-up
    from lr / 25, cosine decay to lr / 2.5e5; Smith & Topin 2019, without momentum cycling)."""
    warmup_steps: int = 0
    """Warm-up steps; 0 = use warmup_frac."""
    warmup_frac: float = 0.05
    """Warm-up as a share of the fold's total steps (when warmup_steps is 0)."""
    min_lr_frac: float = 0.05
    """Cosine schedule: the final LR as a share of lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    early_stopping_patience: int = 5
    """Stop a fold after this many validations without a better score (0 disables early stopping)."""
    eval_every: int = 1
    """Validate every this many epochs (and always after the last epoch)."""
    eval_batch_size: int = 64
    """Samples per batch when predicting the validation set."""
    max_steps_per_epoch: int = 0
    """Cap on optimiser steps per epoch, each epoch drawing a fresh shuffled subset (0 = the whole training set)."""
    deterministic: bool = True
    """On CUDA: torch.use_deterministic_algorithms (warn only) and no cuDNN autotuning. The CPU path is always
    deterministic (same seed and data give bit-identical weights)."""
    predict_with: str = "blend"
    """How the submitted prediction is made from the two heads: reg (regression forecast, unscaled) | score
    (ranking logits) | blend (blend_weight * z(reg) + (1 - blend_weight) * z(score), z = per-date z-score)."""
    blend_weight: float = 0.5
    """Weight of the regression head in the blend."""
    final_fit: bool = False
    """After the folds, fit one model on every labelled date; inference then uses it alone (else the average of
    the folds' best.pt)."""
    final_fit_epochs: int = 0
    """Epochs of the final fit; 0 = the mean over folds of the best epoch (at least 1)."""
    tensorboard: bool = False
    """Also write TensorBoard events to RUN/tensorboard (needs the tensorboard package)."""
    progress: bool = True
    """tqdm bars over batches when stderr is a terminal (plain log lines per epoch otherwise)."""
    prune_threshold: float = 0.05
    """Gate analysis: keep the features whose gate is at least this value ..."""
    prune_top_k: int = 0
    """... or, when > 0, the top_k features with the largest gates."""
    finetune_pruned: bool = False
    """Fine-tune each fold's best model with the pruned features masked out, and report its score beside."""
    finetune_epochs: int = 3
    """Epochs of the pruned fine-tune."""

    def __post_init__(self) -> None:
        choices = {"amp": AMP_CHOICES, "schedule": SCHEDULES, "predict_with": PREDICT_CHOICES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train.{name}: expected one of {'|'.join(allowed)}, got {getattr(self, name)!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device: expected auto|cpu|cuda|cuda:N, got {self.device!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.lr must be > 0, train.weight_decay and train.grad_clip >= 0")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ConfigError(f"train.betas: expected two values in [0, 1), got {self.betas}")
        positive = ("epochs", "eval_every", "eval_batch_size", "finetune_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: expected >= 1, got {getattr(self, name)}")
        non_negative = ("warmup_steps", "early_stopping_patience", "max_steps_per_epoch", "final_fit_epochs",
                        "prune_top_k")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected >= 0, got {getattr(self, name)}")
        if self.gate_lr_scale < 0:
            raise ConfigError(f"train.gate_lr_scale: expected >= 0, got {self.gate_lr_scale}")
        for name in ("warmup_frac", "min_lr_frac", "blend_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.{name}: expected a value in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------------------
# Runtime: device, precision, processes


@dataclass
class Runtime:
    """Where and how this process computes."""

    device: torch.device
    amp_dtype: torch.dtype | None
    """Autocast dtype, None for fp32."""
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def uses_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(f"cuda:{local_rank}" if requested == "cuda" else requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {requested!r} requested but CUDA is not available")
    return device


def resolve_amp(requested: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for `train.amp` on `device`, and why (for the log)."""
    if requested == "off":
        return None, "requested"
    if device.type != "cuda":
        if requested == "fp16":
            raise ConfigError("train.amp: fp16 needs a CUDA device (use bf16 or off on the CPU)")
        if requested == "bf16":
            return torch.bfloat16, "requested (CPU bf16 autocast is slow)"
        return None, "CPU: fp32"
    capability = torch.cuda.get_device_capability(device)
    bf16_ok = capability >= (8, 0)
    if requested == "bf16" and not bf16_ok:
        raise ConfigError(f"train.amp: bf16 needs compute capability >= 8.0, this GPU has {capability}")
    if requested == "bf16" or (requested == "auto" and bf16_ok):
        return torch.bfloat16, f"compute capability {capability[0]}.{capability[1]}"
    return torch.float16, f"compute capability {capability[0]}.{capability[1]}: fp16 with a GradScaler"


def inference_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for predicting on `device`: as in training where it can run there, else fp32."""
    try:
        return resolve_amp(cfg.amp, device)[0]
    except ConfigError:  # e.g. a model trained with amp=fp16 on a GPU, predicting on the CPU
        return None


def autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.amp_dtype)


def make_grad_scaler(runtime: Runtime) -> Any:
    """A GradScaler, enabled for fp16 only (a disabled one is a pass-through with an empty state)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler)
    return torch.cuda.amp.GradScaler(enabled=runtime.uses_grad_scaler)  # torch < 2.3


def start_runtime(cfg: TrainConfig) -> tuple[Runtime, bool]:
    """The runtime of this process; joins the process group when launched by torchrun (returns True if created)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    created = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    amp_dtype, reason = resolve_amp(cfg.amp, device)
    runtime = Runtime(device=device, amp_dtype=amp_dtype, rank=rank, world_size=world_size)
    if runtime.is_main:
        log.info("device %s, precision %s (%s), %d process(es)", device, runtime.precision, reason, world_size)
    return runtime, created


def share(value: Any, runtime: Runtime) -> Any:
    """Rank 0's `value` on every rank (a no-op in a single process)."""
    if runtime.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=runtime.device if runtime.device.type == "cuda" else None)
    return box[0]


# ----------------------------------------------------------------------------------------------------------------
# Seeds and RNG states


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(pair_generator: torch.Generator) -> dict:
    """Every RNG state a resumed epoch depends on, as plain values and CPU tensors."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "pairs": pair_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, pair_generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    pair_generator.set_state(state["pairs"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# Data


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation drawn from (seed, epoch): positions rank, rank + W, rank + 2W, ...

    The permutation is padded (by repeating its start) to a multiple of the world size, so every rank runs the
    same number of steps; with the per-rank batch = global batch / W, the ranks' k-th batches together are the
    single-process k-th batch (DistributedSampler interleaving).
    """

    def __init__(self, n_samples: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> None:
        self.n_samples, self.rank, self.world_size = n_samples, rank, world_size
        generator = torch.Generator()
        generator.manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n_samples, generator=generator).tolist()
        padded = math.ceil(n_samples / world_size) * world_size
        order += order[: padded - n_samples]
        self.indices = order[rank::world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def training_loader(dataset: Dataset, cfg: "Config", epoch: int, runtime: Runtime) -> DataLoader:
    sampler = EpochSampler(len(dataset), cfg.seed, epoch, runtime.rank, runtime.world_size)
    return DataLoader(
        dataset, batch_size=cfg.data.batch_size // runtime.world_size, sampler=sampler,
        num_workers=cfg.data.num_workers, pin_memory=runtime.device.type == "cuda",
    )


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """(samples, N) float64 labels of a window dataset, in sample order (NaN where unknown)."""
    return dataset.targets[torch.as_tensor(dataset.rows)].double().numpy()


def target_scale(fold_data: FoldData, target_lags: np.ndarray) -> torch.Tensor:
    """(N,) per-target scale: the std of the target's lag's training labels (as released at the fold's cutoff)."""
    labels = dataset_labels(fold_data.train)  # (S, N), NaN where unknown
    scale = np.ones(len(target_lags))
    for lag in np.unique(target_lags):
        columns = target_lags == lag
        values = labels[:, columns]
        values = values[np.isfinite(values)]
        std = float(values.std()) if values.size > 1 else float("nan")
        scale[columns] = std if math.isfinite(std) and std > 0 else 1.0
    return torch.tensor(scale, dtype=torch.float32)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# ----------------------------------------------------------------------------------------------------------------
# Predictions: the one place where model outputs become submitted numbers


def _zscore_rows(values: torch.Tensor) -> torch.Tensor:
    centred = values - values.mean(dim=-1, keepdim=True)
    return centred / centred.square().mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


def predictions(out: ModelOutput, target_scale: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """(B, N) float32 finite predictions from the two heads (see `TrainConfig.predict_with`).

    The regression head is unscaled back to label units, so the four lags compare on their own scales (the metric
    ranks all targets of a date together); the blend mixes the per-date z-scores of both heads, since the score
    logits have no units. Non-finite outputs become 0 so that no day drops out of the score.
    """
    reg = torch.nan_to_num(out.reg.float() * target_scale.to(out.reg.device, torch.float32), 0.0, 0.0, 0.0)
    score = torch.nan_to_num(out.score.float(), 0.0, 0.0, 0.0)
    if cfg.predict_with == "reg":
        return reg
    if cfg.predict_with == "score":
        return score
    return cfg.blend_weight * _zscore_rows(reg) + (1.0 - cfg.blend_weight) * _zscore_rows(score)


@torch.no_grad()
def predict_dataset(
    model: GatedTransformer,
    dataset: Dataset,
    target_scale: torch.Tensor,
    cfg: TrainConfig,
    batch_size: int,
    device: torch.device | str,
) -> tuple[np.ndarray, np.ndarray]:
    """(date_ids (D,), predictions (D, N) float64) for every sample of `dataset`, in date order; eval mode."""
    device = torch.device(device)
    runtime = Runtime(device=device, amp_dtype=inference_dtype(cfg, device))
    was_training = model.training
    model.eval()
    dates, preds = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = to_device(batch, device)
        with autocast(runtime):
            out = model(batch["x"], batch["t"], batch["valid"])
        preds.append(predictions(out, target_scale, cfg).cpu())
        dates.append(batch["date_id"].cpu())
    model.train(was_training)
    if not dates:
        return np.empty(0, dtype=np.int64), np.empty((0, len(target_scale)))
    date_ids = torch.cat(dates).numpy()
    values = torch.cat(preds).double().numpy()
    order = np.argsort(date_ids, kind="stable")
    return date_ids[order], values[order]


# ----------------------------------------------------------------------------------------------------------------
# Optimiser and schedule


def build_optimizer(model: GatedTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT); the gate logits in their own group (gate_lr_scale).

    Every group has an "lr_scale": the schedule sets each group's LR to learning_rate(step) * lr_scale.
    """
    gate = model.gate.logit
    others = [p for p in model.parameters() if p.requires_grad and p is not gate]
    groups = [
        {"params": [p for p in others if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": [p for p in others if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": [gate], "weight_decay": 0.0, "lr_scale": cfg.gate_lr_scale},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps else int(round(cfg.warmup_frac * total_steps))


def learning_rate(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """LR of optimiser step `step` (0-based): linear warm-up, then cosine decay (see `TrainConfig.schedule`)."""
    warmup = min(warmup_steps(cfg, total_steps), max(total_steps - 1, 0))
    if cfg.schedule == "onecycle":
        start, end = cfg.lr / ONECYCLE_DIV, cfg.lr / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    else:
        start, end = 0.0, cfg.lr * cfg.min_lr_frac
    if step < warmup:
        return start + (cfg.lr - start) * (step + 1) / warmup
    progress_share = (step - warmup) / max(total_steps - warmup - 1, 1)
    return end + (cfg.lr - end) * 0.5 * (1.0 + math.cos(math.pi * min(progress_share, 1.0)))


# ----------------------------------------------------------------------------------------------------------------
# One fold


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

    @property
    def target_lags(self) -> np.ndarray:
        return self.comp.target_lags


@dataclass
class FitJob:
    """One model to fit: a fold (or the final fit), how long, and from where."""

    name: str
    fold: Fold
    data: FoldData
    epochs: int
    validate: bool = True
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


def fold_record(fold: Fold) -> dict:
    return {"name": fold.name, "train_dates": list(fold.train_dates), "val_dates": list(fold.val_dates),
            "embargo": fold.embargo, "cutoff": fold.train_cutoff}


def validate(ctx: RunContext, job: FitJob, model: GatedTransformer, scale: torch.Tensor) -> dict:
    """Validation metrics of `model` on the job's validation set (rank 0 only)."""
    cfg = ctx.cfg.train
    val = job.data.val
    _, pred = predict_dataset(model, val, scale, cfg, cfg.eval_batch_size, ctx.runtime.device)
    gate = model.gate.values().detach().cpu().numpy()
    return validation_metrics(dataset_labels(val), pred, ctx.target_lags, gate=gate)  # rows ascend: date order


def oracle_score(ctx: RunContext, job: FitJob) -> float:
    """The synthetic oracle's competition score on the job's validation dates (NaN without an oracle)."""
    val = job.data.val
    if ctx.oracle is None or len(val) == 0:
        return float("nan")
    return validation_metrics(dataset_labels(val), ctx.oracle[val.rows], ctx.target_lags)["score"]


@dataclass
class StepContext:
    """What every optimiser step of a fit needs besides the batch."""

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


def train_step(step: StepContext, batch: dict[str, torch.Tensor], lr: float, epoch_position: float) -> dict[str, float]:
    """One optimiser step on a batch: autocast forward, fp32 loss, (scaled) backward, clipping, AdamW step."""
    for group in step.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    batch = to_device(batch, step.runtime.device)
    y = batch["y"] / step.target_scale  # (B, N) per-lag scaled targets; unknown cells are 0 and masked
    with autocast(step.runtime):
        out = step.model(batch["x"], batch["t"], batch["valid"])
    out = ModelOutput(reg=out.reg.float(), score=out.score.float())
    loss, parts = total_loss(out, y, batch["y_mask"], step.raw_model.gate.l1(), epoch_position, step.cfg.loss,
                             step.target_lags, step.pair_generator)
    step.grad_scaler.scale(loss).backward()
    if step.cfg.train.grad_clip > 0:
        step.grad_scaler.unscale_(step.optimizer)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(step.model.parameters(), step.cfg.train.grad_clip)
    step.grad_scaler.step(step.optimizer)  # skipped by the scaler when fp16 gradients overflowed
    step.grad_scaler.update()
    step.optimizer.zero_grad(set_to_none=True)
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


def train_epoch(ctx: RunContext, job: FitJob, step: StepContext, state: FitState, plan: FitPlan) -> dict[str, float]:
    """One epoch of optimiser steps over a fresh shuffle; returns the mean loss parts (this rank's) and the LR."""
    cfg, runtime = ctx.cfg, ctx.runtime
    loader = training_loader(job.data.train, cfg, state.epoch, runtime)
    sums: dict[str, float] = {}
    n_steps = min(len(loader), plan.steps_per_epoch)
    step.model.train()
    batches = progress(loader, n_steps, f"{job.name} epoch {state.epoch + 1}", cfg.train.progress and runtime.is_main)
    for batch_index, batch in enumerate(batches):
        if batch_index == n_steps:
            break
        lr = learning_rate(state.step, plan.total_steps, cfg.train)
        parts = train_step(step, batch, lr, state.epoch + batch_index / plan.steps_per_epoch)
        state.step += 1
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
    return {f"train_{key}": value / n_steps for key, value in sums.items()} | {"lr": lr}


def start_fit(ctx: RunContext, job: FitJob) -> tuple[StepContext, FitState]:
    """Model, optimiser and state of a fit: fresh (seeded), from `job.init_checkpoint`, or resumed from last.pt."""
    cfg, runtime = ctx.cfg, ctx.runtime
    seed_everything(cfg.seed)
    raw_model = GatedTransformer(cfg.model, n_features=len(job.data.feature_names), target_lags=ctx.target_lags)
    if job.init_checkpoint is not None:
        raw_model.load_state_dict(load_checkpoint(job.init_checkpoint)["model"])
    if job.keep is not None:
        raw_model.gate.freeze_mask(torch.as_tensor(job.keep))
    raw_model.to(runtime.device)
    optimizer = build_optimizer(raw_model, cfg.train)
    grad_scaler = make_grad_scaler(runtime)
    pair_generator = torch.Generator()
    pair_generator.manual_seed(cfg.seed + 1)

    state = FitState()
    last_path = ctx.run_dir / job.name / "last.pt"
    if ctx.resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        grad_scaler.load_state_dict(ckpt["grad_scaler"])
        state = FitState(**ckpt["state"])
        restore_rng_state(ckpt["rng_state"], pair_generator)
        ctx.runlog.restore(job.name, state.rows)
        if runtime.is_main:
            log.info("%s: resumed after epoch %d (step %d)%s", job.name, state.epoch, state.step,
                     ", already finished" if state.finished else "")

    model = raw_model
    if runtime.world_size > 1:  # DDP broadcasts rank 0's parameters and buffers here
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = DistributedDataParallel(raw_model, device_ids=device_ids)
    scale = target_scale(job.data, ctx.target_lags).to(runtime.device)
    lags = torch.as_tensor(ctx.target_lags, device=runtime.device)
    return StepContext(model, raw_model, optimizer, grad_scaler, runtime, cfg, scale, lags, pair_generator), state


def checkpoint_state(ctx: RunContext, job: FitJob, step: StepContext, plan: FitPlan, state: FitState) -> dict:
    """Everything a checkpoint holds (see `spread.checkpoint`)."""
    from spread.config import config_to_dict

    model = step.raw_model
    schedule = {"name": ctx.cfg.train.schedule, "step": state.step, "total_steps": plan.total_steps,
                "warmup_steps": warmup_steps(ctx.cfg.train, plan.total_steps)}
    return {
        "model": model.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": schedule,
        "grad_scaler": step.grad_scaler.state_dict(),
        "config": config_to_dict(ctx.cfg),
        "feature_names": list(job.data.feature_names),
        "scaler": job.data.scaler.to_dict(),
        "screen_dropped": dict(job.data.screen.dropped),
        "gate_mask": model.gate.mask,
        "gate": model.gate.values().detach().tolist(),
        "target_names": ctx.comp.target_names,
        "target_lags": ctx.target_lags.tolist(),
        "target_scale": step.target_scale.tolist(),
        "fold": fold_record(job.fold),
        "epoch": state.epoch,
        "step": state.step,
        "best_score": state.best_score,
        "state": vars(state).copy(),
        "rng_state": rng_state(step.pair_generator),
        "torch_version": torch.__version__,
        "data_fingerprint": ctx.fingerprint,
        "precision": ctx.runtime.precision,
    }


def judge_epoch(ctx: RunContext, job: FitJob, step: StepContext, state: FitState, row: dict) -> dict:
    """Rank 0, after an epoch: validate when due, track the best score, decide on early stopping."""
    cfg = ctx.cfg.train
    decision = {"stop": state.epoch == job.epochs, "improved": False}
    if not job.validate:  # the final fit: its latest epoch is its best
        state.best_epoch, decision["improved"] = state.epoch, True
        return decision
    if state.epoch % cfg.eval_every and state.epoch != job.epochs:
        return decision
    metrics = validate(ctx, job, step.raw_model, step.target_scale)
    row |= {f"val_{key}": value for key, value in metrics.items()}
    score = metrics["score"] if math.isfinite(metrics["score"]) else -math.inf
    decision["improved"] = score > state.best_score or state.best_epoch == 0
    if decision["improved"]:
        state.best_score, state.best_epoch, state.best_metrics, state.bad_validations = score, state.epoch, metrics, 0
    else:
        state.bad_validations += 1
    patience = cfg.early_stopping_patience
    decision["stop"] |= bool(patience) and state.bad_validations >= patience
    return decision


def fit(ctx: RunContext, job: FitJob) -> dict:
    """Train one model (resuming from its last.pt when asked), keep best.pt and last.pt; returns its result."""
    if len(job.data.train) == 0:
        raise ConfigError(f"{job.name}: no training sample (training dates {job.fold.train_dates})")
    runtime = ctx.runtime
    step, state = start_fit(ctx, job)
    plan = FitPlan.make(ctx.cfg, len(job.data.train), job.epochs, runtime.world_size)
    if runtime.is_main and not state.finished:
        log.info("%s: %d training / %d validation samples, %d features, %d parameters, %d epochs x %d steps",
                 job.name, len(job.data.train), len(job.data.val), len(job.data.feature_names),
                 step.raw_model.num_parameters(), job.epochs, plan.steps_per_epoch)
    while not state.finished and state.epoch < job.epochs:
        started = time.perf_counter()
        row = {"fold": job.name, "epoch": state.epoch + 1} | train_epoch(ctx, job, step, state, plan)
        state.epoch += 1
        decision = judge_epoch(ctx, job, step, state, row) if runtime.is_main else None
        decision = share(decision, runtime)
        state.finished = decision["stop"]
        state.rows.append(row | {"step": state.step, "seconds": round(time.perf_counter() - started, 3)})
        if runtime.is_main:
            if decision["improved"]:
                state.best_gate = step.raw_model.gate.values().detach().tolist()
            ckpt = checkpoint_state(ctx, job, step, plan, state)
            if decision["improved"]:
                save_checkpoint(ctx.run_dir / job.name / "best.pt", ckpt)
            ctx.runlog.log_epoch(job.name, state.rows[-1])
            save_checkpoint(ctx.run_dir / job.name / "last.pt", ckpt)
            log_epoch_line(job, state.rows[-1], state)
    return share(fit_result(job, step, state), runtime)


def fit_result(job: FitJob, step: StepContext, state: FitState) -> dict:
    return {
        "best_epoch": state.best_epoch,
        "best_score": state.best_score if math.isfinite(state.best_score) else float("nan"),
        "epochs_run": state.epoch,
        "steps": state.step,
        "n_features": int(step.raw_model.gate.mask.sum()),
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


# ----------------------------------------------------------------------------------------------------------------
# The run


def check_run_folder(run_dir: Path, cfg: "Config", resume: bool) -> None:
    """A new run needs an empty folder; a resumed one needs its config.yaml to match (RESUME_MAY_CHANGE aside)."""
    from spread.config import config_to_dict, read_config_file

    saved = run_dir / CONFIG_FILE
    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir}: run folder is not empty (use --resume {run_dir} to continue it)")
        return
    if not saved.is_file():
        raise ArtifactError(f"{saved}: not found, {run_dir} is not a run folder to resume")
    before, now = _flatten(read_config_file(saved)), _flatten(config_to_dict(cfg))
    keys = (before.keys() | now.keys()) - set(RESUME_MAY_CHANGE)
    changed = sorted(key for key in keys if before.get(key) != now.get(key))
    if changed:
        raise ConfigError(f"{saved}: resuming with a different config; changed: {', '.join(changed)}")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def label_limit(comp: Competition, cfg: "Config") -> int:
    """The last date whose data training may use: data.train_end, capped at the last train date."""
    last = int(comp.train["date_id"].max())
    return last if cfg.data.train_end is None else min(int(cfg.data.train_end), last)


def released_labels(comp: Competition, limit: int) -> np.ndarray:
    """(dates, N) training labels known at `limit` (NaN where not yet released), for the prior."""
    date_ids = comp.labels["date_id"].to_numpy()
    labels = label_matrix(comp.labels, date_ids, comp.target_names).astype(np.float64)
    return np.where(released(date_ids, comp.target_lags, limit), labels, np.nan)


def final_fold(comp: Competition, limit: int) -> Fold:
    """All labelled dates with at least one label released by `limit`; an empty validation range after it."""
    first = int(comp.labels["date_id"].min())
    last_label = limit - int(comp.target_lags.min()) - 1
    return Fold(FINAL_FOLD, (first, last_label), (limit + 1, limit), embargo=0, cutoff=limit)


def load_oracle(data_dir: Path, comp: Competition) -> np.ndarray | None:
    """The synthetic generator's oracle predictions on the train dates, when the folder has them."""
    from spread.layout import ORACLE_FILE
    from spread.metrics import read_table

    path = data_dir / ORACLE_FILE
    if not path.is_file():
        return None
    frame = read_table(path)
    return label_matrix(frame, comp.train["date_id"].to_numpy(), comp.target_names).astype(np.float64)


def save_fold_table(ctx: RunContext, folds: list[Fold], n_features: dict[str, int] | None) -> None:
    import polars as pl

    table = fold_table(folds, lag_mapping(ctx.comp.pairs), n_features)
    if n_features is None:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
            log.info("folds:\n%s", table)
    table.write_csv(ctx.run_dir / FOLDS_FILE)


def finetune_pruned(ctx: RunContext, name: str, fold_data: FoldData, fold: Fold) -> dict:
    """Fine-tune a fold's best model with the low-gate features masked out; result of the pruned model."""
    cfg = ctx.cfg.train
    best = load_checkpoint(ctx.run_dir / name / "best.pt")
    keep = select_features(np.asarray(best["gate"], dtype=np.float64), cfg.prune_threshold, cfg.prune_top_k)
    job = FitJob(f"{name}-pruned", fold, fold_data, cfg.finetune_epochs,
                 init_checkpoint=ctx.run_dir / name / "best.pt", keep=keep)
    return fit(ctx, job)


def train(cfg: "Config", data_dir: str | Path, out_dir: str | Path, resume: bool = False) -> dict:
    """Train as configured and write the run folder; returns the summary (an empty dict on ranks other than 0).

    RUN/ holds config.yaml, folds.csv, metrics.csv, summary.json, prior.json, gate_weights.csv,
    pruned_features.csv, tensorboard/ (when enabled), <fold>/best.pt and last.pt per fit, and manifest.json. The
    manifest's inference checkpoints are final/best.pt when `train.final_fit`, else every fold's best.pt (the
    predictor averages their predictions). With `resume`, fits whose last.pt says finished are skipped, an
    unfinished one continues after its last completed epoch, and the rest run as usual.
    Launched by torchrun (env WORLD_SIZE > 1), the processes train one DistributedDataParallel model together.
    """
    runtime, created_group = start_runtime(cfg.train)
    # The CPU kernels this loop uses are deterministic already (and the switch costs seconds of imports on recent
    # torch); on CUDA, ask for deterministic kernels and warn where none exists.
    switch_determinism = cfg.train.deterministic and runtime.device.type == "cuda"
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        if switch_determinism:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        return run(cfg, Path(data_dir), Path(out_dir), resume, runtime)
    finally:
        if switch_determinism:
            torch.use_deterministic_algorithms(deterministic_before)
        if created_group:
            dist.destroy_process_group()


def run(cfg: "Config", data_dir: Path, run_dir: Path, resume: bool, runtime: Runtime) -> dict:
    """The run of `train` in this process: folds, pruned fine-tunes, final fit, then the run folder's reports."""
    from spread.config import save_config

    started = time.perf_counter()
    if runtime.is_main:
        check_run_folder(run_dir, cfg, resume)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
    if cfg.data.batch_size % runtime.world_size:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not divisible by {runtime.world_size} processes")
    share(None, runtime)  # the folder exists before any rank reads it

    comp = load_competition(data_dir, require_test=False)
    folds = make_folds(comp.labels["date_id"].to_numpy(), comp.target_lags, cfg.split,
                       scored_dates=comp.scored_dates or None, train_end=cfg.data.train_end)
    ctx = RunContext(
        cfg=cfg, comp=comp, run_dir=run_dir, runtime=runtime,
        runlog=RunLog(run_dir, enabled=runtime.is_main, tensorboard=cfg.train.tensorboard),
        panel=competition_panel(comp, cfg.features), fingerprint=data_fingerprint(comp), resume=resume,
        oracle=load_oracle(data_dir, comp),
    )
    try:
        limit = label_limit(comp, cfg)
        if runtime.is_main:
            save_fold_table(ctx, folds, None)
            write_prior(run_dir / PRIOR_FILE, comp.target_names, mean_rank_prior(released_labels(comp, limit)))
        results, pruned, n_features = fit_folds(ctx, folds)
        final = run_final_fit(ctx, results, limit) if cfg.train.final_fit else None
        if not runtime.is_main:
            return {}
        save_fold_table(ctx, folds, n_features)
        return write_reports(ctx, results, pruned, final, time.perf_counter() - started)
    finally:
        ctx.runlog.close()


def fit_folds(ctx: RunContext, folds: list[Fold]) -> tuple[dict, dict, dict]:
    """Fit every fold (and its pruned fine-tune); results, pruned results and feature counts by fold name."""
    cfg = ctx.cfg
    results, pruned, n_features = {}, {}, {}
    for fold in folds:
        fold_data = prepare_fold(ctx.comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
        n_features[fold.name] = len(fold_data.feature_names)
        job = FitJob(fold.name, fold, fold_data, cfg.train.epochs)
        results[fold.name] = fit(ctx, job) | {"oracle_score": oracle_score(ctx, job)}
        if cfg.train.finetune_pruned:
            pruned[fold.name] = finetune_pruned(ctx, fold.name, fold_data, fold)
    return results, pruned, n_features


def write_reports(ctx: RunContext, results: dict, pruned: dict, final: dict | None, seconds: float) -> dict:
    """Gate analysis, summary.json and manifest.json (rank 0); returns the summary."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    fold_gates = {name: (r["feature_names"], np.asarray(r["gate"])) for name, r in results.items()}
    if final is not None:
        fold_gates[FINAL_FOLD] = (final["feature_names"], np.asarray(final["gate"]))
    kept = write_gate_analysis(run_dir, gate_table(fold_gates), cfg.train.prune_threshold, cfg.train.prune_top_k)
    inference = [f"{FINAL_FOLD}/best.pt"] if final is not None else [f"{name}/best.pt" for name in results]
    summary = build_summary(ctx, results, pruned, final, kept, inference, seconds)
    write_json(run_dir / SUMMARY_FILE, summary)
    ctx.runlog.close()  # TensorBoard files complete before they are hashed
    write_manifest(run_dir, inference)
    log.info("mean validation score %.4f +- %.4f over %d fold(s); run folder %s",
             summary["mean"].get("score", float("nan")), summary["std"].get("score", float("nan")), len(results),
             run_dir)
    return summary


def run_final_fit(ctx: RunContext, results: dict, limit: int) -> dict:
    """Fit on every labelled date known at `limit`, for the mean best epoch of the folds (or final_fit_epochs)."""
    cfg = ctx.cfg
    best_epochs = [r["best_epoch"] for r in results.values() if r["best_epoch"]]
    epochs = cfg.train.final_fit_epochs or max(1, round(sum(best_epochs) / max(len(best_epochs), 1)))
    fold = final_fold(ctx.comp, limit)
    fold_data = prepare_fold(ctx.comp, fold, cfg.features, cfg.screen, cfg.scaling, cfg.data, panel=ctx.panel)
    result = fit(ctx, FitJob(FINAL_FOLD, fold, fold_data, epochs, validate=False))
    return result | {"epochs": epochs, "checkpoint": f"{FINAL_FOLD}/best.pt"}


def build_summary(
    ctx: RunContext, results: dict, pruned: dict, final: dict | None, kept: list[str], inference: list[str],
    seconds: float,
) -> dict:
    """summary.json: per-fold results and mean +- std of every metric (at each fold's best epoch)."""
    folds = {}
    for name, result in results.items():
        entry = {k: v for k, v in result.items() if k not in ("feature_names", "gate")}
        if name in pruned:
            entry["pruned"] = {k: pruned[name][k] for k in ("best_epoch", "best_score", "n_features", "metrics")}
        folds[name] = entry
    summary = summarize(folds)
    oracle = [r["oracle_score"] for r in results.values() if math.isfinite(r["oracle_score"])]
    if oracle:
        summary["mean"]["oracle_score"] = sum(oracle) / len(oracle)
        summary["oracle_fraction"] = summary["mean"].get("score", float("nan")) / summary["mean"]["oracle_score"]
    if pruned:
        pruned_summary = summarize({name: {"metrics": p["metrics"]} for name, p in pruned.items()})
        summary["pruned_mean"], summary["pruned_std"] = pruned_summary["mean"], pruned_summary["std"]
    summary["final_fit"] = None if final is None else {
        k: final[k] for k in ("epochs", "steps", "n_features", "checkpoint")
    }
    summary["pruned_features"] = len(kept)
    summary["inference_checkpoints"] = inference
    summary["run"] = {
        "device": str(ctx.runtime.device), "precision": ctx.runtime.precision,
        "world_size": ctx.runtime.world_size, "seconds": round(seconds, 2), "torch": torch.__version__,
        "data_fingerprint": ctx.fingerprint,
    }
    return summary
