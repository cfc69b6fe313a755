"""End to end on the `small` preset: bundle -> train with the bundled train kernel (smoke config) -> serve every test
date with the bundled infer kernel, both run in an empty folder with the `spread` package out of reach."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.checkpoint import verify_manifest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import build_bundle  # noqa: E402  (a top-level script of the repository)

SMOKE_OVERRIDES = ["train.epochs=2", "train.early_stopping_patience=0"]
"""The smoke config, shortened so that the whole test stays near a minute on 2 cores."""


def _run_hidden(script: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_bundled_kernels_train_and_serve_the_small_preset(small: Path, tmp_path: Path) -> None:
    data = small
    dist = build_bundle.build(tmp_path / "dist")
    work = tmp_path / "empty"
    work.mkdir()
    run = tmp_path / "run"

    _run_hidden(dist["train"] / "kernel_train.py",
                ["--data", str(data), "--artifacts", str(run), "--config", "smoke", *SMOKE_OVERRIDES], work)
    manifest = verify_manifest(run)
    assert manifest["inference"]["checkpoints"]
    metadata = json.loads((run / "dataset-metadata.json").read_text())
    assert metadata["id"].endswith("-weights") and metadata["licenses"] == [{"name": "CC0-1.0"}]

    out = work / "submission.parquet"
    served = _run_hidden(dist["infer"] / "kernel_infer.py",
                         ["--data", str(data), "--artifacts", str(run), "--out", str(out)], work)
    lines = served.stdout.strip().splitlines()
    score = float(lines[-1].removeprefix("score: "))  # the score, printed once, is the last line (issue 16)
    assert math.isfinite(score) and lines[-1] == f"score: {score:.6f}" and served.stdout.count("score: ") == 1

    test = pl.read_csv(data / "test.csv")
    targets = pl.read_csv(data / "target_pairs.csv")["target"].to_list()
    submission = pl.read_parquet(out)
    assert submission.columns == ["date_id", *targets]
    assert submission["date_id"].to_list() == test["date_id"].to_list()
    values = submission.drop("date_id").to_numpy()
    assert np.isfinite(values).all() and (values.max(axis=1) > values.min(axis=1)).all()
    assert f"fallback calls: 0 of {test.height}" in served.stdout
    assert sorted(path.name for path in work.iterdir()) == ["submission.parquet"]
