"""The earlier "momentum" dynamics of the synthetic competition (presets `mitsui` and `small`): synchronous closes
and a planted signal linear in the FX drivers' momenta, with a closed-form oracle.

"momentum" dynamics (mitsui, small): synchronous closes and alpha_i(t) = sum_d c_id M_d(t-2) + mu_i, so that

    E[ln P_i(t+L+1) - ln P_i(t+1) | t] = L mu_i + sum_d c_id M_d(t) (1 - lambda_d^L) / (1 - lambda_d).

The signal is linear in an observable state: ridge on the screened features reaches ~90% of the oracle (~1.3 over
the scored window, twice the real winners' 0.64), so it cannot tell a good model from a linear one.
"""

from __future__ import annotations

import math

import numpy as np

from spread.synth_presets import Simulation, SynthPreset, Universe, asset_scales, garch_t, signal_free_assets


def simulate(universe: Universe, preset: SynthPreset, rng: np.random.Generator) -> Simulation:
    """The `momentum` dynamics (the mitsui preset): synchronous closes, a signal linear in the drivers' momenta."""
    assets, n_dates = universe.assets, preset.n_dates
    loadings, share, sigma = asset_scales(universe, preset, rng)
    factors, factor_var = garch_t(rng, n_dates, preset.n_factors, preset)
    idio, idio_var = garch_t(rng, n_dates, len(assets), preset)
    returns = sigma * (np.sqrt(share) * (factors @ loadings.T) + np.sqrt(1 - share) * idio)
    conditional_vol = sigma * np.sqrt(share * (factor_var @ (loadings**2).T) + (1 - share) * idio_var)

    signal_free = signal_free_assets(universe)
    momentum = np.zeros((n_dates, len(universe.drivers)))
    for d, (pair, decay) in enumerate(zip(universe.drivers, preset.driver_decays)):
        driver_returns = sum(sign * returns[:, i] for i, sign in universe.legs(f"FX_{pair}"))
        driver_returns[0] = 0.0
        for t in range(1, n_dates):
            momentum[t, d] = decay * momentum[t - 1, d] + driver_returns[t]
    weights = rng.normal(size=(len(assets), len(universe.drivers))) / math.sqrt(len(universe.drivers))
    signal_loadings = (preset.signal_strength * sigma)[:, None] * weights / momentum.std(axis=0)
    signal_loadings[signal_free] = 0.0
    drift = preset.drift_scale * rng.normal(size=len(assets))
    drift[signal_free] = 0.0

    alpha = np.zeros_like(returns)
    alpha[2:] = momentum[:-2] @ signal_loadings.T
    returns = returns + alpha + drift
    returns[0] = 0.0
    levels = np.log([a.level for a in assets])
    decays = np.array(preset.driver_decays)
    expected = {}
    for lag in preset.lags:
        growth = (1.0 - decays**lag) / (1.0 - decays)  # sum_{k<lag} decay^k, per driver
        expected[lag] = lag * drift + (momentum * growth) @ signal_loadings.T
    return Simulation(levels + np.cumsum(returns, axis=0), conditional_vol, expected)
