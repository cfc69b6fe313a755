"""Self-describing checkpoints and the run manifest that the inference kernel consumes.

A checkpoint is one `torch.save`d dict holding everything needed to rebuild and continue a model without the
code's defaults: weights, optimiser/scheduler/GradScaler states, the resolved config as a plain dict, the model's
input features, the fold's scaling statistics, the gate mask, target names/lags/scales, RNG states, the torch
version and a fingerprint of the data it was trained on. With `train.ema_decay` the weights (`model`) are the
weight average, the served model, and last.pt also holds the trained ones (`spread.fit.TRAINED_WEIGHTS`). Every
tensor is moved to the CPU before saving, so a checkpoint written on a GPU loads anywhere, and files are written
atomically (temporary file + `os.replace`), so an interrupted save never leaves a truncated `last.pt` behind.

Loading uses `torch.load(weights_only=True)`: the saved dicts hold only tensors and plain Python values (numpy
arrays are converted to lists on save), which the restricted unpickler accepts. Only a torch too old to know the
`weights_only` argument (< 1.13) falls back to a plain `torch.load`; checkpoints are our own files either way.

`manifest.json` lists every file of a run folder with its sha256 and byte size plus the checkpoints the predictor
must load (see `spread.trainer.train`: the final-fit members when `train.final_fit`, otherwise the `best.pt` of every
fold, whose predictions are averaged), what each of them was trained on (role, seed, epochs, training dates), and the
prior used as the never-fail fallback. Checkpoints carry `role` ("fold" | "holdout" | "final") and `seed`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spread.errors import ArtifactError, ConfigError
from spread.runfolder import MANIFEST_FILE, PRIOR_FILE, atomic_write, is_temporary

if TYPE_CHECKING:
    from spread.competition import Competition
    from spread.config import Config
    from spread.model import GatedTransformer
    from spread.scaling import Scaler

MANIFEST_FORMAT = 1
REQUIRED_KEYS = ("model", "config", "feature_names", "target_names", "target_lags", "target_scale", "gate_mask")
FINGERPRINT_FILES = ("train.csv", "train_labels.csv", "target_pairs.csv")
_CHUNK = 1 << 20


def to_cpu_plain(value: Any) -> Any:
    """A copy of `value` with tensors detached on the CPU and numpy values turned into plain Python values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, Path)):
        return str(value)  # also turns str subclasses such as torch.__version__ into plain str
    if isinstance(value, dict):
        return {key: to_cpu_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_cpu_plain(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def serving_state(
    model: "GatedTransformer", cfg: "Config", feature_names: list[str], scaler: "Scaler", target_names: list[str],
    target_lags: Any, target_scale: Any, own_scaler: "Scaler | None" = None,
) -> dict:
    """The part of a checkpoint that serving reads (`REQUIRED_KEYS` and the scaler): the weights, the gate mask,
    the resolved config, the model's input features and their scaling, the targets with their lags and scales,
    and with data.own_features the scaling of the targets' own features (`own_scaler`).
    The trainer adds its training state (`spread.fit.checkpoint_state`); a test or bench writes it as is."""
    from spread.config import config_to_dict

    own = {} if own_scaler is None else {"own_scaler": own_scaler.to_dict()}
    return {
        "model": model.state_dict(),
        "config": config_to_dict(cfg),
        "feature_names": list(feature_names),
        "scaler": scaler.to_dict(),
        "gate_mask": model.gate.mask,
        "target_names": list(target_names),
        "target_lags": torch.as_tensor(target_lags).tolist(),
        "target_scale": torch.as_tensor(target_scale).tolist(),
        **own,
    }


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save `state` atomically with every tensor on the CPU."""
    plain = to_cpu_plain(state)
    atomic_write(Path(path), lambda tmp: torch.save(plain, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint onto the CPU; ArtifactError naming the file when it is missing, corrupt or incomplete."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch < 1.13 has no weights_only argument
            state = torch.load(path, map_location="cpu")
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: checkpoint holds a {type(state).__name__}, expected a dict")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ArtifactError(f"{path}: checkpoint lacks key(s) {missing}")
    return state


def build_model(ckpt: dict) -> "GatedTransformer":
    """Rebuild the model of a loaded checkpoint (config, inputs, targets), load its weights and gate mask, eval mode."""
    from spread.config import config_from_dict
    from spread.model import GatedTransformer

    try:
        cfg = config_from_dict(ckpt["config"])
        lags = torch.as_tensor(ckpt["target_lags"], dtype=torch.long)
        model = GatedTransformer(cfg.model, n_features=len(ckpt["feature_names"]), target_lags=lags,
                                 window=cfg.data.window, own_channels=cfg.data.own_channels())
        model.load_state_dict(ckpt["model"])
        model.gate.freeze_mask(torch.as_tensor(ckpt["gate_mask"], dtype=torch.bool))
    except (KeyError, RuntimeError, ValueError, ConfigError) as exc:
        raise ArtifactError(f"checkpoint does not rebuild a model: {type(exc).__name__}: {exc}") from exc
    return model.eval()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(comp: "Competition") -> str:
    """sha256 over the bytes of the competition's training files (train, labels, pairs), names included.

    Falls back to the CSV text of the parsed frames when the files are not on disk (an in-memory competition).
    """
    digest = hashlib.sha256()
    root = Path(comp.root) if getattr(comp, "root", None) else None
    if root is not None and all((root / name).is_file() for name in FINGERPRINT_FILES):
        for name in FINGERPRINT_FILES:
            digest.update(name.encode())
            digest.update(_sha256_file(root / name).encode())
        return digest.hexdigest()
    for name, frame in zip(FINGERPRINT_FILES, (comp.train, comp.labels, comp.pairs)):
        digest.update(name.encode())
        digest.update(frame.write_csv().encode())
    return digest.hexdigest()


def _run_files(run_dir: Path) -> list[Path]:
    """Every regular file under the run folder except the manifest and temporary files, sorted."""
    files = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE and not is_temporary(path):
            files.append(path)
    return files


def write_manifest(run_dir: str | Path, inference_checkpoints: list[str], members: list[dict] | None = None) -> Path:
    """Write `run_dir/manifest.json` listing every file with its sha256 and the checkpoints used for inference.

    `members`: what each served checkpoint is (role, seed, epochs, training dates), listed as inference.members.
    """
    run_dir = Path(run_dir)
    artifacts = {}
    for path in _run_files(run_dir):
        artifacts[path.relative_to(run_dir).as_posix()] = {"sha256": _sha256_file(path), "bytes": path.stat().st_size}
    missing = [name for name in [*inference_checkpoints, PRIOR_FILE] if name not in artifacts]
    if missing:
        raise ArtifactError(f"{run_dir}: manifest would name missing file(s) {missing}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "artifacts": artifacts,
        "inference": {"checkpoints": list(inference_checkpoints), "prior": PRIOR_FILE},
    }
    if members is not None:
        manifest["inference"]["members"] = members
    path = run_dir / MANIFEST_FILE
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return path


def read_manifest(run_dir: str | Path) -> dict:
    """The parsed manifest of a run folder; ArtifactError when it is missing or malformed."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{path}: manifest not found (is this a finished run folder?)")
    try:
        manifest = json.loads(path.read_text())
        manifest["artifacts"].items()
        manifest["inference"]["checkpoints"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: malformed manifest: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{path}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    return manifest


def verify_artifact(run_dir: Path, manifest: dict, name: str) -> Path:
    """The path of artefact `name` after checking it against `manifest`; ArtifactError when unlisted, missing or
    altered (the predictor checks only the files it reads, one at a time)."""
    entry = manifest["artifacts"].get(name)
    path = run_dir / name
    if entry is None:
        raise ArtifactError(f"{path}: not listed in {MANIFEST_FILE}")
    if not path.is_file():
        raise ArtifactError(f"{path}: listed in {MANIFEST_FILE} but missing")
    if _sha256_file(path) != entry.get("sha256"):
        raise ArtifactError(f"{path}: sha256 differs from {MANIFEST_FILE} (file altered or corrupt)")
    return path


def verify_manifest(run_dir: str | Path) -> dict:
    """Recompute the sha256 of every listed artefact; ArtifactError naming the first missing or altered file."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    for name in manifest["artifacts"]:
        verify_artifact(run_dir, manifest, name)
    for name in [*manifest["inference"]["checkpoints"], manifest["inference"].get("prior", PRIOR_FILE)]:
        if name not in manifest["artifacts"]:
            raise ArtifactError(f"{run_dir / MANIFEST_FILE}: inference file {name!r} is not a listed artefact")
    return manifest

