"""The synthetic competition generator and the folder writer: real layout, exact labels, release rule, gaps,
determinism, a planted signal the oracle finds, and never clobbering a user's folder."""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from spread.lab.baselines import run_baseline
from spread.competition import Competition, check_labels, load_competition
from spread.config import load_config
from spread.trainer import competition_folds
from spread.errors import ConfigError, DataError
from spread.competition_writer import ORACLE_FILE, draw_pairs, write_competition
from spread.metrics import rank_correlation_sharpe
from spread.synth import generate
from spread.synth_market import CALM, RECORDED, TURBULENT, MarketState, market_model, simulate_market
from spread.synth_presets import DEFAULT_PRESET, PRESETS, build_universe, check_preset
from spread.targets import compute_targets, parse_pair

GROUP_PATTERNS = {
    "LME": r"LME_(AH|CA|PB|ZS)_Close",
    "JPX": r"JPX_(Gold_Mini|Gold_Rolling-Spot|Gold_Standard|Platinum_Mini|Platinum_Standard|RSS3_Rubber)_Futures_"
    r"(Open|High|Low|Close|Volume|open_interest|settlement_price)",
    "US": r"US_Stock_[A-Z]+_adj_(open|high|low|close|volume)",
    "FX": r"FX_[A-Z]{6}",
}
PRICE_PATTERN = r"LME_[A-Z]{2}_Close|JPX_[A-Za-z0-9_-]+_Futures_Close|US_Stock_[A-Z]+_adj_close|FX_[A-Z]{6}"


@pytest.fixture(scope="module")
def small(small: Path) -> Competition:
    """conftest's `small` preset, loaded."""
    return load_competition(small)


def group_of(name: str) -> str:
    matches = [group for group, pattern in GROUP_PATTERNS.items() if re.fullmatch(pattern, name)]
    assert len(matches) == 1, name
    return matches[0]


def legs(comp: Competition) -> set[str]:
    return {leg for pair in comp.pairs["pair"].to_list() for leg in parse_pair(pair)}


def ticker_columns(ticker: str) -> list[str]:
    return [f"US_Stock_{ticker}_adj_{field}" for field in ("open", "high", "low", "close", "volume")]


def special_tickers(comp: Competition) -> tuple[str, str, int]:
    """(ticker empty over the whole test period, ticker that delists, first date it is missing for good)."""
    test, empty, delisted = comp.test, [], []
    for name in (c for c in comp.feature_names if c.endswith("_adj_close")):
        ticker = name.removeprefix("US_Stock_").removesuffix("_adj_close")
        missing = test[name].is_null().to_numpy()
        tail = int(np.argmin(missing[::-1])) if not missing.all() else len(missing)
        if missing.all():
            empty.append(ticker)
        elif tail >= 3:  # longer than any run of holidays
            delisted.append((ticker, int(test["date_id"][len(missing) - tail])))
    assert len(empty) == 1 and len(delisted) == 1, (empty, delisted)
    return empty[0], delisted[0][0], delisted[0][1]


def daily_spearman(predictions: np.ndarray, labels: np.ndarray, min_targets: int = 10) -> np.ndarray:
    rhos = []
    for prediction, truth in zip(predictions, labels):
        known = ~np.isnan(truth)
        if known.sum() >= min_targets:
            rhos.append(spearmanr(prediction[known], truth[known]).statistic)
    return np.array(rhos)


def test_small_preset_shapes_and_groups(small: Competition) -> None:
    preset = PRESETS["small"]
    assert small.train["date_id"].to_list() == list(range(preset.n_dates))
    assert Counter(group_of(name) for name in small.feature_names) == {"LME": 2, "JPX": 14, "US": 40, "FX": 6}
    assert small.target_names == [f"target_{k}" for k in range(48)]
    assert small.target_lags.tolist() == [lag for lag in (1, 2, 3, 4) for _ in range(12)]
    assert small.test["date_id"].to_list() == list(range(preset.n_dates - 40, preset.n_dates))
    assert small.test["is_scored"].to_list() == [True] * 25 + [False] * 15
    for lag, frame in small.lagged_labels.items():
        assert frame.columns == ["date_id", *small.pairs.filter(pl.col("lag") == lag)["target"], "label_date_id"]
        assert frame.height == 40


