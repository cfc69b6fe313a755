"""The synthetic competition's preset registry and the simulated universe both dynamics share: assets,
exchange groups, FX drivers, GARCH(1,1) Student-t shocks and clustered factor loadings.

A preset (`SynthPreset`, registered in `PRESETS`) fixes the shapes, the dynamics and their parameters; `spread.synth`
writes the competition folder from it, with the dynamics of `spread.synth_momentum` or `spread.synth_market`.

Shared by both dynamics: every asset's daily log return has a factor part and an idiosyncratic part with GARCH(1,1)
volatility clusters and Student-t shocks (Bollerslev 1986, 1987), sigma_i (sqrt(s_i) b_i . f + sqrt(1 - s_i) e_i),
with a systematic share s_i and unit-norm loadings b_i clustered by exchange (market: by theme across exchanges,
THEMES). FX columns are cross rates of currency values against USD, so they are triangle-consistent. A few FX rates
are "drivers" whose currencies carry no drift and no planted signal: their returns are martingale differences and
their exponentially weighted momenta M_d(t) = lambda_d M_d(t-1) + r_d(t) are observable (FX never misses a day).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from spread.errors import ConfigError

LME_METALS = ("AH", "CA", "PB", "ZS")
LME_LEVELS = {"AH": 2000.0, "CA": 7000.0, "PB": 2000.0, "ZS": 2500.0}
JPX_CONTRACTS = (
    "Gold_Mini", "Gold_Rolling-Spot", "Gold_Standard", "Platinum_Mini", "Platinum_Standard", "RSS3_Rubber"
)
JPX_SETTLED = ("Gold_Mini", "Gold_Rolling-Spot", "Platinum_Mini", "RSS3_Rubber")
JPX_LEVELS = {"Gold": 5500.0, "Platinum": 3800.0, "RSS3": 230.0}
JPX_FIELDS = ("Open", "High", "Low", "Close", "Volume", "open_interest", "settlement_price")
US_TICKERS = (
    "ACWI AEM AG AGG ALB AMP BCS BKR BND BNDX BP BSV CAT CCJ CLF COP CVE CVX DE DVN EEM EFA EMB ENB EOG EWJ EWT EWY "
    "EWZ FCX FNV FXI GDX GDXJ GLD GOLD HAL HES HL IAU IEF IEMG IGSB JNK KGC KMI LQD LYB MBB MPC MS NEM NUE NUGT OIH "
    "OKE OXY PAAS RIO RSP RY SCCO SHEL SHY SLB SLV SPIB SPTL SPYV STLD TD TECK TIP TRGP URA VALE VCIT VCSH VEA VGIT "
    "VGK VGLT VGSH VT VTV VWO VXUS VYM WMB WPM X XLB XLE XOM YINN"
).split()
US_FIELDS = ("open", "high", "low", "close", "volume")
FX_PAIRS = (
    "AUDJPY AUDUSD CADJPY CHFJPY EURAUD EURGBP EURJPY EURUSD GBPAUD GBPJPY GBPUSD NZDJPY NZDUSD USDCHF USDJPY ZARJPY "
    "ZARUSD NOKUSD NOKEUR CADUSD AUDNZD EURCHF EURCAD AUDCAD GBPCHF EURNZD AUDCHF GBPNZD GBPCAD CADCHF NZDCAD NZDCHF "
    "ZAREUR NOKGBP NOKCHF ZARCHF NOKJPY ZARGBP"
).split()
NUMERAIRE = "USD"
CURRENCY_IN_USD = {
    "EUR": 1.1, "GBP": 1.3, "JPY": 0.0075, "AUD": 0.7, "NZD": 0.63, "CAD": 0.75, "CHF": 1.05, "NOK": 0.1, "ZAR": 0.06
}
"""Nominal value of one unit of each currency in USD (the starting FX levels)."""
THEMES = {
    "precious": {"Gold", "Platinum", "GLD", "IAU", "GDX", "GDXJ", "NUGT", "NEM", "AEM", "GOLD", "KGC", "FNV", "WPM",
                 "SLV", "PAAS", "HL", "AG"},
    "metals": {"AH", "CA", "PB", "ZS", "FCX", "SCCO", "TECK", "RIO", "VALE", "CLF", "X", "NUE", "STLD", "ALB", "XLB"},
    "energy": {"XOM", "CVX", "COP", "BP", "SHEL", "OXY", "DVN", "EOG", "HES", "HAL", "SLB", "BKR", "OIH", "XLE", "MPC",
               "CVE", "ENB", "KMI", "OKE", "TRGP", "WMB", "CCJ", "URA"},
}
"""Market dynamics: assets of one theme share a factor cluster across exchanges (JPX gold and GLD, LME copper and
FCX), so that asynchronous closes show up as lead-lag correlations between exchanges."""
GROUP_DAILY_VOL = {"LME": 0.011, "JPX": 0.01, "US": 0.012, "FX": 0.005}
PRICE_DIGITS = 7
"""Significant digits of written prices (fixed per instrument from its starting level, so OHLC order survives)."""
JPX_BASIS_VOL = 0.0005
"""Daily i.i.d. noise between a JPX contract and its underlying (Mini, Standard and Rolling-Spot gold differ)."""


DYNAMICS = ("momentum", "market")
GAUGES = ("hidden", "fx_vol")
"""What sets the sign of the market dynamics' lead-lag (`SynthPreset.regime_gauge`)."""


