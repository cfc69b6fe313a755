"""The gated Transformer: feature gate -> shared input projection + time embeddings -> pre-LN encoder -> lag heads.

One file, read top to bottom (nanoGPT style). A sample is one date: the window of the last L rows of standardised
features (oldest first, left-padded when the history is shorter), the dates of those rows, and a validity mask.
The model returns, for every target in `target_pairs.csv` order, a regression forecast and a pairwise score
logit (the losses live in `spread.losses`). Two token layouts (`ModelConfig.tokens`): "time", tokens of P
consecutive rows with every feature in each (attention across time), and "variate", one token per feature holding
its whole window (attention across features: iTransformer).

Shape legend (used in the comments on tensor lines)
    B   batch (dates)                     L   window length (rows, oldest first; the last row is "today")
    P   rows per token (patch_len)        S   tokens, ceil(L / P)
    F   input features                    D   d_model
    H   attention heads                   Dh  head size, D // H
    T   Time2Vec components               N   targets, in target_pairs.csv order (424 on MITSUI)
    K   distinct lags = heads (4)         Nk  targets of one lag (106 on MITSUI)
    E   experts per lag head (head_experts)  Q   decays of the momentum factors (momentum_decays)
    Fk  features the gate's hard mask keeps (F unless pruned)

Data flow, tokens = "time"
    x (B, L, F) -> x * g, g = sigmoid(logit) in [0, 1]               feature gate, L1-penalised by the loss
                -> patches of P rows (left-padded to S P rows)        (B, S, P F) tokens; P = 1: one row a token
                -> Linear(P F, D) + Linear(Time2Vec(t)) + PE(age)    (B, S, D) embeddings (t, age: a patch's last row)
                -> n_layers x [h + Attn(Norm(h)); h + MLP(Norm(h))]   pre-LN encoder, padding keys masked
                -> Norm -> concat(last token, mean over valid tokens) (B, 2D) pooled
                -> [Linear(2D, R) when head_rank = R > 0]             (B, R) a low-rank bottleneck shared by all heads
                   [+ MomentumFactors(x * g) with momentum_decays]    (B, R) EW sums of the window x today's state
                -> one Linear(2D or R, E 2 Nk) per lag                (B, E, 2, Nk) regression and score per expert
                -> scattered back to target order; experts mixed by   reg, score: (B, N)
                   softmax(Linear(2D, E)(pooled)) (E = head_experts; E = 1: the one head as it is)
                -> + TargetHead(pooled, own) with data.own_features   (B, 2, N) per target, spread.target_head

Data flow, tokens = "variate" (the window length L is fixed at construction: it is the token's input size)
    x (B, L, F) -> x * g over the kept features, padding rows zeroed   (B, L, Fk)
                -> each feature's window as one token: Linear(L, D)   (B, Fk, D) + feature embedding (Fk, D)
                   + Linear(L, D) of the validity mask + Linear(Time2Vec(today))   (both shared by every token)
                -> n_layers x pre-LN blocks, attention across features (every token valid: no mask)
                -> Norm -> concat(attention pool, mean over features) (B, 2D) pooled, then the same heads

Attention paths (`ModelConfig.attention`, decided once at construction and logged)
    flash  `F.scaled_dot_product_attention` with the backends restricted to flash -> memory-efficient -> math,
           in that priority (`torch.nn.attention.sdpa_kernel`, or the older `torch.backends.cuda.sdp_kernel`);
           chosen by "auto" on CUDA devices of compute capability >= 8.0. Flash itself runs only for fp16/bf16
           without a padding mask; SDPA falls back to its other kernels otherwise.
    sdpa   `F.scaled_dot_product_attention` with torch's own backend choice (CPU, T4, or "flash" unavailable).
    math   explicit softmax(q k^T / sqrt(Dh)) v, for reference and debugging.

References
    Vaswani et al. 2017, "Attention Is All You Need" (encoder, sinusoidal positional encoding).
    Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture" (pre-LN blocks).
    Kazemi et al. 2019, "Time2Vec: Learning a Vector Representation of Time" (time embedding).
    Dao et al. 2022, "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness".
    Zhang & Sennrich 2019, "Root Mean Square Layer Normalization" (norm="rmsnorm").
    Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost" (gradient checkpointing).
    Yamada et al. 2020, "Feature Selection using Stochastic Gates" (a gate per input feature with a sparsity
    penalty; here the deterministic sigmoid relaxation with an L1 norm).
    Nie et al. 2023, "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers" (PatchTST:
    tokens of several consecutive rows; here every feature of the P rows goes into one token, so the gate and the
    shared input projection still see the cross-asset inputs together).
    Liu et al. 2024, "iTransformer: Inverted Transformers Are Effective for Time Series Forecasting" (each
    variate's whole window embedded as one token, attention across variates); here with a learned embedding per
    feature, since the heads read a pooled summary and must know which feature a token is.
    Jacobs et al. 1991, "Adaptive Mixtures of Local Experts" (head_experts: linear experts mixed by a softmax
    router on the same input, so an effect can change sign with a state the encoder reads, e.g. a regime).
    Karpathy, nanoGPT (code structure and weight initialisation).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from spread.errors import ConfigError, DataError, check_choice, check_range
from spread.target_head import TargetHead

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:
    SDPBackend = sdpa_kernel = None
SDPA_KERNEL_HAS_PRIORITY = sdpa_kernel is not None and "set_priority" in inspect.signature(sdpa_kernel).parameters

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "flash", "sdpa", "math")
NORM_CHOICES = ("layernorm", "rmsnorm")
TOKEN_CHOICES = ("time", "variate")


@dataclass
class ModelConfig:
    """Shape and switches of the gated Transformer (defaults: the roadmap's baseline)."""

    d_model: int = 192
    """Width of the residual stream (the roadmap's range: 160-224); must be divisible by n_heads."""
    n_layers: int = 4
    """Number of encoder blocks (roadmap: 3-4)."""
    n_heads: int = 6
    """Attention heads per block (roadmap: 4-6)."""
    mlp_ratio: int = 4
    """Hidden width of each block's MLP, as a multiple of d_model."""
    dropout: float = 0.1
    """Dropout on the embeddings and on both residual branches of every block."""
    attention_dropout: float = 0.0
    """Dropout on the attention weights. 0 by default: it draws one random number per weight (B*H*L*L; ~40% of
    a CPU training step at L=256) and keeps SDPA off its fused CPU kernel; the residual dropout regularises."""
    time2vec_dim: int = 16
    """Time2Vec components of the date input (1 linear + time2vec_dim - 1 periodic); 0 disables the embedding."""
    time2vec_periods: tuple[float, float] = (0.005, 2.0)
    """Initial periods of the periodic Time2Vec components, spaced geometrically between these two, in units of
    the time input t (with t = date_id / 1000: 5 to 2000 dates); the frequencies are learned from there."""
    positional_encoding: bool = True
    """Add a sinusoidal encoding of each token's position in the window, counted back from the last row (time
    tokens only: variate tokens are told apart by their learned feature embedding)."""
    attention: str = "auto"
    """Attention path: auto (flash where the GPU supports it, else sdpa) | flash | sdpa | math (explicit)."""
    grad_checkpoint: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~30% more compute)."""
    norm: str = "layernorm"
    """Normalisation layer: layernorm (torch's fused native kernel) | rmsnorm."""
    gate_init: float = 3.0
    """Initial logit of every feature gate; sigmoid(3) = 0.95, so every feature starts open."""
    patch_len: int = 1
    """P: consecutive window rows per token (PatchTST, Nie et al. 2023); the window becomes ceil(L / P) tokens
    (left-padded with invalid rows), each the gated features of its P rows through one Linear(P F, D), timed and
    positioned by its last row. 1 = one token per row. Attention costs O((L / P)^2) and the encoder O(L / P).
    Time tokens only (a variate token holds the whole window)."""
    tokens: str = "time"
    """Token layout: time (tokens of patch_len rows, every feature in each; attention across time) | variate (one
    token per kept feature, its whole gated window through one Linear(L, D) plus a learned feature embedding;
    attention across features, O(F^2); iTransformer, Liu et al. 2024). variate fixes the window length L at
    construction (`GatedTransformer(window=...)`)."""
    head_rank: int = 0
    """R > 0: the lag heads read an R-dimensional projection of the pooled vector (one Linear(2D, R) shared by
    every target), so each target's forecast is a combination of R common factors: R x 2 weights per target
    instead of 2D x 2, far fewer to estimate from a few thousand noisy dates. 0 = the heads read the pooled
    vector itself."""
    head_experts: int = 1
    """E: linear experts per lag head, mixed per date by a softmax router on the pooled vector (a mixture of
    experts: the forecast of a target can switch between linear maps with the state the router reads, which a
    single linear head cannot). 1 = one linear head per lag, no router."""
    momentum_decays: int = 0
    """Q > 0 (needs head_rank): add to the R head factors R momentum factors, (A m) * (1 + C x_today), where m holds
    the exponentially weighted sums of each gated feature over the window at Q learned decays (half-lives
    starting from 1 to `momentum_longest` rows; Q = 1: momentum_longest) and x_today the gated last row: an
    effect of a slow momentum whose size or sign moves with today's state (e.g. a volatility gauge), in a form a
    linear head cannot make and attention finds hard to learn. 0 = off."""
    momentum_longest: float = 16.0
    """Initial half-life (rows) of the slowest of the momentum_decays; the others are spaced geometrically from 1."""
    target_head_dim: int = 64
    """Hidden width of the per-target head (`spread.target_head`) that reads each target's own features; used
    only with data.own_features, which carries them."""
    prior_weight: float = 0.0
    """w > 0: the model carries each target's constant prior, its mean daily rank over the fit's training labels
    as released at the fit's cutoff, z-scored across targets (`spread.prior.prior_input`; a buffer set by the
    trainer, so every checkpoint serves the values its fit had), and every prediction is the per-date z-score of
    the heads' prediction plus w x that prior (`spread.forecast.predictions`; validation, early stopping and
    serving score that sum, the losses train the heads as without it): a fixed-weight ensemble with the constant
    that a short budget of optimiser steps does not learn. serve.update: prior_blend adds its own recency-weighted
    prior on top of this answer. 0 = off."""

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model: {self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        check_range("model", "n_layers", self.n_layers, low=1)
        check_range("model", "mlp_ratio", self.mlp_ratio, low=1)
        for name in ("dropout", "attention_dropout"):
            check_range("model", name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        check_range("model", "time2vec_dim", self.time2vec_dim, low=0)
        if len(self.time2vec_periods) != 2 or not 0 < self.time2vec_periods[0] <= self.time2vec_periods[1]:
            raise ConfigError(f"model.time2vec_periods: expected (shortest, longest) > 0, got {self.time2vec_periods}")
        check_choice("model", "attention", self.attention, ATTENTION_CHOICES)
        check_choice("model", "norm", self.norm, NORM_CHOICES)
        check_range("model", "patch_len", self.patch_len, low=1)
        check_choice("model", "tokens", self.tokens, TOKEN_CHOICES)
        check_range("model", "target_head_dim", self.target_head_dim, low=1)
        check_range("model", "head_experts", self.head_experts, low=1)
        check_range("model", "head_rank", self.head_rank, low=0)
        check_range("model", "momentum_decays", self.momentum_decays, low=0)
        check_range("model", "momentum_longest", self.momentum_longest, low=1.0)
        check_range("model", "prior_weight", self.prior_weight, low=0.0)
        if self.momentum_decays and not self.head_rank:
            raise ConfigError("model.momentum_decays: the momentum factors add to the head factors; "
                              "set model.head_rank")


@dataclass
class ModelOutput:
    """What the model predicts for a batch of dates, in target_pairs.csv order."""

    reg: Tensor
    """(B, N) regression forecast per target, in the (per-lag scaled) units of the training targets."""
    score: Tensor
    """(B, N) pairwise-ranking score logit per target: higher means ranked higher on that date."""
    prior: Tensor | None = None
    """(N,) model.prior_weight x each target's z-scored prior, added to every prediction; None when off."""


# ----------------------------------------------------------------------------------------------------------------
# Attention path


def flash_support() -> tuple[bool, str]:
    """Whether this machine can run the SDPA flash kernel, and why (for the log)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    capability = torch.cuda.get_device_capability()
    if capability < (8, 0):
        return False, f"compute capability {capability[0]}.{capability[1]} < 8.0"
    is_available = getattr(torch.backends.cuda, "is_flash_attention_available", None)
    if is_available is not None and not is_available():
        return False, "this torch build has no flash attention"
    return True, f"compute capability {capability[0]}.{capability[1]}"


def resolve_attention(requested: str) -> tuple[str, str]:
    """The attention path ('flash' | 'sdpa' | 'math') for a requested one, with the reason for the log."""
    if requested in ("sdpa", "math"):
        return requested, "requested"
    supported, reason = flash_support()
    if supported:
        return "flash", reason
    return "sdpa", f"flash unavailable: {reason}"


def flash_priority_context() -> AbstractContextManager:
    """A context in which SDPA may use flash, then memory-efficient, then math attention (cuDNN excluded)."""
    if sdpa_kernel is None:  # older torch: the global context manager of torch.backends.cuda
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_mem_efficient=True, enable_math=True)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(backends, set_priority=True) if SDPA_KERNEL_HAS_PRIORITY else sdpa_kernel(backends)


def vanilla_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, dropout_p: float) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v with padding keys masked out (Vaswani et al. 2017, eq. 1)."""
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, L, L)
    if key_mask is not None:
        att = att.masked_fill(~key_mask, float("-inf"))  # key_mask (B, 1, 1, L) broadcasts over heads and queries
    att = F.dropout(att.softmax(dim=-1), p=dropout_p)  # (B, H, L, L); p is 0 in eval mode
    return att @ v  # (B, H, L, Dh)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the window; padding rows are masked as keys (never attended to)."""

    def __init__(self, cfg: ModelConfig, backend: str) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.backend = backend
        self.dropout_p = cfg.attention_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # Entered on every call (not once per forward) so that checkpoint recomputation takes the same path.
        self.sdpa_context: Callable[[], AbstractContextManager] = (
            flash_priority_context if backend == "flash" else contextlib.nullcontext
        )

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads)  # (B, L, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, Dh)
        dropout_p = self.dropout_p if self.training else 0.0
        if self.backend == "math":
            y = vanilla_attention(q, k, v, key_mask, dropout_p)  # (B, H, L, Dh)
        else:
            with self.sdpa_context():
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)  # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D), heads side by side
        return self.resid_dropout(self.proj(y))  # (B, L, D)


