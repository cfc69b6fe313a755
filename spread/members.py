"""The ensemble members: which checkpoints `--members` selects, each loaded and verified on its own, placed on the
device (else the CPU), and run on a window batch exactly as the trainer scores.

A served run must not be lost to one bad file. Each selected checkpoint (`--members`: the manifest's inference
checkpoints by default, or every holdout / fold / final checkpoint, or named folders) is checked against the run's
`manifest.json` and becomes one member on its own: a missing, altered or incomplete checkpoint, or one trained on
other targets, lags or pairs (`RunMismatch`), drops that member (loudly); a member that cannot be placed on the
device is retried on the CPU; a differing data fingerprint is one warning. The model serves while one member loads.
The checkpoint, config, scaling, features and forecast modules are imported inside the functions that use them
(see `spread.infer`: `import spread.infer` must succeed on the Kaggle image whatever else fails).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from spread.errors import ArtifactError
from spread.problems import Problems
from spread.runfolder import PRUNED_SUFFIX, ROLES

if TYPE_CHECKING:
    from spread.competition import Competition
    from spread.config import Config
    from spread.scaling import Scaler
    from spread.served import History

MEMBER_SETS = ("served", "holdout", "folds", "final")
"""Named member selections: the manifest's inference checkpoints, or every checkpoint of one role."""


class RunMismatch(ArtifactError):
    """The run was trained for another competition (targets, lags or pairs differ): none of it may be served."""


@dataclass
class Member:
    """One checkpoint of the ensemble, ready to run."""

    name: str
    """Checkpoint path relative to the run folder (for the log)."""
    model: torch.nn.Module
    """The rebuilt model in eval mode, on `device`."""
    cfg: Config
    """The run's `spread.config.Config`, as saved in the checkpoint."""
    scaler: Scaler
    """The fold's `spread.scaling.Scaler` (its names are the model's input features)."""
    own_scaler: Scaler | None
    """The fold's scaling of the targets' own features (data.own_features), else None."""
    own_columns: list[str]
    """The raw columns the targets' own features read (every target's legs; empty without data.own_features)."""
    target_scale: torch.Tensor
    """(N,) per-target scale the trainer divided the targets by."""
    device: torch.device = torch.device("cpu")
    """Where the model runs (the CPU when it could not be loaded on the requested device)."""
    role: str = "fold"
    """"fold", "holdout" or "final" (see `checkpoint_role`)."""
    fold: dict | None = None
    """The checkpoint's fold record: name, train_dates [first, last] (label dates trained on), val_dates, cutoff."""
    inputs_key: str = ""
    """Digest of what the latest window depends on (scalers, feature and data config): members with the same key
    read the same window, which the predictor then builds once per call (`inputs_key`)."""

    def raw_rows(self) -> int:
        """Raw rows the latest window needs: L + the inputs' lookback (`spread.windows.tail_rows`)."""
        from spread.windows import tail_rows

        return tail_rows(self.cfg.features, self.cfg.data)


def trained_dates(role: str, fold: dict | None, date_ids: Sequence[int]) -> list[int]:
    """The dates of `date_ids` whose labels a member of `role` with fold record `fold` trained on: inside the
    record's train_dates [first, last], or for a final fit anything up to its cutoff (none without a record)."""
    fold = fold or {}
    first, last = (list(fold.get("train_dates") or []) + [None, None])[:2]
    if role == "final" and fold.get("cutoff") is not None:
        first, last = None, fold["cutoff"]
    if last is None:
        return []
    return [int(d) for d in date_ids if (first is None or d >= first) and d <= last]


def checkpoint_role(ckpt: dict | None, name: str) -> str:
    """The checkpoint's `role` when it has a known one, else from its fold record's name (or its folder's):
    "holdout*" -> holdout, "final*" -> final, anything else (fold0, fold0-pruned) -> fold."""
    role = (ckpt or {}).get("role")
    if role in ROLES:
        return role
    fold_name = str(((ckpt or {}).get("fold") or {}).get("name") or name.split("/")[0])
    for prefix in ("holdout", "final"):
        if fold_name.startswith(prefix):
            return prefix
    return "fold"


