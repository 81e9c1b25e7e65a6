"""The two-stage trainer, in plain PyTorch, readable top to bottom.

LLaVA trains in two stages, and a stage is just data:

| stage | template | trains | lr (real backbones) |
|---|---|---|---|
| 1: feature alignment  | plain     | projector                  | 1e-3 |
| 2: instruction tuning | vicuna_v1 | projector + language model | 2e-5 |

The vision tower stays frozen throughout: its parameters get no gradient, stay out of
the optimizer, and the module stays in eval mode (no dropout, frozen norm statistics).

One optimizer step = ``grad_accum`` micro-batches. Each micro-batch contributes the
*sum* of its token losses (``loss.lm_loss_sum``, the masked loss of chapter 3, over the
spliced labels the model returns); the gradients are divided once by the number of supervised
tokens in the whole step, so every token weighs the same however the tokens fall into
micro-batches (and, under DistributedDataParallel, into processes). Then: gradient
clipping, AdamW (weight decay 0), a cosine schedule with linear warm-up over the first
3 % of the steps.

A run writes to ``out_dir``: ``metrics.jsonl`` (one line per step), ``loss.png``,
``checkpoint-<step>/`` folders (trainable weights, optimizer moments, RNG and step, all
in safetensors/JSON), and at the end the stage's product: stage 1 the projector alone
(``mm_projector.safetensors``, as LLaVA saves it), stage 2 the whole model. Resuming from
a checkpoint continues exactly: same data order, same RNG, bitwise-equal weights on a CPU.
"""

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from minillava.checkpoint import PROJECTOR_FILE, save_model, save_projector
from minillava.data.batching import batch_schedule, collate
from minillava.loss import lm_loss_sum
from minillava.model import MiniLlava

GROUPS = ("vision_tower", "projector", "language_model")


@dataclass
class Stage:
    """What one stage trains, on which template, with which optimisation settings."""

    name: str
    template: str
    trainable: tuple[str, ...]
    lr: float
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


STAGE1 = Stage("stage1", template="plain", trainable=("projector",), lr=1e-3)
STAGE2 = Stage("stage2", template="vicuna_v1", trainable=("projector", "language_model"), lr=2e-5)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    tokens_per_s: float
    out_dir: Path
    metrics: list[dict] = field(repr=False)


def _group(param_name: str) -> str:
    # AnyRes's learned row separator belongs to the connector, so it trains with the projector.
    first = param_name.split(".")[0]
    return "projector" if first == "image_newline" else first


