"""``stream-infer replay --jobs`` as a user runs it: the same results file and report from one
process or from several, whatever the main module (``python -m stream_infer``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost

from stream_infer.registry import write_model
from tests.support.events import HISTORY_FEATURES, history, write_lines
from tests.support.service import cli

pytestmark = pytest.mark.integration


def replay(tmp_path: Path, models: Path, events: Path, name: str, *jobs: str
           ) -> tuple[str, dict[str, object]]:
    """The printed summary and the JSON report of one ``replay`` command."""
    env = {"STREAM_INFER_MODEL__DIR": str(models), "STREAM_INFER_MODEL__NAME": "champ",
           "STREAM_INFER_MODEL__NTHREAD": "1", "STREAM_INFER_DECODE__MAX_PAYLOAD_BYTES": "2000"}
    result = cli("replay", "--input", str(events), "--out", str(tmp_path / f"{name}.parquet"),
                 "--json", str(tmp_path / f"{name}.json"), *jobs, env=env)
    return result.stdout, json.loads((tmp_path / f"{name}.json").read_text())


def test_replay_on_two_decoding_processes_prints_and_writes_what_one_process_does(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, len(HISTORY_FEATURES))).astype(np.float32)
    train = xgboost.DMatrix(x, label=x[:, 1] > 0, feature_names=HISTORY_FEATURES)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                            train, 20)
    write_model(tmp_path / "models", "champ", "1", bytes(booster.save_raw("json")),
                features=HISTORY_FEATURES, threshold=0.5)
    events = write_lines(tmp_path / "events.jsonl", history(20_000, seed=31))

    one, one_report = replay(tmp_path, tmp_path / "models", events, "one", "--jobs", "1")
    two, two_report = replay(tmp_path, tmp_path / "models", events, "two", "--jobs", "2")

    digest = re.search(r"sha256 ([0-9a-f]{64})", one)
    assert digest and f"sha256 {digest[1]}" in two
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    assert one_report["decoding_processes"] == 1 and two_report["decoding_processes"] == 2
    ignored = {"results": "", "dead_letters_file": "", "decoding_processes": 0}
    assert {**two_report, **ignored} == {**one_report, **ignored}
    assert one_report["records"] == 20_000 and one_report["dead_lettered"] == 6
    assert one_report["scored"] == pq.read_metadata(tmp_path / "two.parquet").num_rows == 19_994
    assert "scored 19,994, dead-lettered 6 (oversized 1, schema 3, undecodable 2)" in two
