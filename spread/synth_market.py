"""The "market" dynamics of the synthetic competition (preset `realistic`, the default): the structure of the
real market, calibrated on the real competition (the table is in `spread.synth`), with an exact recursion on
expectations for the oracle.

"market" dynamics (realistic; `MarketModel` has the equations), the structure of the real market:
- asynchronous closes: factors move in three sessions; JPX closes after the Asian one, LME after the European one,
  US and FX after the American one, all under one date_id, so a row mixes vintages (JPX gold on t+1 correlates
  ~0.3 with GLD on t against ~0.1 the same day; LME copper on t+1 ~0.17 with FCX on t against ~0.3 the same day;
  the real figures are 0.49 / 0.33 and 0.33 / 0.58). The target starts at t+1, so this lag is no free signal;
- a constant drift per asset plus a slow drift regime (3 states, ~250 days each) of each asset; a calm / turbulent
  volatility regime (x1.8 volatility, ~67 / ~33 days) on top of the GARCH clusters;
- short-horizon reversal: expected return -kappa_i R_i(t-2) of the asset's own exponentially weighted past return
  (the last released label, used as the prediction, scores ~-0.2; real -0.18);
- a lead-lag from the drivers' momenta whose sign depends on the volatility regime (a w_i . M(t-2) with a > 0 when
  calm, < 0 when turbulent): a linear model on the current features sees only its average; a sequence model can
  read the regime from the recent volatility, and the decay of each driver's effect over several days. With
  `regime_gauge` "fx_vol" (preset `realistic_fxvol`) the sign reads an observable gauge of the currencies' recent
  volatility instead of the latent regime, and the lead-lag acts `signal_delay` = 5 dates on (a w_i . M(t-5)), so
  that every term of the oracle's lead-lag is fixed by what the files show at t.
- scale as the real data: lag-1 target std ~0.02, lag-4 ~0.04 (real ~0.01-0.02 and ~0.04-0.05).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from spread.errors import ConfigError
from spread.synth_presets import Simulation, SynthPreset, Universe, asset_scales, signal_free_assets

GROUP_CLOSE = {"JPX": 0, "LME": 1, "US": 2, "FX": 2}
"""Session at whose end each exchange closes (market dynamics): JPX first, then LME, then US and FX, all under one
date_id, so a date's row mixes vintages."""
CALM, TURBULENT = 0, 1
GAUGE_DECAY = 0.9
"""Decay rho of the FX volatility gauge G(t) (a half-life of ~6.6 dates, a few days against regimes of ~67 / ~33)."""
RECORDED = ("vol_regime", "drift_regime", "pending", "momentum", "own", "alpha", "lead", "gauge")
"""MarketState fields the oracle reads after each date."""


def markov_matrix(stay: Sequence[float]) -> np.ndarray:
    """Transition matrix of a chain whose state k persists with probability stay[k], else jumps uniformly."""
    n = len(stay)
    if n == 1:
        return np.ones((1, 1))
    matrix = np.empty((n, n))
    for k, p in enumerate(stay):
        matrix[k] = (1.0 - p) / (n - 1)
        matrix[k, k] = p
    return matrix


def stationary(matrix: np.ndarray) -> np.ndarray:
    """The stationary distribution pi = pi P of an irreducible transition matrix."""
    n = len(matrix)
    system = np.vstack([matrix.T - np.eye(n), np.ones(n)])
    return np.linalg.lstsq(system, np.concatenate([np.zeros(n), [1.0]]), rcond=None)[0]


def next_states(rng: np.random.Generator, matrix: np.ndarray, states: np.ndarray) -> np.ndarray:
    """One transition of a batch of chains."""
    cumulative = np.cumsum(matrix[states], axis=1)
    return np.minimum((rng.random(len(states))[:, None] > cumulative).sum(axis=1), len(matrix) - 1)