# ----------------------------------------------------------------------------------------------------------------
# Encoder block


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019); used where torch has no `nn.RMSNorm` (torch < 2.4)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    """The configured normalisation over the last (D) dimension."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-6) if hasattr(nn, "RMSNorm") else RMSNorm(cfg.d_model)
    return nn.LayerNorm(cfg.d_model)  # torch.layer_norm: one fused native kernel forward and backward


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear -> GELU -> Linear -> Dropout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.act = nn.GELU()
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, D) -> (B, L, D)
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LN Transformer encoder block (Xiong et al. 2020): h + Attn(Norm(h)), then h + MLP(Norm(h))."""

    def __init__(self, cfg: ModelConfig, backend: str) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = SelfAttention(cfg, backend)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, h: Tensor, key_mask: Tensor | None) -> Tensor:
        h = h + self.attn(self.norm1(h), key_mask)  # (B, L, D)
        return h + self.mlp(self.norm2(h))  # (B, L, D)


# ----------------------------------------------------------------------------------------------------------------
# Inputs: feature gate and time embeddings


class FeatureGate(nn.Module):
    """One learnable gate g = sigmoid(logit) in [0, 1] per input feature, multiplied into the inputs.

    The loss adds lambda * ||g||_1 (`l1`), or `shrink` lowers the logits after each optimiser step (the decoupled
    penalty), which drives useless features towards 0. After training,
    `freeze_mask(keep)` hard-prunes features: their gate becomes exactly 0, they leave the L1 norm, and in eval
    mode the model skips their columns altogether (the input projection only multiplies the kept ones).
    """

    def __init__(self, n_features: int, init_logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((n_features,), float(init_logit)))  # (F,)
        self.register_buffer("mask", torch.ones(n_features, dtype=torch.bool))  # (F,) True = kept; in state_dict

    def values(self) -> Tensor:
        """(F,) gate values in [0, 1]; exactly 0 where the frozen hard mask is off."""
        return torch.sigmoid(self.logit) * self.mask

    def l1(self) -> Tensor:
        """Scalar ||g||_1 over the active features (the gates are non-negative, so this is their sum)."""
        return self.values().sum()

    @torch.no_grad()
    def shrink(self, amount: float) -> None:
        """The decoupled gate penalty (loss.gate_penalty = decoupled): lower every logit by `amount`."""
        self.logit.sub_(amount)

    def freeze_mask(self, keep: Tensor) -> None:
        """Replace the hard mask by `keep` ((F,) bool): features where it is False are pruned."""
        keep = torch.as_tensor(keep, dtype=torch.bool, device=self.mask.device)
        if keep.shape != self.mask.shape:
            raise ValueError(f"freeze_mask: expected a ({self.mask.numel()},) mask, got shape {tuple(keep.shape)}")
        self.mask.copy_(keep)

    def kept_indices(self) -> Tensor:
        """(F_kept,) long indices of the features the hard mask keeps."""
        return self.mask.nonzero().squeeze(1)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, F) -> (B, L, F)
        return x * self.values()


