"""The run folder's layout: every file name a run writes, and the atomic writes that make its files whole.

The counterpart of the competition writer (`spread.competition_writer`): one place owns the names, so the trainer,
the run log, the gate analysis, checkpoints and the manifest agree on them.

    RUN/config.yaml            the resolved config (a resumed run must match it)
    RUN/data.json              the competition folder the run trains on (`train --resume RUN` reads it)
    RUN/folds.csv              one row per fold: date ranges, embargo, cutoff, label releases, feature count
    RUN/metrics.csv            one row per fit per epoch (train loss parts, LR, validation metrics)
    RUN/summary.json           per-fold scores, mean/std, holdout estimate, final fit, run facts
    RUN/prior.json             the never-fail fallback prediction (`spread.prior`)
    RUN/gate_weights.csv       every feature's gate per fit and the mean, sorted
    RUN/pruned_features.csv    the pruning decision: every feature, its mean gate, kept (true) or pruned (false)
    RUN/manifest.json          sha256 of every file; the served checkpoints and what each was trained on
    RUN/tensorboard/           TensorBoard events (train.tensorboard)
    RUN/<fit>/best.pt|last.pt  per fit (fold0.., holdout, <fold>-pruned, final-s<seed>): the model it reports
                               (best.pt) and its resume point (last.pt)

`atomic_write` writes through a temporary `.NAME.tmpPID` beside the target and renames it over the target in
one step, so a reader never sees half a file; a killed process can leave the temporary behind, and
`remove_temporaries` deletes those when a run is resumed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spread.errors import ArtifactError, ConfigError

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
FOLDS_FILE = "folds.csv"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
PRIOR_FILE = "prior.json"
MANIFEST_FILE = "manifest.json"
GATE_FILE = "gate_weights.csv"
PRUNED_FILE = "pruned_features.csv"
PRUNED_SUFFIX = "-pruned"
"""Folder suffix of a fit's pruned fine-tune (`<fit>-pruned/`): reported beside its fit, never in a role's members."""
TENSORBOARD_DIR = "tensorboard"
BEST = "best.pt"
"""The model a fit reports and serves (best validation epoch, or the epoch-count model of a fixed-length fit)."""
LAST = "last.pt"
"""The state after a fit's latest completed epoch: its resume point."""
ROLES = ("fold", "holdout", "final")
"""A fit's checkpoint key "role": a walk-forward fold, the holdout (never selected on its own dates), a final fit;
`--members` selects checkpoints by it (else by their fold record's name)."""
TEMP_MARK = ".tmp"
"""Part of every temporary file name of `atomic_write` (`.NAME.tmpPID`)."""


def checkpoint_name(fit: str, which: str = BEST) -> str:
    """The run-relative path of a fit's checkpoint, e.g. "fold0/best.pt" (as listed in manifest.json)."""
    return f"{fit}/{which}"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)`, then move the temporary file over `path` in one step (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_temporary(path: Path) -> bool:
    """True for a leftover of `atomic_write` (a hidden name holding ".tmp")."""
    return path.name.startswith(".") and TEMP_MARK in path.name


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporaries a killed run left in `run_dir` (any depth); returns what was removed."""
    removed = [path for path in sorted(run_dir.rglob(".*")) if path.is_file() and is_temporary(path)]
    for path in removed:
        path.unlink()
    return removed


def check_new_folder(path: Path, hint: str = "") -> None:
    """ConfigError unless `path` is absent or an empty folder (a file there, or a folder holding anything, is the
    user's and is never written over); `hint` ends the message (e.g. how to continue that folder instead)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{path}: folder is not empty{hint}")


def check_output_file(path: Path, option: str) -> None:
    """ConfigError unless `path` can be written as a file: not a folder, and inside an existing one (checked before
    the work whose result it holds, not after)."""
    if path.is_dir() or not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: expected a file in an existing folder")


def write_data_record(run_dir: Path, data_dir: Path, fingerprint: str) -> None:
    """Record the run's competition folder (absolute) and its training files' fingerprint in RUN/data.json."""
    write_json(run_dir / DATA_FILE, {"data": str(data_dir.resolve()), "fingerprint": fingerprint})


def read_data_fingerprint(run_dir: Path) -> str | None:
    """The training files' fingerprint RUN/data.json records (None for a record older than fingerprints)."""
    try:
        return json.loads((run_dir / DATA_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def read_data_record(run_dir: Path) -> Path:
    """The competition folder recorded in RUN/data.json; ArtifactError when the record is missing or unreadable."""
    path = run_dir / DATA_FILE
    try:
        return Path(json.loads(path.read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: no readable record of the run's data folder ({exc}); give --data DIR") from exc


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON atomically; non-finite floats become null."""
    text = json.dumps(_finite_or_none(data), indent=1)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value
