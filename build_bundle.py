"""Build the two Kaggle kernels as single files: `python build_bundle.py --out dist --owner USER [--notebook]
[--weights kernel|dataset] [--config FILE] [key=value ...]`.

A Kaggle kernel runs one file with internet off, so the `spread` modules it runs travel inside it: its import
closure, found by walking the imports of the kernel file and of every module it reaches (module-level and
function-level ones, relative ones, a package's `__init__` with any of its modules; `if TYPE_CHECKING:` imports
never run and are left out). The inference kernel thus carries neither the training loop nor the lab. Each module's
source is embedded verbatim as a string, in dependency order (a topological order of the import graph, ties broken
by `LAYERS`: data, features and windows, model, losses, training, serving), listed with its line in a table of
contents in the header cell, and registered with the import system by a small meta path finder: `import
spread.infer` inside the kernel then works exactly as from the repository (relative imports, lazy imports, module
docstrings, tracebacks that name `<bundle>/spread/infer.py` and its line), with no fragile concatenation of
modules and no `spread` on the path. The kernel's own code (`kernel_train.py` / `kernel_infer.py`, written in
jupytext percent format) follows. The derived kernel metadata rides along as the virtual module `spread_bundle`,
and for the kernels that read configs (`CONFIG_READERS`: the train kernel) `configs/*.yaml` and the build config too.

Output, all derived from the repository and byte-identical across builds (ordered modules, no timestamps, fixed
notebook cell ids):

    dist/train/kernel_train.py   + kernel-metadata.json   (GPU on, internet off, the competition as source)
    dist/infer/kernel_infer.py   + kernel-metadata.json   (GPU as in the top-level metadata, internet off, the
                                                           competition + the train kernel's output or the
                                                           weights dataset as sources)
    dist/train/dataset-metadata.json                       (dist/train as the dataset `<owner>/<slug>-bundle`,
                                                           for `torchrun` on the bundled script in a notebook)

With `--notebook` the code files are `.ipynb` notebooks (one cell per `# %%` step) and `kernel_type` is notebook.
`--owner USER` puts your Kaggle username into every id (both kernels, the weights dataset); without it the ids keep
the placeholder owner of kernel-metadata.json and the build warns. `--config FILE` and/or `key=value` overrides are
resolved and validated here, at build time (a bad key fails the build, nothing written), and embedded: the train
kernel then trains that config unless its own `--config` says otherwise (its `key=value` arguments still apply on
top). Push with `kaggle kernels push -p dist/train` (then `-p dist/infer` once the training kernel has run).
"""

from __future__ import annotations

import argparse
import ast
import heapq
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "spread"
RESOURCE_MODULE = "spread_bundle"
KERNELS = {"train": "kernel_train", "infer": "kernel_infer"}
CONFIG_READERS = ("train",)
"""The kernels that read configs: their `spread_bundle` carries configs/*.yaml and the build config (the infer
kernel rebuilds its models from the config stored in each checkpoint)."""
LAYERS = (
    ("spread", "spread.errors"),
    ("spread.competition", "spread.competition_writer", "spread.synth", "spread.synth_market", "spread.synth_momentum",
     "spread.synth_presets", "spread.targets"),
    ("spread.features", "spread.scaling", "spread.screening", "spread.splits", "spread.target_features",
     "spread.windows"),
    ("spread.target_head", "spread.model"),
    ("spread.losses", "spread.metrics"),
    ("spread.config", "spread.train_config"),
    ("spread.checkpoint", "spread.fit", "spread.forecast", "spread.optim", "spread.prior", "spread.pruning",
     "spread.runfolder", "spread.runlog", "spread.runtime", "spread.trainer"),
    ("spread.discovery", "spread.fallback", "spread.gateway", "spread.infer", "spread.members", "spread.online",
     "spread.plots", "spread.problems", "spread.publish", "spread.served"),
)
"""The kernel core in the order data flows (package, data, features and windows, model, losses, config, training,
serving): where the import graph leaves the order open, a module of an earlier layer comes first, then by name;
a module named in no layer (the lab, the cli) comes after them all."""
WEIGHT_SOURCES = ("kernel", "dataset")
BUNDLE_SUBTITLE = "The spread train kernel as one file, to run under torchrun"