@pytest.mark.parametrize("preset", ["mitsui", "realistic"])
def test_mitsui_preset_has_the_real_shape(tmp_path: Path, preset: str) -> None:
    comp = load_competition(generate(tmp_path / preset, seed=0, preset=preset))
    assert comp.train.shape == (1961, 558) and comp.labels.shape == (1961, 425)
    assert Counter(group_of(name) for name in comp.feature_names) == {"LME": 4, "JPX": 40, "US": 475, "FX": 38}
    assert Counter(comp.target_lags.tolist()) == {1: 106, 2: 106, 3: 106, 4: 106}
    assert comp.target_lags.tolist() == sorted(comp.target_lags.tolist())
    assert len(legs(comp)) == 106
    assert comp.test.shape == (134, 559) and comp.scored_dates == list(range(1827, 1917))
    assert {lag: frame.shape for lag, frame in comp.lagged_labels.items()} == {k: (134, 108) for k in (1, 2, 3, 4)}
    assert sum(comp.train[name].null_count() > 0 for name in comp.feature_names) == 519  # all but FX, like the real


def test_pairs_look_real(small: Competition) -> None:
    pairs = small.pairs["pair"].to_list()
    assert all(re.fullmatch(PRICE_PATTERN, leg) for leg in legs(small))
    assert legs(small) == {name for name in small.feature_names if re.fullmatch(PRICE_PATTERN, name)}
    assert any(len(parse_pair(p)) == 1 for p in pairs) and sum(len(parse_pair(p)) == 2 for p in pairs) > 36
    assert max(Counter(pairs).values()) >= 2  # the same pair at several lags


def test_labels_recompute_exactly_from_train(small: Competition) -> None:
    recomputed = compute_targets(small.train, small.pairs).drop("date_id").to_numpy()
    stored = small.labels.drop("date_id").to_numpy()
    assert np.array_equal(np.isnan(recomputed), np.isnan(stored))
    assert np.array_equal(recomputed[~np.isnan(recomputed)], stored[~np.isnan(stored)])
    assert 0.3 < np.isnan(stored[-5:]).mean() and np.isnan(stored[:-5]).mean() < 0.3


def test_lag_files_follow_the_release_rule(small: Competition) -> None:
    labels = small.labels
    for lag, frame in small.lagged_labels.items():
        assert (frame["date_id"] - frame["label_date_id"] == lag + 1).all()
        targets = [c for c in frame.columns if c.startswith("target_")]
        expected = frame.select("label_date_id").join(
            labels.select(pl.col("date_id").alias("label_date_id"), *targets), on="label_date_id", how="left"
        ).sort("label_date_id")
        assert frame.select(targets).equals(expected.select(targets))
        assert frame.select(targets).null_count().sum_horizontal().item() < frame.height * len(targets)


def test_ohlc_consistent_volumes_positive(small: Competition) -> None:
    frame = small.train
    stems = [n.removesuffix("_adj_close") + "_adj_" for n in small.feature_names if n.endswith("_adj_close")]
    stems += [n.removesuffix("Close") for n in small.feature_names if n.startswith("JPX_") and n.endswith("Close")]
    for stem in stems:
        names = [f"{stem}{field}" for field in ("open", "high", "low", "close")]
        if stem.startswith("JPX_"):
            names = [f"{stem}{field}" for field in ("Open", "High", "Low", "Close")]
        o, h, low, c = (frame[n].to_numpy() for n in names)
        seen = ~np.isnan(c)
        assert seen.sum() > 100
        assert (low[seen] <= np.minimum(o, c)[seen]).all() and (np.maximum(o, c)[seen] <= h[seen]).all()
    counts = [n for n in small.feature_names if n.endswith(("_volume", "_Volume", "_open_interest"))]
    assert len(counts) == 8 + 2 * 2
    for name in counts:
        values = frame[name].drop_nulls().to_numpy()
        assert (values > 0).all() and np.array_equal(values, np.round(values))


def test_holidays_blank_whole_groups_and_fx_is_never_missing(small: Competition) -> None:
    empty, delisted, _ = special_tickers(small)
    frame = small.train
    for group in ("LME", "JPX", "US"):
        names = [n for n in small.feature_names if group_of(n) == group]
        names = [n for n in names if not any(n in ticker_columns(t) for t in (empty, delisted))]
        missing = frame.select(pl.col(n).is_null() for n in names).to_numpy()
        closed = missing.all(axis=1)
        assert np.array_equal(missing.any(axis=1), closed), group  # a holiday blanks the whole exchange
        assert 0.003 < closed.mean() < 0.08, (group, closed.mean())
    fx = [n for n in small.feature_names if n.startswith("FX_")]
    assert frame.select(fx).null_count().sum_horizontal().item() == 0
    assert small.test.select(fx).null_count().sum_horizontal().item() == 0


