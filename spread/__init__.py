"""spread: forecasting log-return spreads with a gated Transformer (MITSUI&CO. Commodity Prediction Challenge).

Pipeline, one module per idea:
    competition/targets/synth -> features/screening/scaling/splits/windows -> model -> losses
    -> trainer (metrics, checkpoints, run logs) -> infer/gateway -> kernels and bundle.
"""

from spread.errors import ArtifactError, ConfigError, DataError, SpreadError

__version__ = "0.1.0"
__all__ = ["ArtifactError", "ConfigError", "DataError", "SpreadError", "__version__"]
