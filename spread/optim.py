"""The optimiser, the learning-rate schedule and the weight average of a fit.

AdamW with decoupled weight decay on matrices only (nanoGPT) and the gate logits in their own group; the LR of
every step comes from `learning_rate` (linear warm-up, then cosine decay; or a one-cycle shape). With
`train.ema_decay` > 0, `weight_average` keeps an exponential moving average of the weights, updated after every
optimiser step; it is the model a fit validates, checkpoints for serving and predicts with.

References: Loshchilov & Hutter 2019 (AdamW); Loshchilov & Hutter 2017 (SGDR, cosine schedule); Smith & Topin
2019 (one-cycle schedule); Polyak & Juditsky 1992 (averaging the iterates); torch.optim.swa_utils.AveragedModel.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.optim.swa_utils import AveragedModel

from spread.train_config import TrainConfig

if TYPE_CHECKING:
    from spread.model import GatedTransformer

ONECYCLE_DIV = 25.0
"""One-cycle schedule: the LR starts at lr / 25 (torch's OneCycleLR div_factor) ..."""
ONECYCLE_FINAL_DIV = 1e4
"""... and ends at lr / 25 / 1e4 (its final_div_factor)."""


def build_optimizer(model: GatedTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT); the gate logits in their own group (gate_lr_scale), and
    with head_bias_lr_scale != 1 the lag heads' biases too (only then: the groups of a last.pt must match on resume).

    Every group has an "lr_scale": the schedule sets each group's LR to learning_rate(step) * lr_scale.
    """
    gate = model.gate.logit
    biases = [head.bias for head in model.heads.values()] if cfg.head_bias_lr_scale != 1.0 else []
    own_group = {id(p) for p in (gate, *biases)}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in own_group]
    groups = [
        {"params": [p for p in others if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": [p for p in others if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": [gate], "weight_decay": 0.0, "lr_scale": cfg.gate_lr_scale},
    ]
    if biases:
        groups.append({"params": biases, "weight_decay": 0.0, "lr_scale": cfg.head_bias_lr_scale})
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


def weight_average(model: "GatedTransformer", decay: float, device: torch.device | None = None
                   ) -> AveragedModel | None:
    """An exponential moving average of `model`'s parameters (a copy on `device`; None when `decay` is 0): each
    `update_parameters(model)` after an optimiser step sets avg = decay * avg + (1 - decay) * weights, the first
    one copies the weights. Buffers (the gate mask) are not averaged: depending on the torch version the copy keeps
    its own or takes the model's at each update, the same here, since the mask is set before the fit starts (the
    pruned fine-tune freezes it first) and never changes during it."""
    if decay == 0:
        return None

    def ema(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor | int) -> torch.Tensor:
        return averaged + (1.0 - decay) * (current - averaged)

    return AveragedModel(model, device=device, avg_fn=ema)  # avg_fn: the one averaging hook every torch 2.x has
