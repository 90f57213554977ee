"""The pure stages import no I/O library: a hard seam between logic and the adapters."""

import subprocess
import sys

PURE = ["config", "errors", "records", "decode", "enrich", "score", "pipeline", "runner",
        "registry", "retry", "stats", "simulate", "backtest", "reload", "replay", "tables"]
IO_LIBRARIES = ["confluent_kafka", "redis", "xgboost", "opentelemetry.sdk", "fastavro_registry",
                "urllib.request", "faust"]


def test_pure_modules_do_not_import_io_libraries() -> None:
    code = (
        "import sys\n"
        + "".join(f"import stream_infer.{m}\n" for m in PURE)
        + f"print([m for m in {IO_LIBRARIES!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_probe_would_see_an_io_import() -> None:
    code = "import sys, stream_infer.adapters.redis; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