def test_empty_test_ticker_and_delisting_ticker(small: Competition) -> None:
    empty, delisted, gone_from = special_tickers(small)
    first_test_date = small.test["date_id"][0]
    before_test = small.train.filter(pl.col("date_id") < first_test_date)[f"US_Stock_{empty}_adj_close"]
    assert before_test.null_count() < 0.1 * before_test.len()
    for name in ticker_columns(delisted):
        gone = small.train.filter(pl.col("date_id") >= gone_from)[name]
        listed = small.train.filter(pl.col("date_id").is_between(first_test_date, gone_from - 1))[name]
        assert gone.null_count() == gone.len() and listed.null_count() < listed.len()
    assert first_test_date < gone_from < small.scored_dates[-1]
    assert {f"US_Stock_{empty}_adj_close", f"US_Stock_{delisted}_adj_close"} <= legs(small)
    involved = [t for t, p in zip(small.target_names, small.pairs["pair"]) if f"US_Stock_{delisted}_" in p]
    after = small.labels.filter(pl.col("date_id") >= gone_from - 1).select(involved)
    assert after.null_count().sum_horizontal().item() == after.height * len(involved)  # its targets turn NaN


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", seed=3, preset="small")
    second = generate(tmp_path / "b", seed=3, preset="small")
    other = generate(tmp_path / "c", seed=4, preset="small")
    files = sorted(p.relative_to(first) for p in first.rglob("*.csv"))
    assert len(files) == 9 and Path(ORACLE_FILE) in files
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    assert (first / "train.csv").read_bytes() != (other / "train.csv").read_bytes()


def test_oracle_scores_clearly_positive(small: Competition) -> None:
    oracle = pl.read_csv(small.root / ORACLE_FILE)
    assert oracle.columns == small.labels.columns and oracle["date_id"].equals(small.labels["date_id"])
    predictions = oracle.drop("date_id").to_numpy()
    assert np.isfinite(predictions).all()
    rho = daily_spearman(predictions, small.labels.drop("date_id").to_numpy())
    assert len(rho) > 250
    assert rho.mean() > 0.1 and rho.mean() / rho.std() > 0.4, (rho.mean(), rho.std())
    shuffled_dates = np.random.default_rng(0).permutation(predictions)
    shuffled = daily_spearman(shuffled_dates, small.labels.drop("date_id").to_numpy())
    assert rho.mean() > shuffled.mean() + 0.1  # most of the signal is in the timing, not in a fixed ranking


def test_refuses_a_non_empty_folder_and_overwrite_keeps_user_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        generate(out, seed=0, preset="small")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    generate(out, seed=0, preset="small", overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "train.csv").is_file()
    with pytest.raises(ConfigError, match="unknown preset"):
        generate(tmp_path / "other", preset="huge")


def test_write_competition_rejects_bad_input(tmp_path: Path) -> None:
    train = pl.DataFrame({"date_id": [0, 1, 3], "A_Close": [1.0, 1.1, 1.2], "B_Close": [2.0, 2.1, 2.0]})
    pairs = pl.DataFrame({"target": ["target_0"], "lag": [1], "pair": ["A_Close - B_Close"]})
    with pytest.raises(DataError, match="consecutive"):
        write_competition(tmp_path / "x", train, pairs, n_test=2, n_scored=1)
    train = train.with_columns(pl.Series("date_id", [0, 1, 2]))
    with pytest.raises(DataError, match="C_Close"):
        write_competition(tmp_path / "x", train, pairs.with_columns(pl.lit("A_Close - C_Close").alias("pair")),
                          n_test=2, n_scored=1)
    with pytest.raises(DataError, match="n_scored"):
        write_competition(tmp_path / "x", train, pairs, n_test=2, n_scored=3)
    assert not (tmp_path / "x").exists()


