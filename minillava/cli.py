"""The ``minillava`` command line.

    minillava demo     one forward pass and a short generation of a tiny MiniLlava,
                       printing every tensor's shape along the way (seconds, offline)
    minillava data     generate instruction data with a teacher (rules or an OpenAI-compatible
                       model); serve the rule teacher as a local OpenAI-compatible endpoint
    minillava eval     evaluate an assistant (a fake or a checkpoint) on held-out toy scenes:
                       VQA, POPE, multiple choice, CHAIR, LLaVA-Bench; table, JSON and chart
"""

import argparse

import torch

from minillava.data.commands import add_parser as add_data_parser
from minillava.eval.suite import add_parser as add_eval_parser


def demo(args: argparse.Namespace) -> None:
    from minillava.device import pick_device
    from minillava.zoo import tiny_random_model

    device = pick_device(args.device)
    model = tiny_random_model(projector=args.projector).to(device)
    img = model.config.image_token_id
    input_ids = torch.tensor([[1, 5, img, 6, 7, 8], [1, 9, 10, 0, 0, 0]], device=device)
    attention_mask = (input_ids != 0).long()
    pixel_values = torch.randn(1, 3, 32, 32, device=device)
    print(f"device: {device}")
    print(f"input_ids {tuple(input_ids.shape)}: one <image> placeholder (id {img}) in sample 0, none in sample 1")
    with torch.no_grad():
        patches = model.vision_tower(pixel_values)
        print(f"vision features {tuple(patches.shape)}: (images, patches, vision width)")
        print(f"projected       {tuple(model.projector(patches).shape)}: (images, patches, LM width)")
        out = model(input_ids, pixel_values, attention_mask, labels=input_ids.masked_fill(attention_mask == 0, -100))
    print(f"logits          {tuple(out.logits.shape)}: (batch, spliced length, vocab)")
    print(f"spliced mask    {out.attention_mask.tolist()}")
    print(f"loss            {out.loss.item():.3f} (random weights: about ln(vocab) = {torch.log(torch.tensor(100.)):.3f})")
    new = model.generate(input_ids, pixel_values, attention_mask, max_new_tokens=8)
    print(f"generated ids   {new.tolist()} (random weights, so random tokens)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="minillava", description="Visual instruction tuning, rebuilt to be read.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a forward pass and a generation of a tiny model, with every shape")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--projector", default="mlp2x_gelu", help="linear, mlp2x_gelu, ...")
    p.set_defaults(func=demo)
    add_data_parser(sub)   # minillava data generate | serve
    add_eval_parser(sub)   # minillava eval
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
