"""docker-compose.yml describes the production stack; no Docker engine runs in CI, so it is
validated statically: wiring, pinned images, mounts, Kafka KRaft settings, and every command
and environment variable the service containers use."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_infer.cli import _parser
from stream_infer.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_BUILT_HERE = "stream-infer:local"
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")
"""An image pinned to an explicit patch release: ``redis:8.10.2-alpine``, not ``redis:8``."""
RETIRED = {
    "jaegertracing/all-in-one": "Jaeger v1, end of life since 2025-12-31: use jaegertracing/jaeger",
    "zookeeper": "Kafka 4 runs without ZooKeeper (KRaft)",
}
SUPPORTED_MAJOR = {"apache/kafka": 4, "jaegertracing/jaeger": 2, "redis": 8}
"""The release line each image must be on (its current major version)."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def problems(doc: dict[str, Any]) -> list[str]:
    """Everything wrong with a compose document; empty when it is sound."""
    found: list[str] = []
    services = doc.get("services", {})
    for needed in ["kafka", "redis", "seed", "stream-infer", "monitor", "otel-collector",
                   "jaeger", "prometheus"]:
        if needed not in services:
            found.append(f"service {needed} missing")
    for name, svc in services.items():
        image = svc.get("image", "")
        if image != SERVICE_BUILT_HERE and not PINNED.match(image):
            found.append(f"{name}: image {image!r} not pinned to a version")
        found += [f"{name}: {image}: {why}" for retired, why in RETIRED.items()
                  if image.startswith(f"{retired}:")]
        repository, _, tag = image.partition(":")
        major = SUPPORTED_MAJOR.get(repository)
        if major is not None and not tag.startswith(f"{major}."):
            found.append(f"{name}: {image} is not on the {repository}:{major}.x line")
        for target in svc.get("depends_on", {}):
            if target not in services:
                found.append(f"{name}: depends on unknown service {target}")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (ROOT / source).exists():
                found.append(f"{name}: mounts missing path {source}")
    app = services.get("stream-infer", {})
    if "container_name" in app or app.get("ports"):
        found.append("stream-infer: container_name/ports prevent --scale")
    found += redis_problems(services.get("redis", {}), doc.get("volumes") or {})
    return found + kraft_problems(services.get("kafka", {}).get("environment", {}))


def redis_problems(redis: dict[str, Any], volumes: dict[str, Any]) -> list[str]:
    """What would let Redis lose window state: no append-only file, eviction, or a data
    directory that does not outlive the container."""
    command = " ".join(map(str, redis.get("command", [])))
    found = []
    if "--appendonly yes" not in command:
        found.append("redis: without --appendonly yes a restart loses the window state")
    if "--maxmemory-policy noeviction" not in command:
        found.append("redis: may evict window state (--maxmemory-policy noeviction)")
    data = [v.split(":")[0] for v in redis.get("volumes", []) if v.split(":")[1:2] == ["/data"]]
    if not data or data[0] not in volumes:
        found.append("redis: /data is not a named volume")
    return found


