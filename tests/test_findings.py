"""benchmarks/findings.py (issue 19, section 3): its statistics, its format-prompt arm, and a reduced
run whose JSON has exactly the issue's format and whose findings reproduce alone."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import findings  # noqa: E402

from minillava.data.rules import FORMAT_PROMPT  # noqa: E402

KEYS = ["name", "paper", "claim", "metric", "higher_is_better", "baseline", "treatment", "command"]
TINY = ["--scenes", "20", "--stage1-steps", "1", "--stage2-steps", "1", "--eval-scenes", "2", "--knowledge", "3",
        "--fine-scenes", "4", "--fine-stage1-steps", "1", "--fine-stage2-steps", "1", "--fine-eval-scenes", "1"]


def test_the_effect_is_signed_so_that_positive_is_the_papers_direction():
    assert findings.compare([1, 2, 3], [3, 4, 5], higher_is_better=True)["effect"] == 2
    lower = findings.compare([0.3, 0.4, 0.5], [0.1, 0.2, 0.3], higher_is_better=False)   # e.g. CHAIR falls
    assert lower["effect"] == pytest.approx(0.2) and lower["shows"]
    assert findings.compare([0.1, 0.2, 0.3], [0.3, 0.4, 0.5], higher_is_better=False)["effect"] == pytest.approx(-0.2)


def test_the_standard_error_is_that_of_a_difference_of_means_with_sample_variances():
    # baseline 1, 2, 3: mean 2, sample variance 1; treatment 2, 4, 6, 8: mean 5, sample variance 20/3.
    # SE = sqrt(1/3 + (20/3)/4) = sqrt(2); the effect 3 is 2.12 SE.
    result = findings.compare([1, 2, 3], [2, 4, 6, 8], higher_is_better=True)
    assert result["effect"] == 3 and result["se"] == pytest.approx(math.sqrt(2), abs=1e-4)
    assert result["z"] == pytest.approx(2.12) and result["smallest_detectable"] == pytest.approx(2.8284)
    assert result["shows"] is True


def test_an_effect_swamped_by_the_spread_does_not_show():
    result = findings.compare([0.2, 0.6, 0.4], [0.3, 0.7, 0.5], higher_is_better=True)   # effect 0.1, SE 0.163
    assert result["effect"] == pytest.approx(0.1) and not result["shows"]
    assert result["smallest_detectable"] > result["effect"]
    constant = findings.compare([0.9, 0.9], [1.0, 1.0], higher_is_better=True)   # no spread: any gain shows
    assert constant["se"] == 0 and constant["z"] is None and constant["shows"]
    with pytest.raises(ValueError):
        findings.compare([0.5], [0.6, 0.7], higher_is_better=True)


def test_stripping_the_format_prompt_leaves_the_questions_and_answers_otherwise_unchanged():
    record = {"id": "vqa-1", "image": "images/base-000001.png", "conversations": [
        {"from": "human", "value": f"<image>\nWhat colour is the square?\n{FORMAT_PROMPT}"}, {"from": "gpt", "value": "red"},
        {"from": "human", "value": f"How many circles are there?\n{FORMAT_PROMPT}"}, {"from": "gpt", "value": "2"}]}
    stripped = findings.without_format_prompt([record])[0]
    assert [t["value"] for t in stripped["conversations"]] == [
        "<image>\nWhat colour is the square?", "red", "How many circles are there?", "2"]
    assert stripped["image"] == record["image"] and FORMAT_PROMPT in record["conversations"][0]["value"]


def test_a_reduced_run_writes_the_issues_format_and_a_finding_reproduces_alone(tmp_path):
    both = tmp_path / "results" / "findings.json"   # the folder is made
    record = findings.main(["--only", "two_stage", "format_prompt", "connector", "--out", str(both), *TINY])
    assert json.loads(both.read_text()) == record
    assert record["seeds"] == list(findings.SEEDS) and len(findings.SEEDS) >= 3
    assert [f["name"] for f in record["findings"]] == ["two_stage", "connector", "format_prompt"]
    for finding in record["findings"]:
        assert list(finding)[:len(KEYS)] == KEYS
        assert set(finding) == {*KEYS, "arms", "effect", "se", "z", "shows", "smallest_detectable"}
        assert finding["higher_is_better"] is True
        assert finding["command"].startswith(f"python benchmarks/findings.py --only {finding['name']} ")
        for side in ("baseline", "treatment"):
            values = finding[side]
            assert len(values) == len(findings.SEEDS) and all(isinstance(v, float) for v in values)
            ceiling = 1000 if finding["name"] == "format_prompt" else 1   # words, or an accuracy
            assert all(0 <= v <= ceiling for v in values)
    # The "stage 2 alone" arm trained before the shared stage 1 above; alone, format_prompt must not care.
    alone = findings.main(["--only", "format_prompt", "--out", str(tmp_path / "alone.json"), *TINY])
    assert alone["findings"][0]["baseline"] == record["findings"][2]["baseline"]
    assert alone["findings"][0]["treatment"] == record["findings"][2]["treatment"]


def test_bad_options_stop_before_any_training(capsys):
    for argv in (["--only", "no_such_finding"], ["--stage2-steps", "0"], ["--eval-scenes", "10000000"]):
        with pytest.raises(SystemExit):
            findings.main(argv)
        assert "error:" in capsys.readouterr().err
