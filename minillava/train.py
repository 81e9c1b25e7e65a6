"""The two-stage trainer, in plain PyTorch, readable top to bottom.

LLaVA trains in two stages, and a stage is just data:

| stage | template | trains | lr (real backbones) |
|---|---|---|---|
| 1: feature alignment  | plain     | projector                  | 1e-3 |
| 2: instruction tuning | vicuna_v1 | projector + language model | 2e-5 |

The vision tower stays frozen throughout: its parameters get no gradient, stay out of
the optimizer, and the module stays in eval mode (no dropout, frozen norm statistics).

One optimizer step = ``grad_accum`` micro-batches. Each micro-batch contributes the
*sum* of its token losses (the masked loss of chapter 3, ``loss.lm_loss_sum``, computed by the
model in its memory-lean form, ``loss.lean_loss_sum``: vocabulary logits only where a token is
scored); the gradients are divided once by the number of supervised tokens in the whole step,
so every token weighs the same however the tokens fall into micro-batches (and, under
DistributedDataParallel, into processes). Then: gradient clipping, AdamW (weight decay 0), a
cosine schedule with linear warm-up over the first 3 % of the steps.

Precision (``Stage.precision``, decided by ``precision.autocast_dtype``): matrix products run in bf16 or
fp16 under autocast on a GPU, but the trained weights and AdamW's moments are float32 whatever
dtype the checkpoint loaded in (``precision.master_weights``); fp16 adds loss scaling. A NaN or infinite
loss or gradient stops the run with ``DivergenceError`` -- under fp16, an overflowing step is
skipped and counted instead, until too many come in a row -- so nothing non-finite is saved.

A run writes to ``out_dir``: ``metrics.jsonl`` (one line per step), ``loss.png``,
``checkpoint-<step>/`` folders (trainable weights, optimizer moments, RNG and step, all
in safetensors/JSON), and at the end the stage's product: stage 1 the projector alone
(``mm_projector.safetensors``, as LLaVA saves it), stage 2 the whole model. Resuming from
a checkpoint continues exactly: same data order, same RNG, bitwise-equal weights on a CPU.
"""

import functools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from minillava.checkpoint import PROJECTOR_FILE, check_finite, save_model, save_projector
from minillava.data.batching import batch_schedule, collate
from minillava.data.dataset import TooManySkipped
from minillava.distributed import drop_unused_gradients, full_state_dict, gradient_sync, no_gradient, stand_in, wrap
from minillava.errors import UserError
from minillava.lora import has_adapters, is_adapter, merge_adapters
from minillava.loss import DivergenceError
from minillava.model import MiniLlava
from minillava.precision import (INIT_LOSS_SCALE, MAX_SKIPPED_IN_A_ROW, TRY_INSTEAD, autocast_dtype, master_weights,
                                 mixed_precision)

GROUPS = ("vision_tower", "projector", "language_model")


@dataclass
class Stage:
    """What one stage trains, on which template, with which optimisation settings."""

    name: str
    template: str
    trainable: tuple[str, ...]
    lr: float
    projector_lr: float | None = None  # the projector's own peak lr (LLaVA's mm_projector_lr); None: lr
    batch_size: int = 8  # per micro-batch (per process under DDP)
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    save_every: int | None = None  # steps between checkpoints (None: only at the end)
    seed: int = 0
    precision: str = "auto"  # auto, fp32, bf16 or fp16: see autocast_dtype
    num_workers: int = 0  # DataLoader processes that read and collate samples (0: in this process)
    distributed: str = "ddp"  # under torchrun: ddp or fsdp (minillava.distributed)


STAGE1 = Stage("stage1", template="plain", trainable=("projector",), lr=1e-3)
STAGE2 = Stage("stage2", template="vicuna_v1", trainable=("projector", "language_model"), lr=2e-5)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    tokens_per_s: float
    out_dir: Path
    metrics: list[dict] = field(repr=False)
    skipped_steps: int = 0   # fp16: steps whose overflowing gradients the loss scaler skipped


