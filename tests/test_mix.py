"""Data mixing: shares follow the weights, the table tells the truth, sources are well formed."""

import pytest
from hypothesis import given, settings, strategies as st

from minillava.conversation import to_messages
from minillava.data.mix import (CHOICE_PROMPT, LETTERS, Source, choice_records, mix, text_records,
                                vqa_records)
from minillava.data.rules import FORMAT_PROMPT


def fake(name, n):
    return Source(name, [{"id": f"{name}-{i}"} for i in range(n)], 1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.floats(0.1, 5)), min_size=1, max_size=5), st.integers(0, 200))
def test_shares_follow_the_weights_and_the_table_counts_what_was_drawn(specs, total):
    sources = [Source(f"s{i}", [{"id": f"s{i}-{j}"} for j in range(n)], w) for i, (n, w) in enumerate(specs)]
    records, table = mix(sources, total)
    assert len(records) == total
    weight_sum = sum(w for _, w in specs)
    for source, row in zip(sources, table):
        drawn = sum(r["id"].startswith(source.name + "-") for r in records)
        assert drawn == row["records"]
        assert abs(drawn - total * source.weight / weight_sum) < 1  # largest-remainder rounding


def test_a_small_source_is_cycled_evenly_and_a_zero_weight_is_skipped():
    records, table = mix([fake("a", 3), Source("b", [{"id": "b-0"}], 0.0)], 9)
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(["a-0", "a-1", "a-2"] * 3)
    assert table[0]["passes"] == 3 and table[1]["records"] == 0


def test_bad_mixtures_are_refused():
    with pytest.raises(ValueError, match="non-negative weights"):
        mix([Source("a", [{"id": 1}], -1)], 5)
    with pytest.raises(ValueError, match=r"\['a'\] have a weight but no records"):
        mix([Source("a", [], 1)], 5)


def test_sources_are_valid_llava_records():
    for record in vqa_records(range(3)):
        messages = to_messages(record["conversations"])
        assert record["image"].endswith(".png") and messages[0]["content"].startswith("<image>\n")
        assert all(m["content"].endswith(FORMAT_PROMPT) for m in messages if m["role"] == "user")
    for record in choice_records(range(10)):
        question, answer = (t["value"] for t in record["conversations"])
        assert question.endswith(CHOICE_PROMPT) and answer in LETTERS
    for record in text_records(4):
        assert "image" not in record and "<image>" not in str(record["conversations"])
        to_messages(record["conversations"])
