"""benchmarks/pope_kinds.py (issue 19): POPE questions sorted by what their scene holds."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import pope_kinds  # noqa: E402

from minillava.toyworld import COLORS, SHAPES, make_scene  # noqa: E402


def _scene_with_two_objects_apart():
    """A seed whose scene has two objects of different colours and shapes."""
    for seed in range(500):
        objs = make_scene(seed).objects
        if len(objs) == 2 and objs[0].color != objs[1].color and objs[0].shape != objs[1].shape:
            return seed, objs
    raise AssertionError("no such scene in 500 seeds")


def test_each_kind_follows_what_the_scene_holds():
    seed, (a, b) = _scene_with_two_objects_apart()
    other_colour = next(c for c in COLORS if c not in (a.color, b.color))
    other_shape = next(s for s in SHAPES if s not in (a.shape, b.shape))
    assert pope_kinds.kind(seed, a.name) == "present"
    assert pope_kinds.kind(seed, f"{a.color} {b.shape}") == "conjunction"
    assert pope_kinds.kind(seed, f"{a.color} {other_shape}") == "colour only"
    assert pope_kinds.kind(seed, f"{other_colour} {b.shape}") == "shape only"
    assert pope_kinds.kind(seed, f"{other_colour} {other_shape}") == "neither"


def test_accuracy_and_yes_rate_per_kind(tmp_path):
    seed, (a, b) = _scene_with_two_objects_apart()

    def sample(name, prediction, label, task="pope_random"):
        return {"task": task, "doc_id": f"random/{seed}/{name}",
                "result": {"prediction": prediction, "label": label}}

    samples = [sample(a.name, "yes", "yes"), sample(b.name, "no", "yes"),
               sample(f"{a.color} {b.shape}", "yes", "no"), sample(f"{b.color} {a.shape}", "no", "no"),
               sample(a.name, "no", "yes", task="toy_vqa")]   # another task: not counted
    result = pope_kinds.by_kind(samples)
    assert result == {"present": {"questions": 2, "accuracy": 0.5, "says yes": 0.5},
                      "conjunction": {"questions": 2, "accuracy": 0.5, "says yes": 0.5}}
    path = tmp_path / "eval" / "samples.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert pope_kinds.main([str(tmp_path)]) == result


def test_a_missing_or_empty_evaluation_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pope_kinds.main([str(tmp_path)])
    assert exit_info.value.code != 0 and "not found" in capsys.readouterr().err
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "samples.jsonl").write_text("")
    with pytest.raises(SystemExit):
        pope_kinds.main([str(tmp_path)])
    assert "no pope_random samples" in capsys.readouterr().err
