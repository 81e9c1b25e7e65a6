"""LoRA and QLoRA for stage 2: train a low-rank update of the language model, not the model.

Full stage 2 trains every weight of the language model: a 7B LM needs about 108 GB for its
weights, gradients and Adam moments before a single activation, more than any one card has.
LoRA (Hu et al., 2021) freezes each linear layer's weight W and trains a low-rank update
beside it,

    y = W x + (alpha / r) * B (A x)        A: (r, in), B: (out, r), B starts at 0,

so training starts exactly at the pretrained model, and only r * (in + out) numbers per
layer get gradients and optimizer state. QLoRA (Dettmers et al., 2023) also stores the
frozen W in 4 bits (bitsandbytes' NF4), which quarters its memory; the update stays in
full precision.

LLaVA's own recipe (scripts/v1_5/finetune_lora.sh): r 128, alpha 256, dropout 0.05,
adapters on every linear layer of the LM except its output head (``find_all_linear_names``
in llava/train/train.py), the projector trained fully at its own learning rate
(``mm_projector_lr`` 2e-5, the adapters at 2e-4), the vision tower frozen. peft does the
wrapping; its ``"all-linear"`` target is that same rule (tests/test_lora.py compares).

When the stage ends, the adapters are folded into the weights (``merge_adapters``:
W <- W + (alpha / r) * B A), so what is saved, chatted with, evaluated and exported is a
plain MiniLlava, as after full stage 2.
"""

import importlib.util

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from peft.tuners.lora import LoraLayer
from peft.utils.integrations import dequantize_module_weight
from torch import nn

from minillava.errors import UserError
from minillava.model import MiniLlava

PROJECTOR_LR = 2e-5    # LLaVA's mm_projector_lr under LoRA: the stage-2 projector lr when none is given
ADAPTER = "default"    # peft's name for the one adapter a model gets
ADAPTER_MARK = "lora_"  # in the name of every adapter parameter: ...q_proj.lora_A.default.weight


class QLoraUnavailable(UserError):
    """QLoRA cannot run on this machine; the message says why and what to do instead."""


def check_qlora(device: torch.device) -> None:
    """Raise QLoraUnavailable unless 4-bit training can run on ``device``: CUDA, bitsandbytes installed."""
    if device.type != "cuda":
        raise QLoraUnavailable(f"--qlora stores the language model in 4 bits with bitsandbytes, which needs a CUDA GPU "
                               f"(this run is on {device.type}); use --lora on this machine")
    # bitsandbytes is no dependency of minillava: it is a CUDA-only wheel that most users never need.
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QLoraUnavailable("--qlora needs bitsandbytes, which is not installed: pip install bitsandbytes "
                               "(or use --lora)")


def add_adapters(model: MiniLlava, r: int, alpha: float, dropout: float, qlora: bool = False) -> MiniLlava:
    """Wrap ``model.language_model`` with LoRA adapters (in place; returns the model).

    Adapters go on every linear layer of the LM except the output head, as in LLaVA's recipe;
    peft freezes the LM's own weights. ``qlora``: first store those linear layers in 4 bits
    (CUDA and bitsandbytes only; on CUDA, where the quantised layers then live).
    """
    if has_adapters(model):
        raise ValueError("this model already has LoRA adapters; merge them first (minillava.lora.merge_adapters)")
    lm = model.language_model
    if qlora:
        check_qlora(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        _quantize_4bit(lm)
        # peft's protocol for a quantised base: freeze it, keep its remaining half-precision weights
        # (norms, embeddings) in float32 for stable training. Checkpointing stays our own option.
        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", bias="none",
                        task_type="CAUSAL_LM")
    model.language_model = get_peft_model(lm, config)
    return model


def has_adapters(model: MiniLlava) -> bool:
    return isinstance(model.language_model, PeftModel)


