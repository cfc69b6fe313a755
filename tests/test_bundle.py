"""Folder discovery, the single-file kernels and their metadata, validated offline by the real `kaggle` CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spread.discovery import find_competition_dir, find_run_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import build_bundle  # noqa: E402  (a top-level script of the repository)


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


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
        "infer/kernel-metadata.json", "infer/kernel_infer.py", "train/kernel-metadata.json", "train/kernel_train.py",
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
    spec = importlib.util.spec_from_file_location("kernel_train", REPO / "kernel_train.py")
    kernel_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_train)
    run = work / "run"
    _touch(run / "manifest.json", "{}")
    _touch(run / "fold_0/best.pt")
    base = json.loads((REPO / "kernel-metadata.json").read_text())
    _touch(run / kernel_train.DATASET_METADATA, json.dumps(kernel_train.dataset_metadata(base)))
    folders = {
        "bad": work / "bad", "train": dist / "train", "infer": dist / "infer",
        "train-notebook": notebooks / "train", "infer-notebook": notebooks / "infer",
    }
    commands = [["kernels", "push", "-p", str(folder)] for folder in folders.values()]
    commands.append(["datasets", "create", "-p", str(run), "--dir-mode", "zip"])
    return dict(zip([*folders, "dataset"], _kaggle(commands, work)))


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


def test_kaggle_cli_accepts_the_weights_dataset_metadata(kaggle_outputs: dict[str, str]) -> None:
    output = kaggle_outputs["dataset"]
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


# ----------------------------------------------------------------------------------------------------------------
# the train kernel's config and dataset metadata


def _kernel_train():
    spec = importlib.util.spec_from_file_location("kernel_train_under_test", REPO / "kernel_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_kernel_resolves_configs_by_name_or_path() -> None:
    from spread.config import load_config
    from spread.errors import ConfigError

    kernel = _kernel_train()
    configs, metadata = kernel.embedded_resources()
    assert "smoke" in configs and metadata["id"] == json.loads((REPO / "kernel-metadata.json").read_text())["id"]
    by_name = kernel.resolve_config("smoke", ["train.epochs=1"], configs)
    by_path = kernel.resolve_config(str(REPO / "configs/smoke.yaml"), ["train.epochs=1"], configs)
    assert by_name == by_path == load_config(REPO / "configs/smoke.yaml", ["train.epochs=1"])
    assert kernel.resolve_config(None, [], configs) == load_config(None)
    with pytest.raises(ConfigError, match="no embedded config"):
        kernel.resolve_config("no-such-config", [], configs)


def test_weights_dataset_metadata_meets_kaggle_limits() -> None:
    meta = _kernel_train().dataset_metadata(json.loads((REPO / "kernel-metadata.json").read_text()))
    owner, slug = meta["id"].split("/")
    assert 6 <= len(slug) <= 50 and 6 <= len(meta["title"]) <= 50 and 20 <= len(meta["subtitle"]) <= 80
    assert len(meta["licenses"]) == 1
