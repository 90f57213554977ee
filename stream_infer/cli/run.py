"""``stream-infer run``: the scoring service, on the native engine or as a Faust agent."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import _config_arg, _settings, _usage, log

if TYPE_CHECKING:
    from ..runner import RunStats


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the scoring service")
    _config_arg(run)
    run.add_argument("--max-events", type=int, help="exit after consuming this many records")
    run.add_argument("--workers", type=int, default=1,
                     help="run N processes in the consumer group: two per core, at most one "
                          "per partition (default 1)")
    run.add_argument("--engine", choices=["native", "faust"], default="native",
                     help="consume with librdkafka (native) or as a Faust agent (faust extra)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..adapters.otel import Tracing
    from ..service.app import build_service, serve, start_endpoints
    from ..service.metrics import ServiceMetrics

    if args.engine == "faust":
        return _run_faust(args)
    if args.workers > 1:
        from ..service.workers import run_workers

        if args.max_events is not None:
            raise _usage("run: --max-events applies to one worker; omit it with --workers")
        return run_workers(_settings(args), args.config, args.workers, args.log_level)
    settings, metrics = _settings(args), ServiceMetrics()
    tracing = Tracing(settings) if settings.tracing.enabled else None
    service = build_service(settings, metrics, tracing.tracer if tracing else None)
    runner = service.runner
    endpoints = start_endpoints(settings, service, metrics, tracing)
    try:
        stats = serve(runner, max_events=args.max_events)
    finally:
        if endpoints:
            endpoints.stop()
        if tracing:
            tracing.shutdown()
    return _stopped(stats)


def _stopped(stats: RunStats) -> int:
    c = stats.counts
    log.info("stopped: %d consumed, %d scored, %d alerts, %d dead-lettered",
             c.consumed, c.scored, c.alerted, c.dead_lettered)
    return 0


def _run_faust(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("faust") is None:
        raise _usage("the Faust engine needs: pip install 'stream-infer[faust]'")
    if args.workers > 1:
        raise _usage("run: --workers is the native engine's; start more Faust workers instead")
    from ..adapters.otel import Tracing
    from ..service.faust import run_worker
    from ..service.metrics import ServiceMetrics

    settings, metrics = _settings(args), ServiceMetrics()
    tracing = Tracing(settings) if settings.tracing.enabled else None
    try:
        stats = run_worker(settings, metrics, tracing, max_events=args.max_events)
    finally:
        if tracing:
            tracing.shutdown()
    return _stopped(stats)
