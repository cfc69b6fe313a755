"""Folder discovery, the single-file kernels and their metadata, validated offline by the real `kaggle` CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spread.checkpoint import write_manifest
from spread.cli import main
from spread.config import config_to_dict, load_config
from spread.discovery import find_competition_dir, find_run_dir
from spread.errors import ConfigError

from conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import build_bundle  # noqa: E402  (a top-level script of the repository)


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _finished_run(run: Path) -> Path:
    """A run folder as the trainer leaves it, as far as publishing cares: artefacts and a valid manifest."""
    _touch(run / "fold_0/best.pt")
    _touch(run / "prior.json", "{}")
    write_manifest(run, ["fold_0/best.pt"])
    return run


# ----------------------------------------------------------------------------------------------------------------
# discovery


@pytest.mark.parametrize(
    "layout",
    ["mitsui-commodity-prediction-challenge", "competitions/mitsui/mitsui-commodity-prediction-challenge"],
)
def test_competition_found_in_classic_and_newer_layouts(tmp_path: Path, layout: str) -> None:
    comp = tmp_path / "input" / layout
    _touch(comp / "target_pairs.csv")
    _touch(comp / "train.csv")
    _touch(tmp_path / "input" / "datasets/me/other/readme.txt")
    assert find_competition_dir(roots=[tmp_path / "input"]) == comp


def test_competition_prefers_the_folder_with_train_and_the_official_slug(tmp_path: Path) -> None:
    _touch(tmp_path / "a-pairs-only/target_pairs.csv")
    _touch(tmp_path / "b-synthetic/target_pairs.csv")
    _touch(tmp_path / "b-synthetic/train.csv")
    official = tmp_path / "c/mitsui-commodity-prediction-challenge"
    _touch(official / "target_pairs.csv")
    _touch(official / "train.csv")
    assert find_competition_dir(roots=[tmp_path]) == official


def test_explicit_paths_win_and_nothing_found_is_none(tmp_path: Path) -> None:
    _touch(tmp_path / "kaggle/comp/target_pairs.csv")
    local = tmp_path / "local"
    _touch(local / "target_pairs.csv")
    assert find_competition_dir(local, roots=[tmp_path / "kaggle"]) == local
    assert find_competition_dir(roots=[tmp_path / "nowhere"]) is None
    assert find_run_dir(roots=[tmp_path]) is None


def test_run_folder_found_deep_in_a_kernel_output(tmp_path: Path) -> None:
    run = tmp_path / "input/notebooks/me/spread-mitsui-train/artifacts"
    _touch(run / "manifest.json", "{}")
    _touch(run / "fold_0/manifest.json", "{}")  # a deeper one loses to the shallowest
    assert find_run_dir(roots=[tmp_path / "input"]) == run
    assert find_run_dir(tmp_path / "input/notebooks") == run


def test_search_survives_symlink_loops(tmp_path: Path) -> None:
    _touch(tmp_path / "a/b/target_pairs.csv")
    os.symlink(tmp_path / "a", tmp_path / "a/b/loop")
    assert find_competition_dir(roots=[tmp_path]) == tmp_path / "a/b"


# ----------------------------------------------------------------------------------------------------------------
# the bundle


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build_bundle.build(out)
    return out


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("notebooks")
    build_bundle.build(out, notebook=True)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_builds_are_byte_identical(dist: Path, tmp_path: Path) -> None:
    build_bundle.build(tmp_path / "again")
    assert _files(dist) == _files(tmp_path / "again")
    assert sorted(_files(dist)) == [
        "infer/kernel-metadata.json", "infer/kernel_infer.py", "train/dataset-metadata.json",
        "train/kernel-metadata.json", "train/kernel_train.py",
    ]


def test_metadata_of_each_kernel(dist: Path) -> None:
    base = json.loads((REPO / "kernel-metadata.json").read_text())
    owner, slug = base["id"].split("/")
    train = json.loads((dist / "train/kernel-metadata.json").read_text())
    infer = json.loads((dist / "infer/kernel-metadata.json").read_text())
    assert train["id"] == f"{owner}/{slug}-train" and train["code_file"] == "kernel_train.py"
    assert train["enable_gpu"] is True and train["enable_internet"] is False
    assert infer["id"] == base["id"] and infer["code_file"] == "kernel_infer.py"
    assert infer["enable_internet"] is False and infer["enable_gpu"] is base["enable_gpu"]
    for meta in (train, infer):
        assert meta["competition_sources"] == ["mitsui-commodity-prediction-challenge"]
        assert meta["kernel_type"] == "script" and meta["language"] == "python"
    assert infer["kernel_sources"] == [train["id"]]
    dataset = build_bundle.kernel_metadata(base, "infer", "kernel_infer.py", notebook=False, weights="dataset")
    assert dataset["dataset_sources"] == [f"{owner}/{slug}-weights"] and dataset["kernel_sources"] == []


def _hidden_env() -> dict[str, str]:
    """No `spread` on the path: PYTHONPATH cleared; the subprocesses also run outside the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _notebook_as_script(notebook: Path, out: Path) -> Path:
    cells = json.loads(notebook.read_text())["cells"]
    out.write_text("\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"))
    return out


