"""benchmarks/bench_real_size.py (issue 6's GPU measurement): its FLOP count, its step times and
a smoke run on the CPU. The GPU numbers themselves come from running it on a GPU."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_real_size  # noqa: E402

from minillava.data.batching import collate  # noqa: E402


@pytest.mark.parametrize("batch, text_tokens", [(1, 20), (3, 48)])
def test_the_textbook_estimate_matches_torchs_flop_counter(batch, text_tokens):
    # Eager attention is plain matmuls, which the counter sees on the CPU too.
    model = bench_real_size.build("tiny", attention="eager")
    data = collate(bench_real_size.samples(model, batch, text_tokens), pad_token_id=0)
    counted = bench_real_size.counted_flops(model, data, torch.device("cpu"))
    assert bench_real_size.analytic_flops(model, data) == pytest.approx(counted, rel=0.01)


def test_the_count_is_of_stage_2_frozen_tower_trained_language_model():
    model = bench_real_size.build("tiny", attention="eager")
    data = collate(bench_real_size.samples(model, 2, 20), pad_token_id=0)
    first = bench_real_size.counted_flops(model, data, torch.device("cpu"))
    # A trainable tower would add its backward pass; the count sets stage 2's trainable parts itself.
    model.vision_tower.requires_grad_(True)
    assert bench_real_size.counted_flops(model, data, torch.device("cpu")) == first
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert all(p.requires_grad for p in model.language_model.parameters())


def test_step_times_undo_the_running_throughput():
    # Steps of 10, 20 and 30 positions taking 1, 2 and 1 seconds.
    metrics = [{"tokens": 10, "tokens_per_s": 10 / 1}, {"tokens": 20, "tokens_per_s": 30 / 3},
               {"tokens": 30, "tokens_per_s": 60 / 4}]
    assert bench_real_size.step_times(metrics) == pytest.approx([1.0, 2.0, 1.0])


def test_a_smoke_run_on_the_cpu(tmp_path):
    record = bench_real_size.main(["--preset", "tiny", "--device", "cpu", "--batch", "2", "--steps", "2",
                                   "--warmup", "1", "--peak-tflops", "1", "--out", str(tmp_path / "r.json")])
    assert record["step_seconds"] > 0 and record["positions_per_sample"] == 48 + 16   # text tokens + patches
    assert record["mfu"] == pytest.approx(record["achieved_tflops_per_s"] / 1.0)
    assert record["parameters"]["projector"] == 64 * 64 + 64 + 64 * 64 + 64
    assert (tmp_path / "r.json").is_file()
    assert bench_real_size.main(["--preset", "tiny", "--device", "cpu", "--batch", "1", "--steps", "1",
                                 "--warmup", "0"])["mfu"] is None   # no peak known for a CPU


def test_profile_prints_the_operators_that_take_the_time(capsys):
    bench_real_size.main(["--preset", "tiny", "--device", "cpu", "--batch", "1", "--steps", "1", "--warmup", "0",
                          "--profile", "5"])
    table = capsys.readouterr().out.split("| quantity |")[0]
    assert "aten::mm" in table and "Self CPU time total" in table
