"""spread.lab: the experiment tooling beside the kernel core, run from a repository checkout.

The kernel core (`spread/*.py`) is what the two Kaggle kernels run: reading a competition, features, the model,
training, the predictor and the gateway. The lab is what a developer runs to judge that core: competitions from
real prices (`realdata`), the simple baselines (`baselines`), Optuna tuning (`tune`) and the benchmark report
bench/RESULTS.md (`bench`, with `grid`, `stats`, `speed`, `provenance` and `render`). Neither `kernel_train.py`
nor `kernel_infer.py` imports it, and no kernel-core module does (tests/test_layering.py); `spread/cli.py` reaches
it only through the lazy imports of its lab commands, so `python -m spread <command>` is the same for either side.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout the lab runs from: its bench/ scripts, configs/ and git revision."""
