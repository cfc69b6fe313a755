"""Finding the competition folder and a trained run folder, on Kaggle or locally, without hard-coded paths.

Kaggle mounts inputs read-only under `/kaggle/input/`, in the classic `<slug>/` layout or the newer
`competitions|datasets|notebooks/<owner>/<slug>/` layouts, and a kernel's output can hold its files one folder
deeper still (shared COMPETITION.md, "Kaggle runtime"). So both folders are found by what they contain: a
competition folder is one holding `target_pairs.csv`, a run folder one holding `manifest.json`. Explicit paths
(command-line `--data` / `--artifacts`) always win; a search is bounded in depth, never follows a symlink twice and
skips unreadable folders, so it finishes in well under a second on a Kaggle input tree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
COMPETITION_MARKER = "target_pairs.csv"
RUN_MARKER = "manifest.json"
COMPETITION_SLUG = "mitsui-commodity-prediction-challenge"
MAX_DEPTH = 6
"""How many folder levels below a search root are visited (`competitions/<owner>/<slug>/<run>/<fold>` fits)."""


def working_dir() -> Path:
    """Where outputs go: `/kaggle/working` on Kaggle, else the current directory."""
    return KAGGLE_WORKING if KAGGLE_WORKING.is_dir() else Path.cwd()


def default_search_roots() -> list[Path]:
    """The folders searched when no explicit path is given: Kaggle's inputs and outputs, when they exist."""
    return [root for root in (KAGGLE_INPUT, KAGGLE_WORKING) if root.is_dir()]


def find_marked_folders(roots: Sequence[str | Path], marker: str, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every folder under `roots` (roots included) holding a file named `marker`, shallowest first, then by path."""
    found: dict[Path, int] = {}
    for root in roots:
        for folder, depth in _walk(Path(root), max_depth):
            if (folder / marker).is_file():
                found.setdefault(folder, depth)
    return sorted(found, key=lambda folder: (found[folder], str(folder)))


def _walk(root: Path, max_depth: int) -> Iterator[tuple[Path, int]]:
    """Breadth-first (folder, depth) pairs under `root`; each real folder once, unreadable folders skipped."""
    seen: set[str] = set()
    level = [root]
    for depth in range(max_depth + 1):
        next_level = []
        for folder in level:
            try:
                real = os.path.realpath(folder)
                if real in seen or not folder.is_dir():
                    continue
                seen.add(real)
                children = sorted(entry for entry in folder.iterdir() if entry.is_dir())
            except OSError as exc:
                log.debug("skipping %s: %s", folder, exc)
                continue
            yield folder, depth
            next_level.extend(children)
        level = next_level


def _pick_competition(candidates: list[Path]) -> Path:
    """Prefer a folder that also has train.csv, then the official slug in its path, then the shallowest."""
    def rank(folder: Path) -> tuple[int, int]:
        return (0 if (folder / "train.csv").is_file() else 1, 0 if COMPETITION_SLUG in str(folder) else 1)

    return min(candidates, key=rank)  # min is stable: ties keep the shallowest-first order


def find_competition_dir(explicit: str | Path | None = None, roots: Sequence[str | Path] | None = None) -> Path | None:
    """The competition folder: `explicit` (or the one folder with `target_pairs.csv` below it), else a search of
    `roots` (default: Kaggle's inputs); None when nothing is found."""
    if explicit is not None:
        candidates = find_marked_folders([explicit], COMPETITION_MARKER)
        if not candidates:
            log.warning("%s: no %s in it or below it", explicit, COMPETITION_MARKER)
            return None
        return _pick_competition(candidates)
    candidates = find_marked_folders(default_search_roots() if roots is None else roots, COMPETITION_MARKER)
    if not candidates:
        return None
    chosen = _pick_competition(candidates)
    if len(candidates) > 1:
        log.info("found %d competition folders, using %s", len(candidates), chosen)
    return chosen


def find_run_dir(explicit: str | Path | None = None, roots: Sequence[str | Path] | None = None) -> Path | None:
    """The run folder: the shallowest folder with `manifest.json` at or below `explicit`, else below `roots`
    (default: Kaggle's inputs and working folder); None when nothing is found."""
    search = [explicit] if explicit is not None else (default_search_roots() if roots is None else roots)
    candidates = find_marked_folders(search, RUN_MARKER)
    if not candidates:
        return None
    if len(candidates) > 1:
        shown = [str(c) for c in candidates[:5]]
        log.info("found %d run folders (%s), using %s", len(candidates), shown, candidates[0])
    return candidates[0]