def set_trainable(model: MiniLlava, trainable: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """Freeze everything outside ``trainable`` (names from GROUPS); return the trainable params."""
    unknown = set(trainable) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown module group(s) {sorted(unknown)}; choose from {GROUPS}")
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(_group(name) in trainable)
        if p.requires_grad:
            params.append(p)
    return params


def _set_modes(model: MiniLlava, trainable: tuple[str, ...]) -> None:
    """Train mode for what trains, eval mode for frozen modules (no dropout, fixed norms)."""
    model.train()
    for name in GROUPS:
        if name not in trainable:
            getattr(model, name).eval()


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up to 1 over ceil(warmup_ratio * total) steps, then cosine decay to 0."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, peak: float, step: int, total: int, warmup_ratio: float) -> None:
    """Every parameter group's learning rate at ``step``: peak * lr_factor."""
    for group in optimizer.param_groups:
        group["lr"] = peak * lr_factor(step, total, warmup_ratio)


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The precision a training step's matrix products run in: bfloat16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def mixed_precision(device: torch.device):
    """The context a training step runs in: autocast to ``autocast_dtype`` on CUDA, full precision elsewhere."""
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


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
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in params.items()}, str(folder / "trainable.safetensors"))
    moments = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
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
    group = opt.param_groups[0]["params"]
    for key, value in moments.items():
        i, name = key.split(".", 1)
        opt.state[group[int(i)]][name] = value
    state = json.loads((folder / "trainer_state.json").read_text())
    random.setstate((state["python_rng"][0], tuple(state["python_rng"][1]), state["python_rng"][2]))
    return state["step"]


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
    Under ``torchrun``, wraps the model in DistributedDataParallel; each process takes
    its share of every global micro-batch.
    """
    out_dir, device = Path(out_dir), torch.device(device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    main = rank == 0
    model.to(device)
    params = set_trainable(model, stage.trainable)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    if stage.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable()   # recompute activations in backward
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if distributed else model

    micro = _micro_batches(stage, len(dataset), world, lengths, has_image)
    total = stage.max_steps or max(1, len(micro) // stage.grad_accum)
    start = 0
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        start = _load_state(checkpoint, named, opt)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _rewrite_metrics(out_dir / "metrics.jsonl", keep_until=start)
    autocast = mixed_precision(device)

    metrics, tokens_seen, t0 = [], 0, time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=stage.name, disable=not (progress and main))
    end = total if stop_after is None else min(total, start + stop_after)
    for step in range(start, end):
        _set_modes(model, stage.trainable)
        set_lr(opt, stage.lr, step, total, stage.warmup_ratio)
        loss_sum, n_tokens, n_positions = torch.zeros((), device=device), 0, 0
        chunk = micro[step * stage.grad_accum: (step + 1) * stage.grad_accum]
        for k, indices in enumerate(chunk):
            batch = collate([dataset[i] for i in indices[rank::world]], pad_token_id)
            batch = {key: v.to(device) if v is not None else None for key, v in batch.items()}
            last = k == len(chunk) - 1
            # Under DDP, gradients are averaged across processes once, at the last micro-batch.
            with (net.no_sync() if distributed and not last else nullcontext()), autocast:
                out = net(**batch, return_loss=False)   # logits and the spliced labels
                loss, n = lm_loss_sum(out.logits, out.labels)   # the micro-batch's token-loss *sum*
                if not loss.requires_grad:  # e.g. text only while only the projector trains:
                    loss = loss + 0.0 * sum(p.sum() for p in params)  # zero grads, but DDP stays in step
                loss.backward()
            loss_sum += loss.detach()
            n_tokens += n
            n_positions += int(out.attention_mask.sum())
        if distributed:
            totals = torch.tensor([loss_sum.item(), n_tokens, n_positions], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            loss_sum, n_tokens, n_positions = totals[0], int(totals[1]), int(totals[2])
        if n_tokens == 0:
            raise ValueError(f"step {step + 1}: no supervised tokens in any of its samples, so there is nothing to "
                             "learn; check the label mask built by the conversation template")
        # DDP averaged the gradient sums over `world` processes: undo that, divide by all tokens.
        for p in params:
            if p.grad is not None:
                p.grad.mul_(world / n_tokens)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

        tokens_seen += n_positions
        record = {"step": step + 1, "loss": float(loss_sum) / n_tokens, "lr": opt.param_groups[0]["lr"],
                  "grad_norm": float(grad_norm), "tokens": n_positions,
                  "tokens_per_s": tokens_seen / (time.perf_counter() - t0)}
        metrics.append(record)
        if main:
            with open(out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
            bar.update(1)
            if stage.save_every and (step + 1) % stage.save_every == 0 and step + 1 < total:
                _save_state(out_dir / f"checkpoint-{step + 1}", step + 1, named, opt)
    bar.close()
    if main and end == total:
        _finish(model, stage, out_dir)
    return TrainResult(steps=end, final_loss=metrics[-1]["loss"] if metrics else float("nan"),
                       tokens_per_s=metrics[-1]["tokens_per_s"] if metrics else 0.0, out_dir=out_dir,
                       metrics=metrics)


def _rewrite_metrics(path: Path, keep_until: int) -> None:
    """Drop metric lines beyond the resumed step (a killed run may have logged past its last checkpoint)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= keep_until]
    path.write_text("".join(line + "\n" for line in lines))


def _finish(model: MiniLlava, stage: Stage, out_dir: Path) -> None:
    """Write the stage's product and its loss curve."""
    if stage.trainable == ("projector",):
        save_projector(model, out_dir / PROJECTOR_FILE)
    else:
        save_model(model, out_dir / "model")
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
