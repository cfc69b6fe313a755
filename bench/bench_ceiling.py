"""How much of the oracle can a model learn on the `realistic` preset? A ceiling from the generator's own states.

The oracle (`oracle_predictions.csv`) knows the latent state and the parameters. A model must estimate the
parameters from the training dates and the state from the prices. This bench fits, per target, a ridge regression
of the target's label on the generator's true state variables in the form the dynamics use (`MarketModel`):
its legs' own exponentially weighted returns R (the reversal), the drivers' momenta M and the regime's sign
times M (the regime-dependent lead-lag), on the training dates of every fold of the default split (3
walk-forward folds + the holdout, as `spread train` cuts them; `--folds N`: N walk-forward folds, as the lever
lab's `--folds N`), and scores it on the fold's validation dates:

- `state, true regimes`: z(t) = +1 calm / -1 turbulent and the slow drift regime's state, read from the
  simulation (unobservable; with the `realistic_fxvol` preset z is the side of its observable FX volatility gauge,
  and the lead-lag's terms are M and z M of the last signal_delay - 1 dates): the best a model with the right
  functional form can do with this many training dates, i.e. the cost of estimating the parameters;
- `state, true regime`: the same without the drift regime;
- `state, market__vol regime`: z replaced by the observable `market__vol10` (features.market_vol) of train.csv;
- `state, no regime`: without the z M terms: what any model linear in those states reaches;
- `state, structured`: told the global parameters too (a, g, the decays and the delay: `MarketModel.lead_factors`),
  per driver the lead-lag's exact sum over the target's horizon, so that each target estimates one weight per
  driver (its legs' w_A - w_B) and its legs' reversal: what a model that finds the shared structure of the
  signal (few drivers, the same form for every target) can reach;
- `state, structured, market__vol regime`: the same with the regime's sign read from the observable
  `market__vol10` (calm below its quantile at the simulation's share of calm dates; `MarketModel.with_sign`): the
  structure and the states known, the regime not: with a hidden regime (`realistic`, `realistic_strong`) what
  reading the regime off the files' gauge costs a model that knows everything else; with `realistic_fxvol`, whose
  regime is its own observable FX gauge (read exactly by `state, structured`), the cost of reading the wrong gauge;
- `state, structured, filtered regime`: the same with the regime read by a two-state filter of train.csv's returns
  (`filtered_calm`: the forward recursion of a hidden Markov chain with the preset's persistence, whose two
  variances of every column's standardised one-day return come from the training dates of every fold): how much
  of the gap between the gauge and the true regime a better observable estimate of the regime closes (with
  `realistic_fxvol` it reads the latent volatility regime, not the preset's FX gauge: the wrong regime again).

R and M are the true states (computable exactly from the latent prices; train.csv rounds prices and has gaps).

The `observed` variants use only what train.csv shows, still told which FX pairs are the drivers (which no model
is): the legs' returns over 1, 5 and 20 dates in place of R, and for the drivers, with the market__vol10 gauge
times each of them,
- `observed, exact form`: their momenta at the generator's decays (`driver_decays`), summed from train.csv's
  one-day returns (correlation 1.00 with the true M on data seeds 0-2);
- `observed, generic momenta`: exponentially weighted returns at half-lives of 1, 2, 4, 8 and 16 dates, the grid a
  model that does not know the decays would try;
- `observed, box returns`: their returns over 1, 5 and 20 dates, the panel's own features;
- `observed, legs only`: the legs' returns alone;
- `observed, exact form + box returns`: the exact momenta and the box returns together (24 driver terms);
- `observed, one box return per driver`: each driver's box return over the horizon nearest its decay's window
  1 / (1 - decay) (5, 5, 20 dates), the gauge times each: the exact form's 6 terms, only approximated;
- `observed, pooled, every FX pair`: not per target and not told the drivers: one reduced-rank ridge of every
  target's daily rank (the `reduced_rank` peer's fit, `spread.lab.baselines.fit_reduced_rank`, penalty and rank
  chosen on an inner split of the training dates) on every FX pair's exponentially weighted one-day returns at
  half-lives 1-16 and each times a generic FX volatility gauge (`pooled_designs`): what a generic linear learner
  that pools the targets finds;
- `observed, pooled, told the drivers`: the same on the drivers' terms only: what finding the drivers is worth.
The observed variants read the drivers' terms of date t, the form of `realistic` (with `realistic_fxvol`, whose
lead-lag acts 5 dates on, they are only approximate). Told the drivers, the gap between the exact form and the
generic momenta is what knowing their decays is worth at
these training sizes: 5 momenta per driver instead of 1, each doubled by the gauge's interaction, cost more than
they bring. The last two variants separate the two halves of that: redundant terms beside the exact ones, and
approximate terms without the redundant ones. The exact momenta's correlation with the true M is printed for each seed.

Cells are data seed x fold; the report (bench/CEILING.md) gives each variant's score, its share of the oracle's
score on the same cells, and paired differences; and how often each observable read of the regime (`REGIME_READS`:
the gauges' signs that `features.vol_interaction_form: sign` multiplies returns by, the plug-in quantile and the
filter above) agrees with the generator's regime on the validation dates.

    python bench/bench_ceiling.py [--seeds 0 1 2] [--work DIR] [--out bench/CEILING.md] [--ridge 0.01]
        [--preset realistic_strong|realistic_fxvol]   (its report goes to bench/CEILING-PRESET.md)
        [--folds 6]   (the issue's grid's cells; bench/CEILING[-PRESET]-folds6.md)

With `--work` the lever lab's work folder (`python -m spread.lab.levers --work DIR`) it scores the competitions
the lab's runs trained on (DIR/data/PRESET-sSEED, generated there once, the same by seed either way).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from spread.competition import load_competition  # noqa: E402
from spread.config import Config  # noqa: E402
from spread.features import FeatureConfig, build_panel, column_kind, log_levels, raw_matrix  # noqa: E402
from spread.lab.baselines import fit_reduced_rank  # noqa: E402
from spread.lab.levers import LAB_PRESETS, PRESET, data_folder  # noqa: E402
from spread.metrics import rank_correlation_sharpe  # noqa: E402
from spread.synth_market import market_model, simulate_market  # noqa: E402
from spread.synth_presets import build_universe, resolve_preset  # noqa: E402
from spread.targets import parse_pair  # noqa: E402
from spread.trainer import competition_folds, load_oracle  # noqa: E402

RIDGE = 1e-2
"""Ridge penalty per training row, on standardised regressors."""
VARIANTS = ("state, true regimes", "state, true regime", "state, market__vol regime", "state, no regime",
            "state, structured", "observed, exact form", "observed, generic momenta", "observed, box returns",
            "observed, legs only", "observed, exact form + box returns", "observed, one box return per driver",
            "observed, pooled, every FX pair", "observed, pooled, told the drivers",
            "state, structured, market__vol regime", "state, structured, filtered regime")
REGIME_READS = ("market__vol5 < 0", "market__vol20 < 0", "market__vol10 plug-in", "filtered")
"""The observable regime reads whose agreement with the generator's calm/turbulent sign the report gives: calm where
the gauge's short volatility is below its long one (`features.vol_interaction_form: sign`), the structured
variant's plug-in quantile, the two-state filter (`filtered_calm` > 0.5)."""
BASELINE = "state, no regime"
"""The variant every other is paired against."""
HORIZONS = (1, 5, 20)
"""Return horizons of the observed legs and of the drivers' box returns (the panel's defaults)."""
HALF_LIVES = (1, 2, 4, 8, 16)
"""Half-lives (dates) of the generic momenta."""
LOOKBACK = 250
"""Rows left out of the printed correlation (the momenta's start-up)."""
HEAD_ROWS = 1000
"""Leading rows (training dates of every fold) that standardise the pooled variants' terms."""
GAUGE_DECAY = 0.9
"""Decay of the pooled variants' generic FX volatility gauge."""


