"""bench/bench_ceiling.py's filtered regime: a causal two-state filter of the files' returns."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_SCRIPT = Path(__file__).parents[1] / "bench" / "bench_ceiling.py"
_SPEC = importlib.util.spec_from_file_location("bench_ceiling", _SCRIPT)
bench_ceiling = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_ceiling)


def _regime_returns(seed: int = 0, dates: int = 3000, columns: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) returns of a calm (std 1%) / turbulent (std 1.8%) Markov chain, and (T,) True where calm."""
    rng = np.random.default_rng(seed)
    calm = np.empty(dates, dtype=bool)
    state = True
    for t in range(dates):
        state = rng.random() < (0.985 if state else 0.03)
        calm[t] = state
    returns = rng.standard_normal((dates, columns)) * np.where(calm, 0.01, 0.018)[:, None]
    returns[rng.random((dates, columns)) < 0.1] = np.nan  # missing prices carry no evidence
    return returns, calm


def test_filtered_calm_reads_the_regime() -> None:
    returns, calm = _regime_returns()
    prob = bench_ceiling.filtered_calm(returns, 0.985, 0.97, head=1000)
    assert prob.shape == calm.shape and np.all((prob >= 0) & (prob <= 1))
    assert ((prob > 0.5) == calm)[1000:].mean() > 0.9
    assert ((prob > 0.5) == calm)[1000:].mean() > max(calm.mean(), 1 - calm.mean()) + 0.05  # beats a constant


def test_filtered_calm_is_causal_after_its_head_rows() -> None:
    returns, _ = _regime_returns(seed=1)
    prob = bench_ceiling.filtered_calm(returns, 0.985, 0.97, head=1000)
    later = returns.copy()
    later[2000:] *= 3.0  # a turbulent future
    changed = bench_ceiling.filtered_calm(later, 0.985, 0.97, head=1000)
    np.testing.assert_array_equal(prob[:2000], changed[:2000])
    assert changed[2000:].mean() < prob[2000:].mean()


def test_filtered_calm_carries_its_belief_over_a_missing_date() -> None:
    returns, _ = _regime_returns(seed=2)
    returns[1500] = np.nan
    prob = bench_ceiling.filtered_calm(returns, 0.985, 0.97, head=1000)
    before = prob[1499]
    assert np.isclose(prob[1500], before * 0.985 + (1 - before) * 0.03)


def test_report_gives_each_regime_reads_agreement() -> None:
    rows = [{"seed": seed, "fold": fold, "oracle": 1.0, **{name: 0.5 for name in bench_ceiling.VARIANTS},
             **{f"agree: {name}": 0.8 + 0.1 * seed for name in bench_ceiling.REGIME_READS}}
            for seed in (0, 1) for fold in ("fold0", "holdout")]
    text = bench_ceiling.report(rows, folds=6)
    for name in bench_ceiling.REGIME_READS:
        assert f"| {name} | 0.850 | 0.800 | 0.900 |" in text
