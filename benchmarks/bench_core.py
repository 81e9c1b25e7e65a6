"""minillava vs transformers' LLaVA at the same tiny config, in one run on one machine.

Measures training-step tokens/s (forward + backward + AdamW step) and greedy-generation
tokens/s, and prints each as a ratio ours / transformers (>= 1.0 means we are not
slower). Both models hold the same weights (``from_hf``), see the same images and text.

    python benchmarks/bench_core.py [--steps 20] [--new-tokens 48]
"""

import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from minillava.interop import from_hf
from minillava.splicing import IGNORE_INDEX

IMG = 511


def build(seed=0):
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                              image_size=64, patch_size=8)
    text = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    hf = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMG))
    return hf, from_hf(hf)


def inputs(batch, text_len, n_img_tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, IMG, (batch, text_len), generator=g)
    ours = torch.cat([text[:, :1], torch.full((batch, 1), IMG), text[:, 1:]], dim=1)
    theirs = torch.cat([text[:, :1], torch.full((batch, n_img_tokens), IMG), text[:, 1:]], dim=1)
    pixels = torch.randn(batch, 3, 64, 64, generator=g)
    return ours, theirs, pixels


def timed_pair(fn_a, fn_b, repeats):
    """Median seconds per call of two functions, timed alternately.

    Alternating (a, b, a, b, ...) and taking medians keeps the comparison fair on a shared,
    noisy machine: a slow spell hits both sides instead of one.
    """
    fn_a(), fn_b()  # warm-up
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def train_step_fn(model, call):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)

    def step():
        loss = call().loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--gen-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a busy 2-core machine, see tools/run_notebook.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    hf, ours = build()
    n_img = ours.vision_tower.num_patches  # (64 / 8)^2 patches, CLS dropped
    ids, hf_ids, pixels = inputs(args.batch, args.text_len, n_img)
    seq_tokens = args.batch * hf_ids.shape[1]
    results = {}

    hf.train(), ours.train()
    hf_step = train_step_fn(hf, lambda: hf(input_ids=hf_ids, pixel_values=pixels, labels=hf_ids.masked_fill(hf_ids == IMG, IGNORE_INDEX)))
    our_step = train_step_fn(ours, lambda: ours(ids, pixels, labels=ids))
    t_ours, t_hf = timed_pair(our_step, hf_step, args.steps)
    results["train tokens/s"] = (seq_tokens / t_ours, seq_tokens / t_hf)

    hf.eval(), ours.eval()
    gen_batch = 4
    new = args.new_tokens * gen_batch
    with torch.no_grad():
        t_ours, t_hf = timed_pair(
            lambda: ours.generate(ids[:gen_batch], pixels[:gen_batch], max_new_tokens=args.new_tokens),
            lambda: hf.generate(input_ids=hf_ids[:gen_batch], pixel_values=pixels[:gen_batch], do_sample=False,
                                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0),
            args.gen_repeats,
        )
    results["greedy generation tokens/s"] = (new / t_ours, new / t_hf)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"sequence {hf_ids.shape[1]} tokens ({n_img} image tokens)")
    print(f"{'metric':<28} {'minillava':>12} {'transformers':>14} {'ratio':>7}")
    for name, (a, b) in results.items():
        print(f"{name:<28} {a:>12.0f} {b:>14.0f} {a / b:>7.2f}")


if __name__ == "__main__":
    main()