PROBE = """
import contextlib, io, json, runpy, sys
results = {}
for name, path in json.loads(sys.argv[1]).items():
    sys.argv = [path, "--help", "-f", "kernel.json"]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        code = exc.code or 0
    results[name] = {"code": code, "stdout": out.getvalue()}
import spread.infer, spread_bundle
results["module_file"] = spread.infer.__file__
results["kernel_id"] = spread_bundle.KERNEL_METADATA["id"]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def probe(dist: Path, notebooks: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One interpreter outside the repository runs `--help` of every built kernel (scripts and a notebook)."""
    work = tmp_path_factory.mktemp("probe")
    scripts = {
        "train": str(dist / "train/kernel_train.py"),
        "infer": str(dist / "infer/kernel_infer.py"),
        "notebook": str(_notebook_as_script(notebooks / "infer/kernel_infer.ipynb", work / "nb_infer.py")),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(scripts)], cwd=work, env=_hidden_env(), capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_package_is_hidden_outside_the_repository(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import spread"], cwd=tmp_path, env=_hidden_env(), capture_output=True, text=True
    )
    assert result.returncode != 0 and "No module named 'spread'" in result.stderr


@pytest.mark.parametrize("kind", ["train", "infer", "notebook"])
def test_bundled_kernels_import_the_embedded_package(probe: dict, kind: str) -> None:
    assert probe[kind]["code"] == 0
    assert "--data" in probe[kind]["stdout"] and "--artifacts" in probe[kind]["stdout"]


def test_embedded_modules_report_their_bundle_file(probe: dict) -> None:
    assert probe["module_file"] == "<bundle>/spread/infer.py"
    assert probe["kernel_id"] == json.loads((REPO / "kernel-metadata.json").read_text())["id"]


def test_notebooks_are_valid_and_deterministic(notebooks: Path, tmp_path: Path) -> None:
    build_bundle.build(tmp_path / "again", notebook=True)
    assert _files(notebooks) == _files(tmp_path / "again")
    meta = json.loads((notebooks / "infer/kernel-metadata.json").read_text())
    assert meta["kernel_type"] == "notebook" and meta["code_file"] == "kernel_infer.ipynb"
    notebook = json.loads((notebooks / "infer/kernel_infer.ipynb").read_text())
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert kinds[0] == "markdown" and kinds.count("code") >= 5
    assert [cell["id"] for cell in notebook["cells"]] == [f"cell-{i:03d}" for i in range(len(kinds))]


# ----------------------------------------------------------------------------------------------------------------
# what each bundle embeds: the kernel's import closure, in dependency order, with a table of contents

TRAINING_LOOP = {"spread.fit", "spread.trainer", "spread.optim"}


def _lab(names: set[str]) -> list[str]:
    return sorted(name for name in names if name == "spread.lab" or name.startswith("spread.lab."))


def test_inference_bundle_embeds_neither_the_training_loop_nor_the_lab(dist: Path) -> None:
    embedded = set(_embedded(dist / "infer/kernel_infer.py"))
    assert not embedded & (TRAINING_LOOP | {"spread.cli", "spread.__main__"}), sorted(embedded)
    assert not _lab(embedded)
    # Negative control: kernel_infer.py -> spread.infer reaches these only through imports inside functions.
    assert {"spread", "spread.infer", "spread.forecast", "spread.checkpoint", "spread.prior"} <= embedded