def kraft_problems(env: dict[str, Any]) -> list[str]:
    found = []
    listeners = dict(item.split("://") for item in env.get("KAFKA_LISTENERS", "").split(","))
    protocols = dict(item.split(":") for item in
                     env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(","))
    if env.get("KAFKA_CONTROLLER_LISTENER_NAMES") not in protocols:
        found.append("controller listener has no security protocol")
    for name in listeners:
        if name not in protocols:
            found.append(f"listener {name} has no security protocol")
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")
    if not voters.startswith(f"{env.get('KAFKA_NODE_ID')}@"):
        found.append("quorum voters do not name this node")
    for item in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(","):
        name, address = item.split("://")
        if listeners.get(name, "x").rsplit(":", 1)[-1] != address.rsplit(":", 1)[-1]:
            found.append(f"advertised listener {name} port differs from its listener")
    if str(env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR")) != "1":
        found.append("single node needs offsets replication factor 1")
    return found


def test_the_stack_is_sound(compose: dict[str, Any]) -> None:
    assert problems(compose) == []


@pytest.mark.parametrize("breakage", [
    lambda d: d["services"]["redis"].update(image="redis:latest"),
    lambda d: d["services"]["redis"].update(image="redis:8-alpine"),
    lambda d: d["services"]["redis"].update(image="redis:7.4.2-alpine"),
    lambda d: d["services"]["kafka"].update(image="apache/kafka"),
    lambda d: d["services"]["kafka"].update(image="apache/kafka:3.9.1"),
    lambda d: d["services"]["jaeger"].update(image="jaegertracing/all-in-one:1.76.0"),
    lambda d: d["services"]["stream-infer"].update(ports=["9464:9464"]),
    lambda d: d["services"]["seed"]["depends_on"].update(zookeeper={}),
    lambda d: d["services"]["seed"].update(volumes=["./nope.toml:/x"]),
    lambda d: d["services"]["kafka"]["environment"].update(
        KAFKA_CONTROLLER_QUORUM_VOTERS="2@kafka:9093"),
    lambda d: d["services"]["kafka"]["environment"].update(
        KAFKA_ADVERTISED_LISTENERS="INTERNAL://kafka:9999,EXTERNAL://localhost:29092"),
    lambda d: d["services"].pop("redis"),
    lambda d: d["services"]["redis"].update(command=["redis-server", "--appendonly", "no",
                                                     "--maxmemory-policy", "noeviction"]),
    lambda d: d["services"]["redis"].update(command=["redis-server", "--appendonly", "yes"]),
    lambda d: d["services"]["redis"].pop("volumes"),
    lambda d: d["volumes"].pop("redis-data"),
    lambda d: d["services"].pop("monitor"),
    lambda d: d["services"]["monitor"].update(image="stream-infer:latest"),
])
def test_the_checks_catch_a_broken_stack(compose: dict[str, Any], breakage: Any) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert problems(broken)


def test_kafka_host_port_matches_the_external_listener(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "EXTERNAL://localhost:29092" in advertised
    assert "29092:29092" in kafka["ports"]


def test_service_environment_names_real_settings(compose: dict[str, Any]) -> None:
    for name in ["seed", "stream-infer", "monitor"]:
        for variable in compose["services"][name]["environment"]:
            section, _, field = variable.removeprefix("STREAM_INFER_").lower().partition("__")
            model = Settings.model_fields[section].annotation
            assert field in model.model_fields, variable  # type: ignore[union-attr]


def test_every_command_the_containers_run_parses_with_the_real_cli(
    compose: dict[str, Any]
) -> None:
    (script,) = compose["services"]["seed"]["command"]
    commands = [shlex.split(part) for part in script.split("&&")]
    commands += [compose["services"][name]["command"] for name in ("stream-infer", "monitor")]
    parser = _parser()
    for argv in commands:
        argv = argv[1:] if argv[0] == "stream-infer" else argv
        parser.parse_args(argv)  # exits (fails the test) on an unknown command or flag
    assert len(commands) == 7


def test_the_mounted_service_config_loads_and_serves_the_shipped_model() -> None:
    from stream_infer.enrich import Enricher
    from stream_infer.registry import read_manifest, resolve

    settings = load_settings(ROOT / "deploy" / "stream-infer.toml")
    manifest = read_manifest(resolve(ROOT / "models", settings.model.name, settings.model.version))
    Enricher(manifest.features, settings.features)  # raises if a view feature is not served
    assert settings.kafka.scores_topic == "fraud-scores"


def test_dockerfile_runs_as_non_root_with_the_cli_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert 'ENTRYPOINT ["stream-infer"]' in text


def test_the_image_is_built_with_the_compiled_scorer() -> None:
    text = (ROOT / "Dockerfile").read_text()
    build, _, final = text.rpartition("\nFROM ")
    assert re.search(r"apt-get install .*\bgcc\b", build) and "setup.py" in build
    assert "COPY --from=build /wheels" in final
    assert re.search(r'RUN pip install .*/wheels/\*\.whl.*python -c "import stream_infer\._forest"',
                     final.replace("\\\n", " "), re.S)


def yaml_file(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / name).read_text())
    return doc


def pipeline_problems(config: dict[str, Any]) -> list[str]:
    """A collector-format config (the OpenTelemetry Collector's, Jaeger v2's) that the binary
    would refuse: a pipeline naming an undefined component, an unused definition, a service
    extension never defined."""
    found = []
    service = config.get("service", {})
    for pipeline, parts in service.get("pipelines", {}).items():
        for kind in ("receivers", "processors", "exporters"):
            for name in parts.get(kind, []):
                if name not in (config.get(kind) or {}):
                    found.append(f"pipeline {pipeline}: {kind[:-1]} {name} is not defined")
        if not parts.get("receivers") or not parts.get("exporters"):
            found.append(f"pipeline {pipeline} needs a receiver and an exporter")
    used = {name for parts in service.get("pipelines", {}).values()
            for kind in ("receivers", "processors", "exporters") for name in parts.get(kind, [])}
    for kind in ("receivers", "processors", "exporters"):
        found += [f"{kind[:-1]} {name} is defined but in no pipeline"
                  for name in config.get(kind) or {} if name not in used]
    found += [f"extension {name} is not defined" for name in service.get("extensions", [])
              if name not in (config.get("extensions") or {})]
    return found


def component(name: str) -> str:
    """A component's type: ``otlp_grpc/jaeger`` -> ``otlp_grpc``."""
    return name.partition("/")[0]


def collector_problems(collector: dict[str, Any], compose: dict[str, Any]) -> list[str]:
    """The collector reads the service's traces topic as OTLP and sends it to Jaeger, in the
    form current collector releases accept."""
    found = pipeline_problems(collector)
    settings = load_settings(ROOT / "deploy" / "stream-infer.toml")
    kafka = collector["receivers"].get("kafka", {})
    traces = kafka.get("traces", {})
    if traces.get("topics") != [settings.tracing.kafka_topic]:
        found.append("collector reads another topic than the service writes (traces.topics)")
    if traces.get("encoding") != "otlp_proto":
        found.append("collector does not decode OTLP protobuf (traces.encoding)")
    found += [f"kafka receiver: top-level {key!r} is gone from current collectors"
              for key in ("topic", "encoding") if key in kafka]
    internal = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    if any(f"://{b}" not in internal for b in kafka.get("brokers", [""])):
        found.append("collector brokers are not the internal Kafka listener")
    pipeline = collector["service"]["pipelines"]["traces"]
    if "kafka" not in pipeline["receivers"]:
        found.append("traces pipeline does not start at the kafka receiver")
    found += [f"processor {p}: deprecated, batch in the exporter's sending_queue instead"
              for p in pipeline.get("processors", []) if component(p) == "batch"]
    exporters = {e: collector["exporters"].get(e) or {} for e in pipeline["exporters"]}
    found += [f"exporter {e}: `otlp` is the deprecated alias of `otlp_grpc`"
              for e in exporters if component(e) == "otlp"]
    jaeger_otlp = jaeger_otlp_port(compose)
    if not any(component(e) == "otlp_grpc" and cfg.get("endpoint") == f"jaeger:{jaeger_otlp}"
               for e, cfg in exporters.items()):
        found.append(f"traces do not reach Jaeger's OTLP gRPC port (jaeger:{jaeger_otlp})")
    return found


def jaeger_config(compose: dict[str, Any]) -> dict[str, Any]:
    """The config file the jaeger service runs with: its --config argument, mounted from
    deploy/."""
    jaeger = compose["services"]["jaeger"]
    command = jaeger.get("command", [])
    target = command[command.index("--config") + 1]
    (source,) = [v.split(":")[0] for v in jaeger.get("volumes", []) if v.split(":")[1] == target]
    doc: dict[str, Any] = yaml.safe_load((ROOT / source).read_text())
    return doc


def jaeger_otlp_port(compose: dict[str, Any]) -> str:
    endpoint = jaeger_config(compose)["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    return str(endpoint).rpartition(":")[2]


def test_the_collector_carries_spans_from_the_traces_topic_to_jaeger(
    compose: dict[str, Any]
) -> None:
    collector = yaml_file("otel-collector.yaml")
    assert collector_problems(collector, compose) == []
    broken = copy.deepcopy(collector)
    broken["receivers"]["kafka"]["traces"]["encoding"] = "otlp_json"
    broken["receivers"]["kafka"]["traces"]["topics"] = ["other"]
    assert len(collector_problems(broken, compose)) == 2


@pytest.mark.parametrize("breakage", [
    lambda c: c["receivers"]["kafka"].update(topic="stream-infer-traces"),  # the old form
    lambda c: c["exporters"].update({"otlp/jaeger": c["exporters"].pop("otlp_grpc/jaeger")}),
    lambda c: c.update(processors={"batch": {}}) or c["service"]["pipelines"]["traces"].update(
        processors=["batch"]),
    lambda c: c["service"]["pipelines"]["traces"].update(exporters=["otlp_grpc/tempo"]),
    lambda c: c["exporters"]["otlp_grpc/jaeger"].update(endpoint="jaeger:14250"),
    lambda c: c["exporters"].update(debug={}),
])
def test_the_collector_checks_catch_an_outdated_or_miswired_config(
    compose: dict[str, Any], breakage: Any
) -> None:
    broken = copy.deepcopy(yaml_file("otel-collector.yaml"))
    breakage(broken)
    assert collector_problems(broken, compose)


def test_jaeger_v2_runs_from_its_mounted_config_with_otlp_in_and_a_store_behind_the_ui(
    compose: dict[str, Any]
) -> None:
    config = jaeger_config(compose)
    assert pipeline_problems(config) == []
    backends = config["extensions"]["jaeger_storage"]["backends"]
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] in backends
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].startswith("0.0.0.0:")
    assert "16686:16686" in compose["services"]["jaeger"]["ports"]
    assert "environment" not in compose["services"]["jaeger"], "v1's variables do nothing in v2"


