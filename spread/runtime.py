"""Where and how a process computes: device, mixed precision, torchrun processes, seeds and RNG states.

Precision ("auto"): bf16 autocast on GPUs with bf16 (compute capability >= 8.0), fp16 autocast with a GradScaler
on older GPUs (Kaggle's T4), fp32 on the CPU. Multi-GPU: launched by torchrun (env RANK, WORLD_SIZE), a process
joins the process group (NCCL on GPUs, gloo on CPUs); rank 0 alone validates and writes, and
`broadcast_from_rank0` hands its decisions to the other ranks. Determinism: every random draw comes from a seeded
generator, and `rng_state` / `restore_rng_state` carry every generator's state through a checkpoint, so a resumed
fit continues bit-identically (on CUDA, `deterministic_kernels` also asks torch for deterministic kernels).

References: Micikevicius et al. 2018 (mixed precision, loss scaling).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from spread.errors import ConfigError
from spread.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Where and how this process computes."""

    device: torch.device
    amp_dtype: torch.dtype | None
    """Autocast dtype, None for fp32."""
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def uses_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


def resolve_device(requested: str | torch.device, local_rank: int = 0, strict: bool = True) -> torch.device:
    """"auto": this process's CUDA device when there is one, else the CPU; "cuda": this process's CUDA device.

    `strict` (training): ConfigError when CUDA is asked for and absent. The predictor is not strict: it tries the
    device it is given and retries each member on the CPU when that fails (`spread.members.place_member`)."""
    requested = str(requested)
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(f"cuda:{local_rank}" if requested == "cuda" else requested)
    if strict and device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {requested!r} requested but CUDA is not available")
    return device


def resolve_amp(requested: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for `train.amp` on `device`, and why (for the log)."""
    if requested == "off":
        return None, "requested"
    if device.type != "cuda":
        if requested == "fp16":
            raise ConfigError("train.amp: fp16 needs a CUDA device (use bf16 or off on the CPU)")
        if requested == "bf16":
            return torch.bfloat16, "requested (CPU bf16 autocast is slow)"
        return None, "CPU: fp32"
    capability = torch.cuda.get_device_capability(device)
    bf16_ok = capability >= (8, 0)
    if requested == "bf16" and not bf16_ok:
        raise ConfigError(f"train.amp: bf16 needs compute capability >= 8.0, this GPU has {capability}")
    if requested == "bf16" or (requested == "auto" and bf16_ok):
        return torch.bfloat16, f"compute capability {capability[0]}.{capability[1]}"
    return torch.float16, f"compute capability {capability[0]}.{capability[1]}: fp16 with a GradScaler"


def inference_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for predicting on `device`: as in training where it can run there, else fp32."""
    try:
        return resolve_amp(cfg.amp, device)[0]
    except ConfigError:  # e.g. a model trained with amp=fp16 on a GPU, predicting on the CPU
        return None


def autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.amp_dtype)


def make_grad_scaler(runtime: Runtime) -> Any:
    """A GradScaler, enabled for fp16 only (a disabled one is a pass-through with an empty state)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler)
    return torch.cuda.amp.GradScaler(enabled=runtime.uses_grad_scaler)  # torch < 2.3


def start_runtime(cfg: TrainConfig) -> tuple[Runtime, bool]:
    """The runtime of this process; joins the process group when launched by torchrun (returns True if created)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    created = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    amp_dtype, reason = resolve_amp(cfg.amp, device)
    runtime = Runtime(device=device, amp_dtype=amp_dtype, rank=rank, world_size=world_size)
    if runtime.is_main:
        log.info("device %s, precision %s (%s), %d process(es)", device, runtime.precision, reason, world_size)
    return runtime, created


def broadcast_from_rank0(value: Any, runtime: Runtime) -> Any:
    """Rank 0's `value` on every rank (a no-op in a single process)."""
    if runtime.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=runtime.device if runtime.device.type == "cuda" else None)
    return box[0]


# ----------------------------------------------------------------------------------------------------------------
# Seeds and RNG states


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(pair_generator: torch.Generator) -> dict:
    """Every RNG state a resumed epoch depends on, as plain values and CPU tensors."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "pairs": pair_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, pair_generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    pair_generator.set_state(state["pairs"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def deterministic_kernels(enabled: bool, device: torch.device) -> Iterator[None]:
    """On CUDA with `enabled`, deterministic torch kernels (warn where none exists) for the duration.

    The CPU kernels the loop uses are deterministic already (and the switch costs seconds of imports on recent
    torch), so on the CPU this does nothing.
    """
    switch = enabled and device.type == "cuda"
    before = torch.are_deterministic_algorithms_enabled()
    if switch:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        if switch:
            torch.use_deterministic_algorithms(before)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
