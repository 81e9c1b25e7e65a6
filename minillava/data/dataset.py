"""From LLaVA-format records to training samples, skipping bad ones out loud.

A record is LLaVA's JSON form: ``{"id", "image": "file.png" | [files] | PIL image
(optional: text-only samples have none), "conversations": [{"from", "value"}, ...]}``.
A training sample is ``{"input_ids", "labels", "pixel_values"}`` with one ``<image>``
placeholder id per image (see data.batching.collate).

Real data is dirty: a missing or corrupt image file, a conversation in the wrong shape,
a sample so long that cutting it to ``max_length`` would cut its image. Each such record
is skipped *with a reason*, counted in ``dataset.report``, and the run goes on. Nothing
is dropped silently and nothing is kept half-broken: every check happens here, up front,
so training never meets a bad sample.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from minillava.conversation import IMAGE_MARKER, TokenizationMismatchError, get_template, to_messages
from minillava.data.batching import pad_views
from minillava.splicing import IGNORE_INDEX


class SkipSample(Exception):
    """A record that cannot become a training sample; the message is the reason."""


@dataclass
class SkipReport:
    """Counts of skipped records by reason, with a few example ids for each."""

    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def skip(self, reason: str, record_id) -> None:
        self.reasons[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(record_id)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """A markdown table: kept, then each skip reason with its count and example ids."""
        lines = ["| records | count | examples |", "|---|---:|---|", f"| kept | {self.kept} | |"]
        for reason, n in self.reasons.most_common():
            lines.append(f"| skipped: {reason} | {n} | {', '.join(map(str, self.examples[reason]))} |")
        return "\n".join(lines)


def load_llava_json(path: str | Path) -> list[dict]:
    """Read a LLaVA JSON file (a list of records) or JSONL file (one record per line)."""
    text = Path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()] if str(path).endswith(".jsonl") \
        else json.loads(text)


class InstructionDataset(torch.utils.data.Dataset):
    """LLaVA-format records -> samples for ``train``, with a report of what was skipped.

    Args:
        records: LLaVA JSON records (or rows of a datasets.Dataset with PIL images).
        tokenizer: a transformers tokenizer with ``<image>`` as one token.
        template: conversation template name (``"plain"`` for stage 1, ``"vicuna_v1"``...).
        processor: image -> (3, H, W) tensor (e.g. ``image.ImageProcessor``-style preprocess),
            or for AnyRes -> (views, 3, H, W): base view and tiles of that one image.
        image_folder: where relative image paths are resolved.
        tokens_per_image: how many positions an image takes after splicing.
        max_length: the longest spliced sequence allowed; longer text is cut, never an image.
    """

    def __init__(self, records, tokenizer, template: str, processor: Callable, *, image_folder=None,
                 tokens_per_image: int, max_length: int | None = None, system: str | None = None):
        self.tokenizer, self.template, self.processor = tokenizer, get_template(template), processor
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.tokens_per_image, self.max_length, self.system = tokens_per_image, max_length, system
        self.samples, self.lengths, self.has_image = [], [], []
        self.report = SkipReport()
        for i, record in enumerate(records):
            try:
                sample = self._prepare(record)
            except SkipSample as reason:
                self.report.skip(str(reason), record.get("id", i) if isinstance(record, dict) else i)
                continue
            self.samples.append(sample)
            n_images = len(sample["images"])
            self.lengths.append(len(sample["input_ids"]) + n_images * (tokens_per_image - 1))
            self.has_image.append(n_images > 0)
        self.report.kept = len(self.samples)

    def _images(self, record) -> list:
        images = record.get("image")
        images = [] if images is None else images if isinstance(images, list) else [images]
        loaded = []
        for image in images:
            if isinstance(image, Image.Image):
                loaded.append(image)
                continue
            path = Path(image) if self.image_folder is None else self.image_folder / image
            if not path.is_file():
                raise SkipSample("missing image file")
            try:
                with Image.open(path) as im:
                    im.load()  # decode fully now: a truncated file fails here, not mid-training
            except (OSError, SyntaxError):
                raise SkipSample("corrupt image file")
            loaded.append(path)
        return loaded

    def _prepare(self, record) -> dict:
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise SkipSample("malformed record: no 'conversations' list")
        try:
            messages = to_messages(record["conversations"])
        except (ValueError, TypeError, KeyError) as err:
            raise SkipSample(f"malformed conversation: {str(err).split(';')[0]}")
        images = self._images(record)
        n_markers = sum(m["content"].count(IMAGE_MARKER) for m in messages)
        if n_markers != len(images):
            raise SkipSample("image count differs from <image> markers")
        try:
            tokens = self.template.tokenize(messages, self.tokenizer, system=self.system)
        except TokenizationMismatchError:
            raise SkipSample("tokenization mismatch (template does not fit the tokenizer)")
        except ValueError as err:
            raise SkipSample(f"cannot tokenize: {str(err).split(';')[0]}")
        ids, labels = tokens["input_ids"], tokens["labels"]
        extra = len(images) * (self.tokens_per_image - 1)
        if self.max_length is not None and len(ids) + extra > self.max_length:
            image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
            last_image = max((i for i, t in enumerate(ids) if t == image_id), default=-1)
            keep = self.max_length - extra  # text positions left once the images are spliced in
            if last_image >= keep:
                raise SkipSample("an image would be truncated by max_length")
            ids, labels = ids[:keep], labels[:keep]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            raise SkipSample("no supervised tokens left")
        return {"input_ids": ids, "labels": labels, "images": images}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        """input_ids, labels; pixel_values (n_images, C, H, W), or for AnyRes (n_images, views,
        C, H, W) zero-padded along the views, with image_sizes [(height, width), ...]; None
        for text only."""
        sample = self.samples[i]
        processed = [self._process(image) for image in sample["images"]]
        pixels = [pixel for pixel, _ in processed]
        item = {"input_ids": sample["input_ids"], "labels": sample["labels"], "pixel_values": None}
        if pixels and pixels[0].dim() == 4:   # AnyRes: views per image, sizes needed to undo the tiling
            item.update(pixel_values=pad_views(pixels), image_sizes=[size for _, size in processed])
        elif pixels:
            item["pixel_values"] = torch.stack(pixels)
        return item

    def _process(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """The processed pixels and the original (height, width)."""
        if isinstance(image, Path):
            with Image.open(image) as opened:
                return self.processor(opened), (opened.height, opened.width)
        return self.processor(image), (image.height, image.width)
