"""`python -m spread publish`: dataset-metadata.json for a finished run, within the limits the kaggle CLI checks
(the CLI's own offline check of a published run is in tests/test_bundle.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spread.checkpoint import write_manifest
from spread.cli import main
from spread.errors import ArtifactError, ConfigError
from spread.publish import DATASET_METADATA, DEFAULT_SLUG, dataset_metadata, write_dataset_metadata


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0/best.pt").write_bytes(b"x")
    (run / "prior.json").write_text("{}")
    write_manifest(run, ["fold0/best.pt"])
    return run


def test_publish_writes_the_dataset_metadata(finished_run: Path, capsys) -> None:
    assert main(["publish", str(finished_run), "--owner", "alice"]) == 0
    meta = json.loads((finished_run / DATASET_METADATA).read_text())
    assert meta["id"] == f"alice/{DEFAULT_SLUG}" and meta["title"] == "spread mitsui weights"
    assert meta["licenses"] == [{"name": "CC0-1.0"}] and 20 <= len(meta["subtitle"]) <= 80
    assert f"kaggle datasets create -p {finished_run} --dir-mode zip" in capsys.readouterr().out
    assert main(["publish", str(finished_run), "--owner", "bob", "--slug", "my-run-42", "--title", "My run 42"]) == 0
    meta = json.loads((finished_run / DATASET_METADATA).read_text())
    assert (meta["id"], meta["title"]) == ("bob/my-run-42", "My run 42")


@pytest.mark.parametrize(
    ("owner", "slug", "title", "named"),
    [("a b", DEFAULT_SLUG, None, "--owner 'a b'"), ("", DEFAULT_SLUG, None, "--owner ''"),
     ("alice", "short", None, "--slug 'short'"), ("alice", "Upper-Case", None, "--slug"),
     ("alice", "x" * 51, None, "--slug"), ("alice", "trailing-", None, "--slug"),
     ("alice", DEFAULT_SLUG, "tiny", "--title 'tiny'"), ("alice", DEFAULT_SLUG, "t" * 51, "--title")],
)
def test_names_kaggle_would_refuse_are_errors(owner: str, slug: str, title: str | None, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("'", ".").replace("*", r"\*")):
        dataset_metadata(owner, slug, title)


def test_nothing_is_written_for_a_bad_name_or_an_unfinished_run(finished_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        write_dataset_metadata(finished_run, "alice", slug="no")
    assert not (finished_run / DATASET_METADATA).exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(ArtifactError, match="manifest not found"):
        write_dataset_metadata(unfinished, "alice")
    assert list(unfinished.iterdir()) == []