LOADER = '''
import importlib.abc
import importlib.util
import linecache
import sys


class _EmbeddedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the modules whose sources are embedded above, ahead of anything installed."""

    def __init__(self, sources, packages):
        self.sources = sources
        self.packages = packages

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.sources:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=fullname in self.packages)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        tail = "/__init__.py" if name in self.packages else ".py"
        filename = "<bundle>/" + name.replace(".", "/") + tail
        source = self.sources[name]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module.__file__ = filename
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)


# A notebook re-run or an installed copy of spread must not shadow the embedded one.
for _name in [name for name in sys.modules if name.split(".")[0] in ("spread", "spread_bundle")]:
    del sys.modules[_name]
sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != "_EmbeddedModules"]
sys.meta_path.insert(0, _EmbeddedModules(_SPREAD_SOURCES, _SPREAD_PACKAGES))
'''.strip()


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package: `spread.a.b` -> spread/a/b.py, `spread.a` -> spread/a/__init__.py."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    if PACKAGE not in modules:
        raise SystemExit(f"{package_dir}: not a package (no __init__.py)")
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, package: str) -> set[str]:
    """Every dotted name an import statement of `path` names, at any depth outside `if TYPE_CHECKING:` blocks:
    `import a.b` gives a.b, `from a import b` gives a and a.b (b may be a module); relative imports are resolved
    against `package`, the package `path` belongs to ("" for a script, whose relative imports name nothing)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 >= len(parts):
                    return
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return names


def _reached(names: set[str], modules: dict[str, Path]) -> set[str]:
    """The modules among `names`, each with its parent packages (importing `a.b.c` runs `a` and `a.b` first)."""
    reached = set()
    for name in names & modules.keys():
        parts = name.split(".")
        reached.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return reached & modules.keys()


def import_closure(kernel: Path, modules: dict[str, Path]) -> dict[str, set[str]]:
    """The modules of `modules` that running `kernel` can import, each with the modules it imports itself."""
    graph: dict[str, set[str]] = {}
    todo = sorted(_reached(imported_names(kernel, ""), modules))
    while todo:
        name = todo.pop()
        if name in graph:
            continue
        path = modules[name]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _reached(imported_names(path, package), modules) - {name}
        todo.extend(sorted(graph[name] - graph.keys()))
    return graph


def dependency_order(graph: dict[str, set[str]]) -> list[str]:
    """The modules of `graph` (module -> the modules it imports), each after those it imports; ties by `LAYERS`,
    then by name. An import cycle stops the build, naming the modules on or behind it."""
    rank = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    waiting = {name: set(imports) for name, imports in graph.items()}
    ready = [(rank.get(name, len(LAYERS)), name) for name, imports in waiting.items() if not imports]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        del waiting[name]
        for other, imports in waiting.items():
            if name in imports:
                imports.discard(name)
                if not imports:
                    heapq.heappush(ready, (rank.get(other, len(LAYERS)), other))
    if waiting:
        raise SystemExit(f"import cycle among the bundled modules {sorted(waiting)}")
    return order


def kernel_sources(kernel: Path, modules: dict[str, Path]) -> tuple[dict[str, str], list[str]]:
    """The import closure of `kernel`: module name -> source in dependency order, and the names that are packages."""
    graph = import_closure(kernel, modules)
    sources = {name: modules[name].read_text(encoding="utf-8") for name in dependency_order(graph)}
    return sources, sorted(name for name in graph if modules[name].name == "__init__.py")


def embedded_configs(config_dir: Path) -> dict[str, str]:
    """configs/NAME.yaml -> {NAME: text}, sorted."""
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(config_dir.glob("*.yaml"))}


def string_literal(text: str, indent: str = "    ") -> str:
    """`text` as a parenthesised concatenation of one repr per line: exact, readable, deterministic."""
    lines = text.splitlines(keepends=True) or [""]
    return "(\n" + "".join(f"{indent}{line!r}\n" for line in lines) + ")"


def resource_source(configs: dict[str, str], metadata: dict, build_config: dict | None = None, origin: str = "") -> str:
    """Source of the virtual `spread_bundle` module: the embedded configs, this kernel's metadata and the config
    resolved at build time (`BUILD_CONFIG`, None without `--config`/overrides; `BUILD_CONFIG_ORIGIN` says whence)."""
    lines = ['"""Resources embedded by build_bundle.py: configs/*.yaml and the build config (in a kernel that reads',
             'configs; elsewhere empty and None), the kernel metadata."""', ""]
    lines += ["import json", "", "CONFIGS = {}"]
    for name, text in configs.items():
        lines.append(f"CONFIGS[{name!r}] = {string_literal(text)}")
    metadata_text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    lines.append(f"KERNEL_METADATA = json.loads({string_literal(metadata_text)})")
    if build_config is None:
        lines.append("BUILD_CONFIG = None")
    else:
        lines.append(f"BUILD_CONFIG = json.loads({string_literal(json.dumps(build_config, indent=1) + chr(10))})")
    lines.append(f"BUILD_CONFIG_ORIGIN = {origin!r}")
    return "\n".join(lines) + "\n"


def with_owner(base: dict, owner: str | None) -> dict:
    """The top-level metadata with `owner` in its id; warns when the id keeps the placeholder owner."""
    from spread.errors import ConfigError
    from spread.publish import PLACEHOLDER_OWNER, check_owner

    current, slug = str(base["id"]).split("/", 1)
    if owner is not None:
        try:
            current = check_owner(owner)
        except ConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
    elif current == PLACEHOLDER_OWNER:
        print(f"warning: kernel and dataset ids use the placeholder owner {PLACEHOLDER_OWNER!r}: rebuild with "
              "--owner YOUR_KAGGLE_USERNAME before `kaggle kernels push`", file=sys.stderr)
    return {**base, "id": f"{current}/{slug}"}


def build_config(config: str | Path | None, overrides: list[str]) -> tuple[dict | None, str]:
    """(resolved config as a dict, where it came from) for `--config FILE key=value ...`; (None, "") for neither.
    A bad file, key or value stops the build (SystemExit naming it) before anything is written."""
    if config is None and not overrides:
        return None, ""
    from spread.config import config_to_dict, load_config
    from spread.errors import SpreadError

    try:
        resolved = config_to_dict(load_config(config, overrides))
    except SpreadError as exc:
        raise SystemExit(f"error: {exc}") from None
    origin = " ".join([Path(config).as_posix() if config else "built-in defaults", *overrides])
    return resolved, origin


def kernel_metadata(base: dict, kind: str, code_file: str, notebook: bool, weights: str = "kernel") -> dict:
    """The kernel-metadata.json of the `kind` ("train" or "infer") kernel, derived from the top-level one.

    The top-level file describes the submission (infer) kernel; the train kernel is `<id>-train`, and the weights
    dataset `kernel_train.py` describes is `<owner>/<slug>-weights`.
    """
    owner, slug = str(base["id"]).split("/", 1)
    meta = dict(base)
    meta.update(code_file=code_file, language="python", kernel_type="notebook" if notebook else "script")
    meta.update(enable_internet=False, is_private=bool(base.get("is_private", True)))
    from spread.discovery import COMPETITION_SLUG

    competitions = list(dict.fromkeys([*base.get("competition_sources", []), COMPETITION_SLUG]))
    meta["competition_sources"] = competitions
    if kind == "train":
        meta.update(id=f"{owner}/{slug}-train", title=f"{base['title']} train", enable_gpu=True)
        meta.update(dataset_sources=list(base.get("dataset_sources", [])), kernel_sources=[])
        return meta
    meta["enable_gpu"] = bool(base.get("enable_gpu", False))
    if weights == "kernel":
        meta["kernel_sources"] = list(dict.fromkeys([*base.get("kernel_sources", []), f"{owner}/{slug}-train"]))
    else:
        meta["dataset_sources"] = list(dict.fromkeys([*base.get("dataset_sources", []), f"{owner}/{slug}-weights"]))
    return meta


def render_script(
    kind: str, kernel_source: str, sources: dict[str, str], packages: list[str], notebook: bool = False
) -> str:
    """The single-file kernel in jupytext percent format: a header with the table of contents, the embedded sources,
    the loader, the kernel's cells. The contents give the line where each module's source string opens: in the file,
    or with `notebook` in the notebook's sources cell."""
    body = ["# %%", "# The embedded modules: one source string each, in dependency order.", "_SPREAD_SOURCES = {}"]
    starts = {}
    for name, source in sources.items():
        starts[name] = sum(chunk.count("\n") + 1 for chunk in body) + 1
        body.append(f"_SPREAD_SOURCES[{name!r}] = {string_literal(source)}")
    body.append(f"_SPREAD_PACKAGES = set({sorted(packages)!r})")
    body += ["", "# %%", "# Make `import spread...` load the embedded sources.", LOADER, ""]

    def header(first: int) -> list[str]:
        where = "the next cell" if notebook else "this file"
        lines = [
            "# %% [markdown]",
            f"# # spread: {kind} kernel (single file)",
            "# Built by `build_bundle.py` from the `spread` repository: do not edit, rebuild.",
            "# The cells below embed the modules the kernel imports (its import closure, in dependency order),",
            f"# register them with the import system, then run `kernel_{kind}.py`.",
            "#",
            f"# Contents: the line of {where} where each module opens; line N of `<bundle>/spread/x.py` in a",
            "# traceback is that line + N.",
            "#",
        ]
        lines += [f"# - `{name}`: line {first + start}" for name, start in starts.items()]
        return lines + [""]

    # The header's length does not depend on its numbers; a notebook cell starts after its `# %%` marker.
    lines = header(-1 if notebook else len(header(0))) + body
    return "\n".join(lines) + "\n" + kernel_source.rstrip("\n") + "\n"


def render_notebook(script: str) -> str:
    """The percent-format script as an .ipynb notebook, with fixed cell ids so that builds are reproducible."""
    import jupytext

    notebook = jupytext.reads(script, fmt="py:percent")
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:03d}"
        cell["metadata"] = {}
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return jupytext.writes(notebook, fmt="ipynb")


def build(
    out: str | Path, notebook: bool = False, weights: str = "kernel", root: str | Path = ROOT,
    owner: str | None = None, config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Path]:
    """Write `out/train` and `out/infer` (each: the kernel file + kernel-metadata.json); returns kind -> folder."""
    root, out = Path(root), Path(out)
    if weights not in WEIGHT_SOURCES:
        raise SystemExit(f"--weights must be one of {WEIGHT_SOURCES}, got {weights!r}")
    resolved, origin = build_config(config, list(overrides))
    base = with_owner(json.loads((root / "kernel-metadata.json").read_text(encoding="utf-8")), owner)
    modules = package_modules(root / PACKAGE)
    configs = embedded_configs(root / "configs")
    for kind, stem in KERNELS.items():  # nothing is written or removed before every folder is checked
        check_bundle_folder(out / kind, stem)
    folders = {}
    for kind, stem in KERNELS.items():
        code_file = f"{stem}.ipynb" if notebook else f"{stem}.py"
        meta = kernel_metadata(base, kind, code_file, notebook, weights)
        kernel = root / f"{stem}.py"
        sources, packages = kernel_sources(kernel, modules)
        resources = (configs, meta, resolved, origin) if kind in CONFIG_READERS else ({}, meta)
        sources[RESOURCE_MODULE] = resource_source(*resources)
        kernel_source = kernel.read_text(encoding="utf-8")
        script = render_script(kind, kernel_source, sources, packages, notebook)
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for name in bundle_files(stem):  # an earlier build's files (a script where a notebook is written now)
            (folder / name).unlink(missing_ok=True)
        text = render_notebook(script) if notebook else script
        (folder / code_file).write_text(text, encoding="utf-8")
        metadata_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (folder / "kernel-metadata.json").write_text(metadata_text, encoding="utf-8")
        folders[kind] = folder
    write_bundle_dataset_metadata(folders["train"], base)
    return folders


def bundle_files(stem: str) -> tuple[str, ...]:
    """The files a build writes into one kernel's folder (the script or the notebook, and the metadata)."""
    return f"{stem}.py", f"{stem}.ipynb", "kernel-metadata.json", "dataset-metadata.json"


def check_bundle_folder(folder: Path, stem: str) -> None:
    """SystemExit unless `folder` is absent or holds only files a build writes: anything else is the user's."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SystemExit(f"error: {folder}: exists and is not a folder")
    others = sorted(path.name for path in folder.iterdir() if path.name not in bundle_files(stem))
    if others:
        raise SystemExit(f"error: {folder}: holds files a build does not write ({', '.join(others[:5])}); "
                         "refusing to remove them: choose another --out")


def write_bundle_dataset_metadata(folder: Path, base: dict) -> Path:
    """`folder/dataset-metadata.json`: the bundled train script as the dataset `<owner>/<slug>-bundle`."""
    from spread.publish import dataset_metadata

    owner, slug = str(base["id"]).split("/", 1)
    meta = dataset_metadata(owner, f"{slug}-bundle", f"{base['title']} bundle", BUNDLE_SUBTITLE)
    path = folder / "dataset-metadata.json"
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output folder (default dist)")
    parser.add_argument("--notebook", action="store_true", help="write .ipynb notebooks instead of scripts")
    parser.add_argument(
        "--weights", choices=WEIGHT_SOURCES, default="kernel",
        help="how the infer kernel gets the artefacts: the train kernel's output OWNER/SLUG-train (default) or the "
             "weights dataset OWNER/SLUG-weights (`python -m spread publish` + `kaggle datasets create`)",
    )
    parser.add_argument("--owner", help="your Kaggle username, put into every kernel and dataset id "
                        "(default: the placeholder of kernel-metadata.json, with a warning)")
    parser.add_argument("--config", type=Path, help="config for the train kernel, resolved and embedded at build "
                        "time (default: the kernel's built-in defaults)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides on top of --config")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f"error: {args.out}: exists and is not a folder", file=sys.stderr)
        return 2
    try:
        folders = build(args.out, notebook=args.notebook, weights=args.weights, owner=args.owner,
                        config=args.config, overrides=args.overrides)
    except SystemExit as exc:  # a bad file, key, value or folder: one line, the usage-error status
        if not isinstance(exc.code, str):
            raise
        print(exc.code, file=sys.stderr)
        return 2
    for kind, folder in folders.items():
        files = ", ".join(sorted(path.name for path in folder.iterdir()))
        print(f"{kind}: {folder} ({files})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
