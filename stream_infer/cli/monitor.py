"""``stream-infer monitor``: realized accuracy, scores joined to labels, live or as a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import _config_arg, _settings, log


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    monitor = sub.add_parser("monitor", help="realized accuracy: scores joined to labels")
    msub = monitor.add_subparsers(required=True, metavar="ACTION")
    run = msub.add_parser("run", help="join the scores and labels topics as they come and "
                          "export the figures on /metrics (a consumer group of its own)")
    _config_arg(run)
    run.add_argument("--group", help="consumer group (default: <kafka.group_id>-monitor)")
    run.add_argument("--host", default="0.0.0.0", help="metrics address (default 0.0.0.0)")
    run.add_argument("--port", type=int, default=9465, help="metrics port (default 9465)")
    run.add_argument("--ttl-days", type=int, default=35,
                     help="days of event time the join holds (default 35)")
    run.add_argument("--max-scores", type=int, default=2_000_000,
                     help="at most this many scores held; the oldest day goes first")
    run.add_argument("--refresh-s", type=float, default=15.0,
                     help="seconds between recomputations of the figures (default 15)")
    report = msub.add_parser("report", help="realized accuracy per model and day, and "
                             "champion against challengers, from the topics or files")
    _config_arg(report, required=False)
    report.add_argument("--from", dest="from_time", required=True, metavar="DATE",
                        help="events at or after DATE (ISO 8601 or epoch ms)")
    report.add_argument("--to", dest="to_time", required=True, metavar="DATE",
                        help="events before DATE")
    report.add_argument("--as-of", metavar="TIME", help="judge maturity as of TIME "
                        "(default: now)")
    report.add_argument("--scores", type=Path, action="append", metavar="FILE",
                        help="JSON-lines score records instead of the scores topic")
    report.add_argument("--labels", type=Path, action="append", metavar="FILE",
                        help="JSON-lines labels instead of the labels topic")
    report.add_argument("--models-dir", type=Path, metavar="DIR",
                        help="where the models' manifests are, for PSI against their training "
                             "profiles (default: the configuration's model.dir; none: no PSI)")
    report.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    report.add_argument("--json", type=Path, help="also write the report as JSON here")
    report.add_argument("--html", type=Path, help="also write an HTML page here")
    for parser in (run, report):
        parser.add_argument("--k", type=int, default=100,
                            help="cards per day for card precision@k (default 100)")
        parser.add_argument("--maturity-days", type=int, default=7,
                            help="days after which an unlabelled event counts as genuine")
    run.set_defaults(handler=_monitor_run)
    report.set_defaults(handler=_monitor_report)


def _monitor_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ..monitor.run import MonitorOptions, run_monitor

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options = MonitorOptions(group=args.group, host=args.host, port=args.port,
                             horizon_days=args.maturity_days, k=args.k, ttl_days=args.ttl_days,
                             max_scores=args.max_scores, refresh_s=args.refresh_s)
    try:
        feed = run_monitor(_settings(args), options, stop=stop)
    except KeyboardInterrupt:
        return 0
    log.info("monitor stopped: %s", ", ".join(
        f"{kind} {outcome} {n:,}" for (kind, outcome), n in sorted(feed.counts.items())))
    return 0


def _monitor_report(args: argparse.Namespace) -> int:
    import time

    from ..decode import make_label_decoder
    from ..monitor import report
    from ..monitor.feed import Feed
    from ..monitor.join import JoinState
    from ..monitor.run import read_report_input
    from ..records import parse_time_ms

    if args.html:
        from ..offline import charts

        charts.require()  # before reading, not after it
    settings = _settings(args) if args.config else None
    options = report.ReportOptions(
        from_ms=parse_time_ms(args.from_time), to_ms=parse_time_ms(args.to_time),
        as_of_ms=parse_time_ms(args.as_of) if args.as_of else int(time.time() * 1000),
        horizon_days=args.maturity_days, k=args.k, draws=args.draws, seed=args.seed)
    state = JoinState(ttl_days=None, max_scores=None, max_labels=None)
    labels = make_label_decoder(settings.decode) if settings and not args.labels else None
    vectors = report.FeatureVectors(options.from_ms, options.to_ms)
    feed = Feed(state, labels, from_ms=options.from_ms, to_ms=options.to_ms,
                on_score=vectors.add)
    origin = read_report_input(settings, feed, scores=args.scores, labels=args.labels)
    context = {"input": origin, "records": ", ".join(
        f"{kind} {outcome} {n:,}" for (kind, outcome), n in sorted(feed.counts.items()))}
    models_dir = args.models_dir or (settings.model.dir if settings else None)
    drift = (report.drift(vectors, report.load_profiles(Path(models_dir), vectors.models()))
             if models_dir is not None else None)
    built = report.build(state, options, context, drift)
    print(report.table(built))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(built), indent=2) + "\n")
    if args.html:
        args.html.write_text(report.html_page(built, state.rows(options.from_ms,
                                                                options.to_ms), options))
    return 0
