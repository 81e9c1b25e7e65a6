"""The trainer: freezing, schedule, token-weighted accumulation, exact resume, DDP."""

import dataclasses
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from minillava.checkpoint import load_model
from minillava.data.batching import batch_schedule, collate
from minillava.loss import lm_loss_sum
from minillava.splicing import IGNORE_INDEX
from minillava.train import STAGE1, STAGE2, lr_factor, set_trainable, train
from minillava.backbones.zoo import tiny_random_model

IMG = 99


def make_dataset(n=24, seed=0):
    """Samples of uneven length, two in three with an image; answers supervised."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        ids = [1] + torch.randint(3, 90, (4 + i % 7,), generator=g).tolist()
        if i % 3:
            ids = ids[:2] + [IMG] + ids[2:]
        half = len(ids) // 2
        labels = [-100] * half + ids[half:]
        data.append({"input_ids": ids, "labels": [-100 if t == IMG else t for t in labels],
                     "pixel_values": torch.randn(1, 3, 32, 32, generator=g) if IMG in ids else None})
    return data


DATA = make_dataset()
LENGTHS = [len(s["input_ids"]) + 15 * (s["pixel_values"] is not None) for s in DATA]
HAS_IMAGE = [s["pixel_values"] is not None for s in DATA]


def run(stage, out_dir, **kwargs):
    model = tiny_random_model()
    result = train(model, stage, DATA, out_dir, lengths=LENGTHS, has_image=HAS_IMAGE, progress=False, **kwargs)
    return model, result


def test_lr_schedule_warms_up_then_decays_to_zero():
    total = 100
    f = [lr_factor(s, total, 0.03) for s in range(total)]
    assert f[:3] == [1 / 3, 2 / 3, 1.0]
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    assert f[-1] < 1e-3


def test_frozen_modules_stay_out_of_the_optimizer_and_in_eval_mode(tmp_path):
    model = tiny_random_model()
    params = set_trainable(model, ("projector",))
    assert {id(p) for p in params} == {id(p) for p in model.projector.parameters()}
    with pytest.raises(ValueError, match="unknown module group"):
        set_trainable(model, ("projection",))
    model, _ = run(dataclasses.replace(STAGE1, batch_size=4, max_steps=2), tmp_path)
    assert not model.vision_tower.training and not model.language_model.training


def test_stage1_trains_only_the_projector_and_saves_it_alone(tmp_path):
    before = tiny_random_model().state_dict()
    model, result = run(dataclasses.replace(STAGE1, batch_size=4, max_steps=3), tmp_path)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"projector"}
    saved = load_file(str(tmp_path / "mm_projector.safetensors"))
    assert saved.keys() == model.projector.state_dict().keys()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == result.steps == 3
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_stage2_saves_a_model_that_reloads(tmp_path):
    model, _ = run(dataclasses.replace(STAGE2, lr=1e-3, batch_size=4, max_steps=2), tmp_path)
    reloaded = load_model(tmp_path / "model")
    ids = torch.tensor([[1, 5, IMG, 6]])
    px = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.eval()(ids, px).logits, reloaded(ids, px).logits)


def test_accumulation_weights_every_token_equally(tmp_path):
    """Two micro-batches of 2 give the same loss and gradient as one batch of 4."""
    base = dataclasses.replace(STAGE2, lr=1e-3, max_steps=1, group_by_length=False)
    _, whole = run(dataclasses.replace(base, batch_size=4, grad_accum=1), tmp_path / "a")
    _, accumulated = run(dataclasses.replace(base, batch_size=2, grad_accum=2), tmp_path / "b")
    for key in ("loss", "grad_norm"):
        assert accumulated.metrics[0][key] == pytest.approx(whole.metrics[0][key], rel=1e-5)


def test_the_logged_loss_is_the_token_sum_of_the_taught_loss_over_the_step(tmp_path):
    """One step over the whole data set logs lm_loss_sum / supervised tokens of the untrained model."""
    stage = dataclasses.replace(STAGE2, lr=1e-3, batch_size=len(DATA), max_steps=1, group_by_length=False)
    model = tiny_random_model()
    with torch.no_grad():
        out = model(**collate(DATA, pad_token_id=0))
    loss_sum, n = lm_loss_sum(out.logits, out.labels)
    _, result = run(stage, tmp_path)
    assert result.metrics[0]["loss"] == pytest.approx(float(loss_sum) / n, rel=1e-6)


def test_a_step_without_supervised_tokens_is_refused(tmp_path):
    silent = [{**sample, "labels": [IGNORE_INDEX] * len(sample["labels"])} for sample in DATA]
    with pytest.raises(ValueError, match="no supervised tokens"):
        train(tiny_random_model(), dataclasses.replace(STAGE1, batch_size=4, max_steps=1), silent, tmp_path,
              progress=False)


def test_gradient_checkpointing_recomputes_without_changing_the_step(tmp_path, recwarn):
    """The switch turns the LM's recomputation on, through transformers' current (not deprecated) call,
    and a step gives the same loss and gradient as without it."""
    base = dataclasses.replace(STAGE2, lr=1e-3, batch_size=4, max_steps=2, group_by_length=False)
    plain_model, plain = run(base, tmp_path / "a")
    model, checkpointed = run(dataclasses.replace(base, gradient_checkpointing=True), tmp_path / "b")
    assert model.language_model.is_activation_checkpointing and not plain_model.language_model.is_activation_checkpointing
    for a, b in zip(plain.metrics, checkpointed.metrics):
        for key in ("loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


def test_killed_and_resumed_run_ends_bitwise_equal(tmp_path):
    stage = dataclasses.replace(STAGE2, lr=1e-3, batch_size=3, grad_accum=2, max_steps=4, save_every=2)
    uninterrupted, _ = run(stage, tmp_path / "a")
    run(stage, tmp_path / "b", stop_after=3)  # dies after step 3; newest checkpoint is step 2
    resumed, result = run(stage, tmp_path / "b")
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, result.steps + 1))  # nothing lost, nothing logged twice


def test_length_grouping_keeps_modalities_apart_and_covers_every_sample():
    batches = batch_schedule(len(DATA), 4, seed=0, epoch=0, lengths=LENGTHS, has_image=HAS_IMAGE)
    assert sorted(i for b in batches for i in b) == list(range(len(DATA)))
    assert all(len({HAS_IMAGE[i] for i in b}) == 1 for b in batches)
    assert batches != batch_schedule(len(DATA), 4, seed=0, epoch=1, lengths=LENGTHS, has_image=HAS_IMAGE)


def test_collate_pads_right_and_gathers_images():
    batch = collate(DATA[:3], pad_token_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape[0] == sum(HAS_IMAGE[:3])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def _ddp_worker(rank, world, folder, stage):
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, result = run(stage, folder / "ddp")
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "ddp.safetensors"))
    dist.destroy_process_group()


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    stage = dataclasses.replace(STAGE2, lr=1e-3, grad_accum=2, max_steps=3, group_by_length=False)
    mp.start_processes(_ddp_worker, args=(2, tmp_path, dataclasses.replace(stage, batch_size=2)),
                       nprocs=2, start_method="fork")
    single, result = run(dataclasses.replace(stage, batch_size=4), tmp_path / "single")
    ddp_weights = load_file(str(tmp_path / "ddp.safetensors"))
    for name, w in single.state_dict().items():
        assert torch.allclose(w, ddp_weights[name], atol=1e-5), name
    ddp_losses = [json.loads(line)["loss"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert ddp_losses == pytest.approx([m["loss"] for m in result.metrics], rel=1e-5)
