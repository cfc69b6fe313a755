"""Tests of spread.model: shapes, target order, the feature gate, attention paths, checkpointing, precision."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from spread.errors import ConfigError, DataError
from spread.losses import LossConfig, total_loss
from spread.model import (
    GatedTransformer,
    ModelConfig,
    MomentumFactors,
    flash_priority_context,
    sinusoidal_encoding,
    vanilla_attention,
)

TINY = ModelConfig(d_model=16, n_layers=2, n_heads=2, mlp_ratio=2, time2vec_dim=4)
LAGS = [1, 2, 3, 4, 2, 1, 4, 3, 1]  # interleaved on purpose: outputs must come back in this order


pytestmark = pytest.mark.usefixtures("single_thread")


def make_model(cfg: ModelConfig = TINY, n_features: int = 5, lags: list[int] = LAGS, seed: int = 0):
    torch.manual_seed(seed)
    return GatedTransformer(cfg, n_features, lags)


def make_batch(batch: int = 3, length: int = 8, n_features: int = 5, pad: bool = True, seed: int = 1):
    """x (B, L, F), t (B, L), valid (B, L): sample 0 has only its last 3 rows valid when `pad`."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, n_features, generator=generator)
    t = (torch.arange(length, dtype=torch.float32) + 100).expand(batch, length) / 1000
    valid = torch.ones(batch, length, dtype=torch.bool)
    if pad:
        valid[0, : length - 3] = False
        x[0, : length - 3] = 0.0
    return x, t, valid


@pytest.mark.parametrize(
    "n_features, lags", [(1, [1]), (5, LAGS), (13, [4, 4, 1, 1, 2, 3, 3, 2, 1, 2, 3, 4]), (7, [2] * 6)]
)
def test_output_shapes_for_any_feature_and_target_count(n_features, lags):
    model = make_model(n_features=n_features, lags=lags)
    out = model(*make_batch(n_features=n_features))
    assert out.reg.shape == (3, len(lags)) and out.score.shape == (3, len(lags))
    assert torch.isfinite(out.reg).all() and torch.isfinite(out.score).all()
    assert len(model.heads) == len(set(lags))


def test_heads_scatter_outputs_back_to_target_order():
    model = make_model().eval()
    with torch.no_grad():
        for lag, head in zip(model.head_lags, model.heads.values(), strict=True):
            targets = [j for j, target_lag in enumerate(LAGS) if target_lag == lag]
            head.weight.zero_()
            head.bias.copy_(torch.tensor([float(j) for j in targets] + [100.0 + j for j in targets]))
        out = model(*make_batch())
    assert torch.equal(out.reg, torch.arange(len(LAGS), dtype=torch.float32).expand(3, -1))
    assert torch.equal(out.score, 100 + torch.arange(len(LAGS), dtype=torch.float32).expand(3, -1))


def test_gradients_reach_gate_time2vec_and_every_head():
    model = make_model()
    out = model(*make_batch())
    (out.reg.square().mean() + out.score.sigmoid().mean() + model.gate.l1()).backward()
    assert model.gate.logit.grad is not None and (model.gate.logit.grad != 0).all()
    assert model.time2vec.weight.grad.abs().sum() > 0
    for name, head in model.heads.items():
        assert head.weight.grad.abs().sum() > 0, name


