"""The reduced version of benchmarks/llava15_gains.py: every arm trains, is measured, and is recorded.

The stored 3-seed results (minillava/course/results/llava15_gains.json) come from the full run; this
runs the same code with a handful of steps so CI proves the experiment still works end to end.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import llava15_gains  # noqa: E402
from minillava.course.cache import RESULTS_DIR  # noqa: E402

STORED = RESULTS_DIR / "llava15_gains.json"


def test_a_reduced_run_trains_and_measures_every_arm(tmp_path):
    llava15_gains.main(["--seeds", "2", "--scenes", "6", "--stage1-steps", "1", "--stage2-steps", "1",
                        "--eval-scenes", "2", "--probe-scenes", "30", "10", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "llava15_gains.json").read_text())
    assert list(record["arms"]) == list(llava15_gains.ARMS)
    tokens = {}
    for name, arm in record["arms"].items():
        assert [run["seed"] for run in arm["runs"]] == [0, 1]
        for kind in ("fine", "control"):
            values = [run[kind] for run in arm["runs"]]
            assert all(0 <= v <= 1 for v in values)
            assert arm[kind]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
        tokens[name] = arm["runs"][0]["image_tokens"]
    # 16 tokens for one 64 px view, 36 at 96 px; AnyRes: 16 + 16 tiles x 16 + a newline per feature row
    assert tokens == {"linear, 64 px": 16, "mlp2x_gelu, 64 px": 16, "mlp2x_gelu, 96 px": 36,
                      "mlp2x_gelu, AnyRes": 16 + 16 * 16 + 16}
    for _, before, after in record["comparisons"]:
        assert before in record["arms"] and after in record["arms"]
    assert list(record["probe"]) == list(llava15_gains.VIEWS)
    assert all(0 <= p["mean"] <= 1 and len(p["runs"]) == 2 for p in record["probe"].values())


def test_the_stored_results_are_a_full_run_of_the_shipped_backbones():
    record = json.loads(STORED.read_text())
    assert record["settings"]["seeds"] == 3 and list(record["arms"]) == list(llava15_gains.ARMS)
    assert all(len(arm["runs"]) == 3 for arm in record["arms"].values())
    assert list(record["probe"]) == list(llava15_gains.VIEWS) and record["probe_settings"]["seeds"] == 3
    from minillava.backbones import zoo
    assert record["manifest_sha256"] == zoo.sha256(zoo.WEIGHTS_DIR / zoo.MANIFEST)
