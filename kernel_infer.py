# %% [markdown]
# # spread: submission kernel
# Serves the trained gated Transformer through the competition's evaluation API. The artefacts are found by their
# `manifest.json` anywhere under the inputs, the competition folder by its `target_pairs.csv`. The server starts
# in seconds: checkpoints load inside the first `predict` call, which has no deadline, and `predict` never raises
# (any failure answers the mean-historical-rank prior and is counted in the log). Outside the competition's rerun a
# degraded run (a member that did not load, a call that fell back or had fewer members, a window with dates that
# no file has a row for) exits 1 with a summary.

# %%
"""Submission kernel: serve `predict` through the evaluation API (Kaggle) or the project's local gateway.

On Kaggle with `kaggle_evaluation` importable: `MitsuiInferenceServer(predict).serve()` under
`KAGGLE_IS_COMPETITION_RERUN`, else its local gateway over the competition folder (polars 1.x; under polars 2.x
the official local gateway fails on its first date, so the project's gateway plays it). Elsewhere the project's
gateway (`spread.gateway.run_gateway`) plays the API, writes the submission and prints the score.

Locally: `python kernel_infer.py --data COMPETITION --artifacts RUN [--out submission.parquet]`.

The end-of-run summary (calls, answers by source, problems per kind, latency) is printed by the gateway, or logged
at exit under the rerun; outside the rerun a degraded run exits 1 (`spread.infer.exit_status`), so a commit run on
Kaggle or a local rehearsal shows what the rerun would lose; under the rerun nothing ever raises.
"""
import argparse
import atexit
import importlib
import logging
import sys
from pathlib import Path

from spread.discovery import find_competition_dir, find_run_dir, working_dir
from spread.gateway import DEFAULT_DEADLINE_S, run_gateway
from spread.infer import exit_status, in_rerun, make_predict, summary_text
from spread.online import POLICIES

log = logging.getLogger("kernel_infer")
SERVER_MODULE = "kaggle_evaluation.mitsui_inference_server"


# %%
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Known options only: a notebook kernel passes its own arguments (`-f kernel.json`), which are ignored."""
    parser = argparse.ArgumentParser(description="spread submission kernel")
    parser.add_argument("--data", type=Path, help="competition folder (default: found under /kaggle/input)")
    parser.add_argument(
        "--artifacts", type=Path, help="run folder with manifest.json (default: found under the inputs)"
    )
    parser.add_argument("--out", type=Path, help="submission file (default: <working dir>/submission.parquet)")
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S, help="seconds per call after the first")
    parser.add_argument("--update", choices=POLICIES,
                        help="online update policy replacing the run's serve.update (spread.online)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.info("ignoring arguments %s", unknown)
    return args


def import_inference_server(data_dir: Path | None) -> type | None:
    """`MitsuiInferenceServer`, from the installed package or the competition folder's copy; None when absent."""
    try:
        return importlib.import_module(SERVER_MODULE).MitsuiInferenceServer
    except ImportError:
        pass
    if data_dir is None or not (data_dir / "kaggle_evaluation").is_dir():
        return None
    # The competition ships kaggle_evaluation/ beside its data; its server module imports `mitsui_gateway` both
    # as a package member and, in some versions, as a top-level module.
    sys.path[:0] = [str(data_dir), str(data_dir / "kaggle_evaluation")]
    try:
        return importlib.import_module(SERVER_MODULE).MitsuiInferenceServer
    except Exception as exc:  # a broken copy must not stop the local gateway from running
        log.warning("cannot import %s from %s: %s", SERVER_MODULE, data_dir, exc)
        return None


def official_local_gateway_works() -> bool:
    """The official local gateway fails under polars 2.x on its first date (empty lag batches)."""
    import polars

    return int(polars.__version__.split(".")[0]) < 2


# %%
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    rerun = in_rerun()
    if not rerun and not args.deadline > 0:  # the rerun serves whatever it is given; a local run says it
        log.error("--deadline: expected seconds > 0, got %s", args.deadline)
        return 2
    if not rerun and args.artifacts is not None and not Path(args.artifacts).exists():
        log.error("--artifacts %s: no such folder", args.artifacts)
        return 2
    data_dir = find_competition_dir(args.data)
    if data_dir is None:
        log.error("no competition folder (a folder with target_pairs.csv) found; pass --data")
        if not rerun:
            return 2
        # The rerun must still serve: every call then gets the emergency answer, built from the served batches.
    run_dir = find_run_dir(args.artifacts)
    if run_dir is None:
        log.error("no run folder (manifest.json) found: every answer will be the fallback prior")
    log.info("competition folder %s, run folder %s", data_dir, run_dir)
    predict = make_predict(run_dir, data_dir, update=args.update)

    server_class = import_inference_server(data_dir)
    if server_class is not None and rerun:
        atexit.register(predict.lazy.log_summary)  # the server may end the process: the summary is logged at exit
        server_class(predict).serve()
        return 0
    if server_class is not None and official_local_gateway_works():
        server_class(predict).run_local_gateway((str(data_dir),))
        summary = predict.summary()
        print(summary_text(summary))
        return exit_status(summary)
    out = args.out or working_dir() / "submission.parquet"
    result = run_gateway(data_dir, predict, out_file=out, deadline_s=args.deadline)
    return exit_status(result["summary"])


# %%
if __name__ == "__main__":
    exit_code = main()
    if exit_code:
        raise SystemExit(exit_code)
