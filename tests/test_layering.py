"""The kernel core (spread/*.py) never imports the lab (spread/lab/), at module level or inside a function.

The Kaggle kernels run the core only; the lab is experiment tooling that `python -m spread` reaches through the
lazy imports of `spread/cli.py`, the one core module allowed to name it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "spread"
sys.path.insert(0, str(PACKAGE_DIR.parent))
import build_bundle  # noqa: E402  (a top-level script of the repository)

LAB = "spread.lab"
DISPATCHER = "cli.py"


def _lab_imports(path: Path) -> set[str]:
    """The lab modules `path` imports anywhere outside `if TYPE_CHECKING:` blocks, relative imports resolved inside
    `spread` (the bundle's walker, as in test_imports: an import that never runs neither loads nor embeds the lab)."""
    return {name for name in build_bundle.imported_names(path, "spread") if name == LAB or name.startswith(LAB + ".")}


def _core_modules() -> list[Path]:
    """spread/*.py (not spread/lab/) except the dispatcher."""
    return sorted(path for path in PACKAGE_DIR.glob("*.py") if path.name != DISPATCHER)


@pytest.mark.parametrize("path", _core_modules(), ids=lambda path: path.name)
def test_kernel_core_module_does_not_import_the_lab(path: Path) -> None:
    assert not _lab_imports(path), f"{path} imports the lab: {sorted(_lab_imports(path))}"


def test_the_walk_sees_function_level_imports_of_the_lab() -> None:
    # Negative control: cli.py imports the lab only inside its command handlers, and the walk must find them.
    assert {"spread.lab.bench", "spread.lab.baselines", "spread.lab.realdata", "spread.lab.tune"} <= _lab_imports(
        PACKAGE_DIR / DISPATCHER
    )


def test_the_walk_sees_every_import_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from . import lab\n\n\ndef g():\n    import spread.lab.grid\n")
    assert _lab_imports(probe) == {"spread.lab", "spread.lab.grid"}
    probe.write_text("from spread.labels import x\nimport spreadlab\n")
    assert not _lab_imports(probe)
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spread.lab import grid\n")
    assert not _lab_imports(probe)  # never runs: the kernels neither load nor embed it


def test_kernels_do_not_import_the_lab() -> None:
    for kernel in ("kernel_train.py", "kernel_infer.py"):
        path = PACKAGE_DIR.parent / kernel
        assert not _lab_imports(path), f"{kernel} imports the lab: {sorted(_lab_imports(path))}"
