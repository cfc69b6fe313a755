"""The per-target head: each target's forecast from the pooled cross-asset context AND its own features.

The lag heads of `spread.model.GatedTransformer` map one pooled vector per date to N outputs, so a target's
forecast can only use what the encoder's (screened) inputs hold; for most targets those miss the target's own legs
and labels. With `data.own_features` the model adds, for every target j,

    z_j = Linear(2D, Dt)(pooled) + Linear(C, Dt)(own_j) + e_j      (= one Linear of their concatenation)
    [reg_j, score_j] += Linear(2 Dt, 2)(GELU(Linear(Dt, 2 Dt)(GELU(z_j))))

where own_j (C = 2K) is target j's own scaled features and missing flags on the date (`spread.windows.own_inputs`)
and e_j a learned embedding of target j: one MLP shared by all targets, so what the context says about regimes and
cross-asset drivers can change how each target's own returns and labels are read.

Shape legend: B batch, D d_model, N targets, C own input channels (2K), Dt `model.target_head_dim`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from spread.errors import DataError


class TargetHead(nn.Module):
    """MLP over (pooled context, a target's own inputs, its embedding), one (reg, score) pair per target."""

    def __init__(self, d_model: int, hidden: int, own_channels: int, n_targets: int, dropout: float) -> None:
        super().__init__()
        self.n_targets, self.own_channels = n_targets, own_channels
        self.context = nn.Linear(2 * d_model, hidden)  # pooled (2D) -> Dt, shared by every target
        self.own = nn.Linear(own_channels, hidden, bias=False)  # C -> Dt
        self.identity = nn.Parameter(0.02 * torch.randn(n_targets, hidden))  # (N, Dt) e_j
        self.fc = nn.Linear(hidden, 2 * hidden)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, 2)

    def forward(self, pooled: Tensor, own: Tensor) -> Tensor:
        """pooled (B, 2D), own (B, N, C) -> (B, 2, N): regression and score per target, in target order."""
        if own.shape[1:] != (self.n_targets, self.own_channels):
            raise DataError(f"model input: own features of shape {tuple(own.shape[1:])}, expected "
                            f"({self.n_targets}, {self.own_channels})")
        z = self.context(pooled).unsqueeze(1) + self.own(own) + self.identity  # (B, N, Dt)
        h = self.dropout(self.act(self.fc(self.act(z))))  # (B, N, 2 Dt)
        return self.out(h).transpose(1, 2)  # (B, 2, N)