def simulated_states(seed: int, preset: str = PRESET) -> tuple[object, object, dict[str, np.ndarray]]:
    """The universe, the market model and the latent states of `generate(seed=seed, preset=preset)` (the same
    random stream, replayed: `simulate_market` draws the model's parameters first)."""
    params = resolve_preset(preset)
    rng = np.random.default_rng(seed)
    universe = build_universe(params, rng)
    model = market_model(universe, params, copy.deepcopy(rng))
    return universe, model, simulate_market(universe, params, rng).states


def shifted(values: np.ndarray, dates: int) -> np.ndarray:
    """values of `dates` rows before (zeros before the start)."""
    out = np.zeros_like(values)
    out[dates:] = values[: len(values) - dates]
    return out


def regime_sign(model, states: dict[str, np.ndarray]) -> np.ndarray:
    """(T,) the z that signs the lead-lag: +1 calm / -1 turbulent (`MarketModel.calm`)."""
    return np.where(model.calm(states["vol_regime"], states["gauge"]), 1.0, -1.0)


def leg_sum(universe, column: str, values: np.ndarray) -> np.ndarray:
    """(T,) the signed sum over the column's asset legs of a (T, A) per-asset state."""
    return sum(sign * values[:, i] for i, sign in universe.legs(column))


def design(universe, states: dict[str, np.ndarray], pair: str, regime: np.ndarray | None,
           drift_regime: bool = False, delay: int = 2) -> np.ndarray:
    """(T, k) regressors of one target: R of each leg column, M, regime * M when `regime` is given (both of the
    last delay - 1 dates), and one-hot indicators of the drift regime's state (but the first) when
    `drift_regime`."""
    momentum = states["momentum"]
    columns = [leg_sum(universe, column, states["own"]) for column in parse_pair(pair)]
    for dates in range(delay - 1):
        columns += list(shifted(momentum, dates).T)
        if regime is not None:
            columns += list(shifted(regime[:, None] * momentum, dates).T)
    if drift_regime:
        columns += [(states["drift_regime"] == q).astype(np.float64) for q in np.unique(states["drift_regime"])[1:]]
    return np.column_stack(columns)


