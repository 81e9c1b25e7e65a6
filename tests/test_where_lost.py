"""benchmarks/where_lost.py (issue 19): separation tells a strong direction from a weak one that a
standardised probe decodes equally well, and the command follows size from the tower to the answer."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import where_lost  # noqa: E402

import torch  # noqa: E402


def test_separation_is_the_class_distance_over_the_spread_along_it():
    torch.manual_seed(0)
    y = torch.arange(4000) % 2
    noise = torch.randn(4000, 8)
    strong, weak = noise.clone(), noise.clone()
    strong[:, 0] += 4.0 * y   # classes 4 apart on a unit-variance axis
    weak[:, 0] += 0.5 * y     # 0.5 apart: still decodable, but faint
    # d' = distance / std of all rows along it: 4 / sqrt(1 + 4) and 0.5 / sqrt(1 + 0.0625)
    assert where_lost.separation(strong, y) == pytest.approx(4 / 5 ** 0.5, rel=0.05)
    assert where_lost.separation(weak, y) == pytest.approx(0.5 / 1.0625 ** 0.5, rel=0.1)
    assert where_lost.probe(strong, y, 2).mean() > 0.95 and where_lost.probe(weak, y, 2).mean() < 0.7


def test_the_command_follows_size_through_an_untrained_assistant(tmp_path, capsys):
    from minillava.chat import Assistant, save_assistant
    from minillava.pipeline.config import PipelineConfig
    from minillava.pipeline.steps import load_backbones

    model, tokenizer, processor, _ = load_backbones(PipelineConfig())
    save_assistant(Assistant(model.eval(), tokenizer, processor), tmp_path / "assistant")
    result = where_lost.main([str(tmp_path / "assistant"), "--scenes", "120", "--questions", "40"])
    assert set(result["tower"]) == set(where_lost.ATTRIBUTES) == set(result["projected"])
    # the shipped tower reads colour from the token under an object even through a random projector
    assert result["tower"]["colour"]["probe"] > 0.7 and result["tower"]["colour"]["separation"] > 1
    answer = result["size question"]
    assert answer["questions"] == 40 and sum(answer["assistant"]["says"].values()) == pytest.approx(1.0)
    assert '"size question"' in capsys.readouterr().out


def test_a_missing_assistant_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        where_lost.main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "not a saved assistant folder" in capsys.readouterr().err