def test_the_pipeline_check_catches_an_undefined_or_unused_component() -> None:
    config = yaml_file("jaeger.yaml")
    for breakage in (
        lambda c: c["service"]["pipelines"]["traces"].update(receivers=["zipkin"]),
        lambda c: c["receivers"].update(jaeger={}),
        lambda c: c["service"]["extensions"].append("healthcheckv2"),
    ):
        broken = copy.deepcopy(config)
        breakage(broken)
        assert pipeline_problems(broken), breakage


def scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in yaml_file("prometheus.yml")["scrape_configs"]}


def test_prometheus_scrapes_every_replica_on_the_metrics_port(compose: dict[str, Any]) -> None:
    settings = load_settings(ROOT / "deploy" / "stream-infer.toml")
    (sd,) = scrape_jobs()["stream-infer"]["dns_sd_configs"]
    assert sd["names"] == ["stream-infer"] and sd["type"] == "A"
    assert sd["port"] == settings.observability.http_port
    assert str(sd["port"]) in compose["services"]["stream-infer"]["expose"]
    mounted = compose["services"]["prometheus"]["volumes"][0]
    assert mounted.startswith("./deploy/prometheus.yml:")


def monitor_problems(compose: dict[str, Any], jobs: dict[str, dict[str, Any]]) -> list[str]:
    """The monitor runs ``monitor run`` on the service's image and configuration, with the
    labels topic it needs, one instance, and Prometheus scrapes the port it serves."""
    found = []
    services = compose["services"]
    monitor, app = services.get("monitor", {}), services["stream-infer"]
    command = monitor.get("command", [])
    if command[:2] != ["monitor", "run"]:
        found.append(f"monitor: runs {command[:2]}, not `monitor run`")
    if monitor.get("image") != app["image"]:
        found.append("monitor: not the service's image")
    config = command[command.index("--config") + 1] if "--config" in command else None
    if config not in {v.split(":")[1] for v in app["volumes"]}:
        found.append(f"monitor: --config {config} is not the file the service is given")
    if config not in {v.split(":")[1] for v in monitor.get("volumes", [])}:
        found.append(f"monitor: --config {config} is not mounted")
    environment = monitor.get("environment", {})
    if not environment.get("STREAM_INFER_KAFKA__LABELS_TOPIC"):
        found.append("monitor: kafka.labels_topic unset (the deployed config has none)")
    if environment.get("STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS") != (
            app["environment"]["STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS"]):
        found.append("monitor: another broker than the service's")
    if monitor.get("deploy", {}).get("replicas", 1) != 1:
        found.append("monitor: more than one instance would split the partitions")
    port = str(_parser().parse_args(command).port) if command[:2] == ["monitor", "run"] else ""
    if port not in monitor.get("expose", []):
        found.append(f"monitor: port {port} not exposed")
    targets = [t for config in jobs.get("stream-infer-monitor", {}).get("static_configs", [])
               for t in config.get("targets", [])]
    if targets != [f"monitor:{port}"]:
        found.append(f"Prometheus scrapes the monitor at {targets}, not monitor:{port}")
    return found


def test_the_monitor_runs_beside_the_service_and_prometheus_scrapes_it(
    compose: dict[str, Any]
) -> None:
    assert monitor_problems(compose, scrape_jobs()) == []


@pytest.mark.parametrize("breakage", [
    lambda d, j: d["services"]["monitor"].update(command=["run", "--config",
                                                          "/etc/stream-infer/config.toml"]),
    lambda d, j: d["services"]["monitor"].update(image="stream-infer:other"),
    lambda d, j: d["services"]["monitor"].update(volumes=[]),
    lambda d, j: d["services"]["monitor"]["command"].__setitem__(-1, "9466"),
    lambda d, j: d["services"]["monitor"].update(environment={
        "STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092"}),
    lambda d, j: d["services"]["monitor"].update(deploy={"replicas": 2}),
    lambda d, j: j.pop("stream-infer-monitor"),
    lambda d, j: j["stream-infer-monitor"].update(static_configs=[{"targets": ["monitor:9464"]}]),
])
def test_the_monitor_checks_catch_a_broken_copy(compose: dict[str, Any], breakage: Any) -> None:
    broken, jobs = copy.deepcopy(compose), copy.deepcopy(scrape_jobs())
    breakage(broken, jobs)
    assert monitor_problems(broken, jobs)
