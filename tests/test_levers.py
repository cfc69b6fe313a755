"""The lever lab: its runs' configs, the tables (pairing with the reference and the best peer), step times, the
gates' driver AUC and the run reuse."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import yaml

from spread.config import load_config, save_config
from spread.errors import ConfigError
from spread.lab import levers
from spread.lab.grid import finished_summary
from spread.lab.stats import SCORE_SCHEMA


def _cells(model: str, scores: dict[tuple[int, str], float], train_seed: int | None) -> list[dict]:
    return [{"source": levers.PRESET, "model": model, "data_seed": d, "train_seed": train_seed, "fold": fold,
             "score": score, "best_epoch_score": float("nan"), "oracle_score": float("nan")}
            for (d, fold), score in scores.items()]


def test_render_levers_pairs_with_the_reference_seed_by_seed_and_with_the_best_peer():
    folds = [(0, "fold0"), (0, "holdout"), (1, "fold0"), (1, "holdout")]
    ref = {0: [0.4, 0.2, 0.3, 0.5], 1: [0.2, 0.2, 0.3, 0.3]}  # two training seeds
    variate = {0: [0.5, 0.1, 0.3, 0.7], 1: [0.1, 0.4, 0.3, 0.31]}
    cells = []
    for seed in (0, 1):
        cells += _cells("ref", dict(zip(folds, ref[seed])), seed)
        cells += _cells("variate", dict(zip(folds, variate[seed])), seed)
    cells += _cells("ridge", dict(zip(folds, [0.3] * 4)), None) + _cells("lightgbm", dict(zip(folds, [0.4] * 4)), None)
    cells += _cells("oracle", dict(zip(folds, [1.0] * 4)), None)
    scores = pl.DataFrame(cells, schema=SCORE_SCHEMA, orient="row")
    extra = {"ms": 12.0, "closed": 0.25, "gate_std": 0.01, "driver_auc": 0.6}
    lines = "\n".join(levers.render_levers(scores, ["ref", "variate"], {"ref": extra, "variate": extra})).splitlines()
    cols = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| `")]
    row = {c[0].strip("`"): c for c in cols}
    # variate - ref on the 8 (data seed, training seed, fold) cells: 0.1 -0.1 0 0.2, -0.1 0.2 0 0.01 (never across
    # training seeds, which would give 16 pairs)
    assert row["variate"][4] == "0.039 ± 0.111" and row["variate"][5] == "4/8"
    assert row["ref"][4] == "(reference)" and row["ref"][2] == "8"
    assert row["variate"][6] == "-0.061 ± 0.186 (2/8)"  # paired with lightgbm, the best peer, on (data seed, fold)
    assert row["variate"][8] == "34%" and row["variate"][9] == "25%"
    assert row["lightgbm"][3] == "(best peer)" and row["ridge"][3] == "-0.100 ± 0.000" and row["ridge"][5] == "30%"
    assert row["oracle"][5] == "—" and len(row["oracle"]) == 6


def test_plan_runs_resolve_each_childs_config_and_fail_fast_on_a_bad_override(tmp_path, monkeypatch):
    monkeypatch.setattr(levers, "data_folder", lambda work, seed, preset: work / f"{preset}-s{seed}")
    runs = levers.plan_runs(tmp_path, ["ref", "variate"], [0, 1], [0, 2], ["ridge"], levers.BASE_CONFIG)
    assert len(runs) == 2 * (2 * 2 + 2)  # per data seed: 2 levers x 2 training seeds, ridge and the oracle
    variate = next(r for r in runs if r.model == "variate" and r.data_seed == 1 and r.train_seed == 2)
    assert variate.out == tmp_path / "runs/variate/s1/t2" and variate.cfg.model.tokens == "variate"
    assert variate.cfg.seed == 2 and "model.tokens=variate" in variate.argv and variate.argv[3] == "train"
    oracle = next(r for r in runs if r.model == "oracle" and r.data_seed == 0)
    assert oracle.train_seed is None and oracle.out == tmp_path / "runs/oracle/s0" and oracle.argv[3:5] == [
        "baseline", "oracle"]
    strong = levers.plan_runs(tmp_path, ["ref"], [1], [0], [], levers.BASE_CONFIG, "realistic_strong")
    assert strong[0].out == tmp_path / "runs-realistic_strong/ref/s1/t0" and strong[0].preset == "realistic_strong"
    assert strong[0].argv[strong[0].argv.index("--data") + 1] == str(tmp_path / "realistic_strong-s1")
    six = levers.plan_runs(tmp_path, ["ref"], [0], [0], ["ridge"], levers.BASE_CONFIG, folds=6)
    assert [r.out for r in six] == [tmp_path / f"runs-folds6/{m}" for m in ("ref/s0/t0", "ridge/s0", "oracle/s0")]
    assert all(r.cfg.split.n_folds == 6 and "split.n_folds=6" in r.argv for r in six)  # the peers' too
    monkeypatch.setitem(levers.LEVERS, "broken", ("model.tokens=channel",))
    with pytest.raises(ConfigError, match="model.tokens"):
        levers.plan_runs(tmp_path, ["broken"], [0], [0], [], levers.BASE_CONFIG)


def test_auc_counts_ties_as_half():
    positive = np.array([True, True, False, False])
    assert levers.auc(positive, np.array([0.9, 0.5, 0.5, 0.1])) == pytest.approx(0.875)
    assert np.isnan(levers.auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_driver_features_replay_the_generators_draw():
    from spread.synth import build_universe, resolve_preset

    drivers = build_universe(resolve_preset("realistic"), np.random.default_rng(1)).drivers
    names = [f"FX_{drivers[0]}_ret5", "FX_NOTADRIVER_ret1", f"FX_{drivers[2]}_missing"]
    assert levers.driver_features(names, 1).tolist() == [True, False, True]


def test_step_ms_and_gate_stats_read_the_run_folder(tmp_path):
    pl.DataFrame({"fold": ["fold0", "fold0", "holdout"], "step": [10, 20, 5], "seconds": [1.0, 3.0, 1.0]}).write_csv(
        tmp_path / "metrics.csv")
    assert levers.step_ms(tmp_path) == pytest.approx(200.0)  # median of 100, 300 and 200 ms per step
    names = ["FX_A_ret1", "FX_B_ret1", "FX_C_ret1"]
    pl.DataFrame({"feature": names, "fold0": [0.9, 0.01, None], "mean": [0.9, 0.01, None]}).write_csv(
        tmp_path / "gate_weights.csv")
    stats = levers.gate_stats(tmp_path, seed=0, threshold=0.05)
    assert stats["closed"] == pytest.approx(0.5) and stats["gate_std"] == pytest.approx(0.445)


def test_a_run_is_reused_only_when_finished_with_the_same_config(tmp_path):
    cfg = load_config(levers.BASE_CONFIG, [*levers.BUDGET, "seed=0"])
    out = tmp_path / "run"
    assert finished_summary(out, cfg) is None
    out.mkdir()
    save_config(cfg, out / "config.yaml")
    assert finished_summary(out, cfg) is None  # started, not finished
    (out / "summary.json").write_text(json.dumps({"folds": {}}))
    assert finished_summary(out, cfg) == {"folds": {}}
    assert finished_summary(out, load_config(levers.BASE_CONFIG, [*levers.BUDGET, "seed=1"])) is None
    # a run saved before a config field existed (here: train.holdout_members) counts at that field's default only
    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved["train"].pop("holdout_members")
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert finished_summary(out, load_config(levers.BASE_CONFIG, [*levers.BUDGET, "seed=0",
                                                                  "train.holdout_members=1"])) == {"folds": {}}
    assert finished_summary(out, cfg) is None  # the base config asks for 3 holdout members
    # a field today's code no longer knows: not the same run
    saved["train"]["retired_option"] = 1
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert finished_summary(out, load_config(levers.BASE_CONFIG, [*levers.BUDGET, "seed=0",
                                                                  "train.holdout_members=1"])) is None


@pytest.mark.parametrize("name", sorted(levers.LEVERS))
def test_every_lever_is_a_valid_config(name):
    cfg = load_config(levers.BASE_CONFIG, [*levers.BUDGET, *levers.LEVERS[name]])
    assert cfg.train.final_fit is False and cfg.train.max_steps_per_epoch > 0


def test_folds_below_two_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        levers.main(["--work", str(tmp_path), "--folds", "1"])
    assert exit_info.value.code == 2 and "--folds: expected >= 2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything is written
