"""What the online update (`serve.update`, `spread.online`) is worth over a long served sequence, paired.

For each data seed, the `realistic` synthetic preset with 300 test dates (290 scored) is written; for each training
seed, a small Transformer is trained on what is known by the first test date (`data.train_end` = the date before
it; no walk-forward fold, the holdout is the served model, so it never saw a served date); then the local gateway
replays the 300 test dates once per arm (no update, and each update variant), the same predictor otherwise. Each
cell (data seed x training seed) gives the score over the scored dates and over their second half (where a frozen
model is oldest), per-call latency p50/p99 and the update's longest call; the report pairs every arm with `none`
(mean +- std of the difference, cells won) and is written to bench/ONLINE.md.

    OMP_NUM_THREADS=1 python bench/bench_online.py [--work DIR] [--jobs 2] [--arms prior_blend prior_blend:halflife=250]

An arm is a policy with optional `serve` field overrides (`name:field=value,field=value`), or the bench-only
`finetune` experiment (see FINETUNE). Finished run folders and replays in --work are reused.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_TEST, N_SCORED = 300, 290
"""Served dates of the bench's competition (the realistic preset's own test set has 134), the scored ones first."""
TRAIN = [
    "split.n_folds=0", "train.final_fit=false", "data.window=64", "model.d_model=64", "model.n_layers=2",
    "model.n_heads=4", "train.epochs=6", "train.max_steps_per_epoch=16", "train.plots=false", "train.progress=false",
]
"""On top of configs/default.yaml: the holdout alone (trained on labels released by the first served date), a
small model; about 15 s per fit on one core."""


def make_data(work: Path, seed: int) -> Path:
    from spread.synth import generate
    from spread.synth_presets import PRESETS

    folder = work / f"data-s{seed}"
    if not (folder / "test.csv").is_file():
        generate(folder, seed=seed, preset=dataclasses.replace(PRESETS["realistic"], n_test=N_TEST, n_scored=N_SCORED),
                 overwrite=True)
    return folder


def train(work: Path, data: Path, data_seed: int, seed: int) -> Path:
    run = work / f"run-d{data_seed}-s{seed}"
    if not (run / "manifest.json").is_file():
        first_test = int(np.loadtxt(data / "test.csv", delimiter=",", skiprows=1, usecols=0, max_rows=1))
        subprocess.run(
            [sys.executable, "-m", "spread", "train", "--data", str(data), "--out", str(run), "--config",
             str(ROOT / "configs/default.yaml"), *TRAIN, f"data.train_end={first_test - 1}", f"seed={seed}"],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    return run


FINETUNE = {"every": 20, "steps": 16, "lr": 1e-5, "dates": 250}
"""The experimental `finetune` arm (not a policy of the predictor, see bench/ONLINE.md): every `every` served
dates, `steps` steps of the trainer's own `spread.fit.train_step` (fresh AdamW at `lr`, gate frozen) on the windows
of the latest `dates` label dates whose labels are complete, swapped in for the next call."""


def parse_arm(arm: str) -> tuple[str, object]:
    """(policy, its settings) of `policy[:field=value,...]`: a `ServeConfig`, or the `finetune` arm's dict."""
    from spread.config import load_config

    policy, _, fields = arm.partition(":")
    items = [item.split("=", 1) for item in fields.split(",") if item]
    if policy == "finetune":
        unknown = {key for key, _ in items} - FINETUNE.keys()
        if unknown:
            raise SystemExit(f"finetune arm: unknown field(s) {sorted(unknown)}; known: {sorted(FINETUNE)}")
        return policy, {**FINETUNE, **{key: type(FINETUNE[key])(float(value)) for key, value in items}}
    return policy, load_config(None, [f"serve.update={policy}"] + [f"serve.{k}={v}" for k, v in items]).serve


