"""CPU benchmark of the gated Transformer: forward+backward time per batch against a plain nn.TransformerEncoder.

    python bench/bench_model.py [--lengths 128 192 256] [--batch 32] [--reps 3] [--patch-lens 1 4 8 16]

For each window length L the default `ModelConfig` (d_model 192, 4 layers, 6 heads) with F features and N targets
is timed in fp32, training mode, one forward + backward per step, against `PlainBaseline`: the same input
projection, an `nn.TransformerEncoder` of the same size (pre-LN, GELU, the same residual and attention dropout),
the same pooling and one output layer of the same size, but no feature gate and no time embeddings. Steps of the
models alternate so that background load hits all alike; the median of `--reps` timed steps (after one warm-up)
is reported, with ratio = ours / plain (target <= 1.0). Two variants of ours at the middle length
(attention=math, norm=rmsnorm) show whether the defaults are the faster choices. FLOPs per sample are counted by
torch's FlopCounterMode on a forward pass (matmuls and attention; the backward costs about twice as much).
A second table times ours with the window cut into tokens of `--patch-lens` rows (`model.patch_len`, PatchTST)
at every length, against the one-row-per-token model of the same length; `--d-model`, `--layers`, `--heads`
and `--features` set the shape (default: the `ModelConfig` defaults, 600 features).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from spread.model import GatedTransformer, ModelConfig  # noqa: E402


class PlainBaseline(nn.Module):
    """Linear(F, D) -> nn.TransformerEncoder (pre-LN, GELU) -> LayerNorm -> [last, mean] -> Linear(2D, 2N)."""

    def __init__(self, cfg: ModelConfig, n_features: int, n_targets: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(n_features, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, cfg.mlp_ratio * cfg.d_model, cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        layer.self_attn.dropout = cfg.attention_dropout  # as ours (the stock layer uses `dropout` here too)
        self.encoder = nn.TransformerEncoder(
            layer, cfg.n_layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(2 * cfg.d_model, 2 * n_targets)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, F) -> (B, 2N)
        h = self.encoder(self.input_proj(x))  # (B, L, D)
        return self.head(torch.cat([h[:, -1], h.mean(1)], dim=-1))


def make_batch(batch: int, length: int, n_features: int, device: str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """Random standardised features, time inputs and an all-valid mask: (B, L, F), (B, L), (B, L)."""
    x = torch.randn(batch, length, n_features, device=device)
    t = (1000 + torch.arange(length, device=device, dtype=torch.float32)).expand(batch, length) / 1000
    valid = torch.ones(batch, length, dtype=torch.bool, device=device)
    return x, t, valid


def ours_step(model: GatedTransformer, batch: tuple[Tensor, Tensor, Tensor]) -> None:
    out = model(*batch)
    (out.reg.square().mean() + out.score.square().mean()).backward()
    model.zero_grad(set_to_none=True)


def plain_step(model: PlainBaseline, batch: tuple[Tensor, Tensor, Tensor]) -> None:
    model(batch[0]).square().mean().backward()
    model.zero_grad(set_to_none=True)


def forward_flops_per_sample(call: Callable[[], object], batch_size: int) -> float | None:
    """Forward FLOPs per sample counted by FlopCounterMode (None on torch versions without it)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        call()
    return counter.get_total_flops() / batch_size


def time_pair(steps: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """Median seconds per step of each callable, steps interleaved, after one warm-up step each."""
    for step in steps.values():
        step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 192, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=600)
    parser.add_argument("--targets-per-lag", type=int, default=106)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--patch-lens", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--d-model", type=int, default=ModelConfig.d_model)
    parser.add_argument("--layers", type=int, default=ModelConfig.n_layers)
    parser.add_argument("--heads", type=int, default=ModelConfig.n_heads)
    args = parser.parse_args()

    torch.manual_seed(0)
    lags = [lag for lag in (1, 2, 3, 4) for _ in range(args.targets_per_lag)]
    cfg = ModelConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
    ours = GatedTransformer(cfg, args.features, lags).train()
    plain = PlainBaseline(cfg, args.features, len(lags)).train()
    variants = {
        "attention=math": GatedTransformer(replace(cfg, attention="math"), args.features, lags).train(),
        "norm=rmsnorm": GatedTransformer(replace(cfg, norm="rmsnorm"), args.features, lags).train(),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU, train mode, "
          f"B={args.batch} F={args.features} N={len(lags)}; d_model={cfg.d_model} layers={cfg.n_layers} "
          f"heads={cfg.n_heads} attention path={ours.attention_backend}")
    print(f"parameters: ours {ours.num_parameters():,}  plain {sum(p.numel() for p in plain.parameters()):,}")
    print(f"{'L':>5} {'ours ms':>9} {'plain ms':>9} {'ratio':>6} {'GFLOP/sample fwd':>17} {'ours GFLOP/s':>13}")
    middle = args.lengths[len(args.lengths) // 2]
    for length in args.lengths:
        batch = make_batch(args.batch, length, args.features)
        steps = {"ours": partial(ours_step, ours, batch), "plain": partial(plain_step, plain, batch)}
        if length == middle:
            steps |= {name: partial(ours_step, model, batch) for name, model in variants.items()}
        seconds = time_pair(steps, args.reps)
        flops = forward_flops_per_sample(partial(ours, *batch), args.batch)
        flops_text = f"{flops / 1e9:17.3f}" if flops is not None else f"{'n/a':>17}"
        rate = f"{3 * flops * args.batch / seconds['ours'] / 1e9:13.1f}" if flops is not None else f"{'n/a':>13}"
        print(f"{length:>5} {1e3 * seconds['ours']:9.1f} {1e3 * seconds['plain']:9.1f} "
              f"{seconds['ours'] / seconds['plain']:6.2f} {flops_text} {rate}")
        for name in variants:
            if name in seconds:
                print(f"{'':>5} {name}: {1e3 * seconds[name]:.1f} ms ({seconds[name] / seconds['ours']:.2f} x ours)")
    patch_table(cfg, args, lags)


def patch_table(cfg: ModelConfig, args: argparse.Namespace, lags: list[int]) -> None:
    """ms per training step of ours at each (window length, patch_len), and the speed-up over patch_len 1."""
    print(f"\n{'L':>5} {'patch':>5} {'tokens':>6} {'ours ms':>9} {'speed-up':>8}")
    for length in args.lengths:
        batch = make_batch(args.batch, length, args.features)
        models = {p: GatedTransformer(replace(cfg, patch_len=p), args.features, lags).train() for p in args.patch_lens}
        seconds = time_pair({p: partial(ours_step, model, batch) for p, model in models.items()}, args.reps)
        base = seconds.get(1)
        for p, value in seconds.items():
            speed_up = f"{base / value:8.2f}" if base else f"{'n/a':>8}"
            print(f"{length:>5} {p:>5} {-(-length // p):>6} {1e3 * value:9.1f} {speed_up}")


if __name__ == "__main__":
    main()
