"""The fault-injection scenarios of tests/test_faults.py on a synthetic competition, as one table (issue 12).

    python bench/bench_faults.py [--preset small] [--members tiny|own] [--out bench/out/bench_faults.md]

For every scenario (a quirk of the served files, of the run folder, of each call's batches, or a device failure)
a copy of the synthetic competition and of a two-member random run (`--members own`: members like the default's,
with each target's own features and the market volatility gauge) is served date by date through
`spread.infer.make_predict`, and the table says how many calls were made, how many the model answered (all or some
members), how many fell back (prior or placeholder), and which problem kinds were counted (kind and count).
Raised calls or invalid answers, which the suite asserts are zero, are shown beside the fallbacks when there are
any.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # run as a script from anywhere; the scenarios live in the suite

from test_faults import OWN_CONFIG, SCENARIOS, make_base, run_scenario  # noqa: E402

OUT = ROOT / "bench" / "out" / "bench_faults.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["small", "mitsui"],
                        help="synthetic preset (default small)")
    parser.add_argument("--members", default="tiny", choices=["tiny", "own"],
                        help="tiny random members (default) or members like the default's (own features, market gauge)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"markdown table (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.CRITICAL)  # the predictor's own log would drown the table
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = make_base(Path(tmp) / "base", preset=args.preset,
                         config=OWN_CONFIG if args.members == "own" else None)
        for index, scenario in enumerate(SCENARIOS):
            outcome = run_scenario(scenario, base, Path(tmp) / f"s{index}")
            problems = sorted(outcome.summary["problems"].items())
            logged = ", ".join(f"{kind} {count}" for kind, count in problems) or "-"
            bad = outcome.raised or outcome.invalid
            broken = f" ({outcome.raised} raised, {outcome.invalid} invalid)" if bad else ""
            fallback = f"{outcome.fallback}{broken}"
            rows.append(f"| {scenario.name} | {outcome.calls} | {outcome.model} | {fallback} | {logged} |")
    table = "\n".join(["| scenario | calls | model answers | fallback | logged |", "|---|---:|---:|---:|---|", *rows])
    print(table)
    seconds = time.perf_counter() - started
    print(f"\n{len(SCENARIOS)} scenarios on the {args.preset} preset, {args.members} members, in {seconds:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