def test_train_bundle_embeds_the_trainer_and_not_the_lab(dist: Path) -> None:
    embedded = set(_embedded(dist / "train/kernel_train.py"))
    assert TRAINING_LOOP | {"spread.synth", "spread.publish", build_bundle.RESOURCE_MODULE} <= embedded
    assert not _lab(embedded) and "spread.cli" not in embedded


def test_bundles_embed_each_module_after_the_modules_it_imports(dist: Path) -> None:
    modules = build_bundle.package_modules(REPO / "spread")
    for kind, stem in build_bundle.KERNELS.items():
        graph = build_bundle.import_closure(REPO / f"{stem}.py", modules)
        order = list(_embedded(dist / kind / f"{stem}.py"))
        assert order[-1] == build_bundle.RESOURCE_MODULE and sorted(order[:-1]) == sorted(graph)
        for name, imports in graph.items():
            assert all(order.index(other) < order.index(name) for other in imports), (name, imports)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        _touch(root / name, text)


def test_closure_follows_every_import_form(tmp_path: Path) -> None:
    _write(tmp_path, {
        "kernel.py": "import json\nimport spread.a as z\n\n\ndef main():\n    from spread.sub.c import f\n",
        "spread/__init__.py": "",
        "spread/a.py": "from .b import x\n",
        "spread/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spread import never\nelse:\n"
                       "    x = 1\n\n\ndef g():\n    from spread import d, NAME\n",
        "spread/d.py": "NAME = 1\n", "spread/never.py": "", "spread/unused.py": "",
        "spread/sub/__init__.py": "", "spread/sub/c.py": "from .. import e\n\n\ndef f():\n    pass\n",
        "spread/e.py": "",
    })
    modules = build_bundle.package_modules(tmp_path / "spread")
    graph = build_bundle.import_closure(tmp_path / "kernel.py", modules)
    # spread.d comes through a function-level `from spread import d`, spread.sub with its module spread.sub.c,
    # spread.e through `from .. import e`; a TYPE_CHECKING import and a module nobody imports stay out.
    assert graph == {
        "spread": set(), "spread.a": {"spread", "spread.b"}, "spread.b": {"spread", "spread.d"}, "spread.d": set(),
        "spread.sub": set(), "spread.sub.c": {"spread", "spread.e"}, "spread.e": set(),
    }
    sources, packages = build_bundle.kernel_sources(tmp_path / "kernel.py", modules)
    assert list(sources) == ["spread", "spread.d", "spread.b", "spread.a", "spread.e", "spread.sub", "spread.sub.c"]
    assert packages == ["spread", "spread.sub"]


def test_dependency_order_breaks_ties_by_layer_and_stops_at_a_cycle() -> None:
    graph = {"zz": set(), "spread.lab.x": set(), "spread.trainer": {"spread.model"}, "spread.model": set(),
             "spread.features": set()}
    assert build_bundle.dependency_order(graph) == [
        "spread.features", "spread.model", "spread.trainer", "spread.lab.x", "zz"]
    assert build_bundle.dependency_order({"spread.errors": {"spread.infer"}, "spread.infer": set()}) == [
        "spread.infer", "spread.errors"]  # an import edge outranks the layers
    with pytest.raises(SystemExit, match=r"import cycle.*'spread.a', 'spread.b'"):
        build_bundle.dependency_order({"spread.a": {"spread.b"}, "spread.b": {"spread.a"}, "spread.c": set()})


def test_every_kernel_core_module_has_its_layer() -> None:
    layered = [name for layer in build_bundle.LAYERS for name in layer]
    core = {name for name in build_bundle.package_modules(REPO / "spread") if not name.startswith("spread.lab")}
    assert len(layered) == len(set(layered)) and set(layered) == core - {"spread.cli", "spread.__main__"}


def _contents(header: str) -> dict[str, int]:
    return {name: int(line) for name, line in re.findall(r"^# - `([\w.]+)`: line (\d+)$", header, re.MULTILINE)}