@dataclass(frozen=True)
class SynthPreset:
    """Sizes and dynamics of one synthetic competition."""

    n_dates: int = 1961
    """Train dates (date_id 0..n_dates-1)."""
    n_test: int = 134
    """test.csv rows: the last n_test train dates."""
    n_scored: int = 90
    """Leading test rows with is_scored true."""
    n_lme: int = 4
    """LME metals (closes only), taken from AH, CA, PB, ZS."""
    n_jpx_contracts: int = 6
    """JPX futures contracts (OHLC, Volume, open_interest, some settlement_price), spread over the six real ones."""
    n_us_tickers: int = 95
    """US tickers (adjusted OHLC and volume), spread over the 95 real ones."""
    n_fx: int = 38
    """FX cross rates, spread over the 38 real ones."""
    n_targets_per_lag: int = 106
    """Targets per lag (target_0.. numbered lag by lag)."""
    n_target_assets: int = 106
    """Distinct price columns used by the targets (LME, one JPX contract per underlying and FX first, then US)."""
    lags: tuple[int, ...] = (1, 2, 3, 4)
    """Target horizons."""
    single_share: float = 0.1
    """Share of single-asset targets per lag."""
    reversed_share: float = 0.05
    """Probability that a drawn pair appears reversed ("B - A") at a lag."""
    n_factors: int = 5
    """Common return factors (loadings clustered by exchange)."""
    tail_df: float = 5.0
    """Degrees of freedom of the Student-t shocks (> 2; lower = fatter tails)."""
    garch_alpha: float = 0.06
    """GARCH(1,1) reaction to yesterday's squared shock."""
    garch_beta: float = 0.92
    """GARCH(1,1) persistence of variance (alpha + beta < 1)."""
    holiday_rate_min: float = 0.02
    """Lower bound of each exchange's share of holidays (LME, JPX, US drawn independently; FX never closes)."""
    holiday_rate_max: float = 0.04
    """Upper bound of each exchange's share of holidays."""
    driver_decays: tuple[float, ...] = (0.6, 0.85, 0.95)
    """One FX driver per entry: the decay lambda of its momentum M(t) = lambda M(t-1) + r(t)."""
    signal_strength: float = 0.2
    """Std of an asset's daily planted expected return in units of its own daily volatility (0 = no signal)."""
    drift_scale: float = 0.0003
    """Std across assets of the constant daily drift mu_i (a weak persistent cross-sectional ranking)."""
    vol_scale: float = 1.0
    """Multiplier of every asset's daily volatility (GROUP_DAILY_VOL)."""
    dynamics: str = "momentum"
    """"momentum": synchronous closes, a signal linear in the drivers' momenta (`simulate`, which reads
    `signal_strength`); "market": asynchronous closes, regimes, reversal and a regime-dependent signal
    (`simulate_market`). The fields below are read by "market" only."""
    session_shares: tuple[float, float, float] = (0.3, 0.3, 0.4)
    """Shares of the daily factor variance falling in the Asian (-> JPX close), European (-> LME close) and American
    (-> US and FX close) sessions."""
    calm_stay: float = 0.985
    """Daily probability that the calm volatility regime persists."""
    turbulent_stay: float = 0.97
    """Daily probability that the turbulent volatility regime persists."""
    turbulent_vol: float = 1.8
    """Volatility multiplier of every shock in the turbulent regime (calm: 1)."""
    n_drift_regimes: int = 3
    """States of the slow drift regime; each asset has its own drift per state."""
    drift_stay: float = 0.996
    """Daily probability that the drift regime persists (else it jumps to another state, uniformly)."""
    regime_drift_scale: float = 0.0
    """Std across assets and states of the regime drift, in units of the asset's daily volatility."""
    reversal: float = 0.0
    """Typical kappa_i of the short-horizon reversal: expected return -kappa_i R_i(t-2) per unit of the asset's
    own exponentially weighted past return R_i (0 = no reversal)."""
    reversal_decay: float = 0.7
    """Decay psi of the own past return R_i(t) = psi R_i(t-1) + r_i(t) that reverses."""
    signal_linear: float = 0.0
    """Signal per unit of driver momentum common to both volatility regimes (units as `signal_strength`)."""
    signal_regime: float = 0.0
    """Signal per unit of driver momentum with the regime's sign: + when calm, - when turbulent."""
    signal_delay: int = 2
    """Dates s between the drivers' momenta and the returns they move: the lead-lag of date t reads M(t - s) (>= 2)."""
    signal_rank: int = 0
    """Structure of the lead-lag's weights w_i: 0, independent per asset and driver; 1, w_i = c_i u, one composite
    u of the drivers (a random unit vector) that every asset loads on with its own c_i (a low-rank signal)."""
    regime_gauge: str = "hidden"
    """What the lead-lag's sign reads: "hidden", the latent volatility regime (the oracle knows it, no model
    does), or "fx_vol", an observable gauge of the currencies' recent volatility (`synth_market.MarketModel`; needs
    signal_delay > every lag, so that the oracle's lead-lag is the expectation given what the files show)."""