def structured_designs(universe, model, states: dict[str, np.ndarray], pairs: list[str],
                       lags: list[int]) -> list[np.ndarray]:
    """Per target, the `structured` regressors: its legs' R and, per driver, the lead-lag's exact sum over the
    target's horizon (`MarketModel.lead_factors` on `states`)."""
    horizon_sums = {lag: sum(model.lead_factors(states, k) for k in range(2, lag + 2)) for lag in set(lags)}
    return [np.column_stack([*(leg_sum(universe, column, states["own"]) for column in parse_pair(pair)),
                             *horizon_sums[lag].T])
            for pair, lag in zip(pairs, lags)]


def exponential_momentum(returns: np.ndarray, decay: float) -> np.ndarray:
    """(T,) m(t) = decay m(t-1) + r(t) over the whole history (missing returns count as 0)."""
    out, total = np.empty(len(returns)), 0.0
    for t, value in enumerate(np.nan_to_num(returns)):
        total = decay * total + value
        out[t] = total
    return out


def matched_horizon(decay: float) -> int:
    """The box-return horizon of HORIZONS nearest (in log) to the window 1 / (1 - decay) of a momentum's decay."""
    return min(HORIZONS, key=lambda h: abs(np.log(h * (1 - decay))))


def filtered_calm(returns: np.ndarray, calm_stay: float, turbulent_stay: float, head: int) -> np.ndarray:
    """(T,) P(calm on date t | the returns of dates <= t): the forward recursion of a two-state Markov chain (stay
    probabilities `calm_stay`, `turbulent_stay`) over `returns` ((T, N) one-day log returns; NaN carries no
    evidence). Each date's evidence is the Gaussian likelihood of its columns' returns, standardised by their std
    over the first `head` rows, at the calm and the turbulent variance: the two means of a 2-means split of the
    per-date mean square over those rows. Only the first `head` rows set its levels, so it is causal after them."""
    with np.errstate(invalid="ignore", divide="ignore"):
        squares = (returns / np.nanstd(returns[:head], axis=0)) ** 2  # (T, N)
    counts = np.isfinite(squares).sum(axis=1)  # (T,)
    mean_square = np.nansum(squares, axis=1) / np.maximum(counts, 1)  # (T,)
    levels = mean_square[:head][counts[:head] > 0]
    low, high = np.quantile(levels, [0.3, 0.9])
    for _ in range(50):  # 2-means on the head rows
        calm = np.abs(levels - low) < np.abs(levels - high)
        low, high = levels[calm].mean(), levels[~calm].mean()
    log_odds = np.where(counts > 0, -0.5 * counts * (np.log(low / high) + mean_square * (1 / low - 1 / high)), 0.0)
    prob, out = 0.5, np.empty(len(returns))
    for t, evidence in enumerate(log_odds):
        prior = prob * calm_stay + (1 - prob) * (1 - turbulent_stay)
        prob = 1 / (1 + np.exp(np.clip(-evidence - np.log(prior / (1 - prior)), -50, 50)))
        out[t] = prob
    return out


