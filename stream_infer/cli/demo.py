"""``stream-infer demo``: the whole pipeline on an embedded broker and Redis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import _usage


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="the whole pipeline on an embedded broker and Redis")
    demo.add_argument("--events", type=int, help="stop after N events (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=5000.0, help="events/s offered (0 = max)")
    demo.add_argument("--bad-rate", type=float, default=0.002,
                      help="share of deliberately malformed records (shows the DLQ)")
    demo.add_argument("--models-dir", type=Path, help="default: ./models, else the repo's")
    demo.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                      help="tansu: the embedded broker (default); kafka: Apache Kafka 4.4, "
                           "needs Java 17+ and Maven (jars fetched once, cached)")
    wd = demo.add_argument_group("--windows: window features and delayed labels at work")
    wd.add_argument("--windows", action="store_true",
                    help="the Handbook's simulator, labels a week late, models/demo/2 on "
                         "window features the service computes from the stream")
    wd.add_argument("--days", type=int, help="history length (default: 45; --loop: 30)")
    wd.add_argument("--customers", type=int, default=500, help="(default: 500)")
    wd.add_argument("--terminals", type=int, default=1000, help="(default: 1000)")
    lp = demo.add_argument_group("--loop: the whole loop, from payments to a promotion")
    lp.add_argument("--loop", action="store_true",
                    help="as --windows, with demo v2 the champion and v3 a shadow, every score "
                         "logged; v3 promoted part way, the service swapping to it; then the "
                         "monitor report (precision, recall, challenger, PSI)")
    lp.add_argument("--promote-at", type=float, default=0.6, metavar="SHARE",
                    help="promote v3 once this share of the payments is scored (default 0.6)")
    lp.add_argument("--out-dir", type=Path, metavar="DIR",
                    help="write the scores, labels and alerts read back (JSON lines) and the "
                         "report's JSON here")
    lp.add_argument("--json", type=Path, metavar="FILE", help="write the report's JSON here")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo

    if args.days is None:
        args.days = 30 if args.loop else 45
    if args.loop:
        from ..demo.loop import LoopOptions, run_loop_demo

        if min(args.days, args.customers, args.terminals) < 1 or not 0 < args.promote_at < 1:
            raise _usage("demo --loop: --days, --customers and --terminals must be >= 1, "
                         "--promote-at between 0 and 1")
        run_loop_demo(LoopOptions(
            days=args.days, customers=args.customers, terminals=args.terminals, rate=args.rate,
            promote_at=args.promote_at, out_dir=args.out_dir, json_path=args.json,
            broker_kind=args.broker, models_dir=args.models_dir), sys.stdout)
        return 0
    if args.windows:
        from ..demo.windows import run_window_demo

        if min(args.days, args.customers, args.terminals) < 1:
            raise _usage("demo --windows: --days, --customers and --terminals must be >= 1")
        run_window_demo(days=args.days, customers=args.customers, terminals=args.terminals,
                        rate=args.rate, out=sys.stdout, broker_kind=args.broker,
                        models_dir=args.models_dir)
        return 0
    run_demo(events=args.events, rate=args.rate, bad_rate=args.bad_rate,
             models_dir=args.models_dir, out=sys.stdout, broker_kind=args.broker)
    return 0