def member_candidates(run_dir: Path, manifest: dict, members: str) -> tuple[list[str], str | None]:
    """(checkpoint names to try, role they must have or None) for a `--members` value: "served" (the manifest's
    inference checkpoints), "holdout" / "folds" / "final" (every listed <folder>/best.pt of that role but the pruned
    fine-tunes `<fit>-pruned/`, which are reported beside their fit, not served with it: "holdout" is exactly the
    ensemble the public-leaderboard estimate scores), or a comma list of run-relative folder names (any fit)."""
    if members == "served":
        return list(manifest["inference"]["checkpoints"]), None
    listed = sorted(name for name in manifest["artifacts"] if name.endswith("/best.pt") and name.count("/") == 1
                    and not name.split("/")[0].endswith(PRUNED_SUFFIX))
    if members in MEMBER_SETS:
        return listed, {"folds": "fold"}.get(members, members)
    folders = [folder.strip().strip("/") for folder in members.split(",") if folder.strip()]
    if not folders:
        raise ArtifactError(f"--members {members!r}: give served, holdout, folds, final or folder names")
    return [folder if folder.endswith(".pt") else f"{folder}/best.pt" for folder in folders], None


def inputs_key(cfg: Config, scaler: Scaler, own_scaler: Scaler | None) -> str:
    """A digest of everything `spread.windows.window_for_latest` reads besides the served data."""
    parts = [scaler.to_dict(), own_scaler.to_dict() if own_scaler is not None else None, asdict(cfg.features),
             asdict(cfg.data)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def build_member(run_dir: Path, name: str, ckpt: dict, comp: Competition, device: torch.device) -> Member:
    """One member from its loaded checkpoint; RunMismatch when it was trained for other targets or pairs,
    ArtifactError when it is incomplete."""
    from spread.checkpoint import build_model
    from spread.config import config_from_dict
    from spread.scaling import Scaler
    from spread.target_features import leg_columns

    where = run_dir / name
    if list(ckpt["target_names"]) != comp.target_names:
        raise RunMismatch(f"{where}: trained for other targets than target_pairs.csv lists")
    if [int(lag) for lag in ckpt["target_lags"]] != comp.target_lags.tolist():
        raise RunMismatch(f"{where}: trained for other target lags than target_pairs.csv lists")
    pairs = ckpt.get("target_pairs")
    if pairs is not None and list(pairs) != comp.pairs["pair"].to_list():
        differ = [name for name, a, b in zip(comp.target_names, pairs, comp.pairs["pair"]) if a != b]
        raise RunMismatch(f"{where}: trained on other target pairs than target_pairs.csv lists (first: {differ[:3]})")
    if "scaler" not in ckpt:
        raise ArtifactError(f"{where}: checkpoint has no scaler statistics")
    scaler = Scaler.from_dict(ckpt["scaler"])
    if scaler.names != list(ckpt["feature_names"]):
        raise ArtifactError(f"{where}: scaler features differ from the model's input features")
    cfg = config_from_dict(ckpt["config"])
    if cfg.data.own_features and "own_scaler" not in ckpt:
        raise ArtifactError(f"{where}: checkpoint has no scaling of the targets' own features (data.own_features)")
    own_scaler = Scaler.from_dict(ckpt["own_scaler"]) if cfg.data.own_features else None
    own_columns = leg_columns(comp.pairs) if cfg.data.own_features else []
    missing = [column for column in own_columns if column not in comp.train.columns]
    if missing:  # every call would fail on them: refuse the member once, at load
        raise ArtifactError(f"{where}: its targets' own features need leg columns train.csv lacks: {missing[:5]}")
    model = build_model(ckpt).to(device)
    scale = torch.as_tensor(ckpt["target_scale"], dtype=torch.float32).to(device)
    return Member(
        name=name, model=model, cfg=cfg, scaler=scaler, own_scaler=own_scaler, own_columns=own_columns,
        target_scale=scale, device=device, role=checkpoint_role(ckpt, name), fold=ckpt.get("fold"),
        inputs_key=inputs_key(cfg, scaler, own_scaler),
    )


def place_member(
    run_dir: Path, name: str, ckpt: dict, comp: Competition, device: torch.device, problems: Problems
) -> Member:
    """`build_member` on `device`, retried on the CPU (logged) when it fails there for any reason but a mismatch."""
    try:
        return build_member(run_dir, name, ckpt, comp, device)
    except RunMismatch:
        raise
    except Exception as exc:
        if device.type == "cpu":
            raise
        problems.report(
            "device-retry-cpu", f"{run_dir / name}: cannot load on {device} ({type(exc).__name__}: {exc}); "
            "retrying on the CPU", logging.ERROR, key=name,
        )
        return build_member(run_dir, name, ckpt, comp, torch.device("cpu"))


def load_members(
    run_dir: Path, manifest: dict, comp: Competition, device: torch.device, members: str, problems: Problems
) -> tuple[list[Member], dict[str, str]]:
    """(loaded members, {name: why it was refused}) of a `--members` selection. Each member is verified against
    the manifest and loaded on its own (one bad checkpoint drops that member only); a member that cannot be placed on
    `device` is retried on the CPU; a data fingerprint differing from the competition's is one warning."""
    from spread.checkpoint import data_fingerprint, load_checkpoint, verify_artifact

    names, role = member_candidates(run_dir, manifest, members)
    loaded, failed = [], {}
    fingerprint = None
    for name in names:
        try:
            ckpt = load_checkpoint(verify_artifact(run_dir, manifest, name))
        except ArtifactError as exc:
            if role is None or checkpoint_role(None, name) == role:
                failed[name] = str(exc)
                problems.report("member-refused", f"{exc}: member dropped", logging.ERROR, key=name)
            continue
        if role is not None and checkpoint_role(ckpt, name) != role:
            continue
        try:
            member = place_member(run_dir, name, ckpt, comp, device, problems)
        except Exception as exc:
            kind = "member-pairs-differ" if isinstance(exc, RunMismatch) else "member-refused"
            failed[name] = f"{type(exc).__name__}: {exc}"
            problems.report(kind, f"{exc}: member dropped", logging.ERROR, key=name)
            continue
        fingerprint = fingerprint or data_fingerprint(comp)
        if ckpt.get("data_fingerprint") not in (None, fingerprint):
            problems.report(
                "fingerprint-differs", f"{run_dir / name}: trained on other training files than {comp.root} holds "
                "(data fingerprint differs); serving it", logging.WARNING,
            )
        loaded.append(member)
    if not names or (role is not None and not loaded and not failed):
        raise ArtifactError(f"{run_dir}: no checkpoint for --members {members}")
    return loaded, failed


def model_inputs(members: Sequence[Member], history: History) -> tuple[list[str], list[str]]:
    """(raw columns, targets) of `history`, in its order, that the members' input features derive from: with
    data.own_features also every target's legs and labels (`spread.target_features`)."""
    from spread.features import panel_inputs

    features = {name for member in members for name in member.scaler.names}
    columns, targets = panel_inputs(history.feature_names, history.target_names, features)
    if any(member.cfg.data.own_features for member in members):
        needed = {c for member in members for c in member.own_columns} | set(columns)
        columns, targets = [c for c in history.feature_names if c in needed], list(history.target_names)
    return columns, targets


def run_member(member: Member, batch: dict[str, torch.Tensor], device: torch.device) -> np.ndarray | None:
    """(B, N) float64 submitted predictions of one member for a window batch, exactly as the trainer scores; None
    when any is not finite (the trainer's validation would score those as zeros; the predictor drops the member)."""
    from spread.forecast import predict_batch

    values = predict_batch(member.model, batch, member.target_scale, member.cfg.train, device)
    return values if np.isfinite(values).all() else None