def test_draw_pairs_covers_assets_repeats_and_reverses() -> None:
    assets = [f"A{i}_Close" for i in range(20)]
    pairs = draw_pairs(assets, 12, rng=np.random.default_rng(0), single_share=0.25, reversed_share=0.3)
    assert pairs["target"].to_list() == [f"target_{k}" for k in range(48)]
    assert {leg for p in pairs["pair"] for leg in parse_pair(p)} == set(assets)
    for lag in (1, 2, 3, 4):
        specs = pairs.filter(pl.col("lag") == lag)["pair"].to_list()
        assert len({frozenset(parse_pair(p)) for p in specs}) == 12
        assert sum(len(parse_pair(p)) == 1 for p in specs) == 3
    counts = Counter(pairs["pair"].to_list())
    assert max(counts.values()) >= 2
    assert any(" - ".join(parse_pair(p)[::-1]) in counts for p in counts if " - " in p)
    with pytest.raises(ConfigError):
        draw_pairs(assets[:4], 12, rng=np.random.default_rng(0))


# the realistic preset ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Competition:
    return load_competition(generate(tmp_path_factory.mktemp("synth") / "realistic", seed=0))


def log_returns(comp: Competition, column: str) -> np.ndarray:
    return np.diff(np.log(comp.train[column].to_numpy().astype(np.float64)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    seen = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[seen], b[seen])[0, 1])


def test_realistic_is_the_default_and_its_labels_check(realistic: Competition) -> None:
    assert DEFAULT_PRESET == "realistic" and PRESETS["realistic"].dynamics == "market"
    result = check_labels(realistic)  # the `check-labels` path: every label recomputed by spread.targets
    assert result.cells > 700_000 and result.match_share == 1.0 and result.nan_agreement == 1.0


def test_realistic_strong_is_realistic_with_the_lead_lag_doubled() -> None:
    """The diagnostic preset differs from `realistic` in the signal's strength only: same universe and drivers for a
    seed (the lab's driver diagnostics hold on it), and `spread synth --preset` offers every preset."""
    from spread.cli import build_parser

    base, strong = PRESETS["realistic"], PRESETS["realistic_strong"]
    assert dataclasses.replace(strong, signal_linear=base.signal_linear, signal_regime=base.signal_regime) == base
    assert (strong.signal_linear, strong.signal_regime) == (2 * base.signal_linear, 2 * base.signal_regime)
    for seed in (0, 1):
        assert (build_universe(strong, np.random.default_rng(seed)).drivers
                == build_universe(base, np.random.default_rng(seed)).drivers)
    for name in PRESETS:
        assert build_parser().parse_args(["synth", "--out", "x", "--preset", name]).preset == name
    assert build_parser().parse_args(["synth", "--out", "x"]).preset == DEFAULT_PRESET
    with pytest.raises(SystemExit):
        build_parser().parse_args(["synth", "--out", "x", "--preset", "unknown"])


def test_realistic_fxvol_is_realistic_with_an_observable_gauge() -> None:
    """`realistic_fxvol` differs from `realistic` in what signs the lead-lag and when it acts: the same universe
    and drivers for a seed; a preset whose oracle would need a future gauge (signal_delay <= a lag) is refused."""
    base, fx = PRESETS["realistic"], PRESETS["realistic_fxvol"]
    assert (fx.regime_gauge, fx.signal_delay) == ("fx_vol", max(fx.lags) + 1)
    assert dataclasses.replace(fx, regime_gauge=base.regime_gauge, signal_delay=base.signal_delay) == base
    assert build_universe(fx, np.random.default_rng(0)).drivers == build_universe(base, np.random.default_rng(0)).drivers
    for bad in (dataclasses.replace(fx, signal_delay=4), dataclasses.replace(base, signal_delay=1),
                dataclasses.replace(base, regime_gauge="vix")):
        with pytest.raises(ConfigError, match="synth: (signal_delay|regime_gauge)"):
            check_preset(bad)


def test_realistic_fxvol_rank1_has_one_composite_of_the_drivers() -> None:
    """The diagnostic preset's lead-lag weights are rank 1 (every asset loads on one composite of the drivers),
    `realistic_fxvol`'s stay full rank with the same draws, and a bad signal_rank is refused."""
    from spread.synth_market import market_model

    rank1, fx = PRESETS["realistic_fxvol_rank1"], PRESETS["realistic_fxvol"]
    assert dataclasses.replace(rank1, signal_rank=0, signal_linear=fx.signal_linear,
                               signal_regime=fx.signal_regime) == fx
    ranks = []
    for preset in (fx, rank1):
        universe = build_universe(preset, np.random.default_rng(0))
        ranks.append(np.linalg.matrix_rank(market_model(universe, preset, np.random.default_rng(1)).signal))
    assert ranks == [len(fx.driver_decays), 1]
    with pytest.raises(ConfigError, match="synth: signal_rank"):
        check_preset(dataclasses.replace(fx, signal_rank=2))