REALISTIC = SynthPreset(
    dynamics="market", vol_scale=1.2, drift_scale=0.00065, regime_drift_scale=0.02, reversal=0.045,
    signal_linear=0.02, signal_regime=0.11,
)
FXVOL = replace(REALISTIC, regime_gauge="fx_vol", signal_delay=5)
TWICE_THE_LEAD_LAG = {"signal_linear": 2 * REALISTIC.signal_linear, "signal_regime": 2 * REALISTIC.signal_regime}
PRESETS: dict[str, SynthPreset] = {
    "realistic": REALISTIC,
    "realistic_strong": replace(REALISTIC, **TWICE_THE_LEAD_LAG),
    "realistic_fxvol": FXVOL,
    "realistic_fxvol_rank1": replace(FXVOL, signal_rank=1, **TWICE_THE_LEAD_LAG),
    "mitsui": SynthPreset(),
    "small": SynthPreset(
        n_dates=320, n_test=40, n_scored=25, n_lme=2, n_jpx_contracts=2, n_us_tickers=8, n_fx=6,
        n_targets_per_lag=12, n_target_assets=18, signal_strength=0.3,
    ),
}
"""Named presets. `realistic_strong` is a diagnostic, outside the calibration of `spread.synth`: `realistic` with
its cross-asset lead-lag twice as strong (signal_linear and signal_regime doubled, the same universe and drivers
for a seed), to ask whether a model learns that signal once it is strong enough (bench/LEVERS.md).
`realistic_fxvol` is `realistic` with the lead-lag signed by the observable FX volatility gauge and acting 5 dates
after the momenta it reads (the same universe, drivers and strengths; calibrated, `spread.synth`): its oracle's
lead-lag needs no latent regime (the slow drift regime stays latent), so what a model misses of the lead-lag is what
it did not learn (bench/OBSERVABLE.md). `realistic_fxvol_rank1` is a diagnostic outside the calibration:
`realistic_fxvol` with one composite of the drivers (signal_rank 1) and the lead-lag twice as strong, a signal a
generic pooled learner can find, to ask whether the Transformer learns what the linear peers cannot."""


DEFAULT_PRESET = "realistic"
"""What `python -m spread synth` writes unless told otherwise."""


@dataclass(frozen=True)
class Asset:
    """One simulated return series: an LME metal, a JPX underlying, a US ticker or a currency against USD."""

    group: str
    """LME, JPX, US or FX."""
    name: str
    """Metal code, JPX underlying (Gold, Platinum, RSS3), ticker or currency code."""
    level: float
    """Price on date_id 0 (USD value of one unit for a currency)."""


def spread_pick(names: tuple[str, ...] | list[str], n: int) -> list[str]:
    """n names evenly spaced over `names` (all of them when n == len(names))."""
    if not 0 < n <= len(names):
        raise ConfigError(f"synth: cannot pick {n} of {len(names)} names")
    return [names[int(i)] for i in np.round(np.linspace(0, len(names) - 1, n))]


