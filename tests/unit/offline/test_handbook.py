"""The Fraud-Detection-Handbook's generator (``stream_infer.offline.handbook``): its draws
against the Handbook's published ones, its fraud scenarios against a pandas transcription of
the Handbook's ``add_frauds``, its rules on a seeded run, and its labels stream."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stream_infer.cli import main
from stream_infer.decode import JsonDecoder, JsonLabelDecoder
from stream_infer.errors import ConfigError
from stream_infer.offline import handbook as hb

POP = hb.make_population(customers=300, terminals=400, seed=3)
DAYS = 70
START = hb.start_ms("2018-04-01")


@pytest.fixture(scope="module")
def tx() -> hb.Transactions:
    return hb.generate(POP, DAYS, seed=3)


def test_the_customer_profiles_are_the_handbooks_published_ones() -> None:
    """``generate_customer_profiles_table(5, random_state=0)`` as the Handbook prints it."""
    pop = hb.make_population(customers=5, terminals=5)
    published = [[54.881350, 71.518937, 62.262521, 31.131260, 2.179533],
                 [42.365480, 64.589411, 46.570785, 23.285393, 3.567092],
                 [96.366276, 38.344152, 80.213879, 40.106939, 2.115580],
                 [56.804456, 92.559664, 11.748426, 5.874213, 0.348517],
                 [2.021840, 83.261985, 78.924891, 39.462446, 3.480049]]
    ours = np.column_stack([pop.customer_xy, pop.mean_amount, pop.std_amount, pop.tx_per_day])
    assert np.round(ours, 6).tolist() == published


def test_the_first_transactions_are_the_handbooks_dataset() -> None:
    """The first four rows of the Handbook's simulated dataset (5,000 customers, 10,000
    terminals, radius 5, from 2018-04-01): each customer draws its days in order from its own
    seed, so the first day alone gives them."""
    first = hb.draw_transactions(hb.make_population(), days=1)
    rows = [(int(first.seconds[i]), int(first.customers[i]), int(first.terminals[i]),
             float(first.amounts[i])) for i in range(4)]
    assert rows == [(31, 596, 3156, 57.16), (130, 4961, 3412, 81.51),
                    (476, 2, 1365, 146.0), (569, 4128, 8737, 64.49)]


@pytest.mark.parametrize("day", [0, 1, 17, 180])
def test_a_days_compromised_draw_is_pandas_sample_with_that_random_state(day: int) -> None:
    for population, count in ((10_000, 2), (5_000, 3)):
        expected = pd.Series(range(population)).sample(n=count, random_state=day).to_numpy()
        assert hb.compromised(population, count, day).tolist() == expected.tolist()


def add_frauds_as_the_handbook_writes_it(frame: pd.DataFrame, customers: int,
                                          terminals: int, seed: int) -> pd.DataFrame:
    """The Handbook's ``add_frauds``, transcribed with its own pandas calls (the seeds
    shifted by ``seed``)."""
    frame = frame.copy()
    frame["TX_FRAUD"], frame["TX_FRAUD_SCENARIO"] = 0, 0
    frame.loc[frame["TX_AMOUNT"] > 220, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = 1
    terminal_ids, customer_ids = pd.Series(range(terminals)), pd.Series(range(customers))
    for day in range(frame["TX_TIME_DAYS"].max()):
        compromised = terminal_ids.sample(n=2, random_state=seed + day)
        hit = frame[(frame["TX_TIME_DAYS"] >= day) & (frame["TX_TIME_DAYS"] < day + 28)
                    & frame["TERMINAL_ID"].isin(compromised)]
        frame.loc[hit.index, "TX_FRAUD"], frame.loc[hit.index, "TX_FRAUD_SCENARIO"] = 1, 2
    for day in range(frame["TX_TIME_DAYS"].max()):
        compromised = customer_ids.sample(n=3, random_state=seed + day).values
        hit = frame[(frame["TX_TIME_DAYS"] >= day) & (frame["TX_TIME_DAYS"] < day + 14)
                    & frame["CUSTOMER_ID"].isin(compromised)]
        draw = random.Random(seed + day)  # random.seed(day), without touching the global
        picked = draw.sample(list(hit.index.values), k=int(len(hit) / 3))
        frame.loc[picked, "TX_AMOUNT"] = frame.loc[picked, "TX_AMOUNT"] * 5
        frame.loc[picked, "TX_FRAUD"], frame.loc[picked, "TX_FRAUD_SCENARIO"] = 1, 3
    return frame


def test_the_fraud_scenarios_are_the_handbooks_add_frauds_exactly() -> None:
    drawn = hb.draw_transactions(POP, DAYS, seed=3)
    frame = pd.DataFrame({"TX_TIME_DAYS": drawn.days, "CUSTOMER_ID": drawn.customers,
                          "TERMINAL_ID": drawn.terminals, "TX_AMOUNT": drawn.amounts.copy()})
    expected = add_frauds_as_the_handbook_writes_it(frame, POP.customers, POP.terminals, 3)
    ours = hb.add_frauds(drawn, POP, seed=3)
    assert ours.fraud.tolist() == expected.TX_FRAUD.tolist()
    assert ours.scenario.tolist() == expected.TX_FRAUD_SCENARIO.tolist()
    assert ours.amounts.tolist() == expected.TX_AMOUNT.tolist()
    assert set(np.unique(ours.scenario).tolist()) == {0, 1, 2, 3}


def test_every_amount_over_220_is_fraud_and_every_fraud_has_its_scenario(
        tx: hb.Transactions) -> None:
    assert tx.fraud[tx.amounts > 220].all()
    assert ((tx.fraud == 1) == (tx.scenario > 0)).all()
    assert ((tx.scenario == 1) <= (tx.amounts > 220)).all()


def test_compromised_terminals_are_all_fraud_for_their_28_days(tx: hb.Transactions) -> None:
    for day in range(int(tx.days.max())):
        terminals = hb.compromised(POP.terminals, 2, day, seed=3)
        during = (tx.days >= day) & (tx.days < day + 28) & np.isin(tx.terminals, terminals)
        assert tx.fraud[during].all(), day


def test_compromised_customers_lose_a_third_of_their_14_days_at_five_times_the_amount(
        tx: hb.Transactions) -> None:
    genuine = hb.draw_transactions(POP, DAYS, seed=3).amounts
    paid = genuine > 0
    multiplied = np.ones_like(genuine)
    multiplied[paid] = tx.amounts[paid] / genuine[paid]
    assert np.isin(np.round(multiplied, 9), [1, 5, 25, 125]).all()
    assert (tx.amounts[~paid] == 0).all()
    for day in range(int(tx.days.max())):
        customers = hb.compromised(POP.customers, 3, day, seed=3)
        during = (tx.days >= day) & (tx.days < day + 14) & np.isin(tx.customers, customers)
        assert tx.fraud[during].sum() >= during.sum() // 3, day
    # amounts change only where scenario 3 struck, and always by a power of 5
    assert ((multiplied != 1) <= (tx.fraud == 1)).all()


def test_customers_pay_at_their_own_terminals_around_noon(tx: hb.Transactions) -> None:
    for customer, terminal in zip(tx.customers[:2000].tolist(), tx.terminals[:2000].tolist(),
                                  strict=True):
        distance = np.hypot(*(POP.customer_xy[customer] - POP.terminal_xy[terminal]))
        assert distance < 5 and terminal in POP.available[customer]
    in_day = tx.seconds - tx.days * hb.DAY_S
    assert ((in_day > 0) & (in_day < hb.DAY_S)).all()
    assert abs(np.median(in_day) - hb.DAY_S / 2) < 1800
    assert (np.diff(tx.seconds) >= 0).all()


def test_the_same_seed_draws_the_same_data_and_another_seed_does_not(
        tx: hb.Transactions) -> None:
    again = hb.generate(POP, DAYS, seed=3)
    assert all(np.array_equal(getattr(tx, f), getattr(again, f))
               for f in ("seconds", "customers", "terminals", "amounts", "fraud", "scenario"))
    other = hb.generate(hb.make_population(customers=300, terminals=400, seed=4), DAYS, seed=4)
    assert not np.array_equal(tx.amounts[:100], other.amounts[:100])


def events(tx: hb.Transactions) -> list[dict[str, Any]]:
    return list(hb.events(tx, start=START, seed=3))


def test_events_are_valid_transactions_that_carry_customer_terminal_card_and_label(
        tx: hb.Transactions) -> None:
    decode = JsonDecoder()
    found = events(tx)
    for i, event in enumerate(found[:3000]):
        decoded = decode(json.dumps(event).encode())
        assert decoded.card_id == decoded.customer_id == hb.customer_id(int(tx.customers[i]))
        assert decoded.terminal_id == decoded.merchant_id == hb.terminal_id(int(tx.terminals[i]))
        assert decoded.event_time_ms == START + int(tx.seconds[i]) * 1000
        assert decoded.label == tx.fraud[i] and event["fraud_scenario"] == tx.scenario[i]
    assert len({e["event_id"] for e in found}) == len(found)


@pytest.mark.parametrize(("text", "low", "high"), [
    ("7d", 7 * 86_400_000, 7 * 86_400_000), ("1d..30d", 86_400_000, 30 * 86_400_000),
    ("12h-2d", 43_200_000, 172_800_000), (" 500ms .. 1s ", 500, 1000),
])
def test_label_delays_are_fixed_or_a_range(text: str, low: int, high: int) -> None:
    assert hb.Delay.parse(text) == hb.Delay(low, high)


@pytest.mark.parametrize("text", ["", "7", "seven days", "2d..1d", "1d..", "-1d"])
def test_a_bad_label_delay_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="label delay"):
        hb.Delay.parse(text)


@pytest.mark.parametrize("delay", ["7d", "1d..30d"])
def test_labels_arrive_a_delay_after_their_event_in_arrival_order(
        tx: hb.Transactions, delay: str) -> None:
    found = events(tx)
    parsed = hb.Delay.parse(delay)
    labels = hb.labels(found, parsed, seed=3)
    assert labels == hb.labels(found, parsed, seed=3)
    by_id = {e["event_id"]: e for e in found}
    decode = JsonLabelDecoder()
    times = []
    for label in labels:
        record = decode(json.dumps(label).encode())
        event = by_id[record.event_id]
        assert parsed.low_ms <= record.label_time_ms - event["event_time"] <= parsed.high_ms
        assert (record.label, record.card_id, record.terminal_id) == (
            event["label"], event["card_id"], event["terminal_id"])
        times.append(record.label_time_ms)
    assert times == sorted(times) and len(labels) == len(found)


def test_simulate_handbook_writes_the_same_files_for_the_same_seed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(name: str, *extra: str) -> tuple[bytes, bytes]:
        out, labels = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-labels.jsonl"
        assert main(["simulate", "--population", "handbook", "--customers", "60",
                     "--terminals", "80", "--days", "20", "--jsonl-out", str(out),
                     "--labels-out", str(labels), "--label-delay", "1d..10d", *extra]) == 0
        return out.read_bytes(), labels.read_bytes()

    first, again, other = run("a"), run("b"), run("c", "--seed", "1")
    assert first == again and first[0] != other[0]
    printed = capsys.readouterr().out
    assert "handbook:" in printed and "compromised terminal" in printed
    assert f"({first[0].count(b'{'):,} events)" in printed


@pytest.mark.parametrize(("argv", "message"), [
    (["--population", "handbook", "--count", "5", "--jsonl-out", "x"], "--count apply to"),
    (["--population", "handbook", "--training-out", "x"], "--training-out apply to"),
    (["--population", "handbook"], "--jsonl-out or --labels-out"),
    (["--population", "handbook", "--days", "0", "--jsonl-out", "x"], "at least 1"),
    (["--population", "handbook", "--label-delay", "soon", "--jsonl-out", "x"], "label delay"),
    (["--labels-out", "x", "--jsonl-out", "y"], "--labels-out need --population handbook"),
])
def test_simulate_refuses_options_of_the_other_population(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_cards_population_keeps_its_defaults(tmp_path: Path) -> None:
    out = tmp_path / "cards.jsonl"
    assert main(["simulate", "--cards", "50", "--merchants", "10", "--jsonl-out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 10_000 and json.loads(lines[0])["event_id"] == "ev-7-0"