class MomentumFactors(nn.Module):
    """R factors from exponentially weighted sums of the gated window, each scaled by a function of today's row.

    m_q = sqrt(1 - lambda_q^2) sum_s lambda_q^(L-1-s) x_s over the valid rows s (Q learned decays lambda_q =
    sigmoid(theta_q); the rescaling keeps white noise of unit variance near unit variance when the window is long
    next to the half-life), then f = Linear(Q F, R)(m) * (1 + Linear(F, R)(x_today)): a momentum whose effect
    depends on the current state. The decays start at half-lives spaced geometrically from 1 to `longest` rows
    (Q = 1: `longest` alone). Reads the window's rows only, never beyond today.
    """

    def __init__(self, n_features: int, n_decays: int, rank: int, longest: float) -> None:
        super().__init__()
        half_lives = torch.logspace(0.0, math.log10(longest), n_decays) if n_decays > 1 else torch.tensor([longest])
        decays = 0.5 ** (1.0 / half_lives)  # (Q,)
        self.decay_logit = nn.Parameter(torch.log(decays / (1.0 - decays)))  # (Q,)
        self.momentum_proj = nn.Linear(n_decays * n_features, rank)  # (Q F) -> R
        self.state_proj = nn.Linear(n_features, rank)  # F -> R

    def decays(self) -> Tensor:
        """(Q,) the decays lambda in (0, 1)."""
        return torch.sigmoid(self.decay_logit)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (B, L, F) gated features (left padding at invalid rows), valid (B, L) bool -> (B, R)."""
        B, L, _ = x.shape
        log_decay = F.logsigmoid(self.decay_logit)  # (Q,) fp32 parameters
        age = torch.arange(L - 1, -1, -1, device=x.device, dtype=log_decay.dtype)  # (L,) rows back from today
        weights = torch.exp(age[None, :] * log_decay[:, None])  # (Q, L)
        weights = weights * torch.sqrt(-torch.expm1(2.0 * log_decay))[:, None]  # (Q, L); exact as lambda -> 1
        momentum = torch.einsum("ql,blf->bqf", weights.to(x.dtype), x * valid.unsqueeze(-1).to(x.dtype))  # (B, Q, F)
        return self.momentum_proj(momentum.reshape(B, -1)) * (1.0 + self.state_proj(x[:, -1]))  # (B, R)


class Time2Vec(nn.Module):
    """Time2Vec (Kazemi et al. 2019, eq. 1): t -> [w_0 t + b_0, sin(w_1 t + b_1), ..., sin(w_{T-1} t + b_{T-1})].

    Computed in fp32 even under autocast (elementwise ops keep their dtype): the phases w t can be large and
    would lose all precision in bf16.
    """

    def __init__(self, dim: int, periods: tuple[float, float]) -> None:
        super().__init__()
        shortest, longest = periods
        frequency = 2 * math.pi / torch.logspace(math.log10(longest), math.log10(shortest), dim - 1)  # (T-1,)
        self.weight = nn.Parameter(torch.cat([torch.ones(1), frequency]))  # (T,)
        self.bias = nn.Parameter(torch.cat([torch.zeros(1), 2 * math.pi * torch.rand(dim - 1)]))  # (T,)

    def forward(self, t: Tensor) -> Tensor:  # (B, L) -> (B, L, T)
        z = t.float().unsqueeze(-1) * self.weight + self.bias  # (B, L, T)
        return torch.cat([z[..., :1], torch.sin(z[..., 1:])], dim=-1)  # (B, L, T): linear, then periodic


def sinusoidal_encoding(length: int, dim: int, device: torch.device) -> Tensor:
    """(L, D) sinusoidal encoding (Vaswani et al. 2017, 3.5) of each row's age: L-1 for the oldest, 0 for today.

    Counting back from the last row gives "today" the same encoding whatever the window length.
    """
    age = torch.arange(length - 1, -1, -1, device=device, dtype=torch.float32)  # (L,)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))  # (ceil(D/2),)
    angles = age[:, None] * inv_freq[None, :]  # (L, ceil(D/2))
    pe = torch.zeros(length, dim, device=device)  # (L, D)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


# ----------------------------------------------------------------------------------------------------------------
# The model


def masked_mean(h: Tensor, valid: Tensor) -> Tensor:
    """(B, D) mean of h (B, L, D) over the valid rows of each sample."""
    weights = valid.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
    return (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D)


class GatedTransformer(nn.Module):
    """Feature-gated Transformer encoder with one regression + score head per target lag (see the module doc).

    Pooling, time tokens: the final hidden state of the last token (today) concatenated with the mean over the valid
    tokens, so the heads see both the latest state and a summary of the whole (possibly short) history. Variate
    tokens: a learned attention pool over the features (which ones matter) concatenated with their mean.

    `window` (L) is required by tokens = "variate" (the size of a variate token's input); the time layout takes
    windows of any length and ignores it. `own_channels` > 0 (C, `spread.windows.DataConfig.own_channels`) adds
    the per-target head `spread.target_head.TargetHead`, whose outputs add to the lag heads'; forward then takes
    `own` (B, N, C).
    """

    def __init__(self, cfg: ModelConfig, n_features: int, target_lags: Sequence[int],
                 window: int | None = None, own_channels: int = 0) -> None:
        super().__init__()
        lags = [int(lag) for lag in target_lags]
        if n_features < 1 or not lags:
            raise ValueError(f"GatedTransformer needs >= 1 feature and >= 1 target, got {n_features} and {len(lags)}")
        if cfg.tokens == "variate" and (window is None or window < 1):
            raise ConfigError(f"model.tokens: variate needs the window length (data.window), got {window}")
        self.cfg = cfg
        self.n_features = n_features
        self.window = window
        self.attention_backend, reason = resolve_attention(cfg.attention)
        log.info("attention path: %s (config %s; %s)", self.attention_backend, cfg.attention, reason)

        self.gate = FeatureGate(n_features, cfg.gate_init)
        if cfg.tokens == "variate":
            self.variate_proj = nn.Linear(window, cfg.d_model)  # shared by every feature; L -> D
            self.feature_embedding = nn.Parameter(0.02 * torch.randn(n_features, cfg.d_model))  # (F, D)
            self.valid_proj = nn.Linear(window, cfg.d_model, bias=False)  # the window's validity mask; L -> D
            self.pool_score = nn.Linear(cfg.d_model, 1)  # attention pool over the feature tokens
        else:
            self.input_proj = nn.Linear(cfg.patch_len * n_features, cfg.d_model)  # shared by every target; (P F) -> D
        self.time2vec = Time2Vec(cfg.time2vec_dim, cfg.time2vec_periods) if cfg.time2vec_dim else None
        self.time_proj = nn.Linear(cfg.time2vec_dim, cfg.d_model, bias=False) if cfg.time2vec_dim else None
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, self.attention_backend) for _ in range(cfg.n_layers))
        self.norm_final = make_norm(cfg)

        # One head per distinct lag (E experts each); outputs concatenated in `head_lags` order, then gathered back.
        self.head_lags = tuple(sorted(set(lags)))
        experts, head_input = cfg.head_experts, cfg.head_rank or 2 * cfg.d_model
        self.head_factors = nn.Linear(2 * cfg.d_model, cfg.head_rank) if cfg.head_rank else None
        self.heads = nn.ModuleDict(
            {f"lag_{lag}": nn.Linear(head_input, experts * 2 * lags.count(lag)) for lag in self.head_lags}
        )
        self.router = nn.Linear(2 * cfg.d_model, experts) if experts > 1 else None
        head_order = [j for lag in self.head_lags for j, target_lag in enumerate(lags) if target_lag == lag]
        self.register_buffer("target_index", torch.argsort(torch.tensor(head_order)), persistent=False)  # (N,)
        self.target_head = (TargetHead(cfg.d_model, cfg.target_head_dim, own_channels, len(lags), cfg.dropout)
                            if own_channels else None)
        if cfg.prior_weight:
            self.register_buffer("target_prior", torch.zeros(len(lags)))  # (N,) set by set_prior; in the state dict

        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * cfg.n_layers)  # nanoGPT: scale the projections into the residual
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)
        # Built after the others are initialised, so that their initial weights are the same with or without it
        # (its own initialisation moves the random stream on: dropout then draws other masks).
        self.momentum = (MomentumFactors(n_features, cfg.momentum_decays, cfg.head_rank, cfg.momentum_longest)
                         if cfg.momentum_decays else None)
        if self.momentum is not None:
            self.momentum.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def set_prior(self, values: Tensor) -> None:
        """Fill the (N,) prior the predictions add (`spread.prior.prior_input` of the fit's training labels)."""
        if not self.cfg.prior_weight:
            raise ConfigError("the model carries no prior (model.prior_weight is 0)")
        if values.shape != self.target_prior.shape or not bool(torch.isfinite(values).all()):
            raise DataError(f"prior: expected {len(self.target_prior)} finite values, got shape {tuple(values.shape)}")
        self.target_prior.copy_(values)

    def num_parameters(self) -> int:
        """Number of trainable and frozen parameters (buffers excluded)."""
        return sum(p.numel() for p in self.parameters())

    def patches(self, x: Tensor, t: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Group the window into tokens of P rows, oldest first, left-padded with invalid zero rows to S P rows.

        Returns x (B, S, P, F), each token's time input and validity (B, S): those of its last (newest) row, which
        is valid whenever any row of the token is (padding only ever comes first). Invalid rows inside a valid
        token are zeroed, so that they carry nothing into it."""
        B, L, n_features = x.shape
        P = self.cfg.patch_len
        if P > 1 and not bool(valid.all()):
            x = x * valid.unsqueeze(-1).to(x.dtype)  # (B, L, F)
        pad = -L % P
        if pad:
            x = F.pad(x, (0, 0, pad, 0))  # (B, S P, F)
            t = F.pad(t, (pad, 0), value=0.0)  # (B, S P)
            valid = F.pad(valid, (pad, 0), value=False)  # (B, S P)
        S = x.size(1) // P
        return x.reshape(B, S, P, n_features), t.reshape(B, S, P)[..., -1], valid.reshape(B, S, P)[..., -1]

    def embed(self, x: Tensor, t: Tensor) -> Tensor:
        """(B, S, D) embeddings of the gated feature tokens (B, S, P, F) plus the time and position encodings of
        the tokens, t (B, S)."""
        B, S, P, _ = x.shape
        if self.training or bool(self.gate.mask.all()):
            h = self.input_proj(self.gate(x).reshape(B, S, -1))  # (B, S, D)
        else:  # pruned features cost nothing: only the kept columns are multiplied
            kept = self.gate.kept_indices()  # (F_kept,)
            gated = x.index_select(-1, kept) * self.gate.values()[kept]  # (B, S, P, F_kept)
            weight = self.input_proj.weight.view(self.cfg.d_model, P, self.n_features)[:, :, kept]  # (D, P, F_kept)
            h = F.linear(gated.reshape(B, S, -1), weight.reshape(self.cfg.d_model, -1), self.input_proj.bias)
        if self.time2vec is not None:
            h = h + self.time_proj(self.time2vec(t))  # (B, S, D)
        if self.cfg.positional_encoding:
            h = h + sinusoidal_encoding(S, self.cfg.d_model, x.device)  # (B, S, D)
        return self.embed_dropout(h)

    def embed_variates(self, x: Tensor, t: Tensor, valid: Tensor) -> Tensor:
        """(B, Fk, D) one token per kept feature: its gated window x (B, L, F) (padding rows zeroed) through
        Linear(L, D), plus its feature embedding, the window's validity (B, L) and today's time input t[:, -1].

        Pruned features get no token (in training too), so a pruned model computes the same in both modes."""
        B, L, _ = x.shape
        if L != self.window:
            raise DataError(f"model input: variate tokens expect windows of {self.window} rows, got {L}")
        x = x * valid.unsqueeze(-1).to(x.dtype)  # (B, L, F), padding rows carry nothing
        identity = self.feature_embedding  # (F, D)
        if bool(self.gate.mask.all()):
            gated = self.gate(x)  # (B, L, F)
        else:
            kept = self.gate.kept_indices()  # (Fk,)
            gated = x.index_select(-1, kept) * self.gate.values()[kept]  # (B, L, Fk)
            identity = identity[kept]  # (Fk, D)
        h = self.variate_proj(gated.transpose(1, 2)) + identity  # (B, Fk, D)
        h = h + self.valid_proj(valid.to(h.dtype)).unsqueeze(1)  # (B, Fk, D), the same for every token
        if self.time2vec is not None:
            h = h + self.time_proj(self.time2vec(t[:, -1:]))  # (B, 1, D) broadcast over the tokens
        return self.embed_dropout(h)

    def forward(self, x: Tensor, t: Tensor, valid: Tensor, own: Tensor | None = None) -> ModelOutput:
        """x (B, L, F) standardised features, t (B, L) time input, valid (B, L) bool (False = left padding); own
        (B, N, C) the targets' own inputs, with the per-target head only."""
        B, _, n_features = x.shape
        if n_features != self.n_features:
            raise DataError(f"model input: expected {self.n_features} features, got {n_features}")
        if (own is None) != (self.target_head is None):
            raise DataError("model input: own features go with the per-target head (data.own_features), and only")
        valid = rows_valid = valid.to(torch.bool)  # (B, L); `valid` becomes the tokens' validity below
        if self.cfg.tokens == "variate":
            h, key_mask = self.embed_variates(x, t, valid), None  # (B, Fk, D); every feature token is valid
        else:
            tokens, t, valid = self.patches(x, t, valid)  # (B, S, P, F), (B, S), (B, S)
            # Without padding, no mask: SDPA may then use its fastest kernel (flash takes no mask).
            key_mask = None if bool(valid.all()) else valid[:, None, None, :]  # (B, 1, 1, S)
            h = self.embed(tokens, t)  # (B, S, D)

        for block in self.blocks:
            if self.cfg.grad_checkpoint and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, key_mask, use_reentrant=False)  # (B, S, D)
            else:
                h = block(h, key_mask)  # (B, S, D)
        h = self.norm_final(h)  # (B, S, D); S = Fk for variate tokens
        if self.cfg.tokens == "variate":
            weights = self.pool_score(h).softmax(dim=1)  # (B, Fk, 1) attention pool over the features
            pooled = torch.cat([(weights * h).sum(1), h.mean(1)], dim=-1)  # (B, 2D)
        else:
            pooled = torch.cat([h[:, -1], masked_mean(h, valid)], dim=-1)  # (B, 2D)

        E = self.cfg.head_experts
        factors = pooled if self.head_factors is None else self.head_factors(pooled)  # (B, 2D) or (B, R)
        if self.momentum is not None:
            factors = factors + self.momentum(self.gate(x), rows_valid)  # (B, R)
        per_head = [head(factors).view(B, E, 2, -1) for head in self.heads.values()]  # K x (B, E, 2, Nk)
        out = torch.cat(per_head, dim=-1).index_select(-1, self.target_index)  # (B, E, 2, N), target order
        if self.router is None:
            out = out[:, 0]  # (B, 2, N)
        else:
            out = torch.einsum("be,becn->bcn", self.router(pooled).softmax(dim=-1), out)  # (B, 2, N)
        if self.target_head is not None:
            out = out + self.target_head(pooled, own)  # (B, 2, N)
        prior = self.cfg.prior_weight * self.target_prior if self.cfg.prior_weight else None  # (N,)
        return ModelOutput(reg=out[:, 0], score=out[:, 1], prior=prior)
