"""``stream-infer demo --loop``: the whole loop on the embedded broker, from payments to a
promotion on evidence.

The history of ``demo --windows`` (the Handbook's simulator, labels a week late) is published
in two parts. In a temporary models folder ``demo`` v2 is the champion (its ``CHAMPION``
pointer) and v3 a shadow (``model.shadows``); the service follows the pointer (``latest``)
and logs every model's score with its feature vector to the scores topic. Once the first part
is scored, v3 is promoted with the code of ``model promote`` and the running service swaps to
it at a batch boundary (its hot reload), without a restart; the second part is then
published. At the end the monitor report, over the scores and labels topics as of the end of
the history, gives each version's realized precision and recall, the champion against the
challenger on the events both scored, and each feature's PSI against training.

The shadow reference is ``demo:challenger``, a link in the models folder to v3's directory
(the model's name and version are its manifest's). ``model.shadows`` has no reference for
"the champion's challenger": ``demo:3`` would name the champion once it is promoted (then
served once, as the champion, with nothing left to compare). So the promotion moves the
pointer to v3 and the link to v2, as an operator would: from the next batch the service
serves v3 and shadows v2, the old champion. The report calls champion the
version that served the most events, so the promotion comes after more than half of the
payments (``promote_at``, 0.6 by default): v2 is the report's champion, v3 the challenger, and
they are compared on the events both scored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..config import Settings, load_settings
from ..errors import ModelError
from ..offline import handbook
from ..registry import CHAMPION, promote
from ..runner import Runner
from .run import BROKER_NAMES, BrokerKind, default_models_dir, demo_sections, start_broker
from .windows import TOP_REASONS, WINDOWS, history

CHAMPION_VERSION, CHALLENGER_VERSION = "2", "3"
SHADOW_LINK = "challenger"
SCORES_TOPIC = "payment-scores"
RELOAD_POLL_S = 0.2
TOP_FEATURES = 5
SWAP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class LoopOptions:
    days: int = 30
    customers: int = 500
    terminals: int = 1000
    rate: float = 5000.0
    promote_at: float = 0.6
    """The share of payments scored by v2 before v3 is promoted."""
    out_dir: Path | None = None
    """Where to write the scores, labels and alerts read back (JSON lines), and the report."""
    json_path: Path | None = None
    broker_kind: BrokerKind = "tansu"
    models_dir: Path | None = None


@dataclass(slots=True)
class Promotion:
    """What the promotion did: when, after how many payments, how long the swap took (or the
    error that stopped it)."""

    cut_ms: int = 0
    """Payments with event time before this were published before the promotion."""
    payments_before: int = 0
    before: str | None = None
    swapped_after_s: float | None = None
    error: Exception | None = None


def loop_models(source: Path, into: Path) -> Path:
    """A models folder holding ``demo`` v2 and v3 from ``source``, the pointer naming v2 and
    the shadow's link (:data:`SHADOW_LINK`) v3."""
    for version in (CHAMPION_VERSION, CHALLENGER_VERSION):
        shutil.copytree(source / "demo" / version, into / "demo" / version)
    (into / "demo" / CHAMPION).write_text(f"{CHAMPION_VERSION}\n")
    link(into / "demo", SHADOW_LINK, CHALLENGER_VERSION)
    return into


def link(folder: Path, name: str, target: str) -> None:
    """Point ``folder/name`` at ``folder/target``, atomically (a new link renamed over it)."""
    temporary = folder / f".{name}.new"
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary, target_is_directory=True)
    os.replace(temporary, folder / name)


def promote_challenger(root: Path, settings: Settings) -> str | None:
    """``model promote demo:3``'s code, its check loading the models as the service will
    serve them (v3, and v2 as the shadow); then the shadow's link to v2. The pointer's
    version before."""
    from ..service.app import load_models

    old = root / "demo" / CHAMPION_VERSION
    before = promote(root, "demo", CHALLENGER_VERSION,
                     lambda model_dir: load_models(settings, [model_dir, old]))
    link(root / "demo", SHADOW_LINK, CHAMPION_VERSION)
    return before


