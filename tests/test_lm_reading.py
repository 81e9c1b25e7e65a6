"""benchmarks/lm_reading.py (issue 6's weak link): its documents put the scene where the LM reads
it, and a reduced training run works. Its measurement is the zoo's reading gate, tested in
tests/test_zoo.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import lm_reading  # noqa: E402

from minillava.data import rules  # noqa: E402
from minillava.eval.failures import topic  # noqa: E402
from minillava.toyworld import make_scene  # noqa: E402


def test_documents_write_the_scene_into_the_first_question_only():
    documents = lm_reading.chats("attributes", range(20))
    assert len(documents) == 20
    for seed, (template, messages) in enumerate(documents):
        assert template == "vicuna_v1"
        scene = rules.scene_text(make_scene(seed).annotation())
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert users[0].startswith(scene + "\n") and all(scene not in u for u in users[1:])
        assert all(topic(u.split("\n")[-2]) in ("size", "colour") for u in users)


def test_a_reduced_training_run(tmp_path):
    record = lm_reading.main(["--train", "background", "--steps", "2", "--batch", "4", "--scenes", "20",
                              "--eval-scenes", "3", "--out", str(tmp_path / "r.json")])
    assert record["steps"] == 2 and record["reading"]["questions"] == 3
    assert set(record["reading"]["gap_by_topic"]) == {"colour"}
    assert (tmp_path / "r.json").exists()


def test_measures_the_lm_it_is_given(tmp_path):
    """--lm reads a candidate from a folder: an untrained LM answers nothing right where the
    shipped one (measured the same way) does."""
    import torch
    from transformers import LlamaForCausalLM

    from minillava.backbones import toy_lm, zoo

    tokenizer = zoo.load_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(toy_lm.lm_config(tokenizer)).save_pretrained(tmp_path / "fresh")
    tokenizer.save_pretrained(tmp_path / "fresh")
    fresh = lm_reading.main(["--lm", str(tmp_path / "fresh"), "--eval-scenes", "4"])
    shipped = lm_reading.main(["--eval-scenes", "4"])
    assert fresh["lm"] == str(tmp_path / "fresh") and shipped["lm"] == "shipped toy-lm"
    assert fresh["reading"]["questions"] == shipped["reading"]["questions"] == 8
    assert fresh["reading"]["own scene"]["accuracy"] == 0.0
    assert shipped["reading"]["own scene"]["accuracy"] >= 0.5
