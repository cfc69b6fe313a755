"""The kernel core (spread/*.py) never imports the lab (spread/lab/), at module level or inside a function.

The Kaggle kernels run the core only; the lab is experiment tooling that `python -m spread` reaches through the
lazy imports of `spread/cli.py`, the one core module allowed to name it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "spread"
LAB = "spread.lab"
DISPATCHER = "cli.py"


def _imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in `path` names (relative imports resolved inside `spread`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a core module sits directly in spread/, so one dot is the package itself
                base = ".".join(filter(None, ["spread", base]))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from spread import lab`
    return names


def _lab_imports(path: Path) -> set[str]:
    return {name for name in _imported_modules(path) if name == LAB or name.startswith(LAB + ".")}


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


def test_kernels_do_not_import_the_lab() -> None:
    for kernel in ("kernel_train.py", "kernel_infer.py"):
        path = PACKAGE_DIR.parent / kernel
        assert not _lab_imports(path), f"{kernel} imports the lab: {sorted(_lab_imports(path))}"