def test_contents_give_the_line_of_every_module(dist: Path, notebooks: Path) -> None:
    for kind, stem in build_bundle.KERNELS.items():
        text = (dist / kind / f"{stem}.py").read_text()
        lines = text.splitlines()
        contents = _contents(text[: text.index("# %%\n")])
        assert list(contents) == list(_embedded(dist / kind / f"{stem}.py"))
        for name, line in contents.items():
            assert lines[line - 1] == f"_SPREAD_SOURCES[{name!r}] = ("
        # Line N of a module in a traceback is the contents' line + N of the bundled file.
        source = (REPO / "spread/config.py").read_text().splitlines()
        for number in (1, len(source) // 2, len(source)):
            assert lines[contents["spread.config"] + number - 1] == "    " + repr(source[number - 1] + "\n")
        cells = json.loads((notebooks / kind / f"{stem}.ipynb").read_text())["cells"]
        cell = "".join(cells[1]["source"]).splitlines()
        for name, line in _contents("# " + "# ".join(cells[0]["source"])).items():
            assert cell[line - 1] == f"_SPREAD_SOURCES[{name!r}] = ("


def test_only_the_kernels_that_read_configs_carry_them(dist: Path) -> None:
    train: dict = {}
    exec(_resource_module(dist / "train/kernel_train.py"), train)  # noqa: S102 - our own build output
    assert sorted(train["CONFIGS"]) == sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))
    infer: dict = {}
    exec(_resource_module(dist / "infer/kernel_infer.py"), infer)  # noqa: S102
    assert infer["CONFIGS"] == {} and infer["BUILD_CONFIG"] is None
    assert infer["KERNEL_METADATA"]["code_file"] == "kernel_infer.py"
    # The infer kernel reads nothing from spread_bundle: it rebuilds each model from its checkpoint's config.
    embedded = _embedded(dist / "infer/kernel_infer.py")
    code = {"kernel_infer.py": (REPO / "kernel_infer.py").read_text(), **embedded}
    del code[build_bundle.RESOURCE_MODULE]
    assert not [name for name, text in code.items() if build_bundle.RESOURCE_MODULE in text]


# ----------------------------------------------------------------------------------------------------------------
# offline validation by the real kaggle CLI

KAGGLE_RUNNER = """
import contextlib, io, json, sys
from kaggle.cli import main
outputs = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["kaggle", *args]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            main()
        except SystemExit:
            pass
    outputs.append(buffer.getvalue())
print(json.dumps(outputs))
"""


