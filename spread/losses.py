"""Training losses of the gated Transformer: masked regression, pairwise ranking, and the feature-gate penalty.

    total = regression_weight * regression(reg, y) + rank_weight * rank(score, y) + lambda(epoch) * ||g||_1

- Regression: Huber (delta 0.2 by default), MSE, or their mean ("hybrid"), averaged over the known targets only.
  `y` is expected pre-scaled by the caller (the trainer divides each target by its lag's train-slice std, so one
  delta suits all four lags); NaN targets are excluded and never reach the arithmetic.
- Ranking (`rank_loss`): "pairwise", the pairwise logistic loss of RankNet (Burges et al. 2005) on the score
  logits, within each date, each pair weighted by |y_i - y_j| (so that swapping two nearly equal targets costs
  little, cf. LambdaRank's metric-weighted pairs, Burges 2010); large cross-sections are subsampled: a fixed number
  of pairs per date drawn uniformly, fully batched (no loop over dates or pairs). Or "listwise", the ListNet
  top-one cross-entropy (Cao et al. 2007; the 5th place of the real competition used a listwise loss): per date,
  -sum_i softmax(r / tau)_i log softmax(s)_i over the known targets, r the targets' daily ranks scaled to unit
  variance, so that the loss sees the order the metric scores and no outlier dominates; every target, no sampling.
  The competition metric ranks all 424 targets of a date together, hence the default scope "all"; "lag" ranks
  within one lag, "both" averages the two.
- Gate: lambda * ||g||_1 with a warm start: 0 for the first epochs (let the model learn before pruning), then a
  linear ramp to lambda. With `gate_penalty` = "decoupled" the term leaves the loss (its part logs 0) and the same
  lambda(epoch) lowers the gate logits after each optimiser step instead (`spread.fit.train_step`), outside AdamW's
  per-parameter normalisation.

Shapes: B dates, N targets (target_pairs.csv order), P sampled pairs per date, G groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from spread.errors import check_choice, check_range
from spread.model import ModelOutput

REGRESSION_CHOICES = ("huber", "mse", "hybrid")
RANK_SCOPES = ("all", "lag", "both")
RANK_LOSSES = ("pairwise", "listwise")
GATE_PENALTIES = ("loss", "decoupled")
TARGETS = ("scaled", "rank")


@dataclass
class LossConfig:
    """Which loss terms are used and how they are weighted."""

    target: str = "scaled"
    """What both terms fit. scaled: each label divided by its lag's training-label std. rank: per date, the
    unit-variance ranks of the raw labels across every known target (`rank_targets`), the order the metric scores,
    bounded, so no outlier date or target dominates (LightGBM scored +0.045 +- 0.070 higher on the daily rank than
    on the scaled return, 14/21 cells: bench/PEER_ABLATION.md); the regression head then predicts ranks and the
    fit's target scale is 1."""
    regression: str = "huber"
    """Regression loss: huber | mse | hybrid (the mean of huber and mse)."""
    huber_delta: float = 0.2
    """Huber threshold, in units of what the losses fit (per-lag scaled labels, or unit ranks: `target`)."""
    regression_weight: float = 1.0
    """Weight of the regression term in the total."""
    rank_weight: float = 1.0
    """Weight of the pairwise ranking term in the total; 0 skips it."""
    rank_loss: str = "pairwise"
    """Ranking term: pairwise (RankNet logistic loss on |y_i - y_j|-weighted pairs) | listwise (ListNet top-one
    cross-entropy against the softmax of the daily ranks)."""
    rank_scope: str = "all"
    """Rank within each date across all targets (all), within each lag (lag), or the mean of both (both)."""
    max_pairs: int = 4096
    """Pairwise: pairs sampled per date when the cross-section has more candidate pairs; 0 = always use all pairs."""
    listwise_temperature: float = 1.0
    """Listwise: tau of the target distribution softmax(r / tau), r the unit-variance daily ranks (lower = the
    loss concentrates on the top of the ranking)."""
    gate_lambda: float = 1e-4
    """Weight lambda of the feature-gate L1 penalty once the warm start is over (with gate_penalty = decoupled:
    the logits' fall per optimiser step, in units of the gate's LR)."""
    gate_penalty: str = "loss"
    """How the gate penalty acts. loss: lambda ||g||_1 is added to the loss; its gradient then goes through AdamW,
    which normalises every parameter's step, so once the penalty dominates a gate's gradient every gate falls at
    the same rate whatever lambda (bench/LEVERS.md "Weight averaging; a gate that selects"). decoupled: outside
    the optimiser, as AdamW decouples weight decay (Loshchilov & Hutter 2019): after each optimiser step every
    gate logit falls by lambda times the gate's LR (`FeatureGate.shrink`), while AdamW moves it by at most about
    its LR along the data gradient; so a gate stays open only where its gradient's mean is consistently larger
    than lambda times its scale (lambda in (0, 1) is that threshold), and noise features close."""
    gate_warmup_epochs: int = 1
    """Epochs during which lambda is 0."""
    gate_ramp_epochs: int = 2
    """Epochs over which lambda then ramps linearly from 0 to gate_lambda (0 = jump straight to it)."""

    def __post_init__(self) -> None:
        check_choice("loss", "target", self.target, TARGETS)
        check_choice("loss", "regression", self.regression, REGRESSION_CHOICES)
        check_choice("loss", "rank_loss", self.rank_loss, RANK_LOSSES)
        check_range("loss", "listwise_temperature", self.listwise_temperature, low=0, low_open=True)
        check_choice("loss", "rank_scope", self.rank_scope, RANK_SCOPES)
        check_range("loss", "huber_delta", self.huber_delta, low=0, low_open=True)
        check_choice("loss", "gate_penalty", self.gate_penalty, GATE_PENALTIES)
        for name in ("regression_weight", "rank_weight", "gate_lambda", "max_pairs", "gate_warmup_epochs",
                     "gate_ramp_epochs"):
            check_range("loss", name, getattr(self, name), low=0)


