"""One configuration object for a whole run: nested dataclasses, YAML/JSON files, dotted overrides.

Each component owns its section's dataclass and defaults (minGPT style: `ModelConfig` lives in `spread.model`,
`LossConfig` in `spread.losses`, ...); this module only composes them into `Config` and provides the
plumbing: strict loading (an unknown key or a wrongly typed value is a `ConfigError` naming its dotted path, where
it came from, the file or the command line, and the nearest valid key), `section.field=value` overrides from the
command line, a resolved dump that is written into every run folder and checkpoint (litgpt style) so a run can
always be reproduced from its own files, and the key reference of `python -m spread config`, read from the
attribute docstrings that document every field in the source.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spread.errors import ConfigError
from spread.features import FeatureConfig
from spread.losses import LossConfig
from spread.model import ModelConfig
from spread.online import ServeConfig
from spread.scaling import ScalingConfig
from spread.screening import ScreenConfig
from spread.splits import SplitConfig
from spread.train_config import TrainConfig
from spread.windows import DataConfig


@dataclass
class Config:
    """Everything that defines a run."""

    seed: int = 0
    """Seed for every random generator (weights, shuffling, pair sampling)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Windows, time inputs, batching and the training cut-off."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Which transforms of the raw panel become model inputs."""
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    """Per-fold pre-screening of features (variance, missing share, IC)."""
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    """Per-fold standardisation of features."""
    split: SplitConfig = field(default_factory=SplitConfig)
    """Walk-forward folds, embargo and the competition-like holdout."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The gated Transformer's shape."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Regression, ranking and gate-penalty terms."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimiser, schedule, precision, epochs, checkpoints, pruning."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """Serving: the predictor's online update from the labels the API releases."""


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Return `value` converted to `hint` (dataclass, Optional, list/tuple, scalar) or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return _from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def _nearest(key: str, names: list[str], prefix: str) -> str:
    """" (did you mean PREFIX.NAME?)" for the closest valid name, or "" when none is close."""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _from_dict(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    odd = [key for key in data if not isinstance(key, str)]  # YAML reads `1:`, `on:`, `no:` as numbers and bools
    if odd:
        raise ConfigError(f"config key(s) {', '.join(repr(key) for key in odd)}{' in ' + where if where else ''}: "
                          "keys must be names (a YAML `on:` or `no:` reads as true / false: quote it)")
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        named = [prefix + key + _nearest(key, sorted(names), prefix) for key in unknown]
        raise ConfigError(f"unknown config key(s): {', '.join(named)}")
    kwargs = {k: _check_value(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def config_from_dict(data: dict) -> Config:
    """A `Config` from a plain mapping (missing keys take their defaults; unknown keys are errors)."""
    return _from_dict(Config, data or {}, "")


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict of every resolved field (tuples become lists so YAML and JSON round-trip)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def apply_overrides(data: dict, overrides: typing.Sequence[str]) -> dict:
    """Apply `a.b.c=value` strings to a nested dict; values are parsed as YAML (`1e-4`, `true`, `[1, 5]`)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected section.field=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = value
    return out


def _unique_pairs(path: Path):
    """json.loads' object_pairs_hook: a dict, ConfigError on a repeated key (json keeps the last one silently)."""
    def build(pairs: list) -> dict:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ConfigError(f"{path}: key(s) {', '.join(map(repr, repeated))} given twice in one mapping")
        return dict(pairs)
    return build


def _unique_key_loader(path: Path) -> type:
    """A yaml SafeLoader whose mappings refuse a repeated key (PyYAML keeps the last one silently)."""
    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
            repeated = sorted({repr(key) for key in keys if keys.count(key) > 1})
            if repeated:
                raise ConfigError(f"{path}: key(s) {', '.join(repeated)} given twice in one mapping "
                                  f"(line {node.start_mark.line + 1})")
            return super().construct_mapping(node, deep=deep)
    return UniqueKeyLoader


def read_config_file(path: str | Path) -> dict:
    """The mapping stored in a YAML (.yaml/.yml) or JSON (.json) file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as UTF-8 text: {exc}") from exc
    try:
        data = (json.loads(text, object_pairs_hook=_unique_pairs(path)) if path.suffix == ".json"
                else yaml.load(text, Loader=_unique_key_loader(path)))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data or {}


def compose_config(data: dict, overrides: typing.Sequence[str] = (), source: str | None = None) -> Config:
    """Defaults, then `data` (read from `source`: a file name, an embedded config), then the dotted overrides.

    `data` is checked on its own first, so an error names where the bad key or value came from: the source, or
    the command line."""
    if source is not None:
        try:
            cfg = config_from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        if not overrides:
            return cfg
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as exc:
        raise ConfigError(f"command-line override: {exc}") from exc


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the file (if any), then the dotted overrides; every key is checked."""
    data = read_config_file(path) if path else {}
    return compose_config(data, overrides, str(path) if path else None)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (or JSON when the suffix is .json)."""
    path = Path(path)
    data = config_to_dict(cfg)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstring (the string literal right under the field) of each field of a dataclass, on one
    line; empty when the source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def config_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, docstring) of every leaf field, sections (nested dataclasses) flattened, in
    declaration order."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    rows = []
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            rows += config_keys(hint, f"{prefix}{item.name}.")
        else:
            rows.append((prefix + item.name, _type_name(hint), getattr(defaults, item.name), docs.get(item.name, "")))
    return rows


def describe_config() -> str:
    """The key reference: one line per key (dotted key, type, default as JSON, docstring), one header per
    section with the section's own docstring."""
    sections = field_docs(Config)
    rows = config_keys()
    width_key = max(len(key) for key, *_ in rows)
    width_type = max(len(kind) for _, kind, *_ in rows)
    defaults = [json.dumps(default if not isinstance(default, tuple) else list(default)) for *_, default, _ in rows]
    width_default = max(len(text) for text in defaults)
    lines, section = [], None
    for (key, kind, _, doc), default in zip(rows, defaults):
        head = key.split(".")[0] if "." in key else None
        if head != section and head is not None:
            lines += ["", f"{head}: {sections.get(head, '')}".rstrip()]
        section = head
        lines.append(f"  {key:<{width_key}}  {kind:<{width_type}}  {default:<{width_default}}  {doc}".rstrip())
    return "\n".join(lines).lstrip("\n") + "\n"
