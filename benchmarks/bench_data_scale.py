"""Data at scale: how soon training starts, how fast samples come, how memory grows with the records.

LLaVA-1.5's stage-2 file holds 665K records. Prepared up front (``InstructionDataset``: every
image decoded, every record tokenized before step 1) that is hours and gigabytes; read lazily
(``LazyInstructionDataset`` over an indexed source, data/sources.py) it should be seconds and
a few bytes a record. This writes a LLaVA JSON file of synthetic records over small images on
disk (toy scenes, PNG), then, in a fresh process per size (so that peak memory is that size's
alone), with the shipped toy backbones:

* index: seconds to index the file (parse it once, keep offsets and length estimates);
* first sample / first step: seconds from nothing to ``dataset[0]``, and to the end of the first
  optimizer step of ``train`` (length-grouped schedule over every record, DataLoader, step);
* records/s read through a DataLoader with 0 and 2 worker processes;
* peak RSS of the process, and what the index and dataset added to it (bytes per record);
* for contrast, the eager dataset on the first few thousand records: seconds and MB per record.

    python benchmarks/bench_data_scale.py [--records 100000] [--small 10000] [--images 2000] [--read 1500]
                                          [--image-size 64]

The records cycle over ``--images`` distinct files (writing 100K PNGs would take longer than
the measurement); every read still opens and decodes its file.
"""

import argparse
import dataclasses
import functools
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from minillava.data.sources import JsonRecords

QUESTIONS = ["What is in the image?", "Describe the image briefly.", "What colour is the largest shape?",
             "How many shapes are there?", "Where is the circle?"]


