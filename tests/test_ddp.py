"""DistributedDataParallel training with 2 gloo CPU processes launched by torchrun, against a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from spread.checkpoint import load_checkpoint, verify_manifest
from spread.config import config_from_dict, load_config
from spread.model import GatedTransformer
from spread.runtime import seed_everything
from spread.trainer import train

from conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
# Full batches only (max_steps_per_epoch), no dropout: the two ranks' half batches together are exactly the
# single-process batch, so the runs differ only by how masked means are split over the ranks.
OVERRIDES = [*TINY_RUN, "split.n_folds=0", "model.dropout=0.0", "train.max_steps_per_epoch=4"]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_gloo_processes_match_single_process(small: Path, tmp_path: Path) -> None:
    data = small
    single = train(load_config(None, OVERRIDES), data, tmp_path / "single")

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "spread", "train", "--data", str(data), "--out", str(tmp_path / "ddp"), *OVERRIDES]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "2 process(es)" in done.stderr and "precision fp32" in done.stderr

    ddp = tmp_path / "ddp"
    verify_manifest(ddp)
    metrics = pl.read_csv(ddp / "metrics.csv")
    assert metrics.select("fold", "epoch", "step").rows() == [("holdout", 1, 4), ("holdout", 2, 8)]  # rank 0 only
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["run"]["world_size"] == 2
    assert summary["mean"]["score"] == pytest.approx(single["mean"]["score"], abs=0.05)

    # Adam turns tiny gradient differences into sign-sized steps, so compare the weights relative to how far
    # training moved them from their (shared, seeded) initialisation.
    ddp_weights = load_checkpoint(ddp / "holdout" / "last.pt")["model"]
    ckpt = load_checkpoint(tmp_path / "single" / "holdout" / "last.pt")
    cfg = config_from_dict(ckpt["config"])
    seed_everything(cfg.seed)
    initial = GatedTransformer(cfg.model, len(ckpt["feature_names"]), ckpt["target_lags"]).state_dict()
    moved, differ = 0.0, 0.0
    for name, value in ckpt["model"].items():
        if value.is_floating_point():
            update, gap = (value - initial[name]).norm(), (ddp_weights[name] - value).norm()
            assert gap <= 0.25 * update, f"{name}: DDP and single-process weights differ by {gap / update:.0%}"
            moved, differ = moved + update**2, differ + gap**2
    assert differ**0.5 < 0.1 * moved**0.5