def check_preset(preset: SynthPreset) -> None:
    if preset.tail_df <= 2:
        raise ConfigError(f"synth: tail_df must be > 2, got {preset.tail_df}")
    if min(preset.garch_alpha, preset.garch_beta) < 0 or preset.garch_alpha + preset.garch_beta >= 1:
        raise ConfigError("synth: need garch_alpha, garch_beta >= 0 and garch_alpha + garch_beta < 1")
    if not preset.lags or any(lag not in (1, 2, 3, 4) for lag in preset.lags):
        raise ConfigError(f"synth: lags must be in 1..4 (the competition's horizons), got {preset.lags}")
    if not 0 <= preset.n_scored <= preset.n_test < preset.n_dates - max(preset.lags) - 1:
        raise ConfigError("synth: need 0 <= n_scored <= n_test < n_dates - max(lags) - 1")
    if preset.n_us_tickers < 2:
        raise ConfigError("synth: n_us_tickers must be >= 2 (one empty in test, one delisting)")
    if any(not 0 <= decay < 1 for decay in preset.driver_decays):
        raise ConfigError("synth: every driver decay must be in [0, 1)")
    if preset.dynamics not in DYNAMICS:
        raise ConfigError(f"synth: dynamics must be one of {DYNAMICS}, got {preset.dynamics!r}")
    if not all(0 < p < 1 for p in (preset.calm_stay, preset.turbulent_stay)) or not 0 < preset.drift_stay <= 1:
        raise ConfigError("synth: calm_stay and turbulent_stay must be in (0, 1), drift_stay in (0, 1]")
    if min(preset.session_shares) < 0 or not math.isclose(sum(preset.session_shares), 1.0):
        raise ConfigError(f"synth: session_shares must be >= 0 and sum to 1, got {preset.session_shares}")
    if preset.signal_rank not in (0, 1):
        raise ConfigError(f"synth: signal_rank must be 0 or 1, got {preset.signal_rank!r}")
    if preset.regime_gauge not in GAUGES:
        raise ConfigError(f"synth: regime_gauge must be one of {GAUGES}, got {preset.regime_gauge!r}")
    if preset.signal_delay < 2 or (preset.regime_gauge == "fx_vol" and preset.signal_delay <= max(preset.lags)):
        raise ConfigError(f"synth: signal_delay must be >= 2, and > every lag with regime_gauge fx_vol "
                          f"(got {preset.signal_delay})")
    if not 0 <= preset.reversal_decay < 1 or preset.turbulent_vol <= 0 or preset.n_drift_regimes < 1:
        raise ConfigError("synth: need 0 <= reversal_decay < 1, turbulent_vol > 0 and n_drift_regimes >= 1")


def fx_currencies(pair: str) -> tuple[str, str]:
    return pair[:3], pair[3:]