def is_adapter(param_name: str) -> bool:
    """Whether a parameter (by its name in the model) belongs to a LoRA adapter, not to the LM it adapts."""
    return ADAPTER_MARK in param_name


def merge_adapters(model: MiniLlava) -> MiniLlava:
    """Fold the adapters into the LM's weights and unwrap it: a plain MiniLlava again (in place; returns it).

    Each adapted layer becomes an ``nn.Linear`` with weight W + (alpha / r) * B A. A 4-bit W is
    dequantised first -- the forward pass used that dequantised W, so the merged layer
    computes what the adapted one did, and the saved model is an ordinary one (peft's own
    ``merge_and_unload`` would quantise the sum again). A model without adapters is returned as is.
    """
    if not has_adapters(model):
        return model
    lm = model.language_model.get_base_model()   # the HF model, its linear layers replaced by LoRA layers
    for name, layer in list(lm.named_modules()):
        if isinstance(layer, LoraLayer):
            lm.set_submodule(name, _merged_linear(layer))
    model.language_model = lm
    return model


@torch.no_grad()
def _merged_linear(layer: LoraLayer) -> nn.Linear:
    base = layer.get_base_layer()
    weight = dequantize_module_weight(base)   # W itself when it is not quantised
    delta = layer.get_delta_weight(ADAPTER)   # (alpha / r) * B @ A, in the adapter's dtype
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                       device=weight.device, dtype=weight.dtype)
    merged.weight.copy_(weight.float() + delta.float())   # summed in float32, stored in W's dtype
    if base.bias is not None:
        merged.bias.copy_(base.bias)
    merged.requires_grad_(base.weight.requires_grad)
    return merged


def describe(model: MiniLlava) -> str:
    """One line for the log and the report: the adapter's settings and what trains of how much."""
    lm = model.language_model
    config = lm.peft_config[ADAPTER]
    adapters, lm_total = lm.get_nb_trainable_parameters()   # counts a 4-bit weight at its full size
    others = sum(p.numel() for name, p in model.named_parameters()
                 if not name.startswith(("vision_tower.", "language_model.")))   # the projector
    total = lm_total + others + sum(p.numel() for p in model.vision_tower.parameters())
    kinds = sorted({name.rpartition(".")[2] for name in config.target_modules})   # q_proj, ..., down_proj
    kind = "QLoRA (4-bit NF4 base)" if _is_quantized(lm) else "LoRA"
    return (f"{kind} r {config.r}, alpha {config.lora_alpha:g}, dropout {config.lora_dropout:g} on the language "
            f"model's {len(config.target_modules)} linear layers ({', '.join(kinds)}): trains {adapters:,} adapter + "
            f"{others:,} projector parameters = {adapters + others:,} of {total:,} "
            f"({100 * (adapters + others) / total:.2f} %)")


def _is_quantized(lm: nn.Module) -> bool:
    return any(type(p).__name__ == "Params4bit" for p in lm.parameters())


def _quantize_4bit(lm: nn.Module) -> None:
    """Store the LM's linear layers (not its output head) in 4 bits, in place, on the GPU.

    QLoRA's settings, as LLaVA passes them to transformers' BitsAndBytesConfig: NF4 with
    double quantisation (the per-block scales quantised too), matrix products in bfloat16
    where the GPU has it, else float16. bitsandbytes' own recipe: load the weights into a
    Linear4bit, then move it to CUDA, which is when it quantises them.
    """
    import bitsandbytes as bnb   # here, not at the top: optional, CUDA only (check_qlora says so first)

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    head = lm.get_output_embeddings()
    for name, layer in list(lm.named_modules()):
        if not isinstance(layer, nn.Linear) or layer is head:
            continue
        q = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None,
                              compute_dtype=compute, compress_statistics=True, quant_type="nf4")
        q.load_state_dict({k: v.cpu() for k, v in layer.state_dict().items()})
        lm.set_submodule(name, q.to("cuda"))
