"""Shadow models and hot reload: who scores what, and when a new model takes over."""

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
import xgboost

from stream_infer.adapters.memory import (
    FunctionModel,
    MemoryFeatureStore,
    MemorySink,
    MemorySource,
    Record,
)
from stream_infer.config import FeatureView, Settings
from stream_infer.decode import JsonDecoder
from stream_infer.errors import ConfigError
from stream_infer.pipeline import Pipeline, Topics
from stream_infer.registry import write_model
from stream_infer.runner import Runner, RunnerConfig
from stream_infer.score import ModelSet
from stream_infer.service.app import load_models
from stream_infer.service.reload import ModelWatch

VIEWS = {"card": FeatureView(key="card:{card_id}", fields=["risk", "age"])}
TOPICS = Topics(alerts="alerts", dead_letter="dlq", scores="scores")
STORE = {f"card:c{i}": {"risk": str(i / 10).encode(), "age": str(i).encode()} for i in range(10)}


def event(n: int) -> bytes:
    return json.dumps({"event_id": f"e{n}", "event_time": 1_700_000_000_000 + n,
                       "card_id": f"c{n % 10}", "merchant_id": "m", "amount": 10.0 + n,
                       "currency": "EUR"}).encode()


def stream(count: int) -> list[Record]:
    return [Record(event(n), _offset=n, _timestamp=n) for n in range(count)]


def pipeline(scoring: ModelSet) -> Pipeline:
    return Pipeline(decoder=JsonDecoder(), models=scoring, store=MemoryFeatureStore(STORE),
                    topics=TOPICS, encoder=msgspec.json.Encoder().encode, clock=lambda: 7)


def by_topic(outputs: list, topic: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(o.value) for o in outputs if o.topic == topic]


def test_shadows_score_on_their_own_features_and_never_alert() -> None:
    champion = FunctionModel(lambda m: m[:, 1], ("amount", "card.risk"), threshold=0.5)
    # the challenger alerts on everything, on a feature the champion does not use
    shadow = FunctionModel(lambda m: np.full(len(m), 0.99) + 0 * m[:, 0], ("card.age",),
                           threshold=0.5, name="challenger", version="2")
    scoring = ModelSet.build(champion, VIEWS, [shadow])
    assert scoring.enricher.features == ("amount", "card.risk", "card.age")

    outcome = pipeline(scoring).process(stream(10))

    alerts = by_topic(outcome.outputs, "alerts")
    assert {a["model_name"] for a in alerts} == {"fake"}
    assert sorted(a["event_id"] for a in alerts) == ["e5", "e6", "e7", "e8", "e9"]
    scores = by_topic(outcome.outputs, "scores")
    shadows = [s for s in scores if s["shadow"]]
    assert len(shadows) == 10 and {s["model_name"] for s in shadows} == {"challenger"}
    assert all(set(s["features"]) == {"card.age"} for s in shadows)
    assert [s["features"]["card.age"] for s in shadows] == [float(i) for i in range(10)]
    assert all(not s["shadow"] and set(s["features"]) == {"amount", "card.risk"}
               for s in scores if s["model_name"] == "fake")
    assert outcome.counts.shadow_alerts == {"challenger:2": 10}
    assert outcome.counts.alerted == 5


def test_a_model_listed_twice_or_with_unknown_features_is_refused() -> None:
    model = FunctionModel(lambda m: m[:, 0], ("amount",))
    with pytest.raises(ConfigError, match="listed twice"):
        ModelSet.build(model, VIEWS, [model])
    stray = FunctionModel(lambda m: m[:, 0], ("merchant.risk",), name="other")
    with pytest.raises(ConfigError, match="merchant"):
        ModelSet.build(model, VIEWS, [stray])


