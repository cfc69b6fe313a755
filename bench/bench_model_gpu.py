"""GPU benchmark of the gated Transformer: AMP speed, the SDPA kernel actually taken, and parity with CPU fp32.

    python bench/bench_model_gpu.py [--dtype bf16|fp16|fp32] [--lengths 128 192 256] [--batch 32] [--steps 20]

The GPU counterpart of `bench_model.py` (same models, same batch shapes). It prints
1. parity: the same weights on CPU fp32 vs this GPU in fp32 (TF32 off) and under autocast, for every attention
   path (flash / sdpa / math), on a batch with left padding; exits with status 1 when a difference exceeds its
   tolerance;
2. the attention kernels that ran (read from the profiler's CUDA kernel names), with and without padding;
3. per window length: forward+backward ms per batch and samples/s under autocast for ours and for the plain
   `nn.TransformerEncoder` baseline, their ratio, and peak memory.
On a machine without CUDA it stops at once with "no CUDA device".
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
import torch.nn as nn
from bench_model import PlainBaseline, make_batch  # bench/ is on sys.path as a script; it adds the repo root
from torch import Tensor

from spread.model import GatedTransformer, ModelConfig

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PARITY_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}  # max |gpu - cpu| / max |cpu|
KERNEL_FAMILIES = (("cudnn", "cudnn"), ("flash", "flash"), ("fmha", "efficient"), ("efficient", "efficient"),
                   ("mem_eff", "efficient"))  # (substring of the kernel name, family), first match wins


def grad_scaler(enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler (needed for fp16 autocast), through whichever API this torch has."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def padded_batch(batch: int, length: int, n_features: int) -> tuple[Tensor, Tensor, Tensor]:
    """A CPU batch whose samples have histories of different lengths (left padding, zeros in x)."""
    x, t, valid = make_batch(batch, length, n_features)
    history = torch.linspace(length // 4, length, batch).long()  # (B,) valid rows per sample
    valid = torch.arange(length)[None, :] >= (length - history)[:, None]  # (B, L)
    return x * valid[..., None], t.clone(), valid


def parity(cfg: ModelConfig, lags: list[int], n_features: int, dtype_name: str) -> bool:
    """Print the relative difference GPU vs CPU fp32 for each attention path; True when all are within tolerance."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    batch = padded_batch(8, 64, n_features)
    ok = True
    for attention in ("flash", "sdpa", "math"):
        torch.manual_seed(0)
        cpu_model = GatedTransformer(replace(cfg, attention=attention), n_features, lags).eval()
        with torch.no_grad():
            reference = cpu_model(*batch)
        gpu_model = GatedTransformer(replace(cfg, attention=attention), n_features, lags).cuda().eval()
        gpu_model.load_state_dict(cpu_model.state_dict())
        gpu_batch = [tensor.cuda() for tensor in batch]
        for name in sorted({"fp32", dtype_name}):
            with torch.no_grad(), torch.autocast("cuda", dtype=DTYPES[name], enabled=name != "fp32"):
                out = gpu_model(*gpu_batch)
            errors = [
                ((got.float().cpu() - want).abs().max() / want.abs().max()).item()
                for got, want in ((out.reg, reference.reg), (out.score, reference.score))
            ]
            passed = max(errors) <= PARITY_TOLERANCE[name]
            ok &= passed
            print(f"parity {attention:>5} ({gpu_model.attention_backend:>5}) {name}: rel. max diff "
                  f"reg {errors[0]:.2e} score {errors[1]:.2e}  {'ok' if passed else 'FAIL'}")
    return ok


def kernels_taken(model: GatedTransformer, batch: list[Tensor], dtype: torch.dtype) -> str:
    """Names of the attention CUDA kernels that one forward+backward launched, grouped by family."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = model(*batch)
        (out.reg.float().square().mean() + out.score.float().square().mean()).backward()
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    families = {}
    for event in prof.key_averages():
        for marker, family in KERNEL_FAMILIES:
            if marker in event.key.lower():
                families.setdefault(family, event.key[:60])
                break
    return ", ".join(f"{family} ({name})" for family, name in families.items()) or "math (no fused kernel)"


def time_steps(step: Callable[[], None], steps: int, warmup: int) -> float:
    """Seconds per call of `step`, after `warmup` calls, measured with device synchronisation."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 where supported, else fp16")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 192, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--features", type=int, default=600)
    parser.add_argument("--targets-per-lag", type=int, default=106)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: bench_model_gpu.py needs a GPU (use bench/bench_model.py on CPU)")

    dtype_name = args.dtype or ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    dtype = DTYPES[dtype_name]
    lags = [lag for lag in (1, 2, 3, 4) for _ in range(args.targets_per_lag)]
    cfg = ModelConfig()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, autocast {dtype_name}, "
          f"B={args.batch} F={args.features} N={len(lags)}")
    parity_ok = parity(cfg, lags, args.features, dtype_name)

    torch.manual_seed(0)
    ours = GatedTransformer(cfg, args.features, lags).cuda().train()
    plain = PlainBaseline(cfg, args.features, len(lags)).cuda().train()
    print(f"attention path: {ours.attention_backend}; parameters: ours {ours.num_parameters():,}  "
          f"plain {sum(p.numel() for p in plain.parameters()):,}")
    length = args.lengths[0]
    full = [tensor.cuda() for tensor in make_batch(args.batch, length, args.features)]
    padded = [tensor.cuda() for tensor in padded_batch(args.batch, length, args.features)]
    print(f"kernels, no padding: {kernels_taken(ours, full, dtype)}")
    print(f"kernels, padding:    {kernels_taken(ours, padded, dtype)}")

    scaler = grad_scaler(dtype == torch.float16)

    def train_step(model: nn.Module, batch: list[Tensor]) -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            if isinstance(model, GatedTransformer):
                out = model(*batch)
                loss = out.reg.float().square().mean() + out.score.float().square().mean()
            else:
                loss = model(batch[0]).float().square().mean()
        scaler.scale(loss).backward()
        model.zero_grad(set_to_none=True)

    print(f"{'L':>5} {'ours ms':>8} {'plain ms':>9} {'ratio':>6} {'ours samples/s':>15} {'peak GiB':>9}")
    for length in args.lengths:
        batch = [tensor.cuda() for tensor in make_batch(args.batch, length, args.features)]
        torch.cuda.reset_peak_memory_stats()
        ours_s = time_steps(partial(train_step, ours, batch), args.steps, args.warmup)
        peak = torch.cuda.max_memory_allocated() / 2**30
        plain_s = time_steps(partial(train_step, plain, batch), args.steps, args.warmup)
        print(f"{length:>5} {1e3 * ours_s:8.2f} {1e3 * plain_s:9.2f} {ours_s / plain_s:6.2f} "
              f"{args.batch / ours_s:15.0f} {peak:9.2f}")
    if not parity_ok:
        sys.exit("parity with CPU fp32 failed (see above)")


if __name__ == "__main__":
    main()
