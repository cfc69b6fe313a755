"""The one mapping from model outputs to submitted predictions, shared by validation and the predictor.

`predictions` turns the two heads into the numbers a date is scored on (see `TrainConfig.predict_with`): the
regression head is unscaled back to label units with the fold's per-target scale, the score head is used as is,
and the blend mixes the per-date z-scores of both; with `model.prior_weight` the per-date z-score of that gets the
model's weighted prior added (each target's mean daily rank over the fit's training labels). It keeps non-finite
values: the caller decides what a NaN means (validation scores it as 0 so that no date drops out of the score; the
predictor drops that member).
`forward` is how a window batch feeds the model, in training and prediction alike; `predict_batch` is the forward
pass both the trainer (`predict_dataset`) and `spread.members.run_member` call, in eval precision
(`spread.runtime.inference_dtype`), so training scores and served answers cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from spread.runtime import Runtime, autocast, inference_dtype
from spread.train_config import TrainConfig
from spread.windows import make_loader

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from spread.model import GatedTransformer, ModelOutput


def _zscore_rows(values: torch.Tensor) -> torch.Tensor:
    centred = values - values.mean(dim=-1, keepdim=True)
    return centred / centred.square().mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


def predictions(out: ModelOutput, target_scale: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """(B, N) float32 predictions from the two heads; non-finite outputs stay non-finite.

    The regression head is unscaled back to label units, so the four lags compare on their own scales (the metric
    ranks all targets of a date together); the blend mixes the per-date z-scores of both heads, since the score
    logits have no units. With model.prior_weight (`out.prior`), the per-date z-score of that prediction plus the
    weighted prior (a non-finite output then makes its whole date non-finite).
    """
    reg = out.reg.float() * target_scale.to(out.reg.device, torch.float32)
    score = out.score.float()
    if cfg.predict_with == "reg":
        pred = reg
    elif cfg.predict_with == "score":
        pred = score
    else:
        pred = cfg.blend_weight * _zscore_rows(reg) + (1.0 - cfg.blend_weight) * _zscore_rows(score)
    if out.prior is None:
        return pred
    return _zscore_rows(pred) + out.prior.to(pred.device, torch.float32)  # (B, N) + (N,)


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> ModelOutput:
    """The model's outputs for a window batch already on its device: how a batch feeds the model, for training
    (`spread.fit.train_step`, `model` may be the DDP wrapper) and prediction alike; "own" only when it carries it
    (data.own_features)."""
    own = {"own": batch["own"]} if "own" in batch else {}
    return model(batch["x"], batch["t"], batch["valid"], **own)


def predict_batch(
    model: GatedTransformer, batch: dict[str, torch.Tensor], target_scale: torch.Tensor, cfg: TrainConfig,
    device: torch.device,
) -> np.ndarray:
    """(B, N) float64 predictions of `model` (in its current mode) for a window batch; may hold non-finite values."""
    runtime = Runtime(device=device, amp_dtype=inference_dtype(cfg, device))
    inputs = {key: batch[key].to(device) for key in ("x", "t", "valid", "own") if key in batch}
    with torch.inference_mode(), autocast(runtime):
        out = forward(model, inputs)
    return predictions(out, target_scale, cfg).cpu().numpy().astype(np.float64)


def predict_dataset(
    model: GatedTransformer,
    dataset: Dataset,
    target_scale: torch.Tensor,
    cfg: TrainConfig,
    batch_size: int,
    device: torch.device | str,
) -> tuple[np.ndarray, np.ndarray]:
    """(date_ids (D,), predictions (D, N) float64) for every sample of `dataset`, in date order; eval mode.

    For scoring: a non-finite prediction becomes 0, so that no date drops out of the score.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    dates, preds = [], []
    for batch in make_loader(dataset, batch_size, shuffle=False, seed=0):
        preds.append(predict_batch(model, batch, target_scale, cfg, device))
        dates.append(batch["date_id"].numpy())
    model.train(was_training)
    if not dates:
        return np.empty(0, dtype=np.int64), np.empty((0, len(target_scale)))
    date_ids = np.concatenate(dates)
    values = np.nan_to_num(np.concatenate(preds), nan=0.0, posinf=0.0, neginf=0.0)
    order = np.argsort(date_ids, kind="stable")
    return date_ids[order], values[order]
