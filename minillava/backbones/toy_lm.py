"""toy-lm: a LLaMA that reads written scenes, trained on the toy text (toy_text.lm_documents).

Vicuna is LLaMA fine-tuned on chats, and LLaVA starts from it. toy-lm is the same kind of
model at toy scale, trained from scratch on answers only (the prompts are masked, as in
Vicuna), in the vicuna_v1 chat template.
"""

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from minillava.backbones.recipe import WARMUP_RATIO, Recipe, log_progress
from minillava.conversation import get_template
from minillava.data.batching import batch_schedule, collate
from minillava.splicing import IGNORE_INDEX
from minillava.train import set_lr


def lm_config(tokenizer) -> LlamaConfig:
    """Two layers of width 128 (0.56M parameters). Deeper reads no better at this budget:
    with the FULL recipe otherwise unchanged (5000 steps), three layers read a written scene
    at 0.74 and four at 0.74 (``gates.scene_reading``, own scene), against 0.79 for two, and four
    take twice as long to train; none of the three binds a size or a relation to the named
    object (2026-11-28, ``benchmarks/lm_reading.py --lm``). Longer does not fix that either:
    10,000 steps over 80,000 documents read at 0.84 (colour 0.55, size 0.58), and the assistant
    trained on it scores VQA 0.730 on 300 other held-out scenes against 0.733 for this one; a
    third of the documents as drills of colour, size, place and relation questions reads worse
    (0.65). The LM reads as well on its training scenes as on held-out ones: it under-learns.
    On a reading drill alone (every document a scene and eight short-answer questions), the same
    shape binds once its schedule is long enough: 6,000 steps read at 0.922 (size 1.00, position
    0.88, colour 0.72, relation 0.77) where 3,000 read at 0.710 (2026-12-02, benchmarks/lm_layouts.py; the same
    command in another session read at 0.863: the binding's timing is fragile). But reading the text better
    does not make a better assistant: benchmarks/bench_pipeline.py's table (issue 19) swaps this LM for others."""
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=1024, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def tokenize_documents(documents, tokenizer) -> list[dict]:
    """Documents -> {"input_ids", "labels"}: only the answers are supervised, as in Vicuna.

    conversation.py checks every sample against whole-prompt tokenisation, so a
    tokenizer that merged across a prompt/answer boundary would fail the build here.
    """
    return [get_template(template).tokenize(messages, tokenizer) for template, messages in documents]


def train_lm(tokenizer, samples: list[dict], recipe: Recipe, log=print,
             config: LlamaConfig | None = None, every=None,
             init: LlamaForCausalLM | None = None) -> tuple[LlamaForCausalLM, list[float]]:
    """Next-token training on the answers of ``samples``, batches grouped by length.

    config: the model's shape (default: ``lm_config``); experiments try others with the same loop.
    every: (n, fn) calls fn(step, model) after every n-th step, to measure a training as it goes.
    init: train this model further instead of a fresh one (a curriculum: one text, then another).
    """
    torch.manual_seed(recipe.seed)
    model = init if init is not None else LlamaForCausalLM(config or lm_config(tokenizer))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lm_lr, weight_decay=0.01)
    lengths = [len(s["input_ids"]) for s in samples]
    batches, epoch, losses = [], 0, []
    for step in range(recipe.lm_steps):
        if not batches:   # a new epoch: reshuffle, deterministically
            batches = batch_schedule(len(samples), recipe.lm_batch, recipe.seed, epoch, lengths)
            epoch += 1
        batch = collate([samples[i] for i in batches.pop()], tokenizer.pad_token_id)
        set_lr(optimizer, recipe.lm_lr, step, recipe.lm_steps, WARMUP_RATIO)
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        # Logits only where a supervised token is predicted (position t predicts t + 1):
        # the answers are about a third of the tokens, and the output layer is the widest.
        targets = batch["labels"][:, 1:]
        supervised = targets != IGNORE_INDEX
        loss = F.cross_entropy(model.lm_head(hidden[:, :-1][supervised]), targets[supervised])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        log_progress(log, "lm", step, recipe.lm_steps, losses)
        if every and (step + 1) % every[0] == 0 and step + 1 < recipe.lm_steps:
            every[1](step + 1, model)
            model.train()
    return model.eval(), losses


@torch.no_grad()
def answer(lm: LlamaForCausalLM, tokenizer, questions: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers, one per question, each asked in a fresh vicuna_v1 chat."""
    template = get_template("vicuna_v1")
    prompts = [[tokenizer.bos_token_id] + tokenizer.encode(
        template.render([{"role": "user", "content": q}], add_generation_prompt=True), add_special_tokens=False)
        for q in questions]
    width = max(map(len, prompts))
    # Left padding: every prompt then ends at the last position, where generation continues.
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = lm.eval().generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return [a.strip() for a in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]