def finetune(predictor, date_id: int, settings: dict, call: int) -> None:
    """Fine-tune copies of the predictor's members on the windows whose labels are complete on `date_id` (the
    windows are built as `spread.windows.window_for_latest` builds the served one), then swap them in."""
    import copy

    import polars as pl
    import torch

    from spread.features import build_panel, panel_inputs
    from spread.fit import Learner, train_step
    from spread.optim import build_optimizer
    from spread.runtime import Runtime, make_grad_scaler
    from spread.targets import release_date
    from spread.windows import WindowDataset, make_loader, scaled_source

    history = predictor.history
    last = date_id - release_date(0, int(history.target_lags.max()))
    models = []
    for member in predictor.members:
        cfg = member.cfg
        window, lookback = cfg.data.window, cfg.features.lookback()
        raw = history.raw_frame(last, settings["dates"] + window - 1 + lookback, predictor.raw_columns)
        labels = history.label_frame(int(raw["date_id"][0]), last + 1, predictor.label_targets)
        columns, targets = panel_inputs(predictor.raw_columns, predictor.pairs["target"].to_list(),
                                        member.scaler.names)
        panel = build_panel(raw[["date_id", *columns]], labels,
                            predictor.pairs.filter(pl.col("target").is_in(targets)), cfg.features)
        unknown = np.full(len(history.target_names), np.nan)
        y = np.stack([history.labels.get(int(d), unknown) for d in panel.date_ids])
        rows = np.arange(window - 1 + lookback, len(panel.date_ids))
        rows = rows[np.isfinite(y[rows]).any(axis=1)]
        dataset = WindowDataset(scaled_source(panel, member.scaler, cfg.data), panel.date_ids, y, rows, window,
                                cfg.data.time_scale)
        model = copy.deepcopy(member.model).train()
        model.gate.logit.requires_grad_(False)
        train_cfg = dataclasses.replace(cfg.train, lr=settings["lr"])
        runtime = Runtime(device=torch.device("cpu"), amp_dtype=None)
        pairs = torch.Generator()
        pairs.manual_seed(call)
        learner = Learner(model, model, build_optimizer(model, train_cfg), make_grad_scaler(runtime), runtime,
                          dataclasses.replace(cfg, train=train_cfg), member.target_scale,
                          torch.as_tensor(history.target_lags), pairs)
        loader = make_loader(dataset, cfg.data.batch_size, shuffle=True, seed=cfg.seed, epoch=call)
        for _, batch in zip(range(settings["steps"]), loader):
            train_step(learner, batch, settings["lr"], float(cfg.train.epochs))
        models.append(model.eval())
    for member, model in zip(predictor.members, models):
        member.model = model


