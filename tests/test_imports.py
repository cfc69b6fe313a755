"""The import graph of `spread/`: the config imports no training loop, and no module cycle exists.

`spread.config` is what the inference kernel and every command load first; it composes the sections' dataclasses
and must stay light (the training loop, the runtime and the run folder come only with `spread.trainer`). The
graph counts module-level and function-level imports (a function-level import is a dependency too; only
`if TYPE_CHECKING:` imports, which never run, are left out).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spread"
sys.path.insert(0, str(PACKAGE.parent))
import build_bundle  # noqa: E402  (a top-level script of the repository)

CONFIG_CLOSURE = {
    "spread", "spread.competition", "spread.config", "spread.errors", "spread.features", "spread.losses",
    "spread.model", "spread.online", "spread.scaling", "spread.screening", "spread.splits",
    "spread.target_features", "spread.target_head", "spread.targets", "spread.train_config", "spread.windows",
}


def test_importing_the_config_loads_no_training_loop() -> None:
    code = "import sys, spread.config; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'spread')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert not loaded & {"spread.trainer", "spread.fit", "spread.runtime", "spread.optim", "spread.checkpoint"}
    assert loaded == CONFIG_CLOSURE, f"extra {loaded - CONFIG_CLOSURE}, missing {CONFIG_CLOSURE - loaded}"


def imported_modules(path: Path) -> set[str]:
    """The `spread.*` names that `path` imports anywhere outside `if TYPE_CHECKING:` blocks (the bundle's walker)."""
    return {name for name in build_bundle.imported_names(path, "spread") if name.startswith("spread.")}


def import_graph() -> dict[str, set[str]]:
    modules = {f"spread.{path.stem}": path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: imported_modules(path) & modules.keys() - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := walk(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_import_graph_walker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "spread.train_config" in graph["spread.config"] and "spread.fit" in graph["spread.trainer"]


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)
