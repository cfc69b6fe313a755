"""Tests of spread.losses: regression masking, the pairwise rank loss against brute force, sampling, schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from spread.errors import ConfigError
from spread.losses import (
    LossConfig, gate_weight, listwise_rank_loss, pairwise_rank_loss, rank_loss, regression_loss, total_loss, unit_ranks,
)
from spread.model import ModelOutput


pytestmark = pytest.mark.usefixtures("single_thread")


def random_case(batch: int = 4, n_targets: int = 9, nan_share: float = 0.3, seed: int = 0):
    """score, y (with NaN), mask = y is known; (B, N) each."""
    generator = torch.Generator().manual_seed(seed)
    score = torch.randn(batch, n_targets, generator=generator)
    y = torch.randn(batch, n_targets, generator=generator)
    y[torch.rand(batch, n_targets, generator=generator) < nan_share] = float("nan")
    return score, y, torch.isfinite(y)


def brute_force_rank_loss(score, y, mask, groups=None) -> float:
    """The documented formula with explicit loops over dates and unordered pairs."""
    per_date = []
    for b in range(score.shape[0]):
        numerator = denominator = 0.0
        for i, j in itertools.combinations(range(score.shape[1]), 2):
            if not (mask[b, i] and mask[b, j]) or (groups is not None and groups[i] != groups[j]):
                continue
            weight = abs(y[b, i].item() - y[b, j].item())
            sign = math.copysign(1.0, y[b, i].item() - y[b, j].item())
            margin = (score[b, i].item() - score[b, j].item()) * sign
            numerator += weight * math.log1p(math.exp(-margin))
            denominator += weight
        if denominator > 0:
            per_date.append(numerator / denominator)
    return sum(per_date) / len(per_date) if per_date else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_loss_equals_brute_force(seed):
    score, y, mask = random_case(seed=seed)
    loss = pairwise_rank_loss(score, y, mask)
    assert loss.item() == pytest.approx(brute_force_rank_loss(score, y, mask), rel=1e-5)


def test_pairwise_loss_within_groups_equals_brute_force():
    score, y, mask = random_case(n_targets=10, seed=4)
    groups = torch.tensor([1, 2, 3, 4, 1, 2, 3, 4, 1, 1])
    loss = pairwise_rank_loss(score, y, mask, groups=groups)
    assert loss.item() == pytest.approx(brute_force_rank_loss(score, y, mask, groups), rel=1e-5)
    assert loss.item() != pytest.approx(pairwise_rank_loss(score, y, mask).item(), rel=1e-3)


def test_pairwise_loss_ignores_nan_targets():
    score, y, mask = random_case()
    score.requires_grad_(True)
    loss = pairwise_rank_loss(score, y, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(score.grad).all()
    assert (score.grad[~mask] == 0).all()
    moved = score.detach().clone()
    moved[~mask] += 50.0
    assert pairwise_rank_loss(moved, y, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    # A NaN under a True mask is ignored as well, not propagated.
    assert pairwise_rank_loss(score.detach(), y, torch.ones_like(mask)).item() == pytest.approx(loss.item(), rel=1e-6)


def test_ties_weigh_nothing_and_dates_without_pairs_are_not_averaged():
    score = torch.tensor([[0.3, -1.0, 2.0], [5.0, 0.0, 1.0], [1.0, 2.0, 3.0]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 1.0], [1.0, float("nan"), float("nan")], [0.0, 1.0, 3.0]])
    loss = pairwise_rank_loss(score, y, torch.isfinite(y))  # only the third date has weighted pairs
    expected = pairwise_rank_loss(score[2:].detach(), y[2:], torch.isfinite(y[2:]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert (score.grad[:2] == 0).all()
    no_pairs = pairwise_rank_loss(score[:2], y[:2], torch.isfinite(y[:2]))
    assert no_pairs.item() == 0.0 and no_pairs.requires_grad


def test_perfect_ranking_has_lower_loss_than_reversed():
    y = torch.linspace(-1, 1, 12).expand(2, -1)
    mask = torch.ones_like(y, dtype=torch.bool)
    assert pairwise_rank_loss(5 * y, y, mask) < math.log(2) < pairwise_rank_loss(-5 * y, y, mask)


@pytest.mark.parametrize("groups", [None, torch.tensor([0] * 40 + [1] * 160 + [2] * 100)])
def test_sampled_pairs_estimate_the_exact_loss(groups):
    score, y, mask = random_case(batch=3, n_targets=300, nan_share=0.2, seed=5)
    score[:, :40] = 4 * y[:, :40].nan_to_num()  # the small group is ranked well: a size-biased sampler would show
    exact = pairwise_rank_loss(score, y, mask, groups=groups)  # 44850 (or 17350 within groups) candidate pairs
    sampled = pairwise_rank_loss(score, y, mask, groups, max_pairs=8000, generator=torch.Generator().manual_seed(0))
    assert sampled.item() != exact.item()  # it did sample
    assert sampled.item() == pytest.approx(exact.item(), rel=0.03)  # sampling sd is ~1%
    again = pairwise_rank_loss(score, y, mask, groups, max_pairs=8000, generator=torch.Generator().manual_seed(0))
    assert again.item() == sampled.item()  # deterministic for a seeded generator


def test_sampled_pairs_stay_within_groups_and_ignore_nan():
    score, y, mask = random_case(batch=2, n_targets=40, nan_share=0.3, seed=6)
    groups = torch.arange(40) % 2
    base = pairwise_rank_loss(score, y, mask, groups, max_pairs=64, generator=torch.Generator().manual_seed(1))
    # Adding a constant to one group's scores changes only cross-group differences, which must never be sampled.
    shifted = score + 7.0 * groups
    shifted[~mask] = 1e3  # and unknown targets must never be sampled either
    moved = pairwise_rank_loss(shifted, y, mask, groups, max_pairs=64, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(base) and moved.item() == pytest.approx(base.item(), rel=1e-5)


def test_sampling_applies_only_when_candidate_pairs_exceed_max_pairs():
    score, y, mask = random_case(n_targets=9)  # 36 candidate pairs
    exact = pairwise_rank_loss(score, y, mask)
    assert pairwise_rank_loss(score, y, mask, max_pairs=36).item() == exact.item()
    sampled = pairwise_rank_loss(score, y, mask, max_pairs=35, generator=torch.Generator().manual_seed(0))
    assert sampled.item() != exact.item()


def test_huber_regression_matches_torch_on_known_cells_and_nan_does_not_poison():
    pred = torch.randn(3, 5, requires_grad=True)
    y = torch.randn(3, 5)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) > 0.3
    y[~mask] = float("nan")
    loss = regression_loss(pred, y, mask, LossConfig(huber_delta=0.5))
    expected = F.huber_loss(pred[mask], y[mask], delta=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~mask] == 0).all()


def test_mse_and_hybrid_regression():
    pred, y = torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[0.5, 1.0, float("nan")]])
    mask = torch.tensor([[True, True, False]])
    mse = regression_loss(pred, y, mask, LossConfig(regression="mse"))
    huber = regression_loss(pred, y, mask, LossConfig(regression="huber", huber_delta=0.2))
    hybrid = regression_loss(pred, y, mask, LossConfig(regression="hybrid", huber_delta=0.2))
    assert mse.item() == pytest.approx(0.125)
    assert huber.item() == pytest.approx(0.2 * (0.5 - 0.1) / 2)
    assert hybrid.item() == pytest.approx(0.5 * (mse.item() + huber.item()))
    assert regression_loss(pred, y, torch.zeros_like(mask), LossConfig()).item() == 0.0


def test_gate_weight_warm_start_schedule():
    cfg = LossConfig(gate_lambda=1e-3, gate_warmup_epochs=1, gate_ramp_epochs=2)
    assert [gate_weight(epoch, cfg) for epoch in (0.0, 0.99, 1.0)] == [0.0, 0.0, 0.0]
    assert gate_weight(1.5, cfg) == pytest.approx(2.5e-4)
    assert gate_weight(2.0, cfg) == pytest.approx(5e-4)
    assert gate_weight(3.0, cfg) == pytest.approx(1e-3) and gate_weight(10.0, cfg) == pytest.approx(1e-3)
    assert gate_weight(0.5, LossConfig(gate_lambda=1e-3, gate_warmup_epochs=0, gate_ramp_epochs=0)) == 1e-3


def test_total_loss_parts_sum_to_total_and_gradients_flow():
    score, y, mask = random_case(batch=3, n_targets=8)
    reg = torch.randn(3, 8, requires_grad=True)
    score.requires_grad_(True)
    gate_l1 = torch.tensor(40.0, requires_grad=True)
    lags = torch.tensor([1, 1, 2, 2, 3, 3, 4, 4])
    cfg = LossConfig(rank_weight=0.5, regression_weight=2.0, gate_lambda=1e-2, gate_warmup_epochs=0, gate_ramp_epochs=1)
    total, parts = total_loss(ModelOutput(reg=reg, score=score), y, mask, gate_l1, 0.5, cfg, lags)
    assert set(parts) == {"regression", "rank", "gate", "total"}
    assert parts["total"] == pytest.approx(total.item())
    assert parts["regression"] + parts["rank"] + parts["gate"] == pytest.approx(parts["total"], rel=1e-6)
    assert parts["gate"] == pytest.approx(0.2)
    assert parts["regression"] == pytest.approx(2.0 * regression_loss(reg, y, mask, cfg).item(), rel=1e-6)
    assert parts["rank"] == pytest.approx(0.5 * pairwise_rank_loss(score, y, mask).item(), rel=1e-6)
    total.backward()
    assert reg.grad.abs().sum() > 0 and score.grad.abs().sum() > 0 and gate_l1.grad.item() == pytest.approx(5e-3)


def test_rank_scope_both_is_the_mean_of_all_and_lag():
    score, y, mask = random_case(n_targets=8, seed=3)
    lags = torch.tensor([1, 2, 1, 2, 1, 2, 1, 2])
    losses = {
        scope: rank_loss(score, y, mask, lags, LossConfig(rank_scope=scope, max_pairs=0)).item()
        for scope in ("all", "lag", "both")
    }
    assert losses["lag"] == pytest.approx(pairwise_rank_loss(score, y, mask, groups=lags).item())
    assert losses["both"] == pytest.approx(0.5 * (losses["all"] + losses["lag"]))


def test_zero_rank_weight_skips_the_rank_term():
    score, y, mask = random_case()
    out = ModelOutput(reg=torch.zeros_like(score), score=score)
    _, parts = total_loss(out, y, mask, torch.tensor(1.0), 0.0, LossConfig(rank_weight=0.0), torch.ones(9))
    assert parts["rank"] == 0.0 and parts["regression"] > 0


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(regression="l1"), "regression"),
        (dict(rank_scope="date"), "rank_scope"),
        (dict(huber_delta=0.0), "huber_delta"),
        (dict(max_pairs=-1), "max_pairs"),
        (dict(gate_lambda=-1.0), "gate_lambda"),
        (dict(rank_loss="lambdarank"), "rank_loss"),
        (dict(listwise_temperature=0.0), "listwise_temperature"),
    ],
)
def test_invalid_loss_config_raises_config_error_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=f"loss.{field}"):
        LossConfig(**change)


def brute_force_listwise_loss(score, y, mask, temperature=1.0) -> float:
    """ListNet's top-one cross-entropy per date with explicit loops, over dates with >= 2 known targets."""
    per_date = []
    for b in range(score.shape[0]):
        known = [i for i in range(score.shape[1]) if mask[b, i]]
        if len(known) < 2:
            continue
        values = [y[b, i].item() for i in known]
        ranks = [sum(v < w for v in values) + 0.5 * (sum(v == w for v in values) - 1) for w in values]
        n = len(known)
        relevance = [(r - (n - 1) / 2) / math.sqrt((n * n - 1) / 12) / temperature for r in ranks]
        p = torch.softmax(torch.tensor(relevance), 0)
        log_q = torch.log_softmax(score[b, known], 0)
        per_date.append(-(p * log_q).sum().item())
    return sum(per_date) / len(per_date) if per_date else 0.0


