"""The `train` section of the config: optimiser, schedule, precision, epochs, prediction head, pruning, final fit.

A leaf module (stdlib and `spread.errors` only), so that `spread.config` composes it without importing the
training loop (`spread.trainer`), the runtime (devices, processes) or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spread.errors import ConfigError, check_choice, check_range

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
SCHEDULES = ("cosine", "onecycle")
PREDICT_CHOICES = ("reg", "score", "blend")


@dataclass
class TrainConfig:
    """Optimiser, schedule, precision, epochs, checkpoints, prediction head, pruning and the served final fit.

    Epoch rule. A walk-forward fold trains up to `epochs` epochs and keeps its best validation epoch (early
    stopping on its own validation dates: its "best-epoch score" leans optimistic). A fit whose validation dates
    must stay unseen - the holdout (the public-leaderboard proxy) and the final fit (the served model) - trains a
    fixed number of epochs chosen only from the walk-forward folds: `final_fit_epochs` when set, else the median of
    the walk-forward folds' best epochs (rounded half up), else (no walk-forward fold) `epochs`; it follows the
    folds' LR schedule (over `epochs`) and stops there, so it is trained exactly as a fold's first epochs, and its
    best.pt is its last epoch. Each walk-forward fold's "honest score" is its validation score at the epoch count
    the same rule picks from the OTHER walk-forward folds (null with a single walk-forward fold).
    """

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
    multiplier lets the L1 penalty actually prune. It also scales the decoupled penalty's step
    (loss.gate_penalty)."""
    head_bias_lr_scale: float = 1.0
    """LR multiplier of the lag heads' biases, each target's own constant in its regression and score outputs.
    Adam moves each by about lr per step, ~0.04 over the short budget's 128 steps at lr 3e-4, so a target's level
    (its mean daily rank, which alone outscored the model at 1 on the 6-fold grid: bench/LEVERS.md) is barely
    learned; a larger multiplier lets it be (configs/default.yaml: 30)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""
    epochs: int = 20
    """Maximum epochs per walk-forward fold (early stopping may end a fold sooner); the LR schedule's length."""
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
    ema_decay: float = 0.0
    """Weight averaging: > 0 keeps an exponential moving average of the weights, avg = ema_decay * avg + (1 -
    ema_decay) * weights after every optimiser step (`spread.optim.weight_average`), and the average is the model
    that is validated, selected, saved as the served weights of best.pt / last.pt (the trained weights ride along
    to resume) and predicts; 0 = off. Its horizon is about 1 / (1 - ema_decay) steps: mind the short budgets."""
    early_stopping_patience: int = 5
    """Stop a walk-forward fold after this many validations without a better score (0 disables early stopping)."""
    eval_every: int = 1
    """Validate every this many epochs (and always after the last epoch); honest scores need 1."""
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
    """After the folds, fit the served model on every date labelled by data.train_end (or the last labelled date),
    one member per seed of `seeds` (folders final-s<seed>/); inference then averages them (else the folds'
    best.pt)."""
    final_fit_epochs: int = 0
    """Epochs of the fixed-length fits (the holdout and the final fit); 0 = the epoch rule above. At most
    `epochs`."""
    seeds: list[int] = field(default_factory=list)
    """Seeds of the final fit's members, a seed ensemble (e.g. [0, 1, 2]); empty = the run's `seed` alone."""
    holdout_members: int = 1
    """Fits of the holdout, with seeds `seed`, `seed` + 1, ... (folders holdout/, holdout-s<seed>/), all on the
    holdout's one fold (same screen and scaler). Its score, the public-leaderboard estimate, is their ensemble's
    (the mean of their predictions, as the predictor averages members): set it to the number of `seeds` for the
    estimate of the served seed ensemble. `--members holdout` replays the same ensemble."""
    fold_members: int = 0
    """M > 0: after the honest scores, refit each walk-forward fold M times at its honest epoch count (fixed
    length, no selection, as the holdout; seeds `seed`, `seed` + 1, ...; folders <fold>-fixed/, <fold>-fixed-s<seed>/)
    and score their ensemble (summary.json `honest_ensemble`): the walk-forward estimate of a served M-seed
    ensemble, comparable with a holdout of `holdout_members` = M, and the lab's cell when present. The first member
    retraces the fold's own fit up to that epoch (its score is the honest score). 0 = off."""
    tensorboard: bool = False
    """Also write TensorBoard events to RUN/tensorboard (needs the tensorboard package)."""
    plots: bool = True
    """Draw the run's pictures into RUN/plots/ when training ends (`spread.plots`; matplotlib, headless)."""
    progress: bool = True
    """Progress within an epoch: a tqdm bar (steps/s, ETA) when stderr is a terminal, else a plain log line every
    `log_every_s` seconds (step, loss, steps/s, ETA)."""
    log_every_s: float = 30.0
    """Seconds between the plain progress lines of an epoch when stderr is not a terminal (0: none)."""
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
            check_choice("train", name, getattr(self, name), allowed)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device: expected auto|cpu|cuda|cuda:N, got {self.device!r}")
        check_range("train", "lr", self.lr, low=0, low_open=True, high=1.0)  # AdamW: beyond 1 (or inf) diverges
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ConfigError(f"train.betas: expected two values in [0, 1), got {self.betas}")
        for name in ("epochs", "eval_every", "eval_batch_size", "finetune_epochs", "holdout_members"):
            check_range("train", name, getattr(self, name), low=1)
        for name in ("weight_decay", "grad_clip", "warmup_steps", "early_stopping_patience", "max_steps_per_epoch",
                     "final_fit_epochs", "prune_top_k", "gate_lr_scale", "head_bias_lr_scale", "log_every_s",
                     "fold_members"):
            check_range("train", name, getattr(self, name), low=0)
        if self.final_fit_epochs > self.epochs:
            raise ConfigError(f"train.final_fit_epochs: {self.final_fit_epochs} > train.epochs = {self.epochs} (the "
                              "fixed-length fits follow the walk-forward folds' schedule)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"train.seeds: expected distinct seeds, got {self.seeds}")
        check_range("train", "ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True)
        for name in ("warmup_frac", "min_lr_frac", "blend_weight"):
            check_range("train", name, getattr(self, name), low=0.0, high=1.0)
