"""Configuration plumbing: defaults, file + dotted overrides, strict checking, YAML/JSON round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from spread.config import Config, config_to_dict, load_config, save_config
from spread.errors import ConfigError


def test_defaults_then_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  d_model: 160\n  n_heads: 4\ntrain:\n  lr: 0.001\n")
    cfg = load_config(path, ["model.d_model=224", "train.epochs=3", "features.return_horizons=[1, 2]"])
    assert cfg.model.d_model == 224 and cfg.model.n_heads == 4
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.epochs == 3
    assert list(cfg.features.return_horizons) == [1, 2]
    assert cfg.model.n_layers == Config().model.n_layers


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_resolved_config_round_trips(tmp_path: Path, suffix: str) -> None:
    cfg = load_config(None, ["seed=7", "loss.rank_weight=0.5", "data.window=128"])
    path = tmp_path / f"resolved{suffix}"
    save_config(cfg, path)
    assert config_to_dict(load_config(path)) == config_to_dict(cfg)


def test_integer_and_dotless_exponent_are_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    assert load_config(None, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)  # YAML 1.1 reads it as a string
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\n")
    assert load_config(path).train.lr == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.d_modle=4"], "model.d_modle"),
        (["train.epochs=many"], "train.epochs"),
        (["train.lr=fast"], "train.lr"),
        (["train.amp=true"], "train.amp"),
        (["seed"], "seed"),
        (["nosuchsection.x=1"], "nosuchsection"),
    ],
)
def test_bad_keys_and_values_name_the_dotted_path(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, overrides)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_config(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="listed.yaml"):
        load_config(listed)
