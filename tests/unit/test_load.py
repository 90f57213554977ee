import pytest

from stream_infer.config import FeatureView
from stream_infer.errors import ConfigError
from stream_infer.load import plan_writes

VIEW = FeatureView(key="card:{card_id}", fields=["avg", "count"])


def test_rows_become_keys_from_the_template_with_only_the_view_fields() -> None:
    table = {"card_id": ["c1", "c2"], "avg": ["1.5", None], "count": [3, 4], "other": [9, 9]}
    assert list(plan_writes(table, "card", VIEW)) == [
        ("card:c1", {"avg": "1.5", "count": "3.0"}),
        ("card:c2", {"count": "4.0"}),
    ]


def test_floats_are_written_so_they_read_back_exactly() -> None:
    value = 0.1 + 0.2
    ((_, mapping),) = plan_writes({"card_id": ["c"], "avg": [value], "count": [1]}, "card", VIEW)
    assert float(mapping["avg"]) == value


def test_another_id_column_can_be_named() -> None:
    table = {"token": ["t"], "avg": [1], "count": [2]}
    assert next(plan_writes(table, "card", VIEW, id_column="token"))[0] == "card:t"


@pytest.mark.parametrize(("table", "message"), [
    ({"card_id": ["c"], "avg": [1]}, r"no columns \['count'\]"),
    ({"card_id": [None], "avg": [1], "count": [1]}, "row 1 has no card_id"),
    ({"card_id": ["c"], "avg": ["high"], "count": [1]}, "'avg'.*not a number"),
])
def test_bad_tables_are_clear_errors(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        list(plan_writes(table, "card", VIEW))