def test_realistic_scale_reversal_and_asynchronous_closes(realistic: Competition) -> None:
    labels, lags = realistic.labels.drop("date_id").to_numpy(), realistic.target_lags
    assert 0.012 < np.nanstd(labels[:, lags == 1]) < 0.025 and 0.035 < np.nanstd(labels[:, lags == 4]) < 0.055
    # JPX closes before the US, LME between: JPX gold follows GLD of the day before, LME copper mostly the same day
    gold = log_returns(realistic, "JPX_Gold_Standard_Futures_Close")
    gld = log_returns(realistic, "US_Stock_GLD_adj_close")
    assert correlation(gold[1:], gld[:-1]) > correlation(gold, gld) + 0.1
    copper, fcx = log_returns(realistic, "LME_CA_Close"), log_returns(realistic, "US_Stock_FCX_adj_close")
    assert correlation(copper, fcx) > correlation(copper[1:], fcx[:-1]) + 0.05 > 0.1


TINY = dataclasses.replace(
    PRESETS["realistic"], n_dates=60, n_test=10, n_scored=5, n_lme=2, n_jpx_contracts=2, n_us_tickers=4, n_fx=6,
    n_targets_per_lag=4, n_target_assets=12, signal_linear=0.3, signal_regime=1.0, reversal=0.3,
    regime_drift_scale=0.3, drift_scale=0.003, calm_stay=0.7, turbulent_stay=0.6, drift_stay=0.6,
)


TINY_FX = dataclasses.replace(TINY, regime_gauge="fx_vol", signal_delay=5)


@pytest.mark.slow
@pytest.mark.parametrize("preset", [TINY, TINY_FX], ids=["hidden", "fx_vol"])
def test_oracle_is_the_conditional_expectation_by_brute_force(preset) -> None:
    """From the simulated state at several dates, 60 000 continuations of the generator's own dynamics average to
    the oracle's expected log change of every asset at every lag (within 4.5 standard errors), in both regimes, and
    the check has power: they do not average to the expectation under the other volatility regime (hidden gauge),
    or without the lead-lag fixed at t (fx_vol gauge, whose oracle needs no future regime)."""
    rng = np.random.default_rng(0)
    universe = build_universe(preset, rng)
    model = market_model(universe, preset, rng)
    state = model.initial_state(rng, 1)
    n_paths, checked = 60_000, set()
    for t in range(60):
        model.step(state, rng)
        regime = int(not model.calm(state.vol_regime, state.gauge)[0])  # 0: the lead-lag's calm sign
        if t < 10 or regime in checked:
            continue
        checked.add(regime)
        snapshot = {name: getattr(state, name).copy() for name in RECORDED}
        paths = MarketState(**{name: np.repeat(value, n_paths, axis=0) for name, value in vars(state).items()})
        changes, total = {}, 0.0
        for k in range(1, max(preset.lags) + 2):
            total = total + model.step(paths, rng)[0] * (k >= 2)  # r(t+2) + ... + r(t+k)
            changes[k - 1] = total
        if preset.regime_gauge == "hidden":
            other = dict(snapshot, vol_regime=1 - snapshot["vol_regime"])
        else:
            other = dict(snapshot, lead=np.zeros_like(snapshot["lead"]))
            flipped = dict(snapshot, vol_regime=1 - snapshot["vol_regime"])
            for lag in preset.lags:  # the latent volatility regime does not reach this oracle
                np.testing.assert_array_equal(model.expected(flipped, lag), model.expected(snapshot, lag))
        for lag in preset.lags:
            mean, error = changes[lag].mean(axis=0), changes[lag].std(axis=0) / math.sqrt(n_paths)
            oracle = model.expected(snapshot, lag)[0]
            np.testing.assert_array_less(np.abs(mean - oracle), 4.5 * error)
            assert np.abs(oracle).max() > 10 * error.max()
            if lag >= 2:  # alpha(t+2) is fixed at t: the regime of date t shows from lag 2 on
                assert (np.abs(mean - model.expected(other, lag)[0]) > 4.5 * error).any()
    assert checked == {0, 1}