def known_targets(y: Tensor, mask: Tensor) -> Tensor:
    """(B, N) bool: the mask, and the target is finite (a NaN under a True mask is ignored, not propagated)."""
    return mask.to(torch.bool) & torch.isfinite(y)


def regression_loss(pred: Tensor, y: Tensor, mask: Tensor, cfg: LossConfig) -> Tensor:
    """Mean Huber / MSE / hybrid loss over the known targets; pred, y, mask are (B, N), y pre-scaled."""
    known = known_targets(y, mask)  # (B, N)
    pred = pred.float()
    target = torch.where(known, y.float(), pred.detach())  # (B, N); unknown cells give 0 loss and 0 gradient
    huber = F.huber_loss(pred, target, reduction="none", delta=cfg.huber_delta)  # (B, N)
    squared = (pred - target).square()  # (B, N)
    per_cell = {"huber": huber, "mse": squared, "hybrid": 0.5 * (huber + squared)}[cfg.regression]
    weights = known.float()
    return (per_cell * weights).sum() / weights.sum().clamp_min(1.0)


def _all_pair_sums(score: Tensor, y: Tensor, known: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """Per-date sum of w_ij * loss_ij and of w_ij over every ordered pair (each unordered pair counted twice)."""
    score_diff = score[:, :, None] - score[:, None, :]  # (B, N, N)
    y_diff = y[:, :, None] - y[:, None, :]  # (B, N, N)
    allowed = known[:, :, None] & known[:, None, :] & (group[:, None] == group[None, :])  # (B, N, N)
    weight = y_diff.abs() * allowed  # (B, N, N); ties and the diagonal weigh 0
    pair_loss = F.softplus(-score_diff * torch.sign(y_diff))  # (B, N, N)
    return (weight * pair_loss).sum((1, 2)), weight.sum((1, 2))  # (B,), (B,)


def _sampled_pair_sums(
    score: Tensor, y: Tensor, known: Tensor, group: Tensor, n_groups: int, n_pairs: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Per-date sums over `n_pairs` ordered pairs drawn uniformly (with replacement) from the allowed pairs.

    i is drawn uniformly among the date's known targets, j uniformly among the known targets of i's group; each
    draw is importance-weighted by the size of i's group so that every allowed pair is equally likely overall.
    """
    B, N = score.shape
    key = torch.where(known, group, n_groups)  # (B, N): group id, unknown targets in an extra last bucket
    order = torch.argsort(key, dim=1, stable=True)  # (B, N): target indices, known ones grouped, unknown last
    counts = torch.zeros(B, n_groups + 1, device=score.device).scatter_add_(1, key, torch.ones_like(score))
    starts = counts.cumsum(1) - counts  # (B, G+1): first position of each bucket in `order`

    device = generator.device if generator is not None else score.device
    u = torch.rand(B, n_pairs, 2, generator=generator, device=device).to(score.device)  # (B, P, 2)
    n_known = known.sum(1, keepdim=True).float()  # (B, 1)
    pos_i = torch.minimum(u[..., 0] * n_known, (n_known - 1).clamp_min(0)).long()  # (B, P)
    i = order.gather(1, pos_i)  # (B, P)
    key_i = key.gather(1, i)  # (B, P)
    size_i, start_i = counts.gather(1, key_i), starts.gather(1, key_i)  # (B, P) each
    pos_j = start_i + torch.minimum(u[..., 1] * size_i, (size_i - 1).clamp_min(0))  # (B, P)
    j = order.gather(1, pos_j.long())  # (B, P)

    score_diff = score.gather(1, i) - score.gather(1, j)  # (B, P)
    y_diff = y.gather(1, i) - y.gather(1, j)  # (B, P)
    allowed = known.gather(1, i) & known.gather(1, j)  # (B, P)
    weight = y_diff.abs() * allowed * size_i  # (B, P)
    pair_loss = F.softplus(-score_diff * torch.sign(y_diff))  # (B, P)
    return (weight * pair_loss).sum(1), weight.sum(1)  # (B,), (B,)


def pairwise_rank_loss(
    score: Tensor,
    y: Tensor,
    mask: Tensor,
    groups: Tensor | None = None,
    max_pairs: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Weighted pairwise logistic rank loss, averaged over the dates that have at least one weighted pair.

    Per date: sum_ij w_ij * softplus(-(s_i - s_j) * sign(y_i - y_j)) / sum_ij w_ij, w_ij = |y_i - y_j|, over the
    pairs of known targets (and of the same group when `groups` (N,) is given); ties weigh 0. When the number of
    candidate pairs (N(N-1)/2, or the within-group count) exceeds `max_pairs` > 0, `max_pairs` pairs per date are
    sampled with `generator` (which may live on another device than the scores).
    """
    known = known_targets(y, mask)  # (B, N)
    score = score.float()
    y = torch.where(known, y.float(), torch.zeros_like(score))  # (B, N), NaN-free
    if groups is None:
        group = torch.zeros(score.size(1), dtype=torch.long, device=score.device)  # (N,)
    else:
        group = torch.unique(groups.to(score.device), return_inverse=True)[1]  # (N,) in 0..G-1
    group_sizes = torch.bincount(group).tolist()
    candidate_pairs = sum(size * (size - 1) // 2 for size in group_sizes)
    if max_pairs and candidate_pairs > max_pairs:
        weighted_loss, weight = _sampled_pair_sums(score, y, known, group, len(group_sizes), max_pairs, generator)
    else:
        weighted_loss, weight = _all_pair_sums(score, y, known, group)
    has_pairs = weight > 0  # (B,)
    per_date = weighted_loss / weight.clamp_min(torch.finfo(weight.dtype).tiny)  # (B,); 0 where no pairs
    return (per_date * has_pairs).sum() / has_pairs.sum().clamp_min(1)


def unit_ranks(y: Tensor, known: Tensor) -> Tensor:
    """(B, N) per date, the average ranks of the known values, centred and scaled to unit variance (0 elsewhere)."""
    filled = torch.where(known, y, torch.full_like(y, float("inf"))).contiguous()  # unknown last
    ordered = filled.sort(dim=1).values  # (B, N)
    below = torch.searchsorted(ordered, filled, right=False)  # (B, N): values strictly below
    at_most = torch.searchsorted(ordered, filled, right=True)  # (B, N): values below or tied, itself included
    rank = 0.5 * (below + at_most - 1).float()  # (B, N) 0-based average ranks (ties share their mean rank)
    n = known.sum(1, keepdim=True).float()  # (B, 1)
    centred = (rank - 0.5 * (n - 1.0)) / torch.sqrt(((n * n - 1.0) / 12.0).clamp_min(1e-12))  # uniform-rank std
    return torch.where(known, centred, torch.zeros_like(centred))


def rank_targets(y: Tensor, mask: Tensor) -> Tensor:
    """(B, N) what the losses fit with loss.target = rank: each date's unit-variance ranks of its known labels."""
    return unit_ranks(y, known_targets(y, mask))


def listwise_rank_loss(
    score: Tensor, y: Tensor, mask: Tensor, groups: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """ListNet top-one cross-entropy, averaged over the (date, group) lists with at least two known targets.

    Per date and group: -sum_i p_i log q_i over the known targets, p = softmax(r / temperature) of their unit
    ranks r, q = softmax(s) of their scores; `groups` (N,) splits each date into lists (None: one list).
    """
    known = known_targets(y, mask)  # (B, N)
    score = score.float()
    y = torch.where(known, y.float(), torch.zeros_like(score))
    group = (torch.zeros(score.size(1), dtype=torch.long, device=score.device) if groups is None
             else torch.unique(groups.to(score.device), return_inverse=True)[1])  # (N,)
    total, lists = score.new_zeros(()), score.new_zeros(())
    for g in range(int(group.max()) + 1):
        member = known & (group == g)[None, :]  # (B, N)
        has_list = member.sum(1) >= 2  # (B,)
        relevance = unit_ranks(y, member) / temperature
        off_list = ~member & has_list[:, None]  # (B, N); a date without a list keeps finite (unused) values
        target = torch.softmax(relevance.masked_fill(off_list, float("-inf")), dim=1)  # (B, N), 0 off the list
        log_q = torch.log_softmax(score.masked_fill(off_list, float("-inf")), dim=1)  # (B, N)
        per_date = -(target * torch.where(member, log_q, torch.zeros_like(log_q))).sum(1)  # (B,)
        total = total + (per_date * has_list).sum()
        lists = lists + has_list.sum()
    return total / lists.clamp_min(1)


def rank_loss(
    score: Tensor, y: Tensor, mask: Tensor, target_lags: Tensor, cfg: LossConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The configured rank loss (pairwise or listwise) over the configured scope (all targets, within each lag,
    or the mean of both)."""
    def one(groups: Tensor | None) -> Tensor:
        if cfg.rank_loss == "listwise":
            return listwise_rank_loss(score, y, mask, groups, cfg.listwise_temperature)
        return pairwise_rank_loss(score, y, mask, groups, cfg.max_pairs, generator)

    loss_all = loss_lag = None
    if cfg.rank_scope in ("all", "both"):
        loss_all = one(None)
    if cfg.rank_scope in ("lag", "both"):
        loss_lag = one(target_lags)
    if loss_all is None:
        return loss_lag
    return loss_all if loss_lag is None else 0.5 * (loss_all + loss_lag)


def gate_weight(epoch: float, cfg: LossConfig) -> float:
    """lambda of the gate penalty at (fractional) `epoch`: 0 during the warm-up, then a linear ramp to gate_lambda."""
    since_warmup = epoch - cfg.gate_warmup_epochs
    if since_warmup < 0:
        return 0.0
    if cfg.gate_ramp_epochs == 0:
        return cfg.gate_lambda
    return cfg.gate_lambda * min(1.0, since_warmup / cfg.gate_ramp_epochs)


def total_loss(
    out: ModelOutput,
    y: Tensor,
    mask: Tensor,
    gate_l1: Tensor,
    epoch: float,
    cfg: LossConfig,
    target_lags: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The training loss and its parts for logging.

    The parts are the weighted terms as they enter the total, so regression + rank + gate == total.
    y, mask: (B, N) pre-scaled targets and known-mask; gate_l1: the model's `gate.l1()`; target_lags: (N,) lags.
    """
    zero = out.reg.new_zeros((), dtype=torch.float32)
    regression = cfg.regression_weight * regression_loss(out.reg, y, mask, cfg) if cfg.regression_weight else zero
    rank = cfg.rank_weight * rank_loss(out.score, y, mask, target_lags, cfg, generator) if cfg.rank_weight else zero
    gate = gate_weight(epoch, cfg) * gate_l1.float() if cfg.gate_penalty == "loss" else zero
    total = regression + rank + gate
    values = torch.stack([regression, rank, gate, total]).detach().tolist()  # one device sync
    return total, dict(zip(("regression", "rank", "gate", "total"), values, strict=True))
