"""benchmarks/describe_prompts.py: CHAIR's wording against the training wordings, per wording."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import describe_prompts  # noqa: E402

from minillava.eval.assistants import OracleAssistant  # noqa: E402
from minillava.eval.scenes import DESCRIBE_PROMPT, DESCRIBE_PROMPTS, eval_seeds  # noqa: E402

SEEDS = eval_seeds(6, seed=0)


def oracle_batch(oracle):
    return lambda images, questions: [oracle.answer(i, q) for i, q in zip(images, questions)]


def test_an_assistant_that_describes_for_every_wording_has_ratio_one_and_no_hallucination():
    result = describe_prompts.describe(oracle_batch(OracleAssistant.for_seeds(SEEDS)), SEEDS, batch=4)
    assert set(result["by_prompt"]) == set(DESCRIBE_PROMPTS) and result["scenes"] == len(SEEDS)
    assert result["words_ratio"] == 1.0 and result["unseen"]["words"] > 20
    assert result["unseen"]["chair_s"] == 0.0 and result["unseen"]["mentions_per_100"] >= 100


def test_a_collapse_on_the_unseen_wording_shows_in_the_ratio_though_chair_calls_it_clean():
    oracle = oracle_batch(OracleAssistant.for_seeds(SEEDS))

    def collapses(images, questions):
        if questions[0] == DESCRIBE_PROMPT:
            return ["the hexagon on the right."] * len(images)   # short; "hexagon" is no toy object, not a mention
        return oracle(images, questions)

    result = describe_prompts.describe(collapses, SEEDS, batch=4)
    assert result["unseen"]["words"] == 5 and result["words_ratio"] < 0.25
    assert result["unseen"]["mentions_per_100"] == 0 and result["unseen"]["chair_s"] == 0.0   # CHAIR's blind spot
    assert result["trained"]["chair_s"] == 0.0 and result["trained"]["mentions_per_100"] >= 100


def test_a_missing_assistant_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        describe_prompts.main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "not a saved assistant folder" in capsys.readouterr().err