@dataclass
class MarketState:
    """Everything the next date depends on, for a batch of B independent paths (the generator uses B = 1)."""

    vol_regime: np.ndarray
    """(B,) CALM or TURBULENT."""
    drift_regime: np.ndarray
    """(B,) state of the slow drift chain."""
    factor_var: np.ndarray
    """(B, K) GARCH variance of the next session's factor shocks."""
    idio_var: np.ndarray
    """(B, A) GARCH variance of the next date's idiosyncratic shocks."""
    pending: np.ndarray
    """(B, 3, K) factor moves after each session's close of the last date (they count on the next date)."""
    own: np.ndarray
    """(B, A) assets' own exponentially weighted past returns R(t)."""
    momentum: np.ndarray
    """(B, D) drivers' momenta M(t)."""
    alpha: np.ndarray
    """(B, 2, A) the reversal's expected returns of the next two dates (fixed by the state two dates before)."""
    lead: np.ndarray
    """(B, signal_delay, D) the lead-lag's factors (a + g z) M_d of the next signal_delay dates (fixed by the state
    signal_delay dates before); asset i's expected return from them is lead . w_i."""
    gauge: np.ndarray
    """(B,) the FX volatility gauge G(t): an exponentially weighted mean square of the currencies' returns over their
    daily volatilities sigma_c (observable up to those constants of the draw: FX never misses a day)."""


