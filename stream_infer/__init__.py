"""stream-infer: score payment events for fraud as they stream through Kafka."""

from .config import Settings, load_settings
from .errors import StreamInferError
from .pipeline import BatchOutcome, Pipeline, Topics
from .records import Alert, Output, ScoreRecord, Transaction
from .runner import Runner, RunnerConfig, RunStats

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "BatchOutcome",
    "Output",
    "Pipeline",
    "RunStats",
    "Runner",
    "RunnerConfig",
    "ScoreRecord",
    "Settings",
    "StreamInferError",
    "Topics",
    "Transaction",
    "__version__",
    "load_settings",
]