def replay(data: Path, run: Path, arm: str, out: Path) -> dict:
    """One gateway replay of `run` over `data` with the update of `arm`."""
    import polars as pl

    from spread.gateway import run_gateway, scored_served_dates, solution_frame
    from spread.infer import Predictor
    from spread.metrics import score_frames
    from spread.online import OnlineUpdate

    predictor = Predictor.from_run(run, data, device="cpu", members="holdout")
    policy, settings = parse_arm(arm)
    tuned = {"calls": 0, "worst_s": 0.0}

    def tuned_predict(*batches):
        """The call, then (every `every` calls, timed inside it) the fine-tune for the next calls."""
        answer = predictor.predict(*batches)
        tuned["calls"] += 1
        if tuned["calls"] % settings["every"] == 0:
            started = time.perf_counter()
            finetune(predictor, predictor.intake.last_date, settings, tuned["calls"])
            tuned["worst_s"] = max(tuned["worst_s"], time.perf_counter() - started)
        return answer

    if policy != "finetune":
        predictor.online = OnlineUpdate(settings, predictor.history, predictor.problems)
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_gateway(data, tuned_predict if policy == "finetune" else predictor.predict, out_file=out)

    submission = pl.read_parquet(out)
    scored = scored_served_dates(data, submission["date_id"].to_list())
    late = scored[len(scored) // 2:]
    late_score = score_frames(solution_frame(data, late), submission.filter(pl.col("date_id").is_in(late)),
                              scored_dates=late)
    return {"score": result["score"], "late_score": float(late_score), "p50_ms": result["latency"]["p50_ms"],
            "p99_ms": result["latency"]["p99_ms"], "update_worst_s": max(predictor.online.worst_s, tuned["worst_s"]),
            "weight": predictor.online.weight, "problems": dict(predictor.problems.counts)}


def cell(work: Path, data_seed: int, seed: int, arms: list[str]) -> dict:
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    data = make_data(work, data_seed)
    started = time.perf_counter()
    run = train(work, data, data_seed, seed)
    trained = time.perf_counter() - started
    rows = {}
    for arm in ["none", *arms]:
        out = work / f"sub-d{data_seed}-s{seed}-{arm.replace(':', '_').replace(',', '_')}.parquet"
        done = out.with_suffix(".json")
        if not done.is_file():  # a finished replay is reused
            done.write_text(json.dumps(replay(data, run, arm, out)))
        rows[arm] = json.loads(done.read_text())
    return {"data_seed": data_seed, "seed": seed, "train_s": trained, "arms": rows}


def paired(cells: list[dict], arm: str, key: str) -> tuple[float, float, int]:
    """(mean, std, cells won) of arm - none on `key`."""
    delta = np.array([c["arms"][arm][key] - c["arms"]["none"][key] for c in cells])
    return float(delta.mean()), float(delta.std(ddof=1)) if len(delta) > 1 else float("nan"), int((delta > 0).sum())


def report(cells: list[dict], arms: list[str], command: str) -> str:
    lines = [
        "# The online update while serving (`serve.update`)", "",
        "Written by `bench/bench_online.py` (see its docstring for the protocol):", "", f"    {command}", "",
        f"`realistic` preset with {N_TEST} test dates ({N_SCORED} scored); per data seed x training seed, a small "
        "Transformer trained on what is known by the first served date (configs/default.yaml + "
        f"`{' '.join(TRAIN)}`, `data.train_end` = first test date - 1), served by the local gateway with each arm. "
        "Score: the competition score over the scored dates; late: over their second half. Latency: later calls.",
        "", "Arms: `prior_blend[:serve fields]` is the predictor's policy (`serve.update`, `spread.online`). "
        "`finetune[:every,steps,lr,dates]` (defaults " + ", ".join(f"{k} {v:g}" for k, v in FINETUNE.items()) +
        ") is an experiment of this bench only: every `every` served dates, `steps` steps of `spread.fit.train_step` "
        "(fresh AdamW at `lr`, gate frozen) on the windows of the latest `dates` complete label dates, swapped in "
        "for the next calls, timed inside the call. As a predictor policy it would put the training loop "
        "(`spread.fit`, `spread.optim`) into the submission kernel, which the bundle keeps out "
        "(tests/test_bundle.py).",
        "", f"Machine: {os.cpu_count()} CPU cores shared with other jobs (load average {os.getloadavg()[0]:.1f} "
        "when the report was written), one thread per replay, two replays at once: compare latencies within a cell.",
        "", "| data seed | train seed | arm | score | late | p50 ms | p99 ms | update worst s | blend weight (last) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        for arm, row in c["arms"].items():
            lines.append(f"| {c['data_seed']} | {c['seed']} | {arm} | {row['score']:.3f} | {row['late_score']:.3f} | "
                         f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['update_worst_s']:.3f} | "
                         f"{'-' if arm.startswith('finetune') else format(row['weight'], 'g')} |")
    lines += ["", "Paired against `none` over the cells (difference mean +- std, cells won of "
              f"{len(cells)}); an arm may become the default only when its score difference exceeds its std:", "",
              "| arm | score | late | beats its spread | worst update call s | p99 ms (max over cells) |",
              "|---|---|---|---|---|---|"]
    for arm in arms:
        score, late = paired(cells, arm, "score"), paired(cells, arm, "late_score")
        worst = max(c["arms"][arm]["update_worst_s"] for c in cells)
        p99 = max(c["arms"][arm]["p99_ms"] for c in cells)
        lines.append(f"| {arm} | {score[0]:+.3f} +- {score[1]:.3f} ({score[2]}/{len(cells)}) | {late[0]:+.3f} +- "
                     f"{late[1]:.3f} ({late[2]}/{len(cells)}) | {'yes' if score[0] > score[1] else 'no'} | "
                     f"{worst:.3f} | {p99:.1f} |")
    none = np.array([c["arms"]["none"]["score"] for c in cells])
    lines += ["", f"`none` scores {none.mean():.3f} +- {none.std(ddof=1):.3f} over the cells; p99 "
              f"{max(c['arms']['none']['p99_ms'] for c in cells):.1f} ms (max over cells)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/spread-bench-online"))
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["prior_blend"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/ONLINE.md")
    args = parser.parse_args()
    for arm in args.arms:
        parse_arm(arm)  # a bad arm fails here, before any training
    args.work.mkdir(parents=True, exist_ok=True)
    for data_seed in args.data_seeds:  # once, before the processes share the folders
        make_data(args.work, data_seed)
    jobs = [(args.work, d, s, args.arms) for d in args.data_seeds for s in args.train_seeds]
    # spawned, not forked: the parent has torch loaded (the arms' configs), and a forked OpenMP runtime can hang
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        cells = list(pool.map(cell, *zip(*jobs)))
    (args.work / "cells.json").write_text(json.dumps(cells, indent=1))
    command = "OMP_NUM_THREADS=1 python bench/bench_online.py " + " ".join(
        ["--arms", *args.arms] if args.arms != ["prior_blend"] else [])
    text = report(cells, args.arms, command.strip())
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
