"""Command-line entry point: `python -m spread <command> [options]` (`--help` on every command).

Each command is a thin shell over one library function, imported lazily so that `--help` and the light commands
stay fast. A `SpreadError` (bad input, bad config, bad artefact) is printed as one clear line and exits 2.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

from spread.errors import ConfigError, DataError, SpreadError


def _synth(args: argparse.Namespace) -> int:
    from spread.synth import generate

    out = generate(args.out, seed=args.seed, preset=args.preset, overwrite=args.overwrite)
    print(f"wrote synthetic competition ({args.preset}, seed {args.seed}) to {out}")
    return 0


def _check_labels(args: argparse.Namespace) -> int:
    from spread.competition import check_labels, load_competition

    result = check_labels(load_competition(args.dir, require_test=False), tolerance=args.tolerance)
    ok = result.match_share >= args.min_share and result.nan_agreement == 1.0
    print(f"non-null label cells: {result.cells}")
    print(f"matching to {args.tolerance:g}: {result.matched} ({result.match_share:.4%})")
    print(f"NaN pattern agreement: {result.nan_agreement:.4%}")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def _check_submission(solution, submission, scored: list | None, path: Path) -> None:
    """What the official scorer requires of a whole submission: date_id + exactly the solution's targets, in its
    order, and a row for every scored date (`score` refuses what it would reject, instead of scoring a part)."""
    targets = [c for c in solution.columns if c != "date_id"]
    answered = [c for c in submission.columns if c != "date_id"]
    if answered != targets:
        extra = [c for c in answered if c not in set(targets)]
        first = next(t for t, a in itertools.zip_longest(targets, answered) if t != a)  # None: only extras
        detail = f"unexpected {extra[:5]}" if extra else f"missing or out of order from {first!r}"
        raise DataError(f"{path}: columns must be date_id + the solution's {len(targets)} targets in its order; "
                        f"{detail}")
    if scored is not None and "date_id" in submission.columns:
        absent = sorted(set(scored) - set(submission["date_id"].to_list()))
        if absent:
            raise DataError(f"{path}: {len(absent)} scored date_id(s) without a row: {absent[:10]}")


def _score(args: argparse.Namespace) -> int:
    import polars as pl

    from spread.metrics import read_table, score_frames

    solution, submission = read_table(args.solution), read_table(args.submission)
    scored = None
    if args.test:
        test = read_table(args.test)
        if "is_scored" not in test.columns or "date_id" not in test.columns:
            raise DataError(f"{args.test}: needs the columns date_id and is_scored")
        scored = test.filter(pl.col("is_scored").cast(pl.Boolean))["date_id"].to_list()
    _check_submission(solution, submission, scored, args.submission)
    score = score_frames(solution, submission, scored_dates=scored)
    print(f"{score:.6f}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from spread.config import load_config
    from spread.runlog import score_headline
    from spread.trainer import train

    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ConfigError(f"train: --resume {args.resume} continues that folder; --out {args.out} names another")
    out = args.resume or args.out
    if out is None:
        raise SpreadError("train: give --out RUN (a new run folder) or --resume RUN")
    config = args.config
    if args.resume and config is None:
        config = Path(args.resume) / "config.yaml"
    cfg = load_config(config, args.overrides)
    summary = train(cfg, args.data, out, resume=bool(args.resume))
    if summary:  # rank 0 alone reports
        print(score_headline(summary))
    return 0


def _check_gateway_args(args: argparse.Namespace) -> None:
    """Usage errors of `gateway`, before anything is served: a --deadline <= 0, an --out that is a folder or in a
    missing one, --members folders the run's manifest does not list (a typo would serve the prior to every call).
    A run whose manifest cannot be read is left to the predictor, which answers every call all the same."""
    from spread.checkpoint import read_manifest
    from spread.errors import ArtifactError
    from spread.members import member_candidates
    from spread.runfolder import check_output_file

    if not args.deadline > 0:
        raise ConfigError(f"--deadline: expected seconds > 0, got {args.deadline}")
    check_output_file(Path(args.out), "--out")
    try:
        manifest = read_manifest(args.run_dir)
    except ArtifactError:
        return
    names, _ = member_candidates(args.run_dir, manifest, args.members)
    unknown = [name for name in names if name not in manifest["artifacts"]]
    if unknown:
        listed = sorted(n.split("/")[0] for n in manifest["artifacts"] if n.endswith("/best.pt"))
        raise ConfigError(f"--members {args.members!r}: {', '.join(unknown)} not in {args.run_dir}'s manifest "
                          f"(served, holdout, folds, final or folders of {', '.join(listed)})")


def _gateway(args: argparse.Namespace) -> int:
    from spread.gateway import run_gateway
    from spread.infer import exit_status, make_predict
    from spread.online import POLICIES

    if args.update is not None and args.update not in POLICIES:  # an error before anything is served
        raise ConfigError(f"--update: expected one of {'|'.join(POLICIES)}, got {args.update!r}")
    _check_gateway_args(args)
    predict = make_predict(args.run_dir, args.data, members=args.members, update=args.update)
    result = run_gateway(args.data, predict, out_file=args.out, deadline_s=args.deadline)
    return exit_status(result["summary"])  # degraded serving is loud (exit 1) outside the competition's rerun


def _make_competition(args: argparse.Namespace) -> int:
    from spread.lab.realdata import make_competition

    out = make_competition(
        args.prices, args.out, seed=args.seed, n_pairs=args.pairs, test_dates=args.test_dates,
        scored=args.scored, overwrite=args.overwrite,
    )
    print(f"wrote competition from {args.prices} to {out}")
    return 0


def _realdata(args: argparse.Namespace) -> int:
    from spread.lab.realdata import realdata

    out = realdata(
        args.out, seed=args.seed, overwrite=args.overwrite, start=args.start, n_pairs=args.pairs,
        test_dates=args.test_dates, scored=args.scored,
    )
    print(f"wrote real-data competition to {out}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from spread.config import load_config
    from spread.lab.baselines import run_baseline
    from spread.runlog import score_headline

    summary = run_baseline(args.name, load_config(args.config, args.overrides), args.data, args.out)
    print(score_headline(summary))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from spread.config import load_config
    from spread.lab.tune import tune

    result = tune(
        load_config(args.config, args.overrides), args.data, args.out, args.trials, storage=args.storage,
        study_name=args.study, write_config=args.write_config, seed=args.seed, timeout_s=args.timeout,
        overwrite=args.overwrite,
    )
    print(f"best mean walk-forward score {result['best_value']:.6f} (trial {result['best_trial']}); "
          f"config written to {result['config_path']}")
    return 0


def _config(args: argparse.Namespace) -> int:
    import yaml

    from spread.config import config_to_dict, describe_config, load_config

    if args.show is None and not args.overrides:
        print(describe_config(), end="")
    else:
        print(yaml.safe_dump(config_to_dict(load_config(args.show, args.overrides)), sort_keys=False), end="")
    return 0


def _plots(args: argparse.Namespace) -> int:
    from spread.plots import write_run_plots

    if not args.run_dir.is_dir():
        raise SpreadError(f"{args.run_dir}: run folder not found")
    written = write_run_plots(args.run_dir)
    if not written:
        raise SpreadError(f"{args.run_dir}: nothing to draw (no metrics.csv, summary.json, gate_weights.csv or "
                          "folds.csv)")
    for path in written:
        print(path)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from spread.publish import write_dataset_metadata

    path = write_dataset_metadata(args.run_dir, args.owner, args.slug, args.title)
    print(f"wrote {path}; publish with: kaggle datasets create -p {args.run_dir} --dir-mode zip")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from spread.lab.bench import bench

    print(f"wrote {bench(full=args.full, out_md=args.out, workdir=args.work)}")
    return 0


def _seed(text: str) -> int:
    """argparse type of a --seed: an integer >= 0 (numpy's generators take no negative seed)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _at_least_zero(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text}")
    return value


def _add_competition_shape(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that write a competition folder from prices."""
    p.add_argument("--out", required=True, type=Path, help="competition folder to create")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the pair draw (default 0)")
    p.add_argument("--pairs", type=int, help="targets per lag (default: one per asset, like the real 106)")
    p.add_argument("--test-dates", type=int, default=134, help="last dates served as test.csv (default 134)")
    p.add_argument("--scored", type=int, default=90, help="first test dates with is_scored (default 90)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """Dotted `key=value` overrides (`python -m spread config` lists the keys)."""
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. model.d_model=160")


def _add_config(p: argparse.ArgumentParser) -> None:
    """`--config FILE` plus dotted `key=value` overrides, as `train` takes them."""
    p.add_argument("--config", type=Path, help="YAML/JSON config (default: built-in defaults)")
    _add_overrides(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spread", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = commands.add_parser("synth", help="write a synthetic competition folder (the embedded default data)")
    p.add_argument("--out", required=True, type=Path, help="folder to create (must not exist or be empty)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--preset", default="realistic", choices=["realistic", "realistic_strong", "realistic_fxvol",
                                                             "realistic_fxvol_rank1", "mitsui", "small"],
                   help="realistic (default: calibrated on the real competition), realistic_strong (a diagnostic: "
                   "its cross-asset signal twice as strong), realistic_fxvol (its lead-lag signed by an observable FX "
                   "volatility gauge, which the oracle reads from the files), realistic_fxvol_rank1 (a diagnostic: "
                   "that lead-lag low-rank and twice as strong), mitsui (linear signal) or small")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.set_defaults(handler=_synth)

    p = commands.add_parser("check-labels", help="recompute train_labels.csv from train.csv and compare")
    p.add_argument("dir", type=Path, help="competition folder")
    p.add_argument("--tolerance", type=_at_least_zero, default=1e-9, help="absolute tolerance per cell (default 1e-9)")
    p.add_argument("--min-share", type=_share, default=0.999, help="share of cells that must match (default 0.999)")
    p.set_defaults(handler=_check_labels)

    p = commands.add_parser("score", help="competition score of a submission against labels")
    p.add_argument("--solution", required=True, type=Path, help="labels: csv or parquet with date_id + targets")
    p.add_argument("--submission", required=True, type=Path, help="predictions: csv or parquet, same columns")
    p.add_argument("--test", type=Path, help="test.csv: score only its is_scored dates")
    p.set_defaults(handler=_score)

    p = commands.add_parser("train", help="walk-forward training, checkpoints and run logs")
    p.add_argument("--data", type=Path, help="competition folder (with --resume: default the run's own)")
    p.add_argument("--out", type=Path, help="run folder to create")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN from its last.pt checkpoints")
    _add_config(p)
    p.set_defaults(handler=_train)

    p = commands.add_parser(
        "gateway", help="play the evaluation API over a competition folder with a trained run",
        description="Serve test.csv and the lag files to the run's predictor as the evaluation API does, write the "
        "submission and print the score (last line). Exits 1 when a member did not load, a call fell back or was "
        "answered by fewer members than loaded, a call's window had dates with no row in train.csv or the served "
        "batches, or the online update failed (outside KAGGLE_IS_COMPETITION_RERUN).",
    )
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="competition folder (test.csv, lag files)")
    p.add_argument("--run", dest="run_dir", required=True, type=Path, metavar="RUN",
                   help="run folder with manifest.json")
    p.add_argument("--out", type=Path, default=Path("submission.parquet"),
                   help="submission file to write (default submission.parquet)")
    p.add_argument("--deadline", type=float, default=300.0,
                   help="seconds allowed per call after the first (default 300)")
    p.add_argument(
        "--members", default="served", help="checkpoints to serve: served (default: the manifest's inference "
        "checkpoints), holdout (the honest replay), folds, final, or a comma list of run folders (fold0,fold1)",
    )
    p.add_argument("--update", metavar="POLICY", help="online update while serving (default: the run's "
                   "serve.update): none, or prior_blend (a recency-weighted prior of the released labels blended in "
                   "with a weight chosen online)")
    p.set_defaults(handler=_gateway)

    p = commands.add_parser("make-competition", help="a competition folder from a wide daily price CSV")
    p.add_argument("--prices", required=True, type=Path, help="CSV: a date or date_id column plus price columns")
    _add_competition_shape(p)
    p.set_defaults(handler=_make_competition)

    p = commands.add_parser("realdata", help="a competition folder from the real prices shipped with skfolio")
    _add_competition_shape(p)
    p.add_argument("--start", default="2000-01-01", help="first date kept (default 2000-01-01)")
    p.set_defaults(handler=_realdata)

    p = commands.add_parser("baseline", help="score a baseline on the trainer's folds; writes a run folder")
    p.add_argument("name", help="mean_rank, last_label, ridge, reduced_rank, regularised_prior, lightgbm, or oracle "
                                "(synthetic data: the conditional expectation, a reference, not an upper bound)")
    p.add_argument("--data", required=True, type=Path, help="competition folder")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    _add_config(p)
    p.set_defaults(handler=_baseline)

    p = commands.add_parser("tune", help="Optuna search of the mean walk-forward score; writes the best config")
    p.add_argument("--data", required=True, type=Path, help="competition folder")
    p.add_argument("--out", required=True, type=Path, help="tuning folder (trials, optuna.db, tune.json)")
    p.add_argument("--trials", type=int, default=20, help="total trials of the study (default 20)")
    p.add_argument("--storage", help="Optuna RDB URL shared by workers (default sqlite:///OUT/optuna.db)")
    p.add_argument("--study", default="spread", help="study name (default spread)")
    p.add_argument("--write-config", type=Path, default=Path("configs/tuned.yaml"),
                   help="where the best config goes (default configs/tuned.yaml)")
    p.add_argument("--seed", type=_seed, help="sampler seed (leave unset with several workers)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--overwrite", action="store_true",
                   help="let --write-config replace an existing file this study did not write")
    _add_config(p)
    p.set_defaults(handler=_tune)

    p = commands.add_parser("config", help="every config key (type, default, meaning), or a resolved config")
    p.add_argument("--show", type=Path, metavar="FILE", help="print the resolved config of FILE plus the overrides")
    _add_overrides(p)
    p.set_defaults(handler=_config)

    p = commands.add_parser("plots", help="(re)draw the pictures of a finished run folder into RUN/plots/")
    p.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (metrics.csv, summary.json, ...)")
    p.set_defaults(handler=_plots)

    p = commands.add_parser("publish", help="write RUN/dataset-metadata.json for `kaggle datasets create -p RUN`")
    p.add_argument("run_dir", metavar="RUN", type=Path, help="finished run folder (with manifest.json)")
    p.add_argument("--owner", required=True, help="your Kaggle username (the dataset is OWNER/SLUG)")
    p.add_argument("--slug", default=None, help="dataset slug, 6-50 of a-z, 0-9, - (default spread-mitsui-weights, "
                   "what the infer kernel built with --weights dataset attaches)")
    p.add_argument("--title", default=None, help="dataset title, 6-50 characters (default: from the slug)")
    p.set_defaults(handler=_publish)

    p = commands.add_parser("bench", help="the benchmark report bench/RESULTS.md (quick; --full for the grid)")
    p.add_argument("--full", action="store_true", help="the whole grid (meant for a GPU)")
    p.add_argument("--out", type=Path, default=Path("bench/RESULTS.md"), help="report file (default bench/RESULTS.md)")
    p.add_argument("--work", type=Path, default=Path("bench/out/report"), help="work folder, reused on rerun")
    p.set_defaults(handler=_bench)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line. Overrides may follow options even after a positional (`baseline ridge --data D
    split.n_folds=1`), which plain argparse leaves unrecognised; anything else unknown is still an error."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except SpreadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
