"""The build: train the tokenizer, toy-clip and toy-lm, and install them with a manifest.

    minillava zoo build            # rewrites minillava/backbones/weights/ (about 47 minutes on a 2-core CPU)
    minillava zoo build --quick    # a few steps of everything, for tests (seconds)
    minillava zoo build --recipe vit --out DIR   # the candidate CLIP ViT tower (recipe.VIT), not shipped

Everything is drawn from fixed seeds in a fixed order, so a rebuild sees the same data;
with one thread (the default) it also gives the same weights on the same machine. The
manifest records a SHA-256 per file, which zoo.path checks before anything loads.
"""

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import CLIPImageProcessorPil

from minillava.backbones import toy_clip, toy_slots, toy_vit
from minillava.backbones.recipe import FULL, IMAGE_SIZE, Recipe, final_loss
from minillava.backbones.toy_lm import tokenize_documents, train_lm
from minillava.backbones.toy_text import lm_documents, tokenizer_texts, train_tokenizer
from minillava.backbones.zoo import MANIFEST, SHIPPED, sha256
from minillava.image import CLIP_MEAN, CLIP_STD

TOKENIZER_DOCUMENTS = 4000   # the tokenizer learns from the first 4000 (or all, if fewer) of the LM's documents


def build(out_dir: str | Path, recipe: Recipe = FULL, processes: int = 2, threads: int | None = 1,
          log=print) -> dict:
    """Train everything and write out_dir/{toy-clip, toy-vision, toy-lm}/ and a manifest.

    processes: the CLIP and the LM do not depend on each other, so by default they train
    side by side in two processes (a core each on a two-core machine); 1 trains them one
    after the other in this process.
    threads: torch threads per training (None: leave torch's setting). One is the
    default: models this small gain little from a second thread, which on a busy machine
    mostly waits for the first; and one thread makes a rebuild on the same machine give
    the same weights bit for bit.
    Returns a report: first and final losses, vocabulary size, seconds.
    """
    out_dir, start = Path(out_dir), time.perf_counter()
    # The first few thousand documents hold every word of the toy text; the LM's own job
    # writes all of them (the same ones first: lm_documents is one seeded stream).
    tokenizer_documents = lm_documents(min(TOKENIZER_DOCUMENTS, recipe.lm_documents), recipe.seed)
    tokenizer = train_tokenizer(tokenizer_texts(tokenizer_documents))
    log(f"tokenizer: {len(tokenizer)} tokens, learnt from {len(tokenizer_documents)} documents")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build in a scratch folder beside out_dir, so a failed build leaves the old weights as they were.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-building-") as scratch:
        scratch = Path(scratch)
        jobs = [(make_clip, (tokenizer, recipe, scratch, threads)), (make_lm, (tokenizer, recipe, scratch, threads))]
        if processes > 1:
            with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(job, *args, log=print) for job, args in jobs]   # children print
                clip_losses, lm_losses = [f.result() for f in futures]
        else:
            clip_losses, lm_losses = [job(*args, log=log) for job, args in jobs]
        for name in ("toy-clip", "toy-lm"):
            tokenizer.save_pretrained(scratch / name)
        _install(scratch, out_dir)
    report = {"clip_loss": [clip_losses[0], final_loss(clip_losses)], "lm_loss": [lm_losses[0], final_loss(lm_losses)],
              "vocab_size": len(tokenizer), "seconds": round(time.perf_counter() - start, 1)}
    log(f"built {', '.join(SHIPPED)} in {out_dir} in {report['seconds']:.0f} s")
    return report


def make_clip(tokenizer, recipe: Recipe, out_dir: Path, threads: int | None = 1, log=print) -> list[float]:
    """Train toy-clip; write it and its vision tower (toy-vision) to out_dir. Returns the losses.

    The recipe's vision_tower says which: the RegNet (toy_clip) or the CLIP ViT (toy_vit); both
    save the same folders, toy-vision with the image processor it was trained with.
    """
    train = toy_vit.train_clip if recipe.vision_tower == "vit" else toy_clip.train_clip
    with _torch_threads(threads):
        clip, losses = train(tokenizer, recipe, log)
    clip.save(out_dir / "toy-clip")
    clip.vision.save_pretrained(out_dir / "toy-vision")
    # The preprocessing it was trained with, for anyone loading it with transformers' AutoImageProcessor.
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(out_dir / "toy-vision")
    return losses


def make_lm(tokenizer, recipe: Recipe, out_dir: Path, threads: int | None = 1, log=print) -> list[float]:
    """Write the toy text, train toy-lm on it, save it to out_dir. Returns the losses.

    With recipe.lm_layout, the toy text's scenes are in slots, after a reading drill (toy_slots.py).
    """
    if recipe.lm_layout is not None:
        with _torch_threads(threads):
            lm, losses = toy_slots.train_reader(tokenizer, recipe, log)
        lm.save_pretrained(out_dir / "toy-lm")
        return losses
    samples = tokenize_documents(lm_documents(recipe.lm_documents, recipe.seed), tokenizer)
    log(f"lm: {len(samples)} documents, {sum(len(s['input_ids']) for s in samples)} tokens")
    with _torch_threads(threads):
        lm, losses = train_lm(tokenizer, samples, recipe, log)
    lm.save_pretrained(out_dir / "toy-lm")
    return losses


@contextmanager
def _torch_threads(threads: int | None):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _install(scratch: Path, out_dir: Path) -> None:
    """Write the manifest (a SHA-256 per file, checked by zoo.path), then swap the folders in."""
    manifest = {name: {str(f.relative_to(scratch / name)): sha256(f)
                       for f in sorted((scratch / name).rglob("*")) if f.is_file()} for name in SHIPPED}
    (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for file in scratch.rglob("*"):
        file.chmod(0o755 if file.is_dir() else 0o644)   # package data, readable by everyone
    for name in (*SHIPPED, MANIFEST):
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)
        os.replace(scratch / name, out_dir / name)