def panel_column(panel, name: str) -> np.ndarray:
    """(T,) one feature of the panel, missing values as 0."""
    return np.nan_to_num(panel.values[:, panel.column_indices([name])[0]].astype(np.float64))


def observed_designs(panel, universe, pairs: list[str], gauge: np.ndarray,
                     preset: str = PRESET) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """Per `observed` variant, the (T, k) regressors of each target from train.csv's features alone (see the
    module docstring): the legs' returns, then the drivers' terms and the gauge times each of them; and the
    exact form's momenta (one (T,) per driver)."""
    def column(name: str) -> np.ndarray:
        return panel_column(panel, name)

    returns = {d: column(f"FX_{d}__ret1") for d in universe.drivers}
    decays = resolve_preset(preset).driver_decays
    drivers = {
        VARIANTS[5]: [exponential_momentum(returns[d], decay) for d, decay in zip(universe.drivers, decays)],
        VARIANTS[6]: [exponential_momentum(r, 0.5 ** (1 / h)) for r in returns.values() for h in HALF_LIVES],
        VARIANTS[7]: [column(f"FX_{d}__ret{h}") for d in universe.drivers for h in HORIZONS],
        VARIANTS[8]: [],
    }
    drivers[VARIANTS[9]] = drivers[VARIANTS[5]] + drivers[VARIANTS[7]]
    drivers[VARIANTS[10]] = [column(f"FX_{d}__ret{matched_horizon(decay)}")
                             for d, decay in zip(universe.drivers, decays)]
    legs = [np.column_stack([column(f"{leg}__ret{h}") for leg in parse_pair(pair) for h in HORIZONS])
            for pair in pairs]  # built once, shared by every variant
    designs = {}
    for name, terms in drivers.items():
        extra = np.column_stack([*terms, *(-gauge * term for term in terms)]) if terms else np.empty((len(gauge), 0))
        designs[name] = [np.hstack([x, extra]) for x in legs]
    return designs, drivers[VARIANTS[5]]


def pooled_designs(panel, competition, universe) -> dict[str, np.ndarray]:
    """Per `pooled` variant, the (T, k) terms shared by every target: each FX pair's exponentially weighted one-day
    returns at HALF_LIVES, and each times a generic FX volatility gauge (the log of an exponentially weighted mean
    square of every FX pair's one-day return over its std, standardised), for every FX pair of train.csv or the
    drivers only; standardised on the first HEAD_ROWS rows."""
    pairs = [c for c in competition.train.columns if c.startswith("FX_")]
    returns = {c: panel_column(panel, f"{c}__ret1") for c in pairs}
    every = np.column_stack(list(returns.values()))
    square = ((every / (every[:HEAD_ROWS].std(axis=0) + 1e-12)) ** 2).mean(axis=1)
    gauge = np.log(exponential_momentum(square * (1 - GAUGE_DECAY), GAUGE_DECAY) + 1e-12)
    gauge = (gauge - gauge[LOOKBACK:HEAD_ROWS].mean()) / gauge[LOOKBACK:HEAD_ROWS].std()
    designs = {}
    for name, columns in ((VARIANTS[11], pairs), (VARIANTS[12], [f"FX_{d}" for d in universe.drivers])):
        terms = [exponential_momentum(returns[c], 0.5 ** (1 / h)) for c in columns for h in HALF_LIVES]
        x = np.column_stack([*terms, *(-gauge * term for term in terms)])
        designs[name] = (x - x[:HEAD_ROWS].mean(axis=0)) / (x[:HEAD_ROWS].std(axis=0) + 1e-12)
    return designs


