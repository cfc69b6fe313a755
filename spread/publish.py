"""Kaggle dataset metadata for a run folder, so that `kaggle datasets create -p RUN --dir-mode zip` publishes it.

The weights dataset is how a locally trained run reaches the submission kernel (`build_bundle.py --weights
dataset` attaches `OWNER/spread-mitsui-weights`); the train kernel writes the same file into its own output, and
`build_bundle.py` one into dist/train (the bundled train script as a dataset, to run under torchrun). The
limits checked here are the ones the kaggle CLI enforces before its first request (slug and title 6-50 characters,
subtitle 20-80), so a bad name fails here, naming the value, rather than after an upload starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from spread.checkpoint import read_manifest
from spread.errors import ConfigError

DATASET_METADATA = "dataset-metadata.json"
DEFAULT_SLUG = "spread-mitsui-weights"
PLACEHOLDER_OWNER = "your-username"
"""The owner in the shipped kernel-metadata.json: never a real account, replaced by `build_bundle.py --owner`."""
SUBTITLE = "Checkpoints, manifest and prior of a spread training run"
LICENSE = "CC0-1.0"
OWNER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{4,48}[a-z0-9]")


def check_owner(owner: str) -> str:
    """`owner` when it can be a Kaggle username (letters, digits, `-`, `_`), else ConfigError naming it."""
    if not OWNER_PATTERN.fullmatch(owner or ""):
        raise ConfigError(f"--owner {owner!r}: expected a Kaggle username (letters, digits, '-' or '_')")
    return owner


def dataset_metadata(
    owner: str, slug: str = DEFAULT_SLUG, title: str | None = None, subtitle: str = SUBTITLE
) -> dict:
    """The `dataset-metadata.json` of the dataset `owner/slug` (title defaults to the slug in words)."""
    check_owner(owner)
    if not SLUG_PATTERN.fullmatch(slug or ""):
        raise ConfigError(f"--slug {slug!r}: expected 6-50 characters of a-z, 0-9 and '-' (not at either end)")
    title = title if title is not None else slug.replace("-", " ")
    if not 6 <= len(title) <= 50:
        raise ConfigError(f"--title {title!r}: Kaggle needs 6-50 characters")
    if not 20 <= len(subtitle) <= 80:
        raise ConfigError(f"subtitle {subtitle!r}: Kaggle needs 20-80 characters")
    return {"title": title, "id": f"{owner}/{slug}", "licenses": [{"name": LICENSE}], "subtitle": subtitle}


def write_dataset_metadata(
    run_dir: str | Path, owner: str, slug: str | None = None, title: str | None = None
) -> Path:
    """Write RUN/dataset-metadata.json for a finished run folder (one with manifest.json); returns its path."""
    run_dir = Path(run_dir)
    meta = dataset_metadata(owner, slug or DEFAULT_SLUG, title)
    read_manifest(run_dir)  # ArtifactError unless this is a finished run folder
    path = run_dir / DATASET_METADATA
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path
