"""Build the two Kaggle kernels as single files: `python build_bundle.py --out dist --owner USER [--notebook]
[--weights kernel|dataset] [--config FILE] [key=value ...]`.

A Kaggle kernel runs one file with internet off, so the whole `spread` package travels inside it. Each module's
source is embedded verbatim as a string and registered with the import system by a small meta path finder: `import
spread.infer` inside the kernel then works exactly as from the repository (relative imports, lazy imports, module
docstrings, tracebacks that name `<bundle>/spread/infer.py` and its line), with no fragile concatenation of
modules and no `spread` on the path. The kernel's own code (`kernel_train.py` / `kernel_infer.py`, written in
jupytext percent format) follows, and `configs/*.yaml` plus the derived kernel metadata ride along as the virtual
module `spread_bundle`.

Output, all derived from the repository and byte-identical across builds (sorted modules, no timestamps, fixed
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
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "spread"
RESOURCE_MODULE = "spread_bundle"
COMPETITION_SLUG = "mitsui-commodity-prediction-challenge"
KERNELS = {"train": "kernel_train", "infer": "kernel_infer"}
SKIPPED_MODULES = ("__main__.py",)
"""Never embedded: `spread/__main__.py` runs the CLI when imported."""
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


def module_name(path: Path, package_dir: Path) -> str:
    """`spread/a/b.py` -> `spread.a.b`; `spread/a/__init__.py` -> `spread.a`."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_sources(package_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Every module of the package (name -> source), sorted by name, and the names that are packages."""
    sources, packages = {}, []
    for path in sorted(package_dir.rglob("*.py")):
        if path.name in SKIPPED_MODULES or "__pycache__" in path.parts:
            continue
        name = module_name(path, package_dir)
        sources[name] = path.read_text(encoding="utf-8")
        if path.name == "__init__.py":
            packages.append(name)
    if PACKAGE not in sources:
        raise SystemExit(f"{package_dir}: not a package (no __init__.py)")
    return dict(sorted(sources.items())), sorted(packages)


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
    lines = ['"""Resources embedded by build_bundle.py: configs/*.yaml, the kernel metadata, the build config."""', ""]
    lines += ["import json", "", "CONFIGS = {}"]
    for name, text in configs.items():
        lines.append(f"CONFIGS[{name!r}] = {string_literal(text)}")
    metadata_text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    lines.append(f"KERNEL_METADATA = json.loads({string_literal(metadata_text)})")
    lines.append(f"COMPETITION_SLUG = {COMPETITION_SLUG!r}")
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


def render_script(kind: str, kernel_source: str, sources: dict[str, str], packages: list[str]) -> str:
    """The single-file kernel in jupytext percent format: header, embedded sources, loader, the kernel's cells."""
    header = [
        "# %% [markdown]",
        f"# # spread: {kind} kernel (single file)",
        "# Built by `build_bundle.py` from the `spread` repository: do not edit, rebuild.",
        "# The cells below embed the `spread` package, register it with the import system,",
        f"# then run `kernel_{kind}.py`.",
        "",
        "# %%",
        "# The embedded `spread` package: one source string per module.",
        "_SPREAD_SOURCES = {}",
    ]
    for name, source in sources.items():
        header.append(f"_SPREAD_SOURCES[{name!r}] = {string_literal(source)}")
    header.append(f"_SPREAD_PACKAGES = set({sorted(packages)!r})")
    header += ["", "# %%", "# Make `import spread...` load the embedded sources.", LOADER, ""]
    return "\n".join(header) + "\n" + kernel_source.rstrip("\n") + "\n"


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
    sources, packages = package_sources(root / PACKAGE)
    configs = embedded_configs(root / "configs")
    folders = {}
    for kind, stem in KERNELS.items():
        code_file = f"{stem}.ipynb" if notebook else f"{stem}.py"
        meta = kernel_metadata(base, kind, code_file, notebook, weights)
        modules = dict(sources)
        embedded = (resolved, origin) if kind == "train" else (None, "")
        modules[RESOURCE_MODULE] = resource_source(configs, meta, *embedded)
        kernel_source = (root / f"{stem}.py").read_text(encoding="utf-8")
        script = render_script(kind, kernel_source, dict(sorted(modules.items())), packages)
        folder = out / kind
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        text = render_notebook(script) if notebook else script
        (folder / code_file).write_text(text, encoding="utf-8")
        metadata_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (folder / "kernel-metadata.json").write_text(metadata_text, encoding="utf-8")
        folders[kind] = folder
    write_bundle_dataset_metadata(folders["train"], base)
    return folders


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
    folders = build(args.out, notebook=args.notebook, weights=args.weights, owner=args.owner, config=args.config,
                    overrides=args.overrides)
    for kind, folder in folders.items():
        files = ", ".join(sorted(path.name for path in folder.iterdir()))
        print(f"{kind}: {folder} ({files})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