def _kaggle(commands: list[list[str]], work: Path) -> list[str]:
    """Run kaggle CLI commands in one interpreter: dummy credentials, a fresh config dir, requests to a closed port."""
    config = work / "kaggle-config"
    config.mkdir(exist_ok=True)
    env = _hidden_env()
    closed = "http://127.0.0.1:9"
    env.update(
        KAGGLE_USERNAME="dummyuser", KAGGLE_KEY="0" * 32, KAGGLE_CONFIG_DIR=str(config), HTTPS_PROXY=closed,
        HTTP_PROXY=closed, https_proxy=closed, http_proxy=closed, NO_PROXY="", no_proxy="",
    )
    result = subprocess.run(
        [sys.executable, "-c", KAGGLE_RUNNER, json.dumps(commands)], cwd=work, env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kaggle_outputs(dist: Path, notebooks: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What `kaggle kernels push` / `kaggle datasets create` print for each built folder and a broken one."""
    if importlib.util.find_spec("kaggle") is None:
        pytest.skip("kaggle CLI not installed")
    work = tmp_path_factory.mktemp("kaggle")
    _touch(work / "bad/x.py")
    _touch(work / "bad/kernel-metadata.json", json.dumps(
        {"id": "me/abc", "code_file": "x.py", "language": "python", "kernel_type": "script"}))
    run = _finished_run(work / "run")
    assert main(["publish", str(run), "--owner", "dummyuser"]) == 0  # what the README tells a user to run
    folders = {
        "bad": work / "bad", "train": dist / "train", "infer": dist / "infer",
        "train-notebook": notebooks / "train", "infer-notebook": notebooks / "infer",
    }
    commands = [["kernels", "push", "-p", str(folder)] for folder in folders.values()]
    commands.append(["datasets", "create", "-p", str(run), "--dir-mode", "zip"])
    commands.append(["datasets", "create", "-p", str(dist / "train")])
    return dict(zip([*folders, "dataset", "bundle-dataset"], _kaggle(commands, work)))


def test_kaggle_cli_rejects_invalid_metadata_before_the_network(kaggle_outputs: dict[str, str]) -> None:
    """What a metadata error looks like: the CLI never reaches its request."""
    output = kaggle_outputs["bad"]
    assert "slug must be at least five characters" in output and "SaveKernel" not in output


@pytest.mark.parametrize("name", ["train", "infer", "train-notebook", "infer-notebook"])
def test_kaggle_cli_accepts_every_kernel_folder(kaggle_outputs: dict[str, str], name: str) -> None:
    output = kaggle_outputs[name]
    # Reaching the SaveKernel request means every metadata check passed; it then fails at the closed port.
    assert "KernelsApiService/SaveKernel" in output, output
    assert "Connection refused" in output or "ProxyError" in output, output


@pytest.mark.parametrize("name", ["dataset", "bundle-dataset"])
def test_kaggle_cli_accepts_the_dataset_metadata(kaggle_outputs: dict[str, str], name: str) -> None:
    """The published run (`spread publish`) and the bundled train script (for torchrun in a notebook)."""
    output = kaggle_outputs[name]
    assert "DatasetApiService/" in output and "must be" not in output, output


# ----------------------------------------------------------------------------------------------------------------
# the infer kernel's choice of server

FAKE_SERVER = '''
CALLS = []


class MitsuiInferenceServer:
    def __init__(self, *endpoints):
        CALLS.append(("init", [endpoint.__name__ for endpoint in endpoints]))

    def serve(self):
        CALLS.append(("serve",))

    def run_local_gateway(self, data_paths=None):
        CALLS.append(("run_local_gateway", data_paths))
'''


def _kernel_infer(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [n for n in sys.modules if n.split(".")[0] in ("kaggle_evaluation", "mitsui_gateway")]:
        monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location("kernel_infer_under_test", REPO / "kernel_infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_fake_server(competition: Path) -> None:
    _touch(competition / "kaggle_evaluation/__init__.py", "")
    _touch(competition / "kaggle_evaluation/mitsui_inference_server.py", FAKE_SERVER)


def test_rerun_serves_through_the_official_server(tiny_competition: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_server(tiny_competition)
    kernel = _kernel_infer(monkeypatch)
    monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "1")
    assert kernel.main(["--data", str(tiny_competition), "-f", "ignored.json"]) == 0
    calls = sys.modules["kaggle_evaluation.mitsui_inference_server"].CALLS
    assert calls == [("init", ["predict"]), ("serve",)]


def test_official_local_gateway_only_under_polars_1(
    tiny_competition: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_fake_server(tiny_competition)
    kernel = _kernel_infer(monkeypatch)
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    monkeypatch.setattr(kernel, "official_local_gateway_works", lambda: True)
    assert kernel.main(["--data", str(tiny_competition)]) == 0
    calls = sys.modules["kaggle_evaluation.mitsui_inference_server"].CALLS
    assert calls[-1] == ("run_local_gateway", (str(tiny_competition),))

    monkeypatch.setattr(kernel, "official_local_gateway_works", lambda: False)
    out = tmp_path / "sub.parquet"
    # the project's gateway; no run folder: every call falls back, which exits 1 outside the rerun (issue 12)
    assert kernel.main(["--data", str(tiny_competition), "--out", str(out)]) == 1
    assert calls[-1][0] == "run_local_gateway" and len(calls) == 2 and out.is_file()


def test_infer_kernel_without_competition_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = _kernel_infer(monkeypatch)
    assert kernel.main(["--data", str(tmp_path)]) == 2


def test_infer_kernel_refuses_a_bad_deadline_or_artifacts_folder_outside_the_rerun(
    tiny_competition: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = _kernel_infer(monkeypatch)
    monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    assert kernel.main(["--data", str(tiny_competition), "--deadline", "-1"]) == 2
    assert kernel.main(["--data", str(tiny_competition), "--artifacts", str(tiny_competition / "nosuch")]) == 2


def test_train_kernel_usage_errors_are_one_line_and_exit_2(tiny_competition: Path, tmp_path: Path, capsys) -> None:
    kernel = _kernel_train()
    argv = ["--data", str(tiny_competition), "--artifacts", str(tmp_path / "a"), "--config", "smoke"]
    assert kernel.main([*argv, "model.dmodel=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean model.d_model?" in err and "Traceback" not in err and not (tmp_path / "a").exists()
    assert kernel.main(["--data", str(tmp_path / "missing"), "--artifacts", str(tmp_path / "b")]) == 2


# ----------------------------------------------------------------------------------------------------------------
# the train kernel's config and dataset metadata


def _kernel_train():
    spec = importlib.util.spec_from_file_location("kernel_train_under_test", REPO / "kernel_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_kernel_resolves_configs_by_name_or_path() -> None:
    kernel = _kernel_train()
    configs, metadata, built, _ = kernel.embedded_resources()
    assert "smoke" in configs and metadata["id"] == json.loads((REPO / "kernel-metadata.json").read_text())["id"]
    assert built is None  # the repository has no build config; a bundle built with --config has
    by_name = kernel.resolve_config("smoke", ["train.epochs=1"], configs)
    by_path = kernel.resolve_config(str(REPO / "configs/smoke.yaml"), ["train.epochs=1"], configs)
    assert by_name == by_path == load_config(REPO / "configs/smoke.yaml", ["train.epochs=1"])
    assert kernel.resolve_config(None, [], configs) == load_config(None)
    with pytest.raises(ConfigError, match="no embedded config"):
        kernel.resolve_config("no-such-config", [], configs)
    with pytest.raises(ConfigError, match=r"command-line override.*did you mean model\.d_model\?"):
        kernel.resolve_config("smoke", ["model.d_modle=8"], configs)


def test_train_kernel_prefers_the_build_config_unless_told_otherwise() -> None:
    kernel = _kernel_train()
    configs, *_ = kernel.embedded_resources()
    built = config_to_dict(load_config(None, ["model.d_model=48", "model.n_heads=4"]))
    cfg = kernel.resolve_config(None, ["train.epochs=2"], configs, built, "x.yaml")
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.train.epochs) == (48, 4, 2)
    assert kernel.resolve_config("smoke", [], configs, built, "x.yaml") == load_config(REPO / "configs/smoke.yaml")
    with pytest.raises(ConfigError, match="train.epochs"):
        kernel.resolve_config(None, ["train.epochs=0"], configs, built, "x.yaml")


def test_weights_dataset_is_the_one_the_infer_kernel_attaches() -> None:
    base = build_bundle.with_owner(json.loads((REPO / "kernel-metadata.json").read_text()), "alice")
    train = build_bundle.kernel_metadata(base, "train", "kernel_train.py", notebook=False)
    infer = build_bundle.kernel_metadata(base, "infer", "kernel_infer.py", notebook=False, weights="dataset")
    owner, slug, title = _kernel_train().weights_dataset(train)
    assert infer["dataset_sources"] == [f"{owner}/{slug}"] == ["alice/spread-mitsui-weights"]
    assert title == "spread mitsui weights"


# ----------------------------------------------------------------------------------------------------------------
# build options: --owner, --config


def test_owner_goes_into_every_id(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folders = build_bundle.build(tmp_path / "dist", owner="alice", weights="dataset")
    assert "placeholder" not in capsys.readouterr().err
    train = json.loads((folders["train"] / "kernel-metadata.json").read_text())
    infer = json.loads((folders["infer"] / "kernel-metadata.json").read_text())
    assert train["id"] == "alice/spread-mitsui-train" and infer["id"] == "alice/spread-mitsui"
    assert infer["dataset_sources"] == ["alice/spread-mitsui-weights"]
    assert '"id": "alice/spread-mitsui-train"' in (folders["train"] / "kernel_train.py").read_text()
    assert json.loads((folders["train"] / "dataset-metadata.json").read_text())["id"] == "alice/spread-mitsui-bundle"


def test_placeholder_owner_warns_and_a_bad_owner_stops_the_build(tmp_path: Path, capsys) -> None:
    build_bundle.build(tmp_path / "dist")
    assert "--owner" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--owner 'a b'"):
        build_bundle.build(tmp_path / "bad", owner="a b")
    assert not (tmp_path / "bad").exists()


def test_a_rebuild_replaces_its_own_files_and_never_removes_the_users(tmp_path: Path, capsys) -> None:
    dist = tmp_path / "dist"
    build_bundle.build(dist, notebook=True)
    build_bundle.build(dist)  # over an earlier build: its notebook goes, the script comes
    assert sorted(p.name for p in (dist / "infer").iterdir()) == ["kernel-metadata.json", "kernel_infer.py"]
    notes = dist / "train" / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(SystemExit, match=r"train: holds files a build does not write \(notes.txt\)"):
        build_bundle.build(dist)
    assert notes.read_text() == "mine" and (dist / "infer" / "kernel_infer.py").is_file()  # nothing touched
    assert build_bundle.main(["--out", str(dist)]) == 2  # a usage error, one line
    assert build_bundle.main(["--out", str(tmp_path / "other"), "model.d_model=abc"]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_build_config_is_validated_and_embedded(tmp_path: Path) -> None:
    overrides = ["train.epochs=3", "model.dropout=0.2"]
    folders = build_bundle.build(tmp_path / "dist", config=REPO / "configs/smoke.yaml", overrides=overrides)
    namespace: dict = {}
    exec(_resource_module(folders["train"] / "kernel_train.py"), namespace)  # noqa: S102 - our own build output
    assert namespace["BUILD_CONFIG"] == config_to_dict(load_config(REPO / "configs/smoke.yaml", overrides))
    assert namespace["BUILD_CONFIG_ORIGIN"].endswith("configs/smoke.yaml train.epochs=3 model.dropout=0.2")
    infer: dict = {}
    exec(_resource_module(folders["infer"] / "kernel_infer.py"), infer)  # noqa: S102
    assert infer["BUILD_CONFIG"] is None
    with pytest.raises(SystemExit, match=r"did you mean model\.d_model\?"):
        build_bundle.build(tmp_path / "bad", config=REPO / "configs/smoke.yaml", overrides=["model.d_modle=8"])
    with pytest.raises(SystemExit, match="missing.yaml"):
        build_bundle.build(tmp_path / "bad", config=tmp_path / "missing.yaml")
    assert not (tmp_path / "bad").exists()


def _embedded(kernel: Path) -> dict[str, str]:
    """The modules embedded in a built kernel script: name -> source, in the bundle's order."""
    namespace: dict = {}
    text = kernel.read_text()
    exec(text[: text.index("_SPREAD_PACKAGES = ")], namespace)  # noqa: S102 - the sources dict only
    return namespace["_SPREAD_SOURCES"]


def _resource_module(kernel: Path) -> str:
    """The source of the `spread_bundle` module embedded in a built kernel."""
    return _embedded(kernel)[build_bundle.RESOURCE_MODULE]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_bundled_train_kernel_under_torchrun_writes_one_run_folder(small: Path, tmp_path: Path) -> None:
    """Kaggle's T4 x2 path, on 2 gloo CPU processes: torchrun on the bundled script, config embedded at build."""
    from spread.checkpoint import verify_manifest
    data = small
    folders = build_bundle.build(tmp_path / "dist", owner="alice", overrides=[*TINY_RUN, "split.n_folds=0"])
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(folders["train"] / "kernel_train.py"), "--data", str(data), "--artifacts", "run", "train.epochs=1"]
    done = subprocess.run(command, cwd=work, env=_hidden_env() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(path.name for path in work.iterdir()) == ["run"]
    run = work / "run"
    verify_manifest(run)
    assert json.loads((run / "summary.json").read_text())["run"]["world_size"] == 2
    resolved = load_config(run / "config.yaml")
    assert (resolved.model.d_model, resolved.train.epochs) == (8, 1)  # build config, then the kernel's override
    assert json.loads((run / "dataset-metadata.json").read_text())["id"] == "alice/spread-mitsui-weights"
    assert done.stdout.count("honest validation score") == 1  # rank 0 alone reports