@pytest.mark.parametrize("seed, temperature", [(0, 1.0), (1, 0.5), (2, 2.0)])
def test_listwise_loss_equals_brute_force(seed, temperature):
    score, y, mask = random_case(seed=seed)
    y[0, :-1] = float("nan")  # a date with one known target has no list
    mask = torch.isfinite(y)
    expected = brute_force_listwise_loss(score, y, mask, temperature)
    assert listwise_rank_loss(score, y, mask, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)


def test_unit_ranks_are_centred_average_ranks_with_unit_variance():
    y = torch.tensor([[0.3, 0.1, 0.0, 0.2, 0.2]])
    known = torch.tensor([[True, True, False, True, True]])
    expected = torch.tensor([[3.0, 0.0, 0.0, 1.5, 1.5]]) - 1.5
    expected[0, 2] = 0.0
    assert torch.allclose(unit_ranks(y, known), expected / math.sqrt(15 / 12))


def test_listwise_loss_prefers_the_true_order_and_groups_split_the_lists():
    y = torch.tensor([[0.5, -0.2, 0.1, 0.9, float("nan")]])
    mask = torch.isfinite(y)
    order = torch.nan_to_num(y)
    assert listwise_rank_loss(3 * order, y, mask) < listwise_rank_loss(-3 * order, y, mask)
    groups = torch.tensor([1, 1, 2, 2, 2])
    by_group = listwise_rank_loss(order, y, mask, groups).item()
    first = listwise_rank_loss(order[:, :2], y[:, :2], mask[:, :2]).item()
    second = listwise_rank_loss(order[:, 2:], y[:, 2:], mask[:, 2:]).item()
    assert by_group == pytest.approx((first + second) / 2)


def test_rank_loss_dispatches_to_listwise_with_the_scope():
    score, y, mask = random_case(seed=3)
    lags = torch.tensor([1, 2, 1, 2, 1, 2, 1, 2, 1])
    cfg = LossConfig(rank_loss="listwise", rank_scope="both", listwise_temperature=0.7)
    expected = 0.5 * (listwise_rank_loss(score, y, mask, None, 0.7) + listwise_rank_loss(score, y, mask, lags, 0.7))
    assert rank_loss(score, y, mask, lags, cfg).item() == pytest.approx(expected.item())