def ridge_forecast(x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge of y on x over the finite training rows, predicted on the validation rows."""
    rows = train[np.isfinite(y[train]) & np.isfinite(x[train]).all(axis=1)]
    mean, std = x[rows].mean(axis=0), x[rows].std(axis=0) + 1e-12
    xs, target = (x[rows] - mean) / std, y[rows] - y[rows].mean()
    weights = np.linalg.solve(xs.T @ xs + penalty * len(rows) * np.eye(x.shape[1]), xs.T @ target)
    return np.nan_to_num((x[val] - mean) / std) @ weights + y[rows].mean()


def cells(seed: int, work: Path, penalty: float = RIDGE, preset: str = PRESET, folds: int | None = None) -> list[dict]:
    """One row per fold of data seed `seed` (`folds` walk-forward folds + the holdout; None: the default split's):
    the oracle's and every variant's score on its validation dates."""
    folder = data_folder(work, seed, preset)
    competition = load_competition(folder)
    pairs, labels = competition.pairs, competition.labels
    targets, lags = pairs["target"].to_list(), [int(lag) for lag in competition.target_lags]
    universe, model, states = simulated_states(seed, preset)
    delay = model.preset.signal_delay
    panel = build_panel(competition.train, None, pairs,
                        FeatureConfig(return_horizons=list(HORIZONS), market_vol=[5, 10, 20]))
    gauges = {w: panel.values[:, panel.column_indices([f"market__vol{w}"])[0]].astype(np.float64) for w in (5, 10, 20)}
    gauge = np.nan_to_num(gauges[10] - np.nanmedian(gauges[10]))
    truth = labels[targets].to_numpy().astype(np.float64)
    oracle = load_oracle(folder, competition)
    calm = regime_sign(model, states)
    regimes = {VARIANTS[0]: calm, VARIANTS[1]: calm, VARIANTS[2]: -gauge, VARIANTS[3]: None}
    designs = {name: [design(universe, states, pair, regime, name == VARIANTS[0], delay)
                      for pair in pairs["pair"].to_list()]
               for name, regime in regimes.items()}
    # the structured variant's regime read from market__vol10: calm below its quantile at the share of calm dates
    plug_in_calm = gauge < np.quantile(gauge, (calm > 0).mean())
    plug_in = model.with_sign(states, plug_in_calm)
    prices = [c for c in competition.train.columns if c != "date_id" and column_kind(c) == "price"]
    levels = log_levels(raw_matrix(competition.train, prices), 0)  # not filled: a missing price makes its own
    returns = np.diff(levels, axis=0, prepend=np.nan)  # and the next return NaN
    cfg = Config()
    if folds is not None:
        cfg.split = dataclasses.replace(cfg.split, n_folds=folds)
    split = competition_folds(competition, cfg)
    # the filter's levels: the rows of the training dates of every fold
    head = int(np.searchsorted(competition.train["date_id"].to_numpy(), split[0].train_dates[1], side="right"))
    calm_prob = filtered_calm(returns, model.preset.calm_stay, model.preset.turbulent_stay, head)
    filtered_calm_dates = calm_prob > 0.5
    filtered = model.with_sign(states, filtered_calm_dates)
    reads = dict(zip(REGIME_READS, (gauges[5] < 0, gauges[20] < 0, plug_in_calm, filtered_calm_dates)))
    for name, known in ((VARIANTS[4], states), (VARIANTS[13], plug_in), (VARIANTS[14], filtered)):
        designs[name] = structured_designs(universe, model, known, pairs["pair"].to_list(), lags)
    observed, exact = observed_designs(panel, universe, pairs["pair"].to_list(), gauge, preset)
    designs |= observed
    correlations = [np.corrcoef(m[LOOKBACK:], true[LOOKBACK : len(m)])[0, 1]
                    for m, true in zip(exact, states["momentum"].T)]
    print("correlation of the observed exact momenta with the true M:", " ".join(f"{c:.4f}" for c in correlations),
          flush=True)
    pooled = pooled_designs(panel, competition, universe)
    purge = max(lags) + 1
    rows = []
    for fold in split:
        train = np.arange(fold.train_dates[0], fold.train_dates[1] + 1)
        val = np.arange(fold.val_dates[0], fold.val_dates[1] + 1)
        row = {"seed": seed, "fold": fold.name, "oracle": rank_correlation_sharpe(truth[val], oracle[val])}
        for name in VARIANTS:
            if name in pooled:  # one reduced-rank fit of every target, on labels released by the fold's end
                fit = train[:-purge]
                weights, intercept = fit_reduced_rank(pooled[name][fit], truth[fit], np.array(lags), purge)
                forecast = pooled[name][val] @ weights + intercept
            else:
                forecast = np.column_stack([ridge_forecast(x, truth[:, j], train, val, penalty)
                                            for j, x in enumerate(designs[name])])
            row[name] = rank_correlation_sharpe(truth[val], forecast)
        for name, read in reads.items():
            row[f"agree: {name}"] = float(np.mean(read[val] == (calm[val] > 0)))
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def report(rows: list[dict], penalty: float = RIDGE, preset: str = PRESET, folds: int | None = None) -> str:
    frame = pl.DataFrame(rows)
    oracle = frame["oracle"].to_numpy()
    seeds = ", ".join(str(seed) for seed in sorted(set(frame["seed"].to_list())))
    lines = [
        f"### What a model can learn on the {preset} preset: the state and observable ceilings "
        "(bench/bench_ceiling.py)",
        "",
        f"Per-target ridge (penalty {penalty:g} per row) on the generator's own state variables (`state` rows) or "
        "on train.csv's features, told which FX pairs are the drivers (`observed` rows: the legs' returns, and the "
        "drivers' terms with the market__vol10 gauge's interaction; see the script's docstring), fitted on each "
        f"fold's training dates of the {'default split' if folds is None else f'split with {folds} walk-forward folds'}"
        f" and scored on its validation dates; {len(rows)} cells (data "
        f"seeds {seeds} x {frame['fold'].n_unique()} folds, the holdout included: the lever lab's cells). "
        f"`python bench/bench_ceiling.py --seeds {seeds.replace(',', '')}"
        f"{'' if preset == PRESET else ' --preset ' + preset}{'' if folds is None else f' --folds {folds}'}`.",
        "",
        f"| model | score mean ± std | of oracle | paired Δ vs {BASELINE} |",
        "|---|---|---|---|",
        f"| oracle (true state and parameters) | {oracle.mean():+.3f} ± {oracle.std():.3f} | 100% | |",
    ]
    base = frame[BASELINE].to_numpy()
    for name in VARIANTS:
        values = frame[name].to_numpy()
        delta = values - base
        versus = "—" if name == BASELINE else f"{delta.mean():+.3f} ± {delta.std():.3f}"
        lines.append(f"| {name} | {values.mean():+.3f} ± {values.std():.3f} | {values.mean() / oracle.mean():.0%} "
                     f"| {versus} |")
    lines += ["", "How often each observable read of the regime agrees with the generator's regime on the cells' "
              "validation dates (mean, min and max over the cells; `REGIME_READS`):", "",
              "| regime read | agreement mean | min | max |", "|---|---|---|---|"]
    for name in REGIME_READS:
        agree = frame[f"agree: {name}"].to_numpy()
        lines.append(f"| {name} | {agree.mean():.3f} | {agree.min():.3f} | {agree.max():.3f} |")
    lines += ["", "Per cell:", "", "| seed | fold | oracle | " + " | ".join(VARIANTS) + " |",
              "|---|---|---|" + "---|" * len(VARIANTS)]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['fold']} | {row['oracle']:+.3f} | "
                     + " | ".join(f"{row[name]:+.3f}" for name in VARIANTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/spread_ceiling"),
                        help="work folder of the generated competitions, laid out as the lever lab's (WORK/data/): "
                        "pass the lab's --work to score the very data its runs trained on")
    parser.add_argument("--out", type=Path, help="report file (default bench/CEILING.md; bench/CEILING-PRESET.md "
                        "for another preset, with -foldsN for --folds N)")
    parser.add_argument("--ridge", type=float, default=RIDGE, help="ridge penalty per training row")
    parser.add_argument("--preset", default=PRESET, choices=LAB_PRESETS,
                        help="synthetic preset (realistic_strong: the diagnostic with a twice stronger lead-lag; "
                        "realistic_fxvol: the lead-lag signed by an observable FX volatility gauge)")
    parser.add_argument("--folds", type=int, help="walk-forward folds before the holdout (split.n_folds; default: the "
                        "default split's 3): 6 scores the lever lab's `--folds 6` cells, the issue's grid")
    args = parser.parse_args(argv)
    name = "CEILING" + ("" if args.preset == PRESET else f"-{args.preset}") + ("" if args.folds is None else
                                                                             f"-folds{args.folds}")
    out = args.out or ROOT / "bench" / f"{name}.md"
    rows = [row for seed in args.seeds for row in cells(seed, args.work, args.ridge, args.preset, args.folds)]
    text = report(rows, args.ridge, args.preset, args.folds)
    print(text)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
