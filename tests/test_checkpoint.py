"""Checkpoints, the run manifest, the data fingerprint and the mean-rank prior (no training needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spread.checkpoint import (
    build_model, data_fingerprint, load_checkpoint, save_checkpoint, to_cpu_plain, verify_manifest, write_manifest,
)
from spread.competition import load_competition
from spread.config import config_to_dict, load_config
from spread.errors import ArtifactError
from spread.model import GatedTransformer
from spread.prior import mean_rank_prior, prior_input, read_prior, write_prior

from conftest import TINY_RUN


def tiny_checkpoint() -> tuple[dict, GatedTransformer]:
    cfg = load_config(None, TINY_RUN)
    lags = [1, 1, 2, 2, 3]
    torch.manual_seed(0)
    model = GatedTransformer(cfg.model, n_features=6, target_lags=lags)
    keep = torch.tensor([True, True, False, True, True, False])
    model.gate.freeze_mask(keep)
    ckpt = {
        "model": model.state_dict(), "config": config_to_dict(cfg), "feature_names": [f"f{i}" for i in range(6)],
        "target_names": [f"target_{j}" for j in range(5)], "target_lags": lags, "target_scale": [0.01] * 5,
        "gate_mask": model.gate.mask, "scaler": {"center": np.zeros(6, dtype=np.float32)}, "epoch": np.int64(3),
    }
    return ckpt, model


def test_checkpoint_round_trip_is_plain_cpu_and_atomic(tmp_path: Path) -> None:
    ckpt, _ = tiny_checkpoint()
    path = tmp_path / "fold0" / "best.pt"
    save_checkpoint(path, ckpt)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and isinstance(loaded["epoch"], int)
    assert loaded["scaler"]["center"] == [0.0] * 6
    for name, tensor in loaded["model"].items():
        assert tensor.device.type == "cpu"
        assert torch.equal(tensor, ckpt["model"][name])


def test_to_cpu_plain_converts_numpy_and_keeps_structure() -> None:
    value = {"a": (np.float32(1.5), [np.arange(3)]), "t": torch.ones(2), "p": Path("x/y")}
    plain = to_cpu_plain(value)
    assert plain["a"] == (1.5, [[0, 1, 2]]) and plain["p"] == "x/y" and torch.equal(plain["t"], torch.ones(2))


def test_build_model_restores_weights_and_gate_mask(tmp_path: Path) -> None:
    ckpt, model = tiny_checkpoint()
    save_checkpoint(tmp_path / "m.pt", ckpt)
    rebuilt = build_model(load_checkpoint(tmp_path / "m.pt"))
    assert not rebuilt.training
    assert rebuilt.gate.mask.tolist() == [True, True, False, True, True, False]
    x, t, valid = torch.randn(3, 5, 6), torch.linspace(0, 1, 5).expand(3, 5), torch.ones(3, 5, dtype=torch.bool)
    model.eval()
    assert torch.equal(rebuilt(x, t, valid).reg, model(x, t, valid).reg)


def test_load_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="corrupt.pt: not a readable checkpoint"):
        load_checkpoint(corrupt)
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(ArtifactError, match="partial.pt: checkpoint lacks key"):
        load_checkpoint(tmp_path / "partial.pt")


def test_build_model_rejects_mismatched_weights() -> None:
    ckpt, _ = tiny_checkpoint()
    ckpt["feature_names"] = ckpt["feature_names"][:4]
    with pytest.raises(ArtifactError, match="does not rebuild a model"):
        build_model(ckpt)


def make_run_folder(root: Path) -> Path:
    (root / "fold0").mkdir(parents=True)
    (root / "fold0" / "best.pt").write_bytes(b"weights")
    (root / "prior.json").write_text("{}")
    (root / "metrics.csv").write_text("fold,epoch\nfold0,1\n")
    return root


def test_manifest_lists_every_file_and_detects_tampering(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "run")
    path = write_manifest(run, ["fold0/best.pt"])
    manifest = json.loads(path.read_text())
    assert manifest["format"] == 1 and manifest["torch"] == torch.__version__
    assert sorted(manifest["artifacts"]) == ["fold0/best.pt", "metrics.csv", "prior.json"]
    assert manifest["artifacts"]["fold0/best.pt"]["bytes"] == len(b"weights")
    assert manifest["inference"] == {"checkpoints": ["fold0/best.pt"], "prior": "prior.json"}
    assert verify_manifest(run)["artifacts"] == manifest["artifacts"]

    (run / "fold0" / "best.pt").write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match="best.pt: sha256 differs"):
        verify_manifest(run)
    (run / "fold0" / "best.pt").unlink()
    with pytest.raises(ArtifactError, match="best.pt: listed in manifest.json but missing"):
        verify_manifest(run)


def test_manifest_refuses_missing_inference_files(tmp_path: Path) -> None:
    run = make_run_folder(tmp_path / "run")
    with pytest.raises(ArtifactError, match="final/best.pt"):
        write_manifest(run, ["final/best.pt"])
    with pytest.raises(ArtifactError, match="manifest not found"):
        verify_manifest(tmp_path / "nothing")


def test_data_fingerprint_follows_the_training_files(tiny_competition: Path) -> None:
    first = data_fingerprint(load_competition(tiny_competition))
    assert first == data_fingerprint(load_competition(tiny_competition))
    train = tiny_competition / "train.csv"
    lines = train.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",999.0"  # change one volume cell
    train.write_text("\n".join(lines) + "\n")
    assert data_fingerprint(load_competition(tiny_competition)) != first


def test_mean_rank_prior_by_hand() -> None:
    labels = np.array([
        [0.1, 0.3, 0.2, np.nan],
        [0.5, np.nan, 0.4, np.nan],
        [0.0, 0.0, 1.0, np.nan],  # a tie: average ranks 1.5, 1.5, 3 -> 0.25, 0.25, 1
    ])
    prior = mean_rank_prior(labels)
    expected = [(0.0 + 1.0 + 0.25) / 3, (1.0 + 0.25) / 2, (0.5 + 0.0 + 1.0) / 3, 0.5]
    np.testing.assert_allclose(prior, expected)
    assert mean_rank_prior(np.array([[np.nan, 2.0]])).tolist() == [0.5, 0.5]  # one label that day: middle


def test_the_prior_input_is_the_prior_z_scored_across_targets() -> None:
    labels = np.array([[0.1, 0.3, 0.2], [0.5, 0.2, 0.4], [0.0, 0.1, 1.0]])
    prior = mean_rank_prior(labels)
    values = prior_input(labels)
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, (prior - prior.mean()) / prior.std(), rtol=1e-6)
    assert prior_input(np.array([[1.0, 1.0], [2.0, 2.0]])).tolist() == [0.0, 0.0]  # every prior alike: no signal


def test_prior_file_round_trip(tmp_path: Path) -> None:
    write_prior(tmp_path / "prior.json", ["target_0", "target_1"], np.array([0.25, 0.75]))
    names, values = read_prior(tmp_path / "prior.json")
    assert names == ["target_0", "target_1"] and values.tolist() == [0.25, 0.75]
    (tmp_path / "bad.json").write_text('{"target_names": ["a"], "prior": [null]}')
    with pytest.raises(ArtifactError, match="bad.json"):
        read_prior(tmp_path / "bad.json")
