"""The command line: every command has --help, and `score` prints the competition score on its last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from spread.cli import build_parser, main, parse_args
from spread.metrics import rank_correlation_sharpe


def test_every_command_has_help(capsys) -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse exposes no API
    assert {"synth", "check-labels", "score", "train", "gateway", "make-competition", "realdata", "baseline",
            "tune", "bench", "config", "plots", "publish"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_score_command_matches_the_metric(tmp_path: Path, tiny_competition: Path, capsys) -> None:
    labels = pl.read_csv(tiny_competition / "train_labels.csv")
    rng = np.random.default_rng(0)
    noisy = labels.with_columns([(pl.col(c) + rng.normal(0, 0.01, labels.height)).alias(c) for c in labels.columns[1:]])
    noisy.write_parquet(tmp_path / "pred.parquet")
    assert main(["score", "--solution", str(tiny_competition / "train_labels.csv"),
                 "--submission", str(tmp_path / "pred.parquet"), "--test", str(tiny_competition / "test.csv")]) == 0
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    scored = labels.filter(pl.col("date_id").is_in([22, 23, 24, 25]))
    want = rank_correlation_sharpe(scored.drop("date_id").to_numpy(),
                                   noisy.filter(pl.col("date_id").is_in([22, 23, 24, 25])).drop("date_id").to_numpy())
    assert printed == pytest.approx(want, abs=1e-6)


def test_score_refuses_what_the_official_scorer_would(tmp_path: Path, tiny_competition: Path, capsys) -> None:
    labels = pl.read_csv(tiny_competition / "train_labels.csv")
    solution, test = str(tiny_competition / "train_labels.csv"), str(tiny_competition / "test.csv")
    cases = {
        "few rows": (labels.filter(pl.col("date_id") < 23), "scored date_id(s) without a row: [23, 24, 25]"),
        "reversed": (labels.select("date_id", *labels.columns[:0:-1]), "missing or out of order from 'target_0'"),
        "extra": (labels.with_columns(extra=pl.lit(0.0)), "unexpected ['extra']"),
        "short": (labels.drop(labels.columns[-1]), f"missing or out of order from {labels.columns[-1]!r}"),
    }
    for name, (frame, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.parquet"
        frame.write_parquet(path)
        assert main(["score", "--solution", solution, "--submission", str(path), "--test", test]) == 2, name
        assert message in capsys.readouterr().err, name
    no_flags = tmp_path / "test.csv"
    pl.read_csv(tiny_competition / "test.csv").drop("is_scored").write_csv(no_flags)
    labels.write_parquet(tmp_path / "whole.parquet")
    assert main(["score", "--solution", solution, "--submission", str(tmp_path / "whole.parquet"),
                 "--test", str(no_flags)]) == 2
    assert "needs the columns date_id and is_scored" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "spread", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "check-labels" in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["synth", "--out", "x", "--seed", "-1"], "--seed: expected an integer >= 0"),
    (["make-competition", "--prices", "p.csv", "--out", "x", "--seed", "-3"], "--seed: expected an integer >= 0"),
    (["check-labels", "d", "--min-share", "2"], "--min-share: expected a share in [0, 1]"),
    (["check-labels", "d", "--tolerance", "-1"], "--tolerance: expected a number >= 0"),
])
def test_out_of_range_arguments_are_usage_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_gateway_run_option_reaches_the_handler() -> None:
    args = build_parser().parse_args(["gateway", "--data", "d", "--run", "r"])
    assert args.run_dir == Path("r") and callable(args.handler)


def test_unknown_baseline_is_a_clear_error(tmp_path: Path, tiny_competition: Path, capsys) -> None:
    code = main(["baseline", "nope", "--data", str(tiny_competition), "--out", str(tmp_path / "run")])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_overrides_may_follow_the_options_of_any_command(capsys) -> None:
    args = parse_args(["baseline", "ridge", "--data", "d", "--out", "o", "split.n_folds=1", "seed=3"])
    assert args.name == "ridge" and args.overrides == ["split.n_folds=1", "seed=3"]
    assert parse_args(["train", "--data", "d", "--out", "o", "seed=3"]).overrides == ["seed=3"]
    score = ["score", "--solution", "s", "--submission", "p", "x=1"]  # score takes no overrides
    for argv in (["baseline", "ridge", "--data", "d", "--out", "o", "--bogus"], score):
        with pytest.raises(SystemExit) as info:
            parse_args(argv)
        assert info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


SMOKE = Path(__file__).resolve().parents[1] / "configs/smoke.yaml"


def test_config_lists_every_key(capsys) -> None:
    from spread.config import config_keys

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == [key for key, *_ in config_keys()]
    assert any(line.split()[:3] == ["model.d_model", "int", "192"] for line in out.splitlines())


def test_config_shows_a_resolved_file_plus_overrides(capsys) -> None:
    assert main(["config", "--show", str(SMOKE), "model.d_model=48", "train.epochs=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["d_model"] == 48 and shown["train"]["epochs"] == 3
    assert shown["model"]["n_layers"] == 2 and shown["data"]["window"] == 16  # from the file
    assert main(["config", "seed=5"]) == 0  # defaults + overrides
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 5


@pytest.mark.parametrize("command", ["config", "train"])
def test_mistyped_override_is_a_command_line_error(command: str, tmp_path: Path, tiny_competition: Path,
                                                   capsys) -> None:
    argv = {"config": ["config", "--show", str(SMOKE)],
            "train": ["train", "--data", str(tiny_competition), "--out", str(tmp_path / "run"), "--config", str(SMOKE)]}
    assert main([*argv[command], "model.d_modle=4"]) == 2
    err = capsys.readouterr().err
    assert "command-line override" in err and "did you mean model.d_model?" in err and "smoke.yaml" not in err


def test_plots_and_publish_refuse_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["plots", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main(["plots", str(tmp_path)]) == 2
    assert "nothing to draw" in capsys.readouterr().err
    assert main(["publish", str(tmp_path), "--owner", "alice"]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "dataset-metadata.json").exists()
