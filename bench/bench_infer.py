"""CPU benchmark of the predictor under the evaluation API: per-call latency and resident memory over 300 calls.

    python bench/bench_infer.py [--calls 300] [--threads 2] [--members 3] [--config configs/default.yaml]
                                [--all-features] [--data DIR] [--run RUN]

Targets (issues 6 and 13): p99 under 100 ms per call on 2 cores after the first call for a 3-member ensemble (the
default config's seed ensemble), and no resident memory growth beyond 50 MB over 300 consecutive calls. Without
`--run`, a run folder with `--members` randomly initialised checkpoints of the given config (default:
configs/default.yaml, d_model 192, 4 layers, 6 heads, L 192) is written for the `mitsui` synthetic
preset, its inputs chosen by the config's pre-screen on the last 500 dates as a training fold would (default
config: at most 64 features), or every panel feature with `--all-features` (the upper bound: the predictor builds
only the inputs its models read). Latency depends on shapes, not on weights.
The calls replay the gateway's batches of test.csv and then keep serving new dates past the end of train (copies of
earlier rows with new date_ids, empty lag batches), as in the forecasting phase, until `--calls` calls are made.
Memory is the process's resident set (VmRSS) after the first call and after the last. Beside the wall-clock
latency the process CPU time of each call is reported: on a machine shared with other jobs the wall clock measures
the others too, the CPU time does not (with 2 threads a call's wall time is at least half its CPU time). On an
oversubscribed machine OpenMP's spinning threads dominate the tail (measured: p99 2.4 s with 2 threads at load
average 5 on 2 cores, 129 ms with `OMP_WAIT_POLICY=PASSIVE`, 54 ms with `--threads 1`): compare such numbers only
with the same load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from spread.checkpoint import save_checkpoint, serving_state, write_manifest  # noqa: E402
from spread.competition import load_competition  # noqa: E402
from spread.config import load_config  # noqa: E402
from spread.gateway import generate_batches, read_served_files  # noqa: E402
from spread.infer import latency_stats, make_predict  # noqa: E402
from spread.model import GatedTransformer  # noqa: E402
from spread.prior import mean_rank_prior, write_prior  # noqa: E402
from spread.scaling import Scaler  # noqa: E402
from spread.synth import generate  # noqa: E402
from spread.screening import screen_features  # noqa: E402
from spread.windows import competition_panel, label_matrix  # noqa: E402

OUT = ROOT / "bench" / "out"


def resident_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def random_run(run: Path, data: Path, config: Path, members: int, all_features: bool) -> Path:
    """A run folder of `members` randomly initialised checkpoints of `config` reading the features its pre-screen
    keeps on the last 500 dates (all panel features with `all_features`)."""
    comp = load_competition(data)
    cfg = load_config(config)
    panel = competition_panel(comp, cfg.features)
    rows = np.arange(len(panel.date_ids) - 500, len(panel.date_ids))
    labels = label_matrix(comp.labels, panel.date_ids, comp.target_names)[rows]
    keep = panel.names if all_features else screen_features(panel, rows, labels, cfg.screen).keep
    scaler = Scaler.fit(panel.values[rows], keep, cfg.scaling, columns=panel.column_indices(keep))
    names = []
    for index in range(members):
        torch.manual_seed(index)
        model = GatedTransformer(cfg.model, n_features=len(keep), target_lags=comp.target_lags.tolist())
        names.append(f"fold{index}/best.pt")
        scale = [0.01 * int(lag) for lag in comp.target_lags]
        save_checkpoint(run / names[-1], serving_state(model, cfg, keep, scaler, comp.target_names, comp.target_lags,
                                                       scale))
    write_prior(run / "prior.json", comp.target_names, mean_rank_prior(comp.labels.drop("date_id").to_numpy()))
    write_manifest(run, names)
    print(f"wrote {run}: {members} checkpoint(s), {len(keep)} of {len(panel.names)} panel features as inputs, "
          f"config {config}")
    return run


def served_calls(data: Path, n_calls: int) -> list[tuple[pl.DataFrame, ...]]:
    """The gateway's batches for test.csv, then new dates past train's end until `n_calls` calls."""
    test, lagged = read_served_files(data)
    calls = [batches for _, batches in generate_batches(test, lagged)][:n_calls]
    empty = [batch.clear() for batch in calls[0][1:]]
    last = int(pl.read_csv(data / "train.csv", columns=["date_id"])["date_id"].max())
    index = 0
    while len(calls) < n_calls:
        index += 1
        row = test[index % test.height].with_columns(pl.lit(last + index, dtype=pl.Int64).alias("date_id"))
        calls.append((row, *empty))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2: the target)")
    parser.add_argument("--members", type=int, default=3, help="checkpoints in the random run (default 3)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--all-features", action="store_true",
                        help="random run reading every panel feature (default: the config's pre-screen output)")
    parser.add_argument("--data", type=Path, help="competition folder (default: the mitsui synthetic preset)")
    parser.add_argument("--run", type=Path, help="run folder (default: a random run of --config)")
    parser.add_argument("--out", type=Path, default=OUT / "bench_infer.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = args.data or OUT / "data-mitsui"
    if args.data is None and not (data / "target_pairs.csv").is_file():
        generate(data, seed=0, preset="mitsui")
    inputs = "all" if args.all_features else "screened"
    run = args.run or random_run(OUT / f"run-random-{args.config.stem}-{args.members}-{inputs}", data, args.config,
                                 args.members, args.all_features)
    calls = served_calls(data, args.calls)

    predict = make_predict(run, data, device="cpu", strict=True)
    seconds, cpu_seconds, memory = [], [], []
    for batches in calls:
        start, cpu_start = time.perf_counter(), time.process_time()
        predict(*batches)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        memory.append(resident_mb())
    stats = latency_stats(seconds)
    cpu = {f"cpu_{key}": value for key, value in latency_stats(cpu_seconds).items() if key.endswith("_ms")}
    growth = memory[-1] - memory[0]
    result = {
        "torch": torch.__version__, "polars": pl.__version__, "threads": torch.get_num_threads(),
        "config": str(args.config), "members": args.members, "run": str(run), "calls": len(seconds), **stats, **cpu,
        "rss_after_first_mb": memory[0], "rss_after_last_mb": memory[-1], "rss_growth_mb": growth,
        "rss_max_mb": max(memory), "fallback_calls": predict.stats()["fallback_calls"],
        "answers": predict.summary()["answers"], "problems": predict.summary()["problems"],
    }
    print(f"torch {torch.__version__}, polars {pl.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"first call (loads the run): {stats['first_s']:.2f} s")
    print(f"later calls: p50 {stats['p50_ms']:.1f} ms, p90 {stats['p90_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
          f"max {stats['max_ms']:.1f} ms (target p99 < 100 ms)")
    print(f"CPU time of the later calls: p50 {cpu['cpu_p50_ms']:.1f} ms, p99 {cpu['cpu_p99_ms']:.1f} ms "
          f"(all threads; machine load average {Path('/proc/loadavg').read_text().split()[0]})")
    print(f"resident memory: {memory[0]:.0f} MB after the first call, {memory[-1]:.0f} MB after call {len(memory)}: "
          f"growth {growth:+.1f} MB (target < 50 MB); fallback calls {result['fallback_calls']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
