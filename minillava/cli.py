"""The ``minillava`` command line.

    minillava demo     one forward pass and a short generation of a tiny MiniLlava,
                       printing every tensor's shape along the way (seconds, offline)
    minillava zoo      list the shipped pretrained toy backbones (zoo list) or retrain them (zoo build)
    minillava data     generate instruction data with a teacher (rules or an OpenAI-compatible
                       model); serve the rule teacher as a local OpenAI-compatible endpoint
    minillava eval     evaluate an assistant (a fake or a checkpoint) on held-out toy scenes:
                       VQA, POPE, multiple choice, CHAIR, LLaVA-Bench; table, JSON and chart
    minillava pipeline the main job: data -> stage 1 -> stage 2 -> evaluation -> report, from a
                       config file and/or flags (toy world by default; real backbones and data too)
    minillava chat     talk to a saved assistant in the terminal (multi-turn, /image, streamed answers)
    minillava serve    serve a saved assistant over OpenAI's chat API (batched, streamed) and a web demo
    minillava export   write a saved assistant as a transformers-native folder (LLaVA or LLaVA-NeXT)

Bad input -- a malformed data file, a corrupt assistant folder, a missing file, an option that
cannot be used -- ends every command with one line, ``minillava <cmd>: <what and how to fix>``,
on stderr and exit status 2 (as argparse's own errors): ``USER_ERRORS`` are the exceptions that
mean it. Anything else is a bug and keeps its traceback.
"""

import argparse
import sys
from pathlib import Path

import torch

from minillava import pipeline
from minillava.backbones.recipe import RECIPES
from minillava.conversation import TokenizationMismatchError
from minillava.data.commands import add_parser as add_data_parser
from minillava.device import pick_device
from minillava.errors import UserError
from minillava.eval.judges import RuleJudge
from minillava.eval.suite import add_parser as add_eval_parser
from minillava.serve.command import add_parser as add_serve_parser
from minillava.serve.terminal import add_parser as add_chat_parser
from minillava.splicing import IGNORE_INDEX

# The backbones' modules import transformers (seconds): `demo` and `zoo` import them when they
# run, so that `minillava --help`, `minillava eval` and a config error answer at once.

# Exceptions that mean bad input, not a bug. New ones subclass minillava.errors.UserError; the
# others are listed until they do. A path that does not exist or cannot be read is the user's too.
USER_ERRORS = (UserError, pipeline.ConfigError, TokenizationMismatchError,
               FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def demo(args: argparse.Namespace) -> None:
    from minillava.backbones.zoo import tiny_random_model   # transformers: late, see the top

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
        out = model(input_ids, pixel_values, attention_mask, labels=input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX))
    print(f"logits          {tuple(out.logits.shape)}: (batch, spliced length, vocab)")
    print(f"spliced mask    {out.attention_mask.tolist()}")
    print(f"loss            {out.loss.item():.3f} (random weights: about ln(vocab) = {torch.log(torch.tensor(100.)):.3f})")
    new = model.generate(input_ids, pixel_values, attention_mask, max_new_tokens=8)
    print(f"generated ids   {new.tolist()} (random weights, so random tokens)")


def zoo_command(args: argparse.Namespace) -> None:
    from minillava.backbones import zoo

    if args.action == "list":
        for name in zoo.available():
            try:
                state = f"ok ({zoo.path(name)})"
            except (OSError, ValueError) as err:
                state = f"NOT USABLE: {err}"
            print(f"{name:11s} {zoo.SHIPPED[name]}\n{'':11s} {state}")
        return
    from minillava.backbones.build import build

    if args.quick and args.out is None:
        raise SystemExit("--quick builds throwaway models: give --out DIR, so the shipped weights stay as they are")
    if args.recipe != "full" and args.out is None:
        raise SystemExit(f"--recipe {args.recipe} builds a candidate: give --out DIR (the shipped folder "
                         f"{zoo.WEIGHTS_DIR} itself only to ship it)")
    full, quick = RECIPES[args.recipe]
    report = build(args.out or zoo.WEIGHTS_DIR, quick if args.quick else full, processes=args.processes,
                   threads=args.threads)
    print(f"clip loss {report['clip_loss'][0]:.3f} -> {report['clip_loss'][1]:.3f}, "
          f"lm loss {report['lm_loss'][0]:.3f} -> {report['lm_loss'][1]:.3f}, {report['seconds']:.0f} s")


def pipeline_command(args: argparse.Namespace) -> None:
    pipeline.run(pipeline.config_from_args(args))


def export_command(args: argparse.Namespace) -> None:
    folder, out = Path(args.assistant).expanduser(), Path(args.out).expanduser()
    if not folder.is_dir():   # checked before loading anything: a typo fails at once
        raise UserError(f"no folder {folder}: give the folder save_assistant wrote (runs/pipeline/assistant after "
                        "`minillava pipeline`)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; give a new folder for the export")
    from minillava.chat import load_assistant   # transformers (seconds): only once the input is good
    from minillava.export import export

    hf = export(load_assistant(folder), out)
    print(f"wrote {hf}: AutoModelForImageTextToText.from_pretrained({str(hf)!r}) and "
          f"AutoProcessor.from_pretrained({str(hf)!r}) load it")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="minillava", description="Visual instruction tuning, rebuilt to be read.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a forward pass and a generation of a tiny model, with every shape")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--projector", default="mlp2x_gelu", help="linear, mlp2x_gelu, ...")
    p.set_defaults(func=demo)
    add_data_parser(sub, make_judge=RuleJudge)   # minillava data generate | serve (rule teacher and judge)
    add_eval_parser(sub)   # minillava eval
    p = sub.add_parser("zoo", help="the pretrained toy backbones: list them, or rebuild them")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="shipped backbones and whether their files are intact")
    build = actions.add_parser("build", help="retrain tokenizer, toy-clip and toy-lm from fixed seeds (minutes)")
    build.add_argument("--out", type=Path, default=None, help="output folder (default: minillava/backbones/weights/)")
    build.add_argument("--quick", action="store_true", help="a few steps of everything (seconds); needs --out")
    build.add_argument("--recipe", choices=sorted(RECIPES), default="full", help="full (default): the shipped "
                       "recipe, a RegNet vision tower; vit: the candidate CLIP ViT tower (recipe.VIT; --quick: "
                       "QUICK_VIT); slots: the ViT and a toy-lm pretrained in slots (recipe.SLOTS)")
    build.add_argument("--processes", type=int, default=2, help="2 (default): train the CLIP and the LM side "
                       "by side; 1: one after the other")
    build.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1: "
                       "reproducible, and fastest for models this small on a shared CPU)")
    p.set_defaults(func=zoo_command)
    p = sub.add_parser("pipeline", help="data, stage 1, stage 2, evaluation and a report: a trained assistant")
    pipeline.add_arguments(p)   # one flag per pipeline.PipelineConfig option, and --config FILE
    p.set_defaults(func=pipeline_command)
    add_chat_parser(sub)   # minillava chat
    add_serve_parser(sub)   # minillava serve
    p = sub.add_parser("export", help="write a saved assistant as a transformers-native folder "
                       "(AutoModelForImageTextToText, AutoProcessor)")
    p.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant (e.g. runs/pipeline/assistant)")
    p.add_argument("out", help="a new (or empty) folder for the transformers model and its processor")
    p.set_defaults(func=export_command)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as err:   # the message says what to fix: no traceback
        print(f"minillava {args.command}: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