def garch_t(
    rng: np.random.Generator, n_dates: int, n_series: int, preset: SynthPreset
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance GARCH(1,1) series with standardized Student-t shocks: (values, conditional variances), (T, n)."""
    df = preset.tail_df
    shocks = rng.standard_t(df, size=(n_dates, n_series)) * math.sqrt((df - 2) / df)
    omega = 1.0 - preset.garch_alpha - preset.garch_beta
    values, variances = np.empty_like(shocks), np.empty_like(shocks)
    variance = np.ones(n_series)
    for t in range(n_dates):
        variances[t] = variance
        values[t] = np.sqrt(variance) * shocks[t]
        variance = omega + preset.garch_alpha * values[t] ** 2 + preset.garch_beta * variance
    return values, variances


@dataclass
class Universe:
    """The instruments of one preset and the simulated assets behind them."""

    lme: list[str]
    """LME metal codes (AH, CA, ...)."""
    jpx: list[str]
    """JPX contract names (Gold_Mini, ...); contracts on one underlying share its asset."""
    us: list[str]
    """US tickers."""
    fx: list[str]
    """FX pairs without the FX_ prefix (AUDJPY, ...)."""
    assets: list[Asset]
    """The simulated return series, one per metal, JPX underlying, ticker and non-USD currency."""
    drivers: list[str]
    """FX pairs whose momentum drives the other assets."""

    def index(self, group: str, name: str) -> int:
        return next(i for i, a in enumerate(self.assets) if a.group == group and a.name == name)

    def legs(self, column: str) -> list[tuple[int, float]]:
        """(asset index, sign) whose signed log prices sum to the log price of a price column (USD is zero)."""
        if column.startswith("LME_"):
            return [(self.index("LME", column.split("_")[1]), 1.0)]
        if column.startswith("JPX_"):
            return [(self.index("JPX", column.split("_")[1]), 1.0)]
        if column.startswith("US_Stock_"):
            return [(self.index("US", column.removeprefix("US_Stock_").removesuffix("_adj_close")), 1.0)]
        base, quote = fx_currencies(column.removeprefix("FX_"))
        return [(self.index("FX", c), s) for c, s in ((base, 1.0), (quote, -1.0)) if c != NUMERAIRE]


def build_universe(preset: SynthPreset, rng: np.random.Generator) -> Universe:
    lme = spread_pick(LME_METALS, preset.n_lme)
    jpx = spread_pick(JPX_CONTRACTS, preset.n_jpx_contracts)
    us = spread_pick(US_TICKERS, preset.n_us_tickers)
    fx = spread_pick(FX_PAIRS, preset.n_fx)
    underlyings = list(dict.fromkeys(c.split("_")[0] for c in jpx))
    currencies = list(dict.fromkeys(c for pair in fx for c in fx_currencies(pair) if c != NUMERAIRE))
    nominal = [("LME", m, LME_LEVELS[m]) for m in lme] + [("JPX", u, JPX_LEVELS[u]) for u in underlyings]
    nominal += [("US", t, 50.0 * math.exp(0.8 * rng.normal())) for t in us]
    nominal += [("FX", c, CURRENCY_IN_USD[c]) for c in currencies]
    assets = [Asset(group, name, level * math.exp(0.1 * rng.normal())) for group, name, level in nominal]
    drivers = pick_drivers(fx, len(preset.driver_decays), rng)
    return Universe(lme=lme, jpx=jpx, us=us, fx=fx, assets=assets, drivers=drivers)


def pick_drivers(fx: list[str], n_drivers: int, rng: np.random.Generator) -> list[str]:
    """The first set (in a random order) of `n_drivers` FX pairs without a shared currency."""
    order = [fx[int(k)] for k in rng.permutation(len(fx))]
    for drivers in itertools.combinations(order, n_drivers):
        currencies = [c for pair in drivers for c in fx_currencies(pair)]
        if len(set(currencies)) == len(currencies):
            return list(drivers)
    raise ConfigError(f"synth: no {n_drivers} of the {len(fx)} FX pairs have distinct currencies (driver_decays)")


@dataclass
class Simulation:
    """Latent log prices and the oracle's per-asset expectations."""

    log_prices: np.ndarray
    """(T, A) latent log prices of the assets."""
    conditional_vol: np.ndarray
    """(T, A) conditional daily volatility (drives intraday ranges and volumes)."""
    expected: dict[int, np.ndarray]
    """lag L -> (T, A) E[ln P_i(t+L+1) - ln P_i(t+1) | simulated state at t], for every lag of the preset."""
    states: dict[str, np.ndarray] = field(default_factory=dict)
    """The latent state after each date, field -> (T, ...) (market dynamics: `synth_market.RECORDED`), for
    diagnostics such as bench/bench_ceiling.py; not written to the competition."""


def asset_cluster(asset: Asset, preset: SynthPreset) -> str:
    """The factor cluster of an asset: its exchange, or (market dynamics) its theme when it has one (THEMES)."""
    if preset.dynamics == "market":
        return next((theme for theme, names in THEMES.items() if asset.name in names), asset.group)
    return asset.group


def asset_scales(universe: Universe, preset: SynthPreset, rng: np.random.Generator):
    """Factor loadings clustered (A, K), systematic shares (A,) and daily volatilities (A,)."""
    assets = universe.assets
    cluster_of = [asset_cluster(a, preset) for a in assets]
    clusters = sorted(set(cluster_of))
    index = np.array([clusters.index(c) for c in cluster_of])
    centers = rng.normal(size=(len(clusters), preset.n_factors))
    loadings = centers[index] + 0.7 * rng.normal(size=(len(assets), preset.n_factors))
    loadings /= np.linalg.norm(loadings, axis=1, keepdims=True)
    share = rng.uniform(0.3, 0.7, size=len(assets))
    themed = np.array([c in THEMES for c in cluster_of])
    share[themed] = np.minimum(0.9, share[themed] + 0.2)
    sigma = np.array([GROUP_DAILY_VOL[a.group] for a in assets]) * np.exp(0.3 * rng.normal(size=len(assets)))
    return loadings, share, sigma * preset.vol_scale


def signal_free_assets(universe: Universe) -> np.ndarray:
    """(A,) True for the currencies of the drivers: no drift and no planted signal, so driver returns are shocks."""
    quiet = {c for pair in universe.drivers for c in fx_currencies(pair)}
    return np.array([a.group == "FX" and a.name in quiet for a in universe.assets])



def resolve_preset(preset: str | SynthPreset) -> SynthPreset:
    if isinstance(preset, SynthPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"synth: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]