def test_frozen_mask_prunes_features_from_values_l1_and_outputs():
    model = make_model(replace(TINY, dropout=0.0))
    keep = torch.tensor([True, False, True, True, False])
    model.gate.freeze_mask(keep)
    values = model.gate.values()
    assert torch.equal(values == 0, ~keep)
    assert model.gate.l1().item() == pytest.approx(values[keep].sum().item())

    x, t, valid = make_batch()
    changed = x.clone()
    changed[..., ~keep] = 123.0
    dense = model.train()(x, t, valid).reg  # training mode: the dense path, x * g over all features
    model.eval()
    with torch.no_grad():
        sparse = model(x, t, valid).reg  # eval mode: only the kept columns are multiplied
        sparse_changed = model(changed, t, valid).reg
    assert torch.allclose(dense, sparse, atol=1e-6)
    assert torch.equal(sparse, sparse_changed)

    (model.train()(x, t, valid).reg.sum() + model.gate.l1()).backward()
    assert (model.gate.logit.grad[~keep] == 0).all() and (model.gate.logit.grad[keep] != 0).all()

    restored = make_model(replace(TINY, dropout=0.0), seed=1)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.gate.mask, keep)
    with pytest.raises(ValueError, match="freeze_mask"):
        model.gate.freeze_mask(torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("pad", [False, True])
def test_math_and_sdpa_attention_agree_in_fp32(pad):
    batch = make_batch(pad=pad)
    outputs = {}
    for attention in ("math", "sdpa", "flash"):
        model = make_model(replace(TINY, attention=attention)).eval()
        with torch.no_grad():
            outputs[attention] = model(*batch)
    for attention in ("sdpa", "flash"):
        assert torch.allclose(outputs[attention].reg, outputs["math"].reg, atol=1e-5, rtol=0)
        assert torch.allclose(outputs[attention].score, outputs["math"].score, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pad", [False, True])
def test_flash_priority_context_computes_the_same_attention(pad):
    q, k, v = torch.randn(3, 3, 2, 6, 4, generator=torch.Generator().manual_seed(0)).unbind(0)  # (B, H, L, Dh)
    key_mask = None
    if pad:
        key_mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
        key_mask[0, ..., :4] = False
    with flash_priority_context():
        fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    assert torch.allclose(fused, vanilla_attention(q, k, v, key_mask, 0.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_padding_rows_do_not_influence_outputs(attention):
    model = make_model(replace(TINY, attention=attention)).eval()
    x, t, valid = make_batch()
    noisy = x.clone()
    noisy[0, :5] = torch.randn(5, 5) * 10  # sample 0's padding rows (the first 5) get garbage
    with torch.no_grad():
        clean_out, noisy_out = model(x, t, valid), model(noisy, t, valid)
    assert torch.allclose(clean_out.reg, noisy_out.reg, atol=1e-6)
    assert torch.allclose(clean_out.score, noisy_out.score, atol=1e-6)
    noisy[1, 0] += 10  # a valid row of sample 1 does matter
    with torch.no_grad():
        assert not torch.allclose(model(noisy, t, valid).reg[1], clean_out.reg[1], atol=1e-6)


def test_attention_path_is_decided_once_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="spread.model"):
        model = make_model(replace(TINY, attention="flash"))
    expected = "flash" if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0) else "sdpa"
    assert model.attention_backend == expected
    assert all(block.attn.backend == expected for block in model.blocks)
    assert any("attention path" in record.getMessage() for record in caplog.records)
    assert make_model(replace(TINY, attention="math")).attention_backend == "math"
    assert make_model(replace(TINY, attention="sdpa")).attention_backend == "sdpa"


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = replace(TINY, dropout=0.1, attention_dropout=0.1)
    batch = make_batch()
    gradients = []
    for grad_checkpoint in (False, True):
        model = make_model(replace(cfg, grad_checkpoint=grad_checkpoint)).train()
        torch.manual_seed(5)  # same dropout masks; checkpoint replays the RNG state when recomputing
        out = model(*batch)
        (out.reg.square().mean() + out.score.mean()).backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("attention", ["math", "sdpa"])
def test_autocast_runs_at_toy_size(dtype, attention):
    model = make_model(replace(TINY, attention=attention)).train()
    with torch.autocast("cpu", dtype=dtype):
        out = model(*make_batch())
        assert out.reg.dtype == dtype
    loss = out.reg.float().square().mean() + out.score.float().square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.gate.logit.grad.dtype == torch.float32


def test_tiny_model_overfits_a_tiny_batch():
    lags = [1, 1, 2, 2, 3, 3, 4, 4]
    model = make_model(replace(TINY, d_model=32, n_heads=4, dropout=0.0), n_features=6, lags=lags)
    x, t, valid = make_batch(batch=4, length=8, n_features=6)
    y = torch.randn(4, len(lags), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(y, dtype=torch.bool)
    loss_cfg = LossConfig(regression="mse", rank_weight=0.0, gate_lambda=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss, _ = total_loss(model(x, t, valid), y, mask, model.gate.l1(), 0.0, loss_cfg, torch.tensor(lags))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_head_experts_mix_per_date_by_the_router():
    """E experts per lag head: each target's output is the router-weighted sum of its experts' outputs."""
    model = make_model(replace(TINY, head_experts=3)).eval()
    assert model.router is not None and make_model().router is None
    with torch.no_grad():
        for lag, head in zip(model.head_lags, model.heads.values(), strict=True):
            targets = [j for j, target_lag in enumerate(LAGS) if target_lag == lag]
            head.weight.zero_()  # expert e answers 10 e + target index (reg) and -(10 e + target index) (score)
            head.bias.copy_(torch.tensor([sign * (10.0 * e + j) for e in range(3) for sign in (1, -1)
                                          for j in targets]))
        model.router.weight.zero_()
        model.router.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        out = model(*make_batch())
    weights = torch.tensor([0.0, 1.0, 2.0]).softmax(0)
    expected = (10 * torch.arange(3.0) * weights).sum() + torch.arange(len(LAGS), dtype=torch.float32)
    assert torch.allclose(out.reg, expected.expand(3, -1)) and torch.allclose(out.score, -expected.expand(3, -1))
    router_input = make_model(replace(TINY, head_experts=2))
    out = router_input(*make_batch())
    out.reg.square().mean().backward()
    assert router_input.router.weight.grad.abs().sum() > 0


def test_momentum_factors_are_decayed_sums_of_the_valid_rows_scaled_by_today():
    """MomentumFactors: m_k = sqrt(1 - l^2) sum_s l^(L-1-s) x_s over valid rows, f = A m * (1 + C x_today)."""
    momentum = MomentumFactors(n_features=5, n_decays=3, rank=4, longest=16.0)
    assert torch.allclose(0.5 ** (1 / torch.tensor([1.0, 4.0, 16.0])), momentum.decays())  # initial half-lives
    x, _, valid = make_batch(length=12)
    lam = momentum.decays().detach()
    expected_m = torch.zeros(3, 3, 5)  # (B, K, F) by the recursion m(t) = l m(t-1) + x(t), valid rows only
    for row in range(12):
        expected_m = lam[None, :, None] * expected_m + (x[:, row] * valid[:, row, None])[:, None, :]
    expected_m = expected_m * torch.sqrt(1 - lam**2)[None, :, None]
    with torch.no_grad():
        expected = momentum.momentum_proj(expected_m.reshape(3, -1)) * (1 + momentum.state_proj(x[:, -1]))
        assert torch.allclose(momentum(x, valid), expected, atol=1e-5)
        padded = x.clone()
        padded[0, :9] = 99.0  # sample 0's invalid rows: nothing of them may reach its factors
        assert torch.equal(momentum(padded, valid)[0], momentum(x, valid)[0])
    momentum(x, valid).square().sum().backward()
    assert momentum.decay_logit.grad.abs().min() > 0  # the decays are learned


def test_momentum_decays_add_to_the_head_factors_and_leave_the_default_model_unchanged():
    with pytest.raises(ConfigError, match="momentum_decays"):
        replace(TINY, momentum_decays=2)  # needs head_rank
    base = make_model(replace(TINY, head_rank=3))
    with_momentum = make_model(replace(TINY, head_rank=3, momentum_decays=2))
    assert base.momentum is None and with_momentum.momentum.decay_logit.shape == (2,)
    shared = {k: v for k, v in with_momentum.state_dict().items() if not k.startswith("momentum.")}
    assert shared.keys() == base.state_dict().keys()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in shared.items())  # same init of everything else
    patched = make_model(replace(TINY, head_rank=3, momentum_decays=2, patch_len=3))  # rows, not tokens, are summed
    x, t, valid = make_batch(length=10)
    moved = x.clone()
    moved[0, :7] = 99.0  # sample 0's padding rows
    with torch.no_grad():
        assert torch.equal(patched.eval()(moved, t, valid).reg[0], patched(x, t, valid).reg[0])
    variate = make_variate(replace(VARIATE, head_rank=3, momentum_decays=2), window=10)
    pruned = make_model(replace(TINY, head_rank=3, momentum_decays=2))
    pruned.gate.freeze_mask(torch.tensor([True, False, True, True, True]))
    cut = x.clone()
    cut[..., 1] = 7.0  # a pruned feature reaches nothing, the momentum factors included
    with torch.no_grad():
        assert torch.equal(pruned.eval()(cut, t, valid).reg, pruned(x, t, valid).reg)
        assert torch.isfinite(variate.eval()(x, t, valid).reg).all()
    out = with_momentum(*make_batch())
    out.reg.square().mean().backward()
    assert with_momentum.momentum.momentum_proj.weight.grad.abs().sum() > 0
    assert with_momentum.gate.logit.grad.abs().sum() > 0


def test_head_rank_puts_a_shared_bottleneck_before_every_lag_head():
    model = make_model(replace(TINY, head_rank=3, head_experts=2))
    assert model.head_factors.out_features == 3
    assert all(head.in_features == 3 for head in model.heads.values())
    out = model(*make_batch())
    assert out.reg.shape == (3, len(LAGS)) and torch.isfinite(out.score).all()
    single = make_model(replace(TINY, head_rank=3))
    with torch.no_grad():
        single.head_factors.weight.zero_()
        single.head_factors.bias.zero_()
        for head in single.heads.values():
            head.bias.fill_(0.25)
        flat = single(*make_batch())  # a zero bottleneck leaves only the heads' biases: nothing else reaches them
    assert torch.equal(flat.reg, torch.full((3, len(LAGS)), 0.25))
    assert make_model().head_factors is None


def test_construction_is_deterministic_with_a_seed():
    first, second = make_model(seed=7), make_model(seed=7)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "change", [dict(time2vec_dim=0), dict(time2vec_dim=1), dict(positional_encoding=False), dict(norm="rmsnorm")]
)
def test_config_switches(change):
    model = make_model(replace(TINY, **change))
    out = model(*make_batch())
    assert out.reg.shape == (3, len(LAGS)) and torch.isfinite(out.reg).all()
    assert (model.time2vec is None) == (change.get("time2vec_dim") == 0)


def test_sinusoidal_encoding_counts_back_from_the_last_row():
    short, long = sinusoidal_encoding(4, 6, torch.device("cpu")), sinusoidal_encoding(9, 6, torch.device("cpu"))
    assert torch.allclose(short, long[-4:])
    assert torch.equal(short[-1, 0::2], torch.zeros(3)) and torch.equal(short[-1, 1::2], torch.ones(3))
    assert sinusoidal_encoding(3, 5, torch.device("cpu")).shape == (3, 5)


@pytest.mark.parametrize(
    "change, field",
    [(dict(d_model=30, n_heads=4), "d_model"), (dict(attention="fast"), "attention"), (dict(norm="batch"), "norm"),
     (dict(dropout=1.0), "dropout"), (dict(time2vec_dim=-1), "time2vec_dim"), (dict(n_layers=0), "n_layers"),
     (dict(target_head_dim=0), "target_head_dim"), (dict(head_experts=0), "head_experts"),
     (dict(head_rank=-1), "head_rank"), (dict(momentum_decays=-1), "momentum_decays"),
     (dict(momentum_longest=0.5), "momentum_longest")],
)
def test_invalid_config_raises_config_error_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=f"model.{field}"):
        replace(TINY, **change)


def test_wrong_feature_count_raises_data_error():
    model = make_model()
    with pytest.raises(DataError, match="expected 5 features, got 6"):
        model(*make_batch(n_features=6))


@pytest.mark.parametrize("length, patch_len", [(8, 4), (8, 3), (5, 8), (8, 1)])
def test_patches_group_rows_into_tokens_left_padded(length, patch_len):
    model = make_model(replace(TINY, patch_len=patch_len))
    assert model.input_proj.in_features == patch_len * 5
    x, t, valid = make_batch(length=length)
    tokens, token_t, token_valid = model.patches(x, t, valid)
    n_tokens = -(-length // patch_len)
    assert tokens.shape == (3, n_tokens, patch_len, 5) and token_t.shape == token_valid.shape == (3, n_tokens)
    assert torch.equal(tokens.reshape(3, -1, 5)[:, -length:], x)  # the rows in order, padding first
    assert torch.equal(token_t[:, -1], t[:, -1]) and token_valid[1:].all()  # a token is timed by its newest row
    assert token_valid[0, -1] and not token_valid[0, 0] or n_tokens == 1  # sample 0: only its last 3 rows valid
    out = model(x, t, valid)
    assert out.reg.shape == (3, len(LAGS)) and torch.isfinite(out.reg).all()


def test_patched_model_ignores_padding_and_prunes_like_the_dense_path():
    model = make_model(replace(TINY, patch_len=2, dropout=0.0)).eval()
    x, t, valid = make_batch(length=9)
    noisy = x.clone()
    noisy[0, :6] = 10 * torch.randn(6, 5)  # sample 0's padding rows, which fill whole tokens
    with torch.no_grad():
        assert torch.allclose(model(x, t, valid).reg, model(noisy, t, valid).reg, atol=1e-6)
    keep = torch.tensor([True, False, True, False, True])
    model.gate.freeze_mask(keep)
    with torch.no_grad():
        sparse = model(x, t, valid).reg  # eval: only the kept columns of every row of a token are multiplied
    dense = model.train()(x, t, valid).reg
    assert torch.allclose(dense, sparse, atol=1e-6)


def test_patch_len_must_be_positive():
    with pytest.raises(ConfigError, match="model.patch_len"):
        replace(TINY, patch_len=0)


# ----------------------------------------------------------------------------------------------------------------
# Variate tokens (iTransformer): one token per feature holding its whole window

VARIATE = replace(TINY, tokens="variate", dropout=0.0)


def make_variate(cfg: ModelConfig = VARIATE, n_features: int = 5, lags: list[int] = LAGS, window: int = 8,
                 seed: int = 0) -> GatedTransformer:
    torch.manual_seed(seed)
    return GatedTransformer(cfg, n_features, lags, window=window)


@pytest.mark.parametrize("n_features, lags", [(1, [1]), (5, LAGS), (13, [4, 4, 1, 1, 2, 3, 3, 2, 1, 2, 3, 4])])
def test_variate_tokens_one_per_feature_and_output_shapes(n_features, lags):
    model = make_variate(n_features=n_features, lags=lags)
    assert model.variate_proj.in_features == 8 and model.feature_embedding.shape == (n_features, 16)
    assert not hasattr(model, "input_proj")
    x, t, valid = make_batch(n_features=n_features)
    tokens = model.embed_variates(x, t, valid)
    assert tokens.shape == (3, n_features, 16)
    out = model(x, t, valid)
    assert out.reg.shape == out.score.shape == (3, len(lags)) and torch.isfinite(out.reg).all()


def test_variate_model_sees_only_its_own_window():
    """No future and no neighbour: a sample's output depends on its own window's valid rows only, every one of
    them (today's row included), and never on padding or on the other samples of the batch."""
    model = make_variate().eval()
    x, t, valid = make_batch()
    with torch.no_grad():
        clean = model(x, t, valid).reg
        noisy = x.clone()
        noisy[0, :5] = 10 * torch.randn(5, 5)  # sample 0's padding rows
        noisy[2] += 5.0  # another sample of the batch
        changed = model(noisy, t, valid).reg
        assert torch.allclose(changed[:2], clean[:2], atol=1e-6) and not torch.allclose(changed[2], clean[2])
        for row in (0, 7):  # the oldest and the newest row of sample 1
            moved = x.clone()
            moved[1, row, 2] += 1.0
            assert not torch.allclose(model(moved, t, valid).reg[1], clean[1], atol=1e-6), row


def test_variate_gate_multiplies_the_inputs_and_pruning_matches_both_modes():
    model = make_variate()
    x, t, valid = make_batch()
    with torch.no_grad():
        base = model.eval()(x, t, valid).reg
        model.gate.logit[1] = 0.0  # gate 0.5 on feature 1 ...
        halved = model(x, t, valid).reg
        model.gate.logit[1] = VARIATE.gate_init
        scaled = x.clone()
        scaled[..., 1] *= 0.5 / torch.sigmoid(torch.tensor(VARIATE.gate_init))  # ... is the input scaled by it
        assert torch.allclose(halved, model(scaled, t, valid).reg, atol=1e-5)
        assert not torch.allclose(halved, base, atol=1e-4)

    keep = torch.tensor([True, False, True, True, False])
    model.gate.freeze_mask(keep)
    garbage = x.clone()
    garbage[..., ~keep] = 123.0
    assert model.embed_variates(x, t, valid).shape == (3, 3, 16)  # pruned features get no token
    with torch.no_grad():
        sparse = model.eval()(x, t, valid).reg
        assert torch.equal(sparse, model(garbage, t, valid).reg)
    assert torch.allclose(model.train()(x, t, valid).reg, sparse, atol=1e-6)


def test_variate_gradients_reach_gate_embeddings_pool_and_heads():
    model = make_variate(replace(VARIATE, dropout=0.1)).train()
    out = model(*make_batch())
    (out.reg.square().mean() + out.score.sigmoid().mean() + model.gate.l1()).backward()
    assert (model.gate.logit.grad != 0).all()
    for name in ("variate_proj.weight", "feature_embedding", "valid_proj.weight", "pool_score.weight",
                 "time_proj.weight", "time2vec.weight", "blocks.0.attn.qkv.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    for name, head in model.heads.items():
        assert head.weight.grad.abs().sum() > 0, name


def test_variate_window_length_is_checked_and_required():
    model = make_variate()
    with pytest.raises(DataError, match="windows of 8 rows, got 9"):
        model(*make_batch(length=9))
    with pytest.raises(ConfigError, match="model.tokens: variate needs the window length"):
        GatedTransformer(VARIATE, 5, LAGS)
    with pytest.raises(ConfigError, match="model.tokens"):
        replace(TINY, tokens="channel")


def test_time_tokens_ignore_the_window_argument():
    """The default layout is unchanged by the window argument: same parameters, same outputs, any length."""
    assert ModelConfig().tokens == "time"
    plain = make_model()
    torch.manual_seed(0)
    given = GatedTransformer(TINY, 5, LAGS, window=99)
    assert plain.state_dict().keys() == given.state_dict().keys()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, given.state_dict()[name]), name
    batch = make_batch(length=6)
    assert torch.equal(plain.eval()(*batch).reg, given.eval()(*batch).reg)


def test_variate_checkpoint_rebuilds_with_the_configured_window(tmp_path):
    from spread.checkpoint import build_model, load_checkpoint, save_checkpoint
    from spread.config import config_to_dict, load_config

    cfg = load_config(None, ["data.window=8", "model.d_model=16", "model.n_heads=2", "model.n_layers=1",
                             "model.tokens=variate"])
    model = make_variate(cfg.model, n_features=6, lags=[1, 2, 2])
    model.gate.freeze_mask(torch.tensor([True, True, False, True, True, True]))
    save_checkpoint(tmp_path / "m.pt", {
        "model": model.state_dict(), "config": config_to_dict(cfg), "feature_names": [f"f{i}" for i in range(6)],
        "target_names": ["a", "b", "c"], "target_lags": [1, 2, 2], "target_scale": [0.01] * 3,
        "gate_mask": model.gate.mask, "scaler": {}, "epoch": 1})
    rebuilt = build_model(load_checkpoint(tmp_path / "m.pt"))
    batch = make_batch(n_features=6)
    with torch.no_grad():
        assert torch.equal(rebuilt(*batch).reg, model.eval()(*batch).reg)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_variate_tokens_run_under_autocast(dtype):
    model = make_variate(replace(VARIATE, attention="sdpa")).train()
    with torch.autocast("cpu", dtype=dtype):
        out = model(*make_batch())
        assert out.reg.dtype == dtype
    (out.reg.float().square().mean() + out.score.float().square().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.gate.logit.grad.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------
# The per-target head (data.own_features)

OWN = 6


def make_own(batch: int = 3, n_targets: int = len(LAGS), seed: int = 2) -> torch.Tensor:
    """own (B, N, C) inputs of the per-target head."""
    return torch.randn(batch, n_targets, OWN, generator=torch.Generator().manual_seed(seed))


def make_headed(cfg: ModelConfig = TINY, seed: int = 0) -> GatedTransformer:
    torch.manual_seed(seed)
    return GatedTransformer(cfg, 5, LAGS, own_channels=OWN)


@pytest.mark.parametrize("tokens", ["time", "variate"])
def test_target_head_keeps_the_output_shapes(tokens):
    torch.manual_seed(0)
    model = GatedTransformer(replace(TINY, tokens=tokens), 5, LAGS, window=8, own_channels=OWN)
    out = model(*make_batch(), make_own())
    assert out.reg.shape == (3, len(LAGS)) and out.score.shape == (3, len(LAGS))
    assert torch.isfinite(out.reg).all() and torch.isfinite(out.score).all()


def test_a_targets_own_features_move_that_targets_outputs_only():
    model = make_headed().eval()
    batch, own = make_batch(), make_own()
    changed = own.clone()
    changed[:, 4] += 3.0
    with torch.no_grad():
        before, after = model(*batch, own), model(*batch, changed)
    for field in ("reg", "score"):
        delta = (getattr(after, field) - getattr(before, field)).abs()  # (B, N)
        assert (delta[:, 4] > 0).all()
        assert torch.equal(delta[:, [j for j in range(len(LAGS)) if j != 4]], torch.zeros(3, len(LAGS) - 1))


def test_gradients_reach_the_target_head():
    model = make_headed()
    out = model(*make_batch(), make_own())
    (out.reg.sum() + out.score.sum()).backward()
    for name, parameter in model.target_head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_without_own_channels_the_model_is_todays():
    """Off: no head, no extra parameter, the same weights from the same seed, own refused; on: own required."""
    plain = make_model()
    torch.manual_seed(0)
    explicit = GatedTransformer(TINY, 5, LAGS, own_channels=0)
    assert plain.target_head is None and not any("target_head" in k for k in plain.state_dict())
    for (name, a), b in zip(plain.state_dict().items(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(DataError, match="own features"):
        plain(*make_batch(), make_own())
    headed = make_headed()
    with pytest.raises(DataError, match="own features"):
        headed(*make_batch())
    with pytest.raises(DataError, match=f"expected \\({len(LAGS)}, {OWN}\\)"):
        headed(*make_batch(), make_own()[:, :, :4])


def test_the_prior_rides_in_the_state_dict_and_in_the_output():
    """model.prior_weight: a buffer (N,), the model's output carries it times the weight; off, no buffer."""
    assert "target_prior" not in make_model().state_dict() and make_model()(*make_batch()).prior is None
    model = GatedTransformer(replace(TINY, prior_weight=0.5), 5, LAGS).eval()
    prior = torch.linspace(-1.0, 1.0, len(LAGS))
    model.set_prior(prior)
    rebuilt = GatedTransformer(replace(TINY, prior_weight=0.5), 5, LAGS).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = rebuilt(*make_batch())
    assert torch.equal(out.prior, 0.5 * prior)
    with pytest.raises(DataError, match=f"expected {len(LAGS)} finite values"):
        model.set_prior(torch.zeros(len(LAGS) + 1))
    with pytest.raises(DataError, match="finite"):
        model.set_prior(torch.full((len(LAGS),), float("nan")))
    with pytest.raises(ConfigError, match="model.prior_weight"):
        make_model().set_prior(prior)
