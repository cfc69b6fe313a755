"""Configuration plumbing: defaults, file + dotted overrides, strict checking, YAML/JSON round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spread.config import Config, config_keys, config_to_dict, describe_config, field_docs, load_config, save_config
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
        (["model.prior_weight=-1"], "model.prior_weight"),
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


@pytest.mark.parametrize("name, text, message", [
    ("twice.yaml", "model:\n  d_model: 32\nmodel:\n  n_heads: 2\n", "'model' given twice"),  # PyYAML kept the last
    ("twice.json", '{"model": {"d_model": 32, "d_model": 64}}', "'d_model' given twice"),
    ("number.yaml", "model:\n  1: 2\n", "config key.s. 1 in model: keys must be names"),
    ("bool.yaml", "on: 1\n", "config key.s. True: keys must be names"),  # YAML 1.1 reads `on` as true
])
def test_repeated_or_non_name_keys_are_errors_naming_the_file(tmp_path: Path, name: str, text: str,
                                                              message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_config_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"\xff\xfe model")
    with pytest.raises(ConfigError, match="latin.yaml: cannot read as UTF-8"):
        load_config(path)


def test_a_mistyped_override_is_blamed_on_the_command_line_with_the_nearest_key() -> None:
    smoke = Path(__file__).resolve().parents[1] / "configs/smoke.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(smoke, ["model.d_modle=4"])
    message = str(info.value)
    assert message.startswith("command-line override") and "smoke.yaml" not in message
    assert "model.d_modle (did you mean model.d_model?)" in message
    with pytest.raises(ConfigError, match=r"^command-line override: train\.epochs: expected int"):
        load_config(smoke, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"^command-line override: unknown config key\(s\): modle \(did you mean model\?\)"):
        load_config(None, ["modle.d_model=4"])


def test_unknown_file_keys_name_the_file_and_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n  epocs: 3\n  zzz: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=2"])  # the file is wrong, whatever the overrides say
    message = str(info.value)
    assert message.startswith(f"{path}: unknown config key(s)")
    assert "train.epocs (did you mean train.epochs?)" in message and "train.zzz," not in message
    assert message.endswith("train.zzz")  # nothing close: no suggestion


def test_every_key_is_listed_with_type_default_and_docstring() -> None:
    keys = {key: (kind, default, doc) for key, kind, default, doc in config_keys()}
    defaults = config_to_dict(Config())
    flat = {f"{section}.{name}" if isinstance(values, dict) else section: value
            for section, values in defaults.items()
            for name, value in (values.items() if isinstance(values, dict) else [(None, values)])}
    assert set(keys) == set(flat)
    undocumented = sorted(key for key, (_, _, doc) in keys.items() if not doc)
    assert not undocumented, f"fields without a docstring: {undocumented}"
    assert keys["model.d_model"][:2] == ("int", Config().model.d_model)
    assert keys["data.train_end"][0] == "int | None" and keys["train.betas"][0] == "tuple[float, float]"
    assert keys["train.tensorboard"][2].startswith("Also write TensorBoard events")
    text = describe_config()
    assert "\nmodel: The gated Transformer's shape.\n" in text
    line = next(line for line in text.splitlines() if line.split()[:1] == ["train.lr"])
    assert line.split()[1:3] == ["float", "0.0001"] and line.endswith("Peak learning rate of AdamW.")


def test_field_docs_reads_attribute_docstrings() -> None:
    @dataclasses.dataclass
    class Example:
        plain: int = 1
        """First line
        and a second one."""
        undocumented: str = "x"
        listed: list[int] = dataclasses.field(default_factory=list)
        """Listed."""

    assert field_docs(Example) == {"plain": "First line and a second one.", "listed": "Listed."}
