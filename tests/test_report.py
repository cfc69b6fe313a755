"""The benchmark report's tables on tiny hand-made score cells (the full bench is never run in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from spread.errors import ConfigError
from spread.lab.grid import QUICK, SYNTHETIC, SYNTHETIC_PRESETS, BenchConfig, RunTally, cached_run
from spread.lab.provenance import provenance
from spread.lab.render import read_levers, render_folds, render_quality, render_report
from spread.lab.speed import training_speed
from spread.lab.stats import SCORE_SCHEMA, best_peer, fold_scores, quality_table, summary_cells
from spread.plots import plot_bench_scores

FOLDS = ("fold0", "holdout")
NAN = float("nan")


def _cells(model: str, scores: list[float], train_seed: int | None = None, best_epoch: list[float] | None = None,
           source: str = "synthetic") -> list[dict]:
    return [
        {"source": source, "model": model, "data_seed": 0, "train_seed": train_seed, "fold": fold, "score": score,
         "best_epoch_score": NAN if best_epoch is None else best_epoch[i], "oracle_score": NAN}
        for i, (fold, score) in enumerate(zip(FOLDS, scores))
    ]


@pytest.fixture
def scores() -> pl.DataFrame:
    cells = (
        _cells("mean_rank", [0.2, 0.4])
        + _cells("last_label", [0.9, 0.7])  # the highest mean, but a diagnostic: never the best peer
        + _cells("ridge", [0.5, 0.3])
        + _cells("oracle", [1.0, 2.0])
        + _cells("transformer_default", [0.6, 0.5], train_seed=0, best_epoch=[0.8, NAN])
        + _cells("transformer_default", [0.4, 0.2], train_seed=1, best_epoch=[0.5, NAN])
        + _cells("mean_rank", [0.3, 0.3], source="real")
        + _cells("transformer_default", [0.1, 0.5], train_seed=0, source="real")
    )
    return pl.DataFrame(cells, schema=SCORE_SCHEMA, orient="row")


def test_summary_cells_take_the_honest_score_never_the_best_epoch() -> None:
    trainer = {"folds": {
        "fold0": {"best_epoch": 3, "best_score": 0.9, "metrics": {"score": 0.9}, "best_epoch_score": 0.9,
                  "honest_epochs": 2, "honest_score": 0.4, "oracle_score": 1.2},
        "fold1": {"best_epoch": 1, "best_score": 0.8, "metrics": {"score": 0.8}, "honest_score": None},
        "fold2": {"best_epoch": 2, "best_score": 0.7, "metrics": {"score": 0.7}},  # older summary: no honest score
        "holdout": {"best_epoch": 2, "best_score": 0.5, "metrics": {"score": 0.5}, "epochs": 2, "oracle_score": 1.1},
    }}
    cells = summary_cells(trainer, "synthetic", "transformer_default", 2, 0)
    assert [c["fold"] for c in cells] == ["fold0", "fold1", "fold2", "holdout"]
    assert cells[0]["score"] == 0.4 and cells[0]["best_epoch_score"] == 0.9 and cells[0]["oracle_score"] == 1.2
    assert np.isnan(cells[1]["score"]) and cells[1]["best_epoch_score"] == 0.8  # null honest score: NaN, not 0.8
    assert np.isnan(cells[2]["score"]) and cells[2]["best_epoch_score"] == 0.7
    assert cells[3]["score"] == 0.5 and np.isnan(cells[3]["best_epoch_score"])  # fixed length: honest as it is
    assert cells[0]["data_seed"] == 2 and cells[0]["train_seed"] == 0
    ensemble = {"folds": {"holdout": trainer["folds"]["holdout"] | {"ensemble": {"score": 0.55, "seeds": [0, 1]}}}}
    assert summary_cells(ensemble, "synthetic", "t", 2, 0)[0]["score"] == 0.55  # the holdout members' ensemble
    baseline = {"baseline": "ridge", "folds": {
        "fold0": {"metrics": {"score": 0.3}, "best_epoch": 0, "oracle_score": 1.2},
        "holdout": {"metrics": None, "best_epoch": 0, "oracle_score": None},
    }}
    cells = summary_cells(baseline, "synthetic", "ridge", 2, None)
    assert cells[0]["score"] == 0.3 and np.isnan(cells[0]["best_epoch_score"]) and cells[0]["oracle_score"] == 1.2
    assert np.isnan(cells[1]["score"]) and np.isnan(cells[1]["oracle_score"])
    table = quality_table(pl.DataFrame(summary_cells(trainer, "synthetic", "t", 0, 0), schema=SCORE_SCHEMA,
                                       orient="row"))
    row = table.row(0, named=True)
    assert row["cells"] == 2 and row["mean"] == pytest.approx(0.45)  # only the finite honest cells count
    assert row["epoch_pick_gain"] == pytest.approx(0.5)  # 0.9 - 0.4 on fold0, the one fold with both


def test_best_peer_is_the_highest_mean_peer(scores: pl.DataFrame) -> None:
    assert best_peer(scores, "synthetic") == "ridge"  # 0.4 beats mean_rank's 0.3; last_label's 0.8 is no peer
    assert best_peer(scores, "real") == "mean_rank"
    assert best_peer(scores, "nowhere") is None
    more = pl.concat([scores, pl.DataFrame(_cells("lightgbm", [0.6, 0.4]) + _cells("reduced_rank", [0.1, NAN]),
                                           schema=SCORE_SCHEMA, orient="row")])
    assert best_peer(more, "synthetic") == "lightgbm"  # mean 0.5; reduced_rank's one finite cell is 0.1
    tie = pl.concat([scores, pl.DataFrame(_cells("reduced_rank", [0.3, 0.5]), schema=SCORE_SCHEMA, orient="row")])
    assert best_peer(tie, "synthetic") == "reduced_rank"  # ties with ridge at 0.4: the alphabetically first wins
    only_last_label = scores.filter(pl.col("model").is_in(["last_label", "transformer_default"]))
    assert best_peer(only_last_label, "synthetic") is None


def test_quality_table_pairs_cells_with_the_best_peer(scores: pl.DataFrame) -> None:
    table = quality_table(scores)
    synthetic = table.filter(pl.col("source") == "synthetic")
    row = synthetic.filter(pl.col("model") == "transformer_default").row(0, named=True)
    assert row["cells"] == 4 and row["best_peer"] == "ridge"
    assert row["mean"] == pytest.approx(0.425)
    assert row["std"] == pytest.approx(np.std([0.6, 0.5, 0.4, 0.2]))
    diffs = [0.6 - 0.5, 0.5 - 0.3, 0.4 - 0.5, 0.2 - 0.3]  # paired on (data seed, fold) with ridge
    assert row["diff_mean"] == pytest.approx(np.mean(diffs))
    assert row["diff_std"] == pytest.approx(np.std(diffs))
    assert row["wins"] == "2/4"
    assert row["oracle_fraction"] == pytest.approx(0.425 / 1.5)
    assert row["epoch_pick_gain"] == pytest.approx(np.mean([0.8 - 0.6, 0.5 - 0.4]))
    last = synthetic.filter(pl.col("model") == "last_label").row(0, named=True)
    assert last["diff_mean"] == pytest.approx(0.4) and last["wins"] == "2/2"  # still paired with the best peer
    ridge = synthetic.filter(pl.col("model") == "ridge").row(0, named=True)
    assert ridge["wins"] is None and np.isnan(ridge["diff_mean"]) and np.isnan(ridge["epoch_pick_gain"])
    assert ridge["oracle_fraction"] == pytest.approx(0.4 / 1.5)
    real = table.filter((pl.col("source") == "real") & (pl.col("model") == "transformer_default")).row(0, named=True)
    assert real["diff_mean"] == pytest.approx(0.0) and real["wins"] == "1/2"
    assert np.isnan(real["oracle_fraction"])  # no oracle on real data


def test_render_quality_writes_one_markdown_row_per_model(scores: pl.DataFrame) -> None:
    text = render_quality(quality_table(scores), "synthetic", {"oracle": "reference"})
    lines = text.splitlines()
    assert lines[0].startswith("| model | cells | honest score mean ± std | paired Δ vs best peer")
    assert len(lines) == 2 + 5
    default = next(line for line in lines if "`transformer_default`" in line)
    assert "0.425 ± 0.148" in default and "0.025 ± 0.130" in default and "2/4" in default and "28%" in default
    assert "+0.150" in default
    assert "(best peer)" in next(line for line in lines if "`ridge`" in line)
    assert "reference" in next(line for line in lines if "`oracle`" in line)


def test_fold_scores_list_each_fold_over_seeds(scores: pl.DataFrame) -> None:
    folds = fold_scores(scores)
    row = folds.filter((pl.col("model") == "transformer_default") & (pl.col("source") == "synthetic")
                       & (pl.col("fold") == "holdout")).row(0, named=True)
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.35) and row["std"] == pytest.approx(0.15)
    lines = render_folds(folds, "synthetic").splitlines()
    assert lines[0] == "| model | fold0 | holdout |"
    assert "| `transformer_default` | 0.500 ± 0.100 | 0.350 ± 0.150 |" in lines
    assert "| `ridge` | 0.500 | 0.300 |" in lines


def test_render_report_states_mode_provenance_honesty_and_levers(scores: pl.DataFrame, tmp_path: Path) -> None:
    info = provenance("python -m spread bench")
    assert "cores" in info["machine"] and "torch" in info["versions"]
    assert read_levers(tmp_path) is None
    (tmp_path / "LEVERS.md").write_text("| lever | Δ score |\n|---|---|\n| patch 4 | +0.02 |\n")
    levers = read_levers(tmp_path)
    table, folds = quality_table(scores), fold_scores(scores)
    text = render_report(QUICK, info, table, folds, [("predict latency p50 / p99", "5 / 9 ms", "300 calls")],
                         {}, ["a remark"], figure="scores.png", levers=levers)
    assert "Generated by `python -m spread bench` (quick mode)" in text
    assert "model.d_model=64" in text  # the quick budget is stated
    assert "4 walk-forward folds + the holdout" in text
    assert "never with the best epoch picked on the fold being scored" in text
    assert "### synthetic: synthetic `realistic` preset" in text and "### real:" in text
    assert "![honest scores, mean ± std over cells](scores.png)" in text
    assert "| predict latency p50 / p99 | 5 / 9 ms | 300 calls |" in text
    beats = ("`transformer_default` beats the best peer `ridge`: paired difference +0.025 ± 0.130 (2/4 cells won; "
             "the margin is within its spread) and reaches 28% of the oracle (the best peer 27%).")
    assert beats in text
    assert "`transformer_default` ties with the best peer `mean_rank`: paired difference +0.000" in text
    assert "| `transformer_default` | 0.500 ± 0.100 | 0.350 ± 0.150 |" in text
    assert "- a remark" in text
    levers_at = text.index("## Levers")
    assert text.index("## Speed") < levers_at
    assert "| lever | Δ score |\n|---|---|\n| patch 4 | +0.02 |" in text[levers_at:]
    without = render_report(QUICK, info, table, folds, [], {}, [])
    assert "## Levers" not in without and "![" not in without


def test_bench_checks_its_report_path_before_running_anything(tmp_path: Path) -> None:
    from spread.lab.bench import bench

    for out in (tmp_path, tmp_path / "missing" / "RESULTS.md"):
        with pytest.raises(ConfigError, match="expected a file in an existing folder"):
            bench(out_md=out, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_bench_modes_score_honest_folds_on_the_realistic_preset() -> None:
    assert SYNTHETIC_PRESETS[SYNTHETIC] == "realistic"
    assert QUICK.n_folds >= 2 and "train.final_fit=false" in QUICK.transformer_overrides
    # transformer_default is the shipped config at its own shape: only the tuning study starts from a small one
    assert not any(o.startswith(("model.", "data.")) for o in QUICK.transformer_overrides)
    assert "model.d_model=64" in QUICK.tune_overrides
    with pytest.raises(ConfigError, match="n_folds must be >= 2"):
        BenchConfig(mode="x", sources=[SYNTHETIC], data_seeds=[0], train_seeds=[0], n_folds=1)
    with pytest.raises(ConfigError, match="sources"):
        BenchConfig(mode="x", sources=["nowhere"], data_seeds=[0], train_seeds=[0], n_folds=2)


def test_the_score_picture_draws_the_quality_table(scores: pl.DataFrame, tmp_path: Path) -> None:
    path = plot_bench_scores(quality_table(scores).iter_rows(named=True), tmp_path / "scores.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_cached_run_reuses_a_finished_run_with_the_same_config(tmp_path: Path) -> None:
    from spread.config import Config, save_config

    cfg = Config()
    calls = []

    def execute() -> dict:
        calls.append(1)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "summary.json").write_text(json.dumps({"folds": {}}))
        return {"folds": {}}

    run_dir = tmp_path / "run"
    tally = RunTally()
    cached_run(run_dir, cfg, execute, tally)
    cached_run(run_dir, cfg, execute, tally)
    assert len(calls) == 1
    changed = Config(seed=5)
    cached_run(run_dir, changed, execute, tally)  # a different config reruns from scratch
    assert len(calls) == 2
    assert (tally.runs, tally.reused) == (3, 1)


def test_training_speed_counts_samples_per_epoch_second(tmp_path: Path) -> None:
    from spread.config import Config, save_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(Config(), run_dir / "config.yaml")  # batch size 32
    (run_dir / "summary.json").write_text(json.dumps({"run": {"device": "cpu", "precision": "fp32"}}))
    pl.DataFrame({"fold": ["fold0", "fold0", "holdout"], "step": [10, 20, 5], "seconds": [2.0, 2.0, 1.0]}).write_csv(
        run_dir / "metrics.csv"
    )
    ((measure, value, setting),) = training_speed({"synthetic/transformer_default/s0/t0": run_dir})
    assert measure == "train samples/s: synthetic, transformer_default runs"
    assert value == f"{25 * 32 / 5.0:.0f}"
    assert setting.startswith("cpu fp32; 1 runs")
