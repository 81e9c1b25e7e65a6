"""benchmarks/looking.py (issue 19's looking test): the gap is large for an assistant that reads the
image and zero for one that answers from the words alone."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import looking  # noqa: E402

from minillava.eval.assistants import OracleAssistant  # noqa: E402
from minillava.eval.scenes import eval_seeds  # noqa: E402

SEEDS = eval_seeds(6, seed=9)


def test_an_assistant_that_looks_loses_its_accuracy_without_the_image():
    oracle = OracleAssistant.for_seeds(SEEDS)

    def looks(image, question):   # the oracle, and "no" for an image it does not know (the blank one)
        try:
            return oracle.answer(image, question)
        except ValueError:
            return "no"

    result = looking.looking(looks, SEEDS)
    assert result["accuracy"]["right image"] == 1.0
    assert result["accuracy"]["another scene's image"] < 1.0 and result["changed"] > 0
    assert result["gap"] == pytest.approx(1.0 - max(result["accuracy"]["blank image"],
                                                    result["accuracy"]["another scene's image"]), abs=1e-3)
    assert result["gap"] > 0.3 and set(result["by_topic"].values()) == {1.0}


def test_an_assistant_that_does_not_look_has_no_gap():
    result = looking.looking(lambda image, question: "yes", SEEDS)
    assert len(set(result["accuracy"].values())) == 1 and result["gap"] == 0 and result["changed"] == 0


def test_a_missing_assistant_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        looking.main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "not a saved assistant folder" in capsys.readouterr().err


def test_by_objects_groups_scenes_by_how_many_objects_they_hold():
    from minillava.toyworld import make_scene
    groups = looking.by_objects(eval_seeds(60, seed=9), per_group=5)
    assert set(groups) == {"1", "2", "3+"} and all(1 <= len(g) <= 5 for g in groups.values())
    counts = {name: {len(make_scene(s).objects) for s in seeds} for name, seeds in groups.items()}
    assert counts["1"] == {1} and counts["2"] == {2} and min(counts["3+"]) >= 3