def loop_settings(bootstrap: str, redis_url: str, models_dir: Path) -> Settings:
    """``demo --windows``'s configuration, following ``demo``'s champion pointer with v3 as a
    shadow, polling the pointer every :data:`RELOAD_POLL_S`, every score logged."""
    sections = demo_sections(bootstrap, redis_url, models_dir)
    sections["features"] = {}
    sections["kafka"] |= {"input_topics": ["payments"], "labels_topic": "labels",
                          "alert_topic": "fraud-alerts", "dlq_topic": "payments-dlq",
                          "scores_topic": SCORES_TOPIC}
    sections["model"] |= {"version": "latest", "shadows": [f"demo:{SHADOW_LINK}"],
                          "reload_poll_s": RELOAD_POLL_S, "reasons_top_k": TOP_REASONS}
    sections["windows"] = WINDOWS
    return load_settings(None, **sections)


def split(events: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]], share: float
          ) -> tuple[int, tuple[list[dict[str, Any]], list[dict[str, Any]]],
                     tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The cut (an event time) after ``share`` of the payments, and the records that arrive
    before it and from it on (a label arrives at its ``label_time``)."""
    times = sorted(int(e["event_time"]) for e in events)
    cut = times[min(max(int(len(times) * share), 1), len(times) - 1)]
    return (cut, ([e for e in events if e["event_time"] < cut],
                  [lab for lab in labels if lab["label_time"] < cut]),
            ([e for e in events if e["event_time"] >= cut],
             [lab for lab in labels if lab["label_time"] >= cut]))


def run_loop_demo(options: LoopOptions, out: TextIO) -> dict[str, Any]:
    """Start the embedded services, run the loop, print what happened; the report as JSON
    (with the promotion's facts under ``loop``)."""
    from ..adapters.kafka import read_to_end
    from ..service.app import build_runner, serve

    o = options
    with (tempfile.TemporaryDirectory(prefix="stream-infer-loop-") as tmp,
          start_broker(o.broker_kind) as broker):
        from .embedded import EmbeddedRedis

        with EmbeddedRedis() as rds:
            root = loop_models(o.models_dir or default_models_dir(), Path(tmp) / "models")
            settings = loop_settings(broker.bootstrap_servers, rds.url, root)
            print(f"broker  {BROKER_NAMES[o.broker_kind]} at {broker.bootstrap_servers} | "
                  f"redis at {rds.url}", file=out)
            events, labels = history(o.days, o.customers, o.terminals)
            cut, first, second = split(events, labels, o.promote_at)
            print(f"history {len(events):,} payments of {o.customers:,} customers at "
                  f"{o.terminals:,} terminals over {o.days} days, {len(labels):,} labels a "
                  "week after each", file=out)
            runner = build_runner(settings)
            models = runner.pipeline.models
            print(f"models  champion {_named(models.champion)}, shadow "
                  f"{', '.join(map(_named, models.shadows))} (pointer {root / 'demo' / CHAMPION}"
                  f" names {CHAMPION_VERSION}; the service follows it, polling every "
                  f"{RELOAD_POLL_S:g} s; the shadow is demo:{SHADOW_LINK}, a link to v"
                  f"{CHALLENGER_VERSION})", file=out)

            promotion = Promotion(cut_ms=cut, payments_before=len(first[0]))
            publisher = threading.Thread(target=_publish, daemon=True, args=(
                settings, runner, first, second, o.rate, promotion,
                lambda: promote_challenger(root, settings), out))
            publisher.start()
            started = time.monotonic()
            stats = serve(runner, max_events=len(events) + len(labels))
            publisher.join(timeout=5)
            if promotion.error is not None:
                raise promotion.error
            took = time.monotonic() - started
            kafka = settings.kafka
            read = {topic: [m.value() or b"" for batch in
                            read_to_end(kafka.common_config(), topic) for m in batch]
                    for topic in (SCORES_TOPIC, kafka.labels_topic or "labels",
                                  kafka.alert_topic)}
        c = stats.counts
        print(f"served  {c.consumed:,} records in {took:.1f} s ({c.scored:,} payments scored, "
              f"{c.labels:,} labels, {c.dead_lettered:,} dead letters), one runner "
              f"throughout, never restarted", file=out)
        scores, label_values, alerts = (read[SCORES_TOPIC], read[kafka.labels_topic or "labels"],
                                        read[kafka.alert_topic])
        served = by_phase(scores, alerts, cut)
        print_phases(served, out)
        if o.out_dir is not None:
            o.out_dir.mkdir(parents=True, exist_ok=True)
            for name, values in (("scores", scores), ("labels", label_values),
                                 ("alerts", alerts)):
                (o.out_dir / f"{name}.jsonl").write_bytes(b"".join(v + b"\n" for v in values))
        result = monitor(scores, label_values, events, labels, root, out)
    result["loop"] = {"cut_ms": cut, "payments_before": promotion.payments_before,
                      "payments": len(events), "labels": len(labels),
                      "promoted": f"demo:{CHALLENGER_VERSION}", "pointer_before": promotion.before,
                      "swapped_after_s": promotion.swapped_after_s,
                      "one_run": {"consumed": c.consumed, "scored": c.scored,
                                  "labels": c.labels},
                      "served": served, "seconds": took}
    for path in (o.json_path, o.out_dir and o.out_dir / "report.json"):
        if path is not None:
            path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _named(model: Any) -> str:
    return f"{model.name} v{model.version} (threshold {model.threshold:.3f}, " \
           f"{len(model.features)} features)"


def _publish(settings: Settings, runner: Runner,
             first: tuple[list[dict[str, Any]], list[dict[str, Any]]],
             second: tuple[list[dict[str, Any]], list[dict[str, Any]]], rate: float,
             promotion: Promotion, promote_now: Callable[[], str | None], out: TextIO) -> None:
    """The first part; once it is scored, the promotion and the swap; the second part. On a
    failure the runner is stopped and the error kept in ``promotion.error``."""
    try:
        kafka = settings.kafka
        encode = handbook.encoders("json")
        labels_topic = kafka.labels_topic or "labels"
        while not runner.source.assigned and not runner.stopping.wait(0.05):
            pass
        handbook.publish(kafka, first[0], kafka.input_topics[0], first[1], labels_topic,
                         *encode, rate_per_s=rate)
        while runner.stats.counts.scored < len(first[0]) and not runner.stopping.wait(0.05):
            pass
        _promote(runner, promotion, promote_now, out)
        handbook.publish(kafka, second[0], kafka.input_topics[0], second[1], labels_topic,
                         *encode, rate_per_s=rate)
    except Exception as exc:  # the main thread raises it once the runner has stopped
        promotion.error = exc
        runner.stop()


def _promote(runner: Runner, promotion: Promotion, promote_now: Callable[[], str | None],
             out: TextIO) -> None:
    asked = time.monotonic()
    promotion.before = promote_now()
    print(f"promote demo:{CHALLENGER_VERSION} after {runner.stats.counts.scored:,} payments "
          f"scored: {CHAMPION} names {CHALLENGER_VERSION} (before: {promotion.before}), "
          f"demo:{SHADOW_LINK} links to v{CHAMPION_VERSION}; the running service swaps at its "
          "next poll", file=out)
    while runner.pipeline.model.version != CHALLENGER_VERSION:
        if runner.stopping.wait(0.01) or time.monotonic() - asked > SWAP_TIMEOUT_S:
            raise ModelError(f"the service still serves demo v{runner.pipeline.model.version} "
                             f"{SWAP_TIMEOUT_S:g} s after the promotion (see its log)")
    promotion.swapped_after_s = time.monotonic() - asked
    shadows = ", ".join(f"v{m.version}" for m in runner.pipeline.models.shadows)
    print(f"swapped the service serves demo v{runner.pipeline.model.version} (shadow "
          f"{shadows}) {promotion.swapped_after_s:.2f} s after the promotion, no restart",
          file=out)


def by_phase(scores: Iterable[bytes], alerts: Iterable[bytes], cut_ms: int
             ) -> dict[str, dict[str, int]]:
    """Score records per ``version`` and role, and alerts per version, before and after the
    cut, as read back from the scores and alert topics."""
    out: dict[str, Counter[str]] = {"before": Counter(), "after": Counter()}
    for value in scores:
        record = json.loads(value)
        role = "shadow" if record.get("shadow") else "champion"
        phase = "before" if record["event_time"] < cut_ms else "after"
        out[phase][f"scores v{record['model_version']} {role}"] += 1
    for value in alerts:
        alert = json.loads(value)
        phase = "before" if alert["event_time"] < cut_ms else "after"
        out[phase][f"alerts v{alert['model_version']}"] += 1
    return {phase: dict(sorted(counts.items())) for phase, counts in out.items()}


def print_phases(served: dict[str, dict[str, int]], out: TextIO) -> None:
    print("before and after the promotion, as read back from the scores and alert topics",
          file=out)
    for phase, counts in served.items():
        listed = ", ".join(f"{name} {n:,}" for name, n in counts.items())
        print(f"  {phase:<7} {listed}", file=out)


def monitor(scores: Sequence[bytes], labels: Sequence[bytes], events: Sequence[dict[str, Any]],
            history_labels: Sequence[dict[str, Any]], models_dir: Path, out: TextIO
            ) -> dict[str, Any]:
    """The monitor report over the records read back, as of the newest label; its summary
    printed, its JSON returned."""
    from ..monitor import report
    from ..monitor.feed import Feed
    from ..monitor.join import DAY_MS, JoinState

    start = min(int(e["event_time"]) for e in events) // DAY_MS * DAY_MS
    end = max(int(e["event_time"]) for e in events) + 1
    as_of = max(int(lab["label_time"]) for lab in history_labels) + 1
    options = report.ReportOptions(from_ms=start, to_ms=end, as_of_ms=as_of)
    state = JoinState(ttl_days=None, max_scores=None, max_labels=None)
    feed = Feed(state, from_ms=start, to_ms=end)
    vectors = report.FeatureVectors(start, end)
    for value in scores:
        feed.score(value)
        vectors.add_bytes(value)
    for value in labels:
        feed.label(value)
    drift = report.drift(vectors, report.load_profiles(models_dir, vectors.models()))
    built = report.build(state, options, {"input": "the demo's scores and labels topics"},
                         drift)
    print(f"monitor report, events {_day(start)} to {_day(end)}, as of {_day(as_of)} "
          f"(the monitor's report over topics {SCORES_TOPIC} and labels)", file=out)
    for m in built.models:
        c = m["all"]
        print(f"  {m['model']}:{m['version']} ({m['role']}): {c.events:,} events, "
              f"{c.labelled:,} labelled, {c.alerts:,} alerts, precision {_num(c.precision)}, "
              f"recall {_num(c.recall)}, AP {_num(c.average_precision)} on "
              f"{c.mature_days}/{c.days} mature days", file=out)
    for comparison in built.comparisons:
        print("\n".join("  " + line for line in report.comparison_lines(comparison)), file=out)
    for (name, version), found in built.drift.items():
        top = sorted(found.features, key=lambda f: -f.psi)[:TOP_FEATURES]
        print(f"  PSI against training, {name}:{version} ({found.rows:,} events), top "
              f"{len(top)}: " + ", ".join(f"{f.feature} {f.psi:.3f}" for f in top), file=out)
    return report.as_json(built)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))
