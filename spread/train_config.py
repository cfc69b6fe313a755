"""The `train` section of the config: optimiser, schedule, precision, epochs, prediction head, pruning, final fit.

A leaf module (stdlib and `spread.errors` only), so that `spread.config` composes it without importing the
training loop (`spread.trainer`), the runtime (devices, processes) or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from spread.errors import ConfigError

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
SCHEDULES = ("cosine", "onecycle")
PREDICT_CHOICES = ("reg", "score", "blend")


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
