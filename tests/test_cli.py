"""The command line: every command has --help, and `score` prints the competition score on its last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.cli import build_parser, main, parse_args
from spread.metrics import rank_correlation_sharpe


def test_every_command_has_help(capsys) -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse exposes no API
    assert {"synth", "check-labels", "score", "train", "gateway", "make-competition", "realdata", "baseline",
            "tune", "bench"} <= set(commands)
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


def test_module_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "spread", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "check-labels" in result.stdout


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