def test_a_swap_takes_effect_between_batches_and_no_batch_mixes_versions() -> None:
    def version(v: str) -> ModelSet:
        return ModelSet.build(FunctionModel(lambda m: m[:, 1], ("amount", "card.risk"),
                                           version=v), VIEWS)

    class SwapAfter:
        """Offers version 2 once the third batch has been handled."""

        def __init__(self) -> None:
            self.polls = 0

        def poll(self) -> ModelSet | None:
            self.polls += 1
            return version("2") if self.polls == 4 else None

    sink = MemorySink()
    source = MemorySource(stream(100))
    runner = Runner(source, sink, pipeline(version("1")), RunnerConfig(max_records=16),
                    reloader=SwapAfter())
    runner.run(max_events=100)

    scores = by_topic(sink.delivered, "scores")
    assert [s["event_id"] for s in scores] == [f"e{n}" for n in range(100)]
    assert [s["model_version"] for s in scores] == ["1"] * 48 + ["2"] * 52
    assert source.committed == {("transactions", 0): 100}


def booster(names: list[str], flip: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, len(names))).astype(np.float32)
    y = ((x[:, 0] > 0) ^ flip).astype(int)
    dm = xgboost.DMatrix(x, label=y, feature_names=names)
    trained = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, dm, 4)
    return bytes(trained.save_raw("json"))


FEATURES = ["amount", "card.risk"]


def write(root: Path, version: str, *, flip: bool = False, features: list[str] = FEATURES,
          name: str = "fraud") -> Path:
    return write_model(root, name, version, booster(features, flip), features=features,
                       threshold=0.5)


def watch(root: Path, results: list, clock: list[float], shadows: tuple = ()) -> ModelWatch:  # type: ignore[type-arg]
    settings = Settings(features=VIEWS)
    return ModelWatch(root, [("fraud", "latest"), *shadows],
                      lambda dirs: load_models(settings, dirs), poll_s=10.0,
                      on_result=results.append, clock=lambda: clock[0])


def test_a_new_latest_version_is_picked_up_at_the_next_poll(tmp_path: Path) -> None:
    write(tmp_path, "1")
    results: list[ModelSet | None] = []
    clock = [0.0]
    w = watch(tmp_path, results, clock)
    write(tmp_path, "2", flip=True)
    assert w.poll() is None  # not due yet
    clock[0] = 10.0
    scoring = w.poll()
    assert scoring is not None and scoring.champion.version == "2"
    assert results == [scoring]
    clock[0] = 20.0
    assert w.poll() is None  # nothing changed since


def test_a_bad_model_is_refused_and_not_retried_until_asked(tmp_path: Path) -> None:
    write(tmp_path, "1")
    results: list[ModelSet | None] = []
    clock = [0.0]
    w = watch(tmp_path, results, clock)
    bad = write(tmp_path, "2")
    (bad / "model.json").write_bytes(b'{"tampered": true}')
    clock[0] = 10.0
    assert w.poll() is None and results == [None]
    clock[0] = 20.0
    assert w.poll() is None and results == [None]  # same broken files: not retried
    w.request()
    assert w.poll() is None and results == [None, None]  # SIGHUP retries, still refused


def test_a_model_whose_features_have_no_source_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "1")
    results: list[ModelSet | None] = []
    w = watch(tmp_path, results, [0.0])
    write(tmp_path, "2", features=["amount", "merchant.risk"])
    w.request()
    assert w.poll() is None and results == [None]


def test_a_request_reloads_shadows_too(tmp_path: Path) -> None:
    write(tmp_path, "1")
    write(tmp_path, "1", name="challenger", features=["card.risk", "card.age"])
    results: list[ModelSet | None] = []
    w = watch(tmp_path, results, [0.0], shadows=(("challenger", "latest"),))
    write(tmp_path, "2", name="challenger", features=["card.age"])
    w.request()
    scoring = w.poll()
    assert scoring is not None
    assert [(m.name, m.version) for m in (scoring.champion, *scoring.shadows)] == [
        ("fraud", "1"), ("challenger", "2")]
    assert scoring.enricher.features == ("amount", "card.risk", "card.age")
