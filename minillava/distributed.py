"""One job on several processes: torchrun's process group, DDP or FSDP2, and rank 0 writing.

``torchrun --nproc-per-node N --no-python minillava pipeline ...`` starts N copies of the
command. Each learns its place from the environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), joins one process group, and takes its share of
every global micro-batch (train.py). Only rank 0 writes files; the others compute.

Two ways to spread the model (``--distributed``):

| mode | each process holds | use when |
|---|---|---|
| ddp  | the whole model, its gradients and Adam moments; gradients averaged | the model fits one card |
| fsdp | 1/N of the weights, gradients and moments; whole layers gathered only while they run | it does not |

Why FSDP at all: full stage 2 of a 7B language model needs about 108 GB for fp32 weights,
gradients and Adam moments (16 bytes a parameter) before any activation. DDP copies all of it
onto every GPU, so it fits no card; FSDP2 (``fully_shard``) splits it N ways (8 x 80 GB cards:
about 14 GB each) and all-gathers one decoder layer at a time for its forward and backward.
"""

import os
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist

from minillava.data.batching import collate
from minillava.errors import UserError

# FSDP's modules (DTensor, fully_shard, the state-dict gathering) take half a second to import:
# they are imported where several processes train, not by `minillava --help`.
MODES = ("ddp", "fsdp")
TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether torchrun started this process as one of a group (it sets all of TORCHRUN)."""
    return all(name in os.environ for name in TORCHRUN)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def setup() -> bool:
    """Join the process group torchrun describes; True if this call joined it (and should leave it).

    Collectives on CPU tensors go through gloo, on CUDA tensors through NCCL (the fast one
    between GPUs); a CPU-only machine has no NCCL, so gloo does everything.
    """
    if active() or not launched():
        return False
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return True


def teardown() -> None:
    if active():
        dist.destroy_process_group()


@contextmanager
def launch():
    """The block runs in torchrun's process group (if launched by torchrun); left again at the end or on error."""
    joined = setup()
    try:
        yield
    finally:
        if joined:
            teardown()


def local_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun on CUDA, GPU number LOCAL_RANK of its machine (one GPU a process)."""
    if not active() or device.type != "cuda":
        return device
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


@contextmanager
def main_first():
    """Rank 0 runs the block first (writing files, e.g. the toy data); the others wait, then run it (reading them)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


# ----------------------------------------------------------------------------
# Spreading the model, and gathering it back for saving

def wrap(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The module the training step calls: the model itself (one process), DDP around it, or the model sharded.

    Under "fsdp" the model is sharded *in place* (its parameters become DTensor shards), so
    an optimizer must be built from its parameters after this call, and only once: FSDP fixes
    each parameter's dtype when it shards it, and a later stage that trains (so upcasts to
    float32) a module an earlier stage kept frozen in half precision would break. Hence
    ``minillava pipeline`` runs stage 1 (the projector alone) under DDP and shards stage 2.
    """
    if mode not in MODES:
        raise ValueError(f"unknown distributed mode {mode!r}; choose one of {', '.join(MODES)}")
    if not active():
        return model
    from torch.distributed.device_mesh import init_device_mesh   # slow imports: see MODES
    from torch.distributed.fsdp import fully_shard

    device = next(model.parameters()).device
    if mode == "ddp":
        # find_unused_parameters: a text-only micro-batch leaves the projector without a gradient.
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True)
    if is_sharded(model):
        raise ValueError("this model was sharded by an earlier stage already; shard it once, for the stage that "
                         "trains the language model, and run the stages before it under ddp")
    mesh = init_device_mesh(device.type, (world(),))
    # Shard by decoder layer, the blocks transformers keeps whole (_no_split_modules): each is
    # all-gathered just before it runs and freed after, so one layer at a time is ever whole.
    # The rest (embeddings, head, projector, vision tower) forms the root's group.
    blocks = set(getattr(model.language_model, "_no_split_modules", None) or ())
    for module in model.language_model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # A process whose micro-batch is text only gives the projector no gradient while another's
    # does; all must reduce-scatter the same tensors (zeros here), as DDP's find_unused_parameters.
    model.set_reduce_scatter_unused_params(True)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``wrap`` sharded the model with FSDP (its parameters are this process's shards)."""
    if not active():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gradient_sync(net: torch.nn.Module, last: bool):
    """The context of one micro-batch's backward: under DDP, gradients are averaged only at the step's last one.

    FSDP reduce-scatters every micro-batch: skipping it would keep whole, unsharded
    gradients between micro-batches, the very memory FSDP is there to save.
    """
    if last or not isinstance(net, torch.nn.parallel.DistributedDataParallel):
        return nullcontext()
    return net.no_sync()


def stand_in(dataset, has_image: list[bool] | None, pad_token_id: int) -> dict:
    """A micro-batch of one sample (one with an image, if any has), for a process with nothing of its own.

    Every process must run every forward and backward: DDP's gradient all-reduce and FSDP's
    all-gathers and reduce-scatters meet in them, and one process that skips them leaves the
    others waiting for ever. A process whose share of a micro-batch is empty (fewer samples
    than processes, or only bad records) runs this instead and weighs its loss by 0. The image
    matters in stage 1: only through it does the loss reach the projector, the one thing it trains.
    """
    order = sorted(range(len(dataset)), key=lambda i: not has_image[i]) if has_image else range(len(dataset))
    for i in order:
        batch = collate([dataset[i]], pad_token_id)
        if "input_ids" in batch:   # not a bad record
            batch.pop("skipped", None)
            return batch
    raise ValueError("every record of the dataset is bad: nothing to train on")


def drop_unused_gradients(params: list[torch.nn.Parameter]) -> None:
    """Under FSDP, take the gradient away (None) from every parameter that no process used this step.

    FSDP reduce-scatters zeros for a parameter one process did not use (others may have), so
    every trained parameter ends a step with a gradient. One process (and DDP) leaves an unused
    one without, and AdamW then skips it; with a zero gradient its momentum would move it on,
    e.g. the projector on a step of text-only samples. A gradient exactly zero on every process
    is taken for unused (for a used tensor that has probability 0). No-op without FSDP.
    """
    if not active():
        return
    from torch.distributed.tensor import DTensor

    sharded = [p for p in params if isinstance(p, DTensor)]
    if not sharded:
        return
    zero = torch.zeros((), dtype=torch.bool, device=sharded[0].device)
    used = torch.stack([zero if p.grad is None else p.grad.to_local().any() for p in sharded]).float()
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    for p, was_used in zip(sharded, used.tolist()):
        if not was_used:
            p.grad = None


def no_gradient(stage: str, step: int, several: bool) -> None:
    """Refuse a micro-batch whose loss reaches no trained weight when several processes train.

    One process gives the trained weights a zero gradient and goes on. Several cannot: DDP and
    FSDP collect gradients through the model's own forward and backward, which a loss with no
    path to a trained weight never enters, so the processes would fall out of step.
    """
    if several:
        raise UserError(f"{stage} step {step + 1}: a micro-batch without images gives the projector, the only "
                        "module this stage trains, nothing to learn from, which several processes cannot share; "
                        "remove the text-only records from this stage's data, or train it in one process")


def full_state_dict(model: torch.nn.Module) -> dict | None:
    """The model's whole state dict on rank 0 (None elsewhere), as a one-process run's ``model.state_dict()``.

    A sharded model's shards are gathered one tensor at a time onto rank 0's CPU (every
    process must call this: it is a collective). An unsharded model needs no gathering.
    """
    if not is_sharded(model):
        return model.state_dict() if is_main() else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if is_main() else None