def _group(param_name: str) -> str:
    # AnyRes's learned row separator belongs to the connector, so it trains with the projector.
    first = param_name.split(".")[0]
    return "projector" if first == "image_newline" else first


def set_trainable(model: MiniLlava, trainable: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Freeze everything outside ``trainable`` (names from GROUPS); return the trainable params.

    A language model with LoRA adapters (minillava.lora) trains through them alone: its own
    weights, which the adapters were added to leave alone, stay frozen.
    """
    unknown = set(trainable) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown module group(s) {sorted(unknown)}; choose from {GROUPS}")
    adapted = has_adapters(model)
    params = []
    for name, p in model.named_parameters():
        group = _group(name)
        p.requires_grad_(group in trainable and not (adapted and group == "language_model" and not is_adapter(name)))
        if p.requires_grad:
            params.append(p)
    return params


def _set_modes(model: MiniLlava, trainable: tuple[str, ...], checkpointing: bool = False) -> None:
    """Train mode for what trains, eval mode for frozen modules (no dropout, fixed norms).

    Except a frozen language model under gradient checkpointing (stage 1 on real backbones):
    transformers recomputes a layer only in train mode, and the projector's gradient flows back
    through every layer. (LLaVA trains in train mode throughout; LLaMA-family LMs have no dropout.)
    """
    model.train()
    for name in GROUPS:
        if name not in trainable and not (checkpointing and name == "language_model"):
            getattr(model, name).eval()


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over ceil(warmup_ratio * total) steps, then cosine decay to 0."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, peak: float, step: int, total: int, warmup_ratio: float) -> None:
    """Every parameter group's learning rate at ``step``: its peak * lr_factor. A group's peak is
    ``peak`` unless it carries its own ``"peak_lr"`` (the projector's, see ``param_groups``)."""
    factor = lr_factor(step, total, warmup_ratio)
    for group in optimizer.param_groups:
        group["lr"] = group.get("peak_lr", peak) * factor


def param_groups(named: dict[str, torch.nn.Parameter], stage: Stage) -> list[dict]:
    """The optimizer's parameter groups: one, or the projector apart at ``stage.projector_lr``.

    LLaVA's LoRA recipe moves the adapters at 2e-4 but the projector, already aligned in
    stage 1 and trained fully, at 2e-5. The projector group comes last, so group 0 is the
    stage's own lr (the one metrics.jsonl logs).
    """
    if stage.projector_lr is None:
        return [{"params": list(named.values())}]
    rest = [p for name, p in named.items() if _group(name) != "projector"]
    projector = [p for name, p in named.items() if _group(name) == "projector"]
    return [group for group in ({"params": rest}, {"params": projector, "peak_lr": stage.projector_lr})
            if group["params"]]


def _micro_batches(stage: Stage, n: int, world: int, lengths, has_image) -> list[list[int]]:
    """Every micro-batch of the run (global, i.e. across processes), epoch after epoch."""
    grouped = (lengths, has_image) if stage.group_by_length and lengths is not None else (None, None)
    needed = stage.max_steps * stage.grad_accum if stage.max_steps else None
    batches, epoch = [], 0
    while True:
        one_epoch = batch_schedule(n, stage.batch_size * world, stage.seed, epoch, *grouped)
        needed = needed or max(1, int(stage.epochs * len(one_epoch)))
        batches, epoch = batches + one_epoch, epoch + 1
        if len(batches) >= needed:
            return batches[:needed]


def _save_state(folder: Path, step: int, params: dict, opt: torch.optim.Optimizer) -> None:
    check_finite(params, folder / "trainable.safetensors")   # a checkpoint to resume from never holds NaN
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in params.items()}, str(folder / "trainable.safetensors"))
    moments = {}
    for i, p in enumerate(_optimized(opt)):
        for key, value in opt.state.get(p, {}).items():
            moments[f"{i}.{key}"] = value.detach().contiguous().clone()
    moments["torch_rng"] = torch.get_rng_state()
    save_file(moments, str(folder / "optimizer.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "python_rng": random.getstate()}))


def _load_state(folder: Path, params: dict, opt: torch.optim.Optimizer) -> int:
    weights = load_file(str(folder / "trainable.safetensors"))
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    moments = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(moments.pop("torch_rng"))
    optimized = _optimized(opt)
    for key, value in moments.items():
        i, name = key.split(".", 1)
        opt.state[optimized[int(i)]][name] = value
    state = json.loads((folder / "trainer_state.json").read_text())
    random.setstate((state["python_rng"][0], tuple(state["python_rng"][1]), state["python_rng"][2]))
    return state["step"]


def _optimized(opt: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    # Every group's parameters, in order: a moment is saved under its parameter's place in this list
    # (with one group, the numbering checkpoints always had).
    return [p for group in opt.param_groups for p in group["params"]]


def _loader(dataset, micro: list[list[int]], rank: int, world: int, pad_token_id: int, num_workers: int):
    """This process's share of each micro-batch, in schedule order, read and collated by ``num_workers``
    processes (0: here, in order, exactly as a loop over the schedule would)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=[indices[rank::world] for indices in micro], num_workers=num_workers,
        collate_fn=functools.partial(collate, pad_token_id=pad_token_id),
        generator=torch.Generator())   # its own: seeding workers leaves the global RNG (dropout, resume) alone


def _count_skipped(dataset, batch: dict) -> int:
    """Pass the micro-batch's bad records (``collate`` sets them aside) to the dataset's report;
    return how many there were."""
    skipped = batch.pop("skipped", [])
    report = getattr(dataset, "report", None)
    if hasattr(report, "record_batch"):
        report.record_batch(kept=len(batch["input_ids"]) if "input_ids" in batch else 0, skipped=skipped)
    return len(skipped)


def _too_many_skipped(dataset) -> Exception | None:
    """The error the dataset's report raises once too many records were skipped, or None.

    Returned, not raised: under torchrun every process must learn of it in the same step (one
    process stopping alone would leave the others waiting for it for ever)."""
    report = getattr(dataset, "report", None)
    try:
        if hasattr(report, "record_batch"):
            report.check()
    except TooManySkipped as err:
        return err
    return None


def _stop_if_diverged(stage: Stage, step: int, loss: float, grad_norm: float, bad_gradient: bool) -> None:
    """A NaN or infinite loss (or gradient, unless fp16's loss scaler skips the step) ends the run:
    every later step would be NaN too, and nothing of it may be saved."""
    if not math.isfinite(loss) or bad_gradient:
        raise DivergenceError(f"{stage.name} step {step + 1}: the training diverged (loss {loss:.4g}, gradient "
                              f"norm {grad_norm:.4g}) at lr {stage.lr:g}; {TRY_INSTEAD}")


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def train(
    model: MiniLlava,
    stage: Stage,
    dataset,
    out_dir: str | Path,
    *,
    lengths: list[int] | None = None,
    has_image: list[bool] | None = None,
    pad_token_id: int = 0,
    device: torch.device | str = "cpu",
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``stage`` on ``dataset`` (a sequence of samples, see data.batching.collate).

    lengths / has_image: per-sample (spliced) lengths and modality for length grouping.
    resume: continue from the newest ``checkpoint-*`` in ``out_dir`` if there is one.
    stop_after: stop after this many steps of the run (to simulate a killed run in tests).
    Under ``torchrun``, wraps the model in DistributedDataParallel or shards it with FSDP2
    (``stage.distributed``); each process takes its share of every global micro-batch.
    """
    out_dir, device = Path(out_dir), torch.device(device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    main = rank == 0
    dtype = autocast_dtype(device, stage.precision)   # an impossible precision stops here, before anything runs
    model.to(device)
    set_trainable(model, stage.trainable)
    master_weights([p for p in model.parameters() if p.requires_grad])   # float32, before wrapping and the optimizer
    if stage.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable()   # recompute activations in backward
    # Under torchrun: DDP around the model, or FSDP, whose shards *replace* the parameters, so
    # the optimizer is built from the parameters as they are after wrapping.
    net = wrap(model, stage.distributed)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    opt = torch.optim.AdamW(param_groups(named, stage), lr=stage.lr, weight_decay=stage.weight_decay,
                            fused=device.type == "cuda")   # one kernel for all parameters instead of several per tensor

    micro = _micro_batches(stage, len(dataset), world, lengths, has_image)
    total = stage.max_steps or max(1, len(micro) // stage.grad_accum)
    start = 0
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        start = _load_state(checkpoint, named, opt)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _rewrite_metrics(out_dir / "metrics.jsonl", keep_until=start)
    autocast = mixed_precision(device, stage.precision)
    # fp16 needs loss scaling: small gradients would underflow to 0 (a no-op in bf16 and fp32).
    scaler = torch.amp.GradScaler(device.type, init_scale=INIT_LOSS_SCALE, enabled=dtype == torch.float16)

    metrics, tokens_seen, t0, skipped, in_a_row = [], 0, time.perf_counter(), 0, 0
    bar = tqdm(total=total, initial=start, desc=stage.name, disable=not (progress and main))
    end = total if stop_after is None else min(total, start + stop_after)
    batches = iter(_loader(dataset, micro[start * stage.grad_accum: end * stage.grad_accum], rank, world,
                           pad_token_id, stage.num_workers))
    try:   # the bar ends its line even when a step raises: an error message starts a line of its own
        for step in range(start, end):
            _set_modes(model, stage.trainable, stage.gradient_checkpointing)
            set_lr(opt, stage.lr, step, total, stage.warmup_ratio)
            loss_sum, n_tokens, n_positions, n_bad = torch.zeros((), device=device), 0, 0, 0
            for k in range(stage.grad_accum):
                batch = next(batches)
                n_bad += _count_skipped(dataset, batch)
                idle = distributed and "input_ids" not in batch   # nothing here, but the others compute:
                if idle:   # run a stand-in weighted 0, so that every process meets the same collectives
                    batch = stand_in(dataset, has_image, pad_token_id)
                # Under DDP, gradients are averaged across processes once, at the last micro-batch.
                with gradient_sync(net, k == stage.grad_accum - 1), autocast:
                    if "input_ids" in batch:
                        batch = {key: v.to(device) if v is not None else None for key, v in batch.items()}
                        out = net(**batch, lean=True)   # the micro-batch's token-loss *sum* (logits only where scored)
                        loss, n = (0.0 * out.loss_sum, 0) if idle else (out.loss_sum, out.n_tokens)
                        n_positions += int(out.attention_mask.sum())
                    else:   # every sample of this micro-batch was a bad record
                        loss, n = torch.zeros((), device=device), 0
                    if not loss.requires_grad:  # e.g. text only while only the projector trains:
                        no_gradient(stage.name, step, distributed)   # several processes: a clear error
                        loss = loss + 0.0 * sum(p.sum() for p in params)  # zero grads
                    scaler.scale(loss).backward()
                loss_sum += loss.detach()
                n_tokens += n
            stop = _too_many_skipped(dataset)
            if distributed:
                totals = torch.tensor([loss_sum.item(), n_tokens, n_positions, n_bad, stop is not None],
                                      dtype=torch.float64, device=device)
                dist.all_reduce(totals)
                loss_sum, n_tokens, n_positions, n_bad = totals[0], int(totals[1]), int(totals[2]), int(totals[3])
                stop = stop or (TooManySkipped("another process stopped the run: more of its records were skipped "
                                               "than --max-skip-ratio allows (its message names them)")
                                if totals[4] else None)
                drop_unused_gradients(params)   # FSDP: as in one process, no gradient where no process had one
            if stop is not None:
                raise stop
            if n_tokens == 0 and n_bad:   # every sample of the step was a bad record (counted): no update
                opt.zero_grad(set_to_none=True)
                bar.update(1)
                continue
            if n_tokens == 0:
                raise UserError(f"{stage.name} step {step + 1}: no supervised tokens in any of its samples, so there "
                                "is nothing to learn; check the label mask built by the conversation template")
            scaler.unscale_(opt)   # fp16: gradients back at their true scale, before they are clipped
            # DDP averaged the gradient sums over `world` processes: undo that, divide by all tokens.
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(world / n_tokens)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
            loss, overflow = float(loss_sum) / n_tokens, not math.isfinite(float(grad_norm))
            _stop_if_diverged(stage, step, loss, float(grad_norm), overflow and not scaler.is_enabled())
            scaler.step(opt)   # fp16: no update when the scaled gradients overflowed (the scale is halved instead)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            skipped, in_a_row = skipped + overflow, (in_a_row + 1) * overflow
            if in_a_row > MAX_SKIPPED_IN_A_ROW:
                raise DivergenceError(f"{stage.name} step {step + 1}: {in_a_row} steps in a row skipped because their "
                                      f"fp16 gradients overflowed, even at loss scale {scaler.get_scale():g}; "
                                      f"{TRY_INSTEAD}")

            tokens_seen += n_positions
            record = {"step": step + 1, "loss": loss, "lr": opt.param_groups[0]["lr"],
                      "grad_norm": None if overflow else float(grad_norm), "tokens": n_positions,
                      "tokens_per_s": tokens_seen / (time.perf_counter() - t0)}
            if scaler.is_enabled():
                record["skipped_steps"] = skipped   # so far in this run
            metrics.append(record)
            if main:
                with open(out_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                bar.update(1)
                if stage.save_every and (step + 1) % stage.save_every == 0 and step + 1 < total:
                    _save_state(out_dir / f"checkpoint-{step + 1}", step + 1, named, opt)
    finally:
        bar.close()
    if end == total:
        merge_adapters(model)   # LoRA: folded into the weights, so the stage's product is a plain MiniLlava
        state = full_state_dict(model)   # FSDP: gathered from every process's shards onto rank 0
        if main:
            _finish(model, stage, out_dir, state)
    return TrainResult(steps=end, final_loss=metrics[-1]["loss"] if metrics else float("nan"),
                       tokens_per_s=metrics[-1]["tokens_per_s"] if metrics else 0.0, out_dir=out_dir,
                       metrics=metrics, skipped_steps=skipped)


def _rewrite_metrics(path: Path, keep_until: int) -> None:
    """Drop metric lines beyond the resumed step (a killed run may have logged past its last checkpoint)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= keep_until]
    path.write_text("".join(line + "\n" for line in lines))


def _finish(model: MiniLlava, stage: Stage, out_dir: Path, state: dict | None = None) -> None:
    """Write the stage's product (from ``state``, the whole model's weights, when given) and its loss curve."""
    if stage.trainable == ("projector",):
        save_projector(model, out_dir / PROJECTOR_FILE, state)
    else:
        save_model(model, out_dir / "model", state)
    plot_metrics(out_dir / "metrics.jsonl").savefig(out_dir / "loss.png", dpi=100)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def plot_metrics(path: str | Path):
    """The loss curve (and learning rate) of a run's metrics.jsonl, as a matplotlib Figure."""
    import matplotlib.pyplot as plt

    rows = read_metrics(path)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per supervised token")
    lr_ax = ax.twinx()
    lr_ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], color="gray", alpha=0.4, label="lr")
    lr_ax.set_ylabel("learning rate")
    fig.tight_layout()
    plt.close(fig)
    return fig