def rss_mb() -> float:
    """Resident memory now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KB


def write_data(folder: Path, n: int, images: int, size: int = 64) -> Path:
    """A LLaVA JSON file of n records (a fifth text-only) over ``images`` toy-scene PNGs."""
    from minillava.toyworld import make_scene, render

    (folder / "images").mkdir(parents=True, exist_ok=True)
    captions = []
    for seed in range(images):
        scene = make_scene(seed)
        render(scene, size, size).save(folder / "images" / f"{seed:06d}.png")
        captions.append(scene.captions()[0])
    rng, records = random.Random(0), []
    for i in range(n):
        seed = i % images
        turns = []
        for t in range(rng.randint(1, 3)):
            turns += [{"from": "human", "value": rng.choice(QUESTIONS)}, {"from": "gpt", "value": captions[seed]}]
        record = {"id": f"r{i}", "conversations": turns}
        if i % 5:
            turns[0]["value"] = "<image>\n" + turns[0]["value"]
            record["image"] = f"images/{seed:06d}.png"
        records.append(record)
    path = folder / f"mix{n}.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def measure(path: Path, read: int, eager: int) -> dict:
    """Everything for one file, in this process (run by the parent in a fresh one)."""
    torch.set_num_threads(1)
    from minillava.data.batching import collate
    from minillava.data.dataset import InstructionDataset, LazyInstructionDataset
    from minillava.data.sources import open_source
    from minillava.pipeline import load_backbones, make_config
    from minillava.pipeline.steps import _one_image
    from minillava.train import STAGE2, train

    model, tokenizer, processor, tokens_per_image = load_backbones(make_config({}))
    process = functools.partial(_one_image, processor)
    options = dict(image_folder=path.parent, tokens_per_image=tokens_per_image, max_length=2048)
    before, start = rss_mb(), time.perf_counter()
    source = open_source(str(path))
    indexed = time.perf_counter() - start
    data = LazyInstructionDataset(source, tokenizer, "vicuna_v1", process, **options)
    first_sample = data[0]
    first_sample_s = time.perf_counter() - start
    assert "skip" not in first_sample
    dataset_mb = rss_mb() - before
    with tempfile.TemporaryDirectory() as out:
        stage = dataclasses.replace(STAGE2, batch_size=8, max_steps=1, num_workers=0)
        tic = time.perf_counter()
        train(model, stage, data, out, lengths=data.lengths, has_image=data.has_image,
              pad_token_id=model.config.pad_token_id, progress=False)
        first_step_s = first_sample_s + time.perf_counter() - tic
    rates = {}
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:read].tolist()
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(data, batch_sampler=[order[i:i + 16] for i in range(0, read, 16)],
                                             num_workers=workers,
                                             collate_fn=functools.partial(collate, pad_token_id=0))
        tic, seen = time.perf_counter(), 0
        for batch in loader:
            seen += len(batch.get("input_ids", [])) + len(batch.get("skipped", []))
        rates[workers] = seen / (time.perf_counter() - tic)
    result = {"records": len(data), "index_s": indexed, "first_sample_s": first_sample_s,
              "first_step_s": first_step_s, "records_per_s_0_workers": rates[0], "records_per_s_2_workers": rates[2],
              "index_and_dataset_mb": dataset_mb, "bytes_per_record": dataset_mb * 2**20 / len(data),
              "peak_rss_mb": peak_mb()}
    if eager:   # the up-front dataset, on the first `eager` records only
        records = [source[i] for i in range(eager)]
        before, tic = rss_mb(), time.perf_counter()
        eager_data = InstructionDataset(records, tokenizer, "vicuna_v1", process, **options)
        result.update(eager_records=eager, eager_ms_per_record=(time.perf_counter() - tic) * 1000 / eager,
                      eager_kb_per_record=(rss_mb() - before) * 1024 / len(eager_data))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records of the large file")
    parser.add_argument("--small", type=int, default=10_000, help="records of the small file (memory flatness)")
    parser.add_argument("--images", type=int, default=2000, help="distinct image files the records cycle over")
    parser.add_argument("--image-size", type=int, default=64, help="side of the PNGs (the toy tower reads 64)")
    parser.add_argument("--read", type=int, default=1500, help="records read through the DataLoader per rate")
    parser.add_argument("--eager", type=int, default=1000, help="records for the up-front dataset's contrast")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)   # internal: one file, this process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.read, args.eager)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        paths = [write_data(Path(tmp), n, args.images, args.image_size) for n in (args.small, args.records)]
        print(f"wrote {args.small} and {args.records} records over {args.images} {args.image_size}-pixel images "
              f"({paths[1].stat().st_size / 2**20:.0f} MB of JSON) in {time.perf_counter() - tic:.0f} s")
        records = json.loads(paths[1].read_text())   # the large file again, as JSONL (a record per line)
        jsonl = paths[1].with_suffix(".jsonl")
        jsonl.write_text("\n".join(json.dumps(r) for r in records))
        del records
        tic = time.perf_counter()
        JsonRecords(jsonl)
        jsonl_s = time.perf_counter() - tic
        rows = []
        for path, eager in zip(paths, (args.eager, 0)):
            done = subprocess.run([sys.executable, __file__, "--measure", str(path), "--read", str(args.read),
                                   "--eager", str(eager)], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| records | index s | first sample s | first step s | records/s, 0 workers | 2 workers | "
          "index + dataset MB | bytes/record | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['records']} | {r['index_s']:.1f} | {r['first_sample_s']:.1f} | {r['first_step_s']:.1f} | "
              f"{r['records_per_s_0_workers']:.0f} | {r['records_per_s_2_workers']:.0f} | "
              f"{r['index_and_dataset_mb']:.1f} | {r['bytes_per_record']:.0f} | {r['peak_rss_mb']:.0f} |")
    print(f"\nindexing the {args.records} records as JSONL: {jsonl_s:.1f} s")
    eager = rows[0]
    print(f"up front (InstructionDataset) on {eager['eager_records']} records: {eager['eager_ms_per_record']:.1f} ms "
          f"and {eager['eager_kb_per_record']:.1f} KB a record -> {args.records} records: "
          f"{eager['eager_ms_per_record'] * args.records / 1000:.0f} s before step 1, "
          f"{eager['eager_kb_per_record'] * args.records / 1024:.0f} MB")


if __name__ == "__main__":
    main()
