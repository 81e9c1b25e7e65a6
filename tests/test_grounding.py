"""benchmarks/grounding.py (issue 6's diagnosis): its presence source is balanced and true, and a
reduced run trains and measures every variant."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import grounding  # noqa: E402

from minillava.toyworld import make_scene  # noqa: E402


def test_presence_records_ask_one_present_and_one_absent_category_in_one_wording():
    records = [{"id": f"r{seed}", "image": f"images/base-{seed:06d}.png"} for seed in range(60)]
    out = grounding.presence_records(records)
    assert len(out) == len(records)
    first_answers = []
    for record, seed in zip(out, range(60)):
        present = {o.name for o in make_scene(seed).objects}
        turns = record["conversations"]
        assert turns[0]["value"].startswith("<image>\n") and "<image>" not in turns[2]["value"]
        pairs = [(turns[i]["value"].removeprefix("<image>\n"), turns[i + 1]["value"]) for i in (0, 2)]
        assert sorted(answer for _, answer in pairs) == ["No", "Yes"]
        for question, answer in pairs:
            name = question.removeprefix("Is there a ").removesuffix(" in the image?")
            assert question == f"Is there a {name} in the image?"
            assert (name in present) == (answer == "Yes")
        first_answers.append(pairs[0][1])
    assert 15 < first_answers.count("Yes") < 45   # the order is random: "Yes" first is no cue either


def test_a_reduced_run_measures_every_variant(tmp_path):
    record = grounding.main(["--scenes", "20", "--stage1-steps", "1", "--stage2-steps", "2", "--eval-every", "1",
                             "--eval-scenes", "2", "--out", str(tmp_path / "g.json")])
    assert list(record["variants"]) == list(grounding.VARIANTS)
    for name, variant in record["variants"].items():
        assert [p["step"] for p in variant["points"]] == [1, 2]
        for point in variant["points"]:
            assert 0 <= point["vqa_accuracy"] <= 1 and 0 <= point["pope_yes_ratio"] <= 1
            assert set(point["vqa_by_topic"]) <= {"presence", "count", "colour", "shape", "size", "position",
                                                  "relation", "other"}
    assert record["variants"]["stage 1 in vicuna_v1"]["stage1_template"] == "vicuna_v1"
    only = record["variants"]["presence only"]["mixture"]
    assert [(row["source"], row["records"]) for row in only] == [("presence", 32)]
    assert (tmp_path / "g.json").is_file()
