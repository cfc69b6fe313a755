"""Training-step speed and memory of the gated Transformer, as the trainer runs it.

Times `spread.fit.train_step` (autocast forward, fp32 losses, scaled backward, clipping, AdamW) on random
batches shaped like the MITSUI data: F input features, N = lags x targets-per-lag targets (with ~15% unknown
labels), windows of `data.window` rows, `data.batch_size` samples, on the device and precision the trainer would
choose for the config. Reports the median milliseconds per step, samples per second, the peak memory, and the
seconds one epoch of `--samples` training dates would take. One JSON line per config on stdout (and in `--out`).

    python bench/bench_train.py                                   # configs/smoke.yaml and configs/default.yaml
    python bench/bench_train.py --config configs/default.yaml --steps 20 train.amp=bf16 data.batch_size=64
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spread.config import load_config  # noqa: E402
from spread.model import GatedTransformer  # noqa: E402
from spread.fit import Learner, train_step  # noqa: E402
from spread.optim import build_optimizer  # noqa: E402
from spread.runtime import Runtime, make_grad_scaler, resolve_amp, resolve_device  # noqa: E402

DEFAULT_CONFIGS = [REPO / "configs" / "smoke.yaml", REPO / "configs" / "default.yaml"]


def random_batch(batch: int, window: int, n_features: int, n_targets: int, generator: torch.Generator) -> dict:
    """A training batch with standardised-looking inputs, full windows and ~15% unknown labels."""
    return {
        "x": torch.randn(batch, window, n_features, generator=generator),
        "t": torch.linspace(0.0, 2.0, window).expand(batch, window).contiguous(),
        "valid": torch.ones(batch, window, dtype=torch.bool),
        "y": torch.randn(batch, n_targets, generator=generator),
        "y_mask": torch.rand(batch, n_targets, generator=generator) > 0.15,
        "date_id": torch.arange(batch),
    }


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the whole process


def bench(config: Path, overrides: list[str], n_features: int, per_lag: int, steps: int, warmup: int,
          samples: int) -> dict:
    cfg = load_config(config, overrides)
    device = resolve_device(cfg.train.device)
    amp_dtype, _ = resolve_amp(cfg.train.amp, device)
    runtime = Runtime(device=device, amp_dtype=amp_dtype)
    lags = [lag for lag in (1, 2, 3, 4) for _ in range(per_lag)]
    torch.manual_seed(cfg.seed)
    model = GatedTransformer(cfg.model, n_features=n_features, target_lags=lags).to(device)
    optimizer = build_optimizer(model, cfg.train)
    pairs = torch.Generator()
    pairs.manual_seed(0)
    learner = Learner(model, model, optimizer, make_grad_scaler(runtime), runtime, cfg,
                      torch.full((len(lags),), 0.02, device=device), torch.tensor(lags, device=device), pairs)
    batch = random_batch(cfg.data.batch_size, cfg.data.window, n_features, len(lags), pairs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        train_step(learner, batch, cfg.train.lr, epoch_position=5.0)  # past the gate warm-up: every term active
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            timings.append(time.perf_counter() - started)
    seconds = statistics.median(timings)
    return {
        "config": config.name, "overrides": overrides, "device": str(device), "precision": runtime.precision,
        "attention": model.attention_backend, "threads": torch.get_num_threads(), "parameters": model.num_parameters(),
        "features": n_features, "targets": len(lags), "window": cfg.data.window, "batch": cfg.data.batch_size,
        "ms_per_step": round(1000 * seconds, 2), "samples_per_s": round(cfg.data.batch_size / seconds, 1),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "epoch_seconds": round(seconds * -(-samples // cfg.data.batch_size), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="config file(s) (default: smoke and default)")
    parser.add_argument("--features", type=int, default=1321, help="input features (1321: mitsui panel, defaults)")
    parser.add_argument("--targets-per-lag", type=int, default=106, help="targets per lag (4 lags)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--samples", type=int, default=1700, help="training dates of one epoch, for epoch_seconds")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = parser.parse_args()
    lines = []
    for config in args.config or DEFAULT_CONFIGS:
        result = bench(config, args.overrides, args.features, args.targets_per_lag, args.steps, args.warmup,
                       args.samples)
        lines.append(json.dumps(result))
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