@dataclass
class MarketModel:
    """The "market" dynamics: parameters drawn once per seed, then `step` moves a batch of paths one date on.

    Asset i's log return on date t, at its own close (JPX, LME, then US/FX):
        r_i(t) = sigma_i v(t) (sqrt(s_i) b_i . F_c(i)(t) + sqrt(1 - s_i) e_i(t)) + mu_i + D_i(Q(t)) + alpha_i(t)
                 + x_i(t) - x_i(t-1)
    with factors F moving in three sessions (so F_c(t) sums the sessions since the close c of t-1), GARCH-t shocks,
    v(t) the volatility regime's multiplier, Q(t) the slow drift regime, and the planted expected return
    alpha_i(t) = -kappa_i R_i(t-2) + (a + g z(t-s)) w_i . M(t-s): a short-horizon reversal of the asset's own
    exponentially weighted past return R_i(t) = psi R_i(t-1) + r_i(t), and a lead-lag from the drivers' momenta
    M_d(t) = lambda_d M_d(t-1) + r_d(t), s = `signal_delay` dates on, whose sign z depends on the volatility: the
    latent regime (`regime_gauge` "hidden": z = +1 calm, -1 turbulent) or the observable FX volatility gauge
    ("fx_vol": z = +1 while G(t) < turbulent_vol, else -1, with G(t) = rho G(t-1) + (1 - rho) mean_c (r_c(t) /
    sigma_c)^2 over the currencies c, rho = GAUGE_DECAY; turbulent_vol is the geometric mean of the two regimes'
    variance multipliers 1 and turbulent_vol^2).
    """

    preset: SynthPreset
    loadings: np.ndarray
    """(A, K) factor loadings b_i (unit norm, clustered by exchange)."""
    share: np.ndarray
    """(A,) systematic variance shares s_i."""
    sigma: np.ndarray
    """(A,) daily volatilities sigma_i."""
    close: np.ndarray
    """(A,) session at whose end the asset closes (GROUP_CLOSE)."""
    vol_matrix: np.ndarray
    """(2, 2) transitions of the volatility regime."""
    drift_matrix: np.ndarray
    """(S, S) transitions of the drift regime."""
    drift: np.ndarray
    """(A,) constant drifts mu_i."""
    regime_drift: np.ndarray
    """(S, A) drifts D_i(q) per drift regime."""
    reversal: np.ndarray
    """(A,) kappa_i."""
    signal: np.ndarray
    """(A, D) w_i per driver, in expected log return per unit of momentum."""
    driver_legs: list[list[tuple[int, float]]]
    """Per driver, its (asset, sign) legs."""
    currencies: np.ndarray
    """Indices of the currencies (the FX assets), whose returns make the FX volatility gauge."""

    @property
    def multipliers(self) -> np.ndarray:
        return np.array([1.0, self.preset.turbulent_vol])

    def initial_state(self, rng: np.random.Generator, batch: int) -> MarketState:
        n_assets, n_factors = self.loadings.shape
        return MarketState(
            vol_regime=rng.choice(2, size=batch, p=stationary(self.vol_matrix)),
            drift_regime=rng.choice(len(self.drift_matrix), size=batch, p=stationary(self.drift_matrix)),
            factor_var=np.ones((batch, n_factors)),
            idio_var=np.ones((batch, n_assets)),
            pending=np.zeros((batch, 3, n_factors)),
            own=np.zeros((batch, n_assets)),
            momentum=np.zeros((batch, len(self.driver_legs))),
            alpha=np.zeros((batch, 2, n_assets)),
            lead=np.zeros((batch, self.preset.signal_delay, len(self.driver_legs))),
            gauge=np.ones(batch),
        )

    def _shocks(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        df = self.preset.tail_df
        return rng.standard_t(df, size=shape) * math.sqrt((df - 2) / df)

    def _garch(self, rng: np.random.Generator, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unit-variance GARCH value, next variance) for the given current variances."""
        preset = self.preset
        value = np.sqrt(variance) * self._shocks(rng, variance.shape)
        omega = 1.0 - preset.garch_alpha - preset.garch_beta
        return value, omega + preset.garch_alpha * value**2 + preset.garch_beta * variance

    def step(self, state: MarketState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Advance every path one date in place; returns (log returns, conditional volatilities), both (B, A)."""
        preset = self.preset
        state.vol_regime = next_states(rng, self.vol_matrix, state.vol_regime)
        state.drift_regime = next_states(rng, self.drift_matrix, state.drift_regime)
        scale = self.multipliers[state.vol_regime][:, None]
        conditional_vol = self.sigma * scale * np.sqrt(
            self.share * (state.factor_var @ (self.loadings**2).T) + (1 - self.share) * state.idio_var
        )
        sessions = []
        for session_share in preset.session_shares:
            value, state.factor_var = self._garch(rng, state.factor_var)
            sessions.append(math.sqrt(session_share) * scale * value)
        by_close = np.stack([state.pending[:, c] + sum(sessions[: c + 1]) for c in range(3)], axis=1)
        state.pending = np.stack([sum(sessions[c + 1 :], np.zeros_like(sessions[0])) for c in range(3)], axis=1)
        systematic = np.einsum("bak,ak->ba", by_close[:, self.close], self.loadings)
        idio, state.idio_var = self._garch(rng, state.idio_var)
        noise = self.sigma * (np.sqrt(self.share) * systematic + np.sqrt(1 - self.share) * scale * idio)
        planted = state.alpha[:, 0] + state.lead[:, 0] @ self.signal.T
        returns = noise + self.drift + self.regime_drift[state.drift_regime] + planted
        state.own = preset.reversal_decay * state.own + returns
        driver_returns = np.stack([sum(s * returns[:, i] for i, s in legs) for legs in self.driver_legs], axis=1)
        state.momentum = np.array(self.preset.driver_decays) * state.momentum + driver_returns
        standardized = returns[:, self.currencies] / self.sigma[self.currencies]
        state.gauge = GAUGE_DECAY * state.gauge + (1 - GAUGE_DECAY) * (standardized**2).mean(axis=1)
        strength = self.signal_strength(np.where(self.calm(state.vol_regime, state.gauge), 1.0, -1.0))  # (B,)
        state.lead = np.concatenate([state.lead[:, 1:], (strength[:, None] * state.momentum)[:, None]], axis=1)
        state.alpha = np.stack([state.alpha[:, 1], -self.reversal * state.own], axis=1)
        return returns, conditional_vol

    def calm(self, vol_regime: np.ndarray, gauge: np.ndarray) -> np.ndarray:
        """Where the lead-lag takes its calm sign (z = +1): the latent regime is CALM ("hidden" gauge), or the FX
        gauge is below turbulent_vol ("fx_vol")."""
        if self.preset.regime_gauge == "hidden":
            return vol_regime == CALM
        return gauge < self.preset.turbulent_vol

    def signal_strength(self, sign: np.ndarray) -> np.ndarray:
        """a + g z: the lead-lag's strength given the regime's sign z (+1 calm, -1 turbulent, or its expectation)."""
        return self.preset.signal_linear + self.preset.signal_regime * sign

    def with_sign(self, states: dict[str, np.ndarray], calm: np.ndarray) -> dict[str, np.ndarray]:
        """The recorded states with the lead-lag's sign read from `calm` ((T,) bool: z = +1 where True) in place of
        the simulation's (`calm`): the recorded lead-lag factors recomputed from the momenta and, with the hidden
        gauge (whose sign beyond signal_delay `lead_factors` reads from it), the volatility regime set to CALM /
        TURBULENT. Given the simulation's own sign it returns the recorded states; bench/bench_ceiling.py plugs in
        an observable gauge's sign, to price not knowing the regime."""
        preset, (n_dates, n_drivers) = self.preset, states["momentum"].shape
        strength = self.signal_strength(np.where(calm, 1.0, -1.0))  # (T,)
        factors = strength[:, None] * states["momentum"]  # (T, D) recorded after each date t, for t + signal_delay
        delay = preset.signal_delay
        lead = np.stack([np.concatenate([np.zeros((delay - k, n_drivers)), factors[: n_dates - delay + k]])
                         for k in range(1, delay + 1)], axis=1)  # (T, delay, D): entry k - 1 acts on t + k
        if preset.regime_gauge != "hidden":
            return states | {"lead": lead}
        return states | {"vol_regime": np.where(calm, CALM, TURBULENT), "lead": lead}

    def lead_factors(self, states: dict[str, np.ndarray], k: int) -> np.ndarray:
        """(T, D) E[(a + g z(t+k-s)) M(t+k-s) | state at t], s = signal_delay: the lead-lag's part of E[r(t+k)] is
        this times w_i.

        Fixed at t for k <= s (recorded in `lead`). Beyond (hidden gauge only; the fx_vol gauge needs s > every
        lag) it is (a + g E[z(t+j) | Z(t)]) lambda^j M(t), j = k - s, because the momentum shocks have mean 0 given
        the regime path, so E[z(t+j) M(t+j)] = E[z(t+j) | Z(t)] lambda^j M(t).
        """
        preset = self.preset
        if k <= preset.signal_delay:
            return states["lead"][:, k - 1]
        if preset.regime_gauge != "hidden":  # z(t+j) would depend on the FX shocks after t
            raise ConfigError(f"synth: the {preset.regime_gauge} gauge has no expectation beyond signal_delay")
        j = k - preset.signal_delay
        sign = (np.linalg.matrix_power(self.vol_matrix, j) @ np.array([1.0, -1.0]))[states["vol_regime"]]
        return self.signal_strength(sign)[:, None] * states["momentum"] * np.array(preset.driver_decays) ** j

    def expected(self, states: dict[str, np.ndarray], lag: int) -> np.ndarray:
        """(T, A) E[ln P_i(t+lag+1) - ln P_i(t+1) | state at t] from the states recorded after each date t.

        Exact recursion on expectations (the dynamics are linear given the regimes). The shocks have mean 0 given
        the state and the regime path, except the factor moves after a JPX or LME close of date t: known at t (US
        and FX close later), part of r(t+1), carried by the reversal into alpha(t+3). The drift regime Q(t) moves
        k steps by the matrix power. The reversal of t+1 and t+2 is fixed at t, later it is -kappa_i E[R_i(t+k-2)];
        the lead-lag is `lead_factors` . w_i. The target sums E[r_i(t+k)] over k = 2..lag+1.
        """
        preset = self.preset
        own, total = states["own"], np.zeros_like(states["own"])
        past_own = [own]  # E[R(t + k)] for k = 0, 1, ...
        for k in range(1, lag + 2):
            reversal = states["alpha"][:, k - 1] if k <= 2 else -self.reversal * past_own[k - 2]
            drift = (np.linalg.matrix_power(self.drift_matrix, k) @ self.regime_drift)[states["drift_regime"]]
            expected_return = self.drift + drift + reversal + self.lead_factors(states, k) @ self.signal.T
            if k == 1:
                known = np.einsum("bak,ak->ba", states["pending"][:, self.close], self.loadings)
                expected_return = expected_return + self.sigma * np.sqrt(self.share) * known
            past_own.append(preset.reversal_decay * past_own[-1] + expected_return)
            if k >= 2:
                total = total + expected_return
        return total


def market_model(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> MarketModel:
    """Draw the parameters of the market dynamics for one seed."""
    loadings, share, sigma = asset_scales(universe, preset, rng)
    n_assets, n_drivers = len(universe.assets), len(universe.drivers)
    quiet = signal_free_assets(universe)
    vol_matrix = markov_matrix([preset.calm_stay, preset.turbulent_stay])
    drift_matrix = markov_matrix([preset.drift_stay] * preset.n_drift_regimes)
    # Drifts at evenly spaced normal quantiles, shuffled: the prior's strength varies less between seeds.
    quantiles = NormalDist().inv_cdf
    drift = preset.drift_scale * np.array([quantiles((k + 0.5) / n_assets) for k in rng.permutation(n_assets)])
    drift[quiet] = 0.0
    regime_drift = preset.regime_drift_scale * sigma * rng.normal(size=(preset.n_drift_regimes, n_assets))
    regime_drift[:, quiet] = 0.0
    driver_legs = [universe.legs(f"FX_{pair}") for pair in universe.drivers]
    # Momentum std from the drivers' return variance: E[v^2] (|sum_i s_i sigma_i sqrt(share_i) b_i|^2 +
    # sum_i sigma_i^2 (1 - share_i)) / (1 - lambda^2), so that signal units do not depend on the draw of the path.
    mean_square = stationary(vol_matrix) @ np.array([1.0, preset.turbulent_vol]) ** 2
    momentum_std = []
    for legs, decay in zip(driver_legs, preset.driver_decays):
        systematic = sum(s * sigma[i] * math.sqrt(share[i]) * loadings[i] for i, s in legs)
        variance = float(systematic @ systematic) + sum(sigma[i] ** 2 * (1 - share[i]) for i, _ in legs)
        momentum_std.append(math.sqrt(mean_square * variance / (1 - decay**2)))
    weights = rng.normal(size=(n_assets, n_drivers)) / math.sqrt(n_drivers)
    if preset.signal_rank == 1:  # one composite u of the drivers; extra draws only here, other presets' unchanged
        composite = rng.normal(size=n_drivers)
        weights = rng.normal(size=(n_assets, 1)) * composite / np.linalg.norm(composite)
    signal = sigma[:, None] * weights / np.array(momentum_std)
    signal[quiet] = 0.0
    return MarketModel(
        preset=preset, loadings=loadings, share=share, sigma=sigma,
        close=np.array([GROUP_CLOSE[a.group] for a in universe.assets]), vol_matrix=vol_matrix,
        drift_matrix=drift_matrix, drift=drift, regime_drift=regime_drift,
        reversal=np.where(quiet, 0.0, preset.reversal * np.exp(0.3 * rng.normal(size=n_assets))), signal=signal,
        driver_legs=driver_legs, currencies=np.array([i for i, a in enumerate(universe.assets) if a.group == "FX"]),
    )


def simulate_market(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> Simulation:
    """The `market` dynamics (see `MarketModel`), one path, with the oracle's exact expectations."""
    model = market_model(universe, preset, rng)
    state = model.initial_state(rng, 1)
    n_dates = preset.n_dates
    returns, conditional_vol = np.empty((n_dates, len(universe.assets))), np.empty((n_dates, len(universe.assets)))
    recorded: dict[str, list[np.ndarray]] = {name: [] for name in RECORDED}
    for t in range(n_dates):
        step_returns, step_vol = model.step(state, rng)
        returns[t], conditional_vol[t] = step_returns[0], step_vol[0]
        for name in RECORDED:
            recorded[name].append(getattr(state, name)[0])
    states = {name: np.stack(values) for name, values in recorded.items()}
    returns[0] = 0.0
    levels = np.log([a.level for a in universe.assets])
    expected = {lag: model.expected(states, lag) for lag in preset.lags}
    return Simulation(levels + np.cumsum(returns, axis=0), conditional_vol, expected, states)