def test_simulation_records_the_states_the_oracle_reads() -> None:
    """Simulation.states (read by bench/bench_ceiling.py) are the oracle's inputs: model.expected on them gives the
    simulation's expectations, and the regime is a 0/1 path that visits both states."""
    rng = np.random.default_rng(3)
    universe = build_universe(TINY, rng)
    sim = simulate_market(universe, TINY, rng)
    assert set(sim.states) == set(RECORDED) and all(len(v) == TINY.n_dates for v in sim.states.values())
    assert set(np.unique(sim.states["vol_regime"])) == {0, 1}
    rng = np.random.default_rng(3)
    model = market_model(build_universe(TINY, rng), TINY, rng)
    for lag in TINY.lags:
        np.testing.assert_array_equal(model.expected(sim.states, lag), sim.expected[lag])


def test_fx_vol_oracle_reads_only_the_lead_lag_fixed_at_t() -> None:
    """With the fx_vol gauge every lead-lag term of the oracle is recorded at t; asking for one beyond signal_delay
    (which would need a future gauge) is refused rather than computed from the latent regime."""
    rng = np.random.default_rng(3)
    universe = build_universe(TINY_FX, rng)
    model = market_model(universe, TINY_FX, rng)
    sim = simulate_market(universe, TINY_FX, np.random.default_rng(4))
    for k in range(1, TINY_FX.signal_delay + 1):
        np.testing.assert_array_equal(model.lead_factors(sim.states, k), sim.states["lead"][:, k - 1])
    with pytest.raises(ConfigError, match="fx_vol gauge has no expectation beyond signal_delay"):
        model.lead_factors(sim.states, TINY_FX.signal_delay + 1)


def random_scores(labels: np.ndarray, windows: list[tuple[int, int]], draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([rank_correlation_sharpe(labels[a : b + 1], rng.normal(size=(b - a + 1, labels.shape[1])))
                     for _ in range(draws) for a, b in windows])


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["realistic", "realistic_fxvol"])
@pytest.mark.parametrize("seed", [0, 2])
def test_realistic_calibration(tmp_path: Path, seed: int, preset: str) -> None:
    """The calibration of the module docstring: mean over the four walk-forward folds and the holdout."""
    data = generate(tmp_path / "data", seed=seed, preset=preset)
    cfg = load_config(None, ["split.n_folds=4"])
    scores = {name: run_baseline(name, cfg, data, tmp_path / name) for name in ("oracle", "mean_rank", "ridge")}
    oracle, prior, ridge = (scores[name]["mean"]["score"] for name in ("oracle", "mean_rank", "ridge"))
    assert 0.7 <= oracle <= 1.0 and 0.3 <= prior <= 0.45 and ridge <= 0.6 * oracle, (oracle, prior, ridge)
    comp = load_competition(data)
    labels = comp.labels.drop("date_id").to_numpy()
    windows = [fold.val_dates for fold in competition_folds(comp, cfg)]
    random = random_scores(labels, windows, draws=40, seed=seed)
    assert abs(random.mean()) < 0.03 and 0.08 < random.std() < 0.13


@pytest.mark.parametrize("preset", [TINY, TINY_FX], ids=["hidden", "fx_vol"])
def test_with_sign_replays_the_recorded_states_and_moves_the_oracle(preset) -> None:
    """MarketModel.with_sign (bench/bench_ceiling.py's plug-in regime) given the simulation's own sign returns the
    recorded states, so the oracle's expectations are unchanged; the opposite sign changes them."""
    rng = np.random.default_rng(3)
    universe = build_universe(preset, rng)
    sim = simulate_market(universe, preset, rng)
    rng = np.random.default_rng(3)
    model = market_model(build_universe(preset, rng), preset, rng)
    calm = model.calm(sim.states["vol_regime"], sim.states["gauge"])
    replayed = model.with_sign(sim.states, calm)
    assert replayed.keys() == sim.states.keys()
    for name, values in sim.states.items():
        np.testing.assert_array_equal(replayed[name], values, err_msg=name)
    flipped = model.with_sign(sim.states, ~calm)
    if preset.regime_gauge == "hidden":  # the regime lead_factors reads beyond signal_delay follows the sign given
        np.testing.assert_array_equal(flipped["vol_regime"], np.where(~calm, CALM, TURBULENT))
    lag = max(preset.lags)
    np.testing.assert_array_equal(model.expected(replayed, lag), sim.expected[lag])
    assert np.abs(model.expected(flipped, lag) - sim.expected[lag]).max() > 1e-4
