# %% [markdown]
# # spread: training kernel
# Trains the gated Transformer walk-forward on the competition data and writes the run folder (checkpoints,
# `manifest.json` with the sha256 of every artefact, the fallback prior) plus `dataset-metadata.json`, so that the
# output can be attached to the submission kernel directly or published as the weights dataset.

# %%
"""Training kernel: find the data, train with the chosen config, write the artefacts and their dataset metadata.

The competition folder is `--data`, else the folder with `target_pairs.csv` under Kaggle's inputs (classic and
newer layouts), else the synthetic default written by `spread.synth` (the embedded default data; not under
torchrun, where the processes would race to write it). The config is `--config` (a YAML/JSON path, or the name of a
config embedded in the bundle / present in the repository's `configs/`), else the config embedded at build time
(`build_bundle.py --config FILE key=value ...`), else the built-in defaults, with `key=value` overrides after it.

Locally: `python kernel_train.py --data COMPETITION --artifacts RUN --config configs/smoke.yaml`. On several GPUs:
`torchrun --nproc_per_node 2 kernel_train.py ...` (rank 0 writes the run folder and its dataset metadata).
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from spread.config import Config, compose_config, load_config
from spread.discovery import find_competition_dir, working_dir
from spread.errors import ConfigError, SpreadError
from spread.publish import PLACEHOLDER_OWNER, write_dataset_metadata
from spread.runlog import score_headline
from spread.trainer import train

log = logging.getLogger("kernel_train")
DEFAULT_KERNEL_ID = f"{PLACEHOLDER_OWNER}/spread-mitsui"
DEFAULT_TITLE = "spread mitsui"
SYNTHETIC_DIR = "synthetic-data"


# %%
def repository_root() -> Path | None:
    """The folder of this file when it runs from the repository (a notebook or the bundle has none)."""
    path = globals().get("__file__")
    return Path(path).resolve().parent if path and not str(path).startswith("<") else None


def embedded_resources() -> tuple[dict[str, str], dict, dict | None, str]:
    """(configs by name, kernel metadata, build config, its origin): embedded by build_bundle.py, else read from the
    repository (which has no build config)."""
    try:
        import spread_bundle

        return (dict(spread_bundle.CONFIGS), dict(spread_bundle.KERNEL_METADATA), spread_bundle.BUILD_CONFIG,
                spread_bundle.BUILD_CONFIG_ORIGIN)
    except ImportError:
        pass
    root = repository_root()
    if root is None:
        return {}, {}, None, ""
    configs = {path.stem: path.read_text() for path in sorted((root / "configs").glob("*.yaml"))}
    metadata_file = root / "kernel-metadata.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
    return configs, metadata, None, ""


def resolve_config(
    name: str | None, overrides: list[str], configs: dict[str, str], built: dict | None = None, origin: str = ""
) -> Config:
    """A config file or an embedded config by name (`smoke` or `configs/smoke.yaml`), else the build config
    `built` (from `build_bundle.py --config`), else the built-in defaults; `overrides` on top of any of them."""
    if name is None:
        if built is None:
            return load_config(None, overrides)
        log.info("config embedded at build time: %s", origin)
        return compose_config(built, overrides, f"config embedded at build time ({origin})")
    if Path(name).is_file():
        return load_config(name, overrides)
    key = Path(name).stem
    if key not in configs:
        raise ConfigError(f"{name}: no such config file, and no embedded config of that name ({sorted(configs)})")
    return compose_config(yaml.safe_load(configs[key]) or {}, overrides, f"embedded config {key}")


def weights_dataset(kernel_metadata: dict) -> tuple[str, str, str]:
    """(owner, slug, title) of the weights dataset `<owner>/<slug>-weights` that the kernel's output describes."""
    owner, slug = str(kernel_metadata.get("id", DEFAULT_KERNEL_ID)).split("/", 1)
    if owner == PLACEHOLDER_OWNER:
        log.warning("the kernel ids use the placeholder owner %r (build with build_bundle.py --owner USER)", owner)
    # build_bundle.py names the train kernel `<id>-train` / "<title> train"; the dataset is named after `<id>`.
    title = str(kernel_metadata.get("title", DEFAULT_TITLE)).removesuffix(" train")
    return owner, f"{slug.removesuffix('-train')}-weights", f"{title} weights"


def competition_folder(explicit: Path | None, preset: str, seed: int) -> Path:
    """`explicit`, else the competition under the inputs, else the synthetic default (generated once, by a single
    process: under torchrun the ranks would race to write it, so there the data must be given)."""
    if explicit is not None:
        found = find_competition_dir(explicit)
        if found is None:
            raise ConfigError(f"--data {explicit}: no target_pairs.csv in it or below it")
        return found
    found = find_competition_dir()
    if found is not None:
        return found
    from spread.synth import generate

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("no competition folder found: under torchrun pass --data (or attach the competition)")
    synthetic = working_dir() / SYNTHETIC_DIR
    if not (synthetic / "target_pairs.csv").is_file():
        log.info("no competition folder found: generating the synthetic default (%s preset) in %s", preset, synthetic)
        generate(synthetic, seed=seed, preset=preset)
    return synthetic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Known options only: a notebook kernel passes its own arguments, which are ignored."""
    parser = argparse.ArgumentParser(description="spread training kernel")
    parser.add_argument("--data", type=Path, help="competition folder (default: found under /kaggle/input)")
    parser.add_argument("--artifacts", type=Path, help="run folder to write (default: <working dir>/artifacts)")
    parser.add_argument("--config", help="config file or embedded config name (default: the config embedded "
                        "by build_bundle.py --config, else the built-in defaults)")
    parser.add_argument("--preset", default="mitsui", help="synthetic preset when no data is found (default mitsui)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run folder from its last checkpoints")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.info("ignoring arguments %s", unknown)
    args.overrides = [item for item in args.overrides if "=" in item]
    return args


# %%
def main(argv: list[str] | None = None) -> int:
    """The kernel's run; a bad argument, config or data folder is one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return run_kernel(parse_args(argv))
    except SpreadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_kernel(args: argparse.Namespace) -> int:
    configs, kernel_metadata, built, origin = embedded_resources()
    cfg = resolve_config(args.config, args.overrides, configs, built, origin)
    data_dir = competition_folder(args.data, args.preset, args.seed)
    out = args.artifacts or working_dir() / "artifacts"
    log.info("training on %s into %s", data_dir, out)
    summary = train(cfg, data_dir, out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    write_dataset_metadata(out, *weights_dataset(kernel_metadata))
    if summary:
        print(score_headline(summary))
    print(f"artefacts in {out}; publish them with: kaggle datasets create -p {out} --dir-mode zip")
    return 0


# %%
if __name__ == "__main__":
    exit_code = main()
    if exit_code:
        raise SystemExit(exit_code)
