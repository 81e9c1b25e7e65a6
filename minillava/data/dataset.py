"""From LLaVA-format records to training samples, skipping bad ones out loud.

A record is LLaVA's JSON form: ``{"id", "image": "file.png" | [files] | PIL image
(optional: text-only samples have none), "conversations": [{"from", "value"}, ...]}``.
A training sample is ``{"input_ids", "labels", "pixel_values"}`` with one ``<image>``
placeholder id per image (see data.batching.collate).

Real data is dirty: a missing or corrupt image file, a conversation in the wrong shape,
a sample so long that cutting it to ``max_length`` would cut its image. Each such record
is skipped *with a reason*, counted in ``dataset.report``, and the run goes on. Nothing
is dropped silently and nothing is kept half-broken.

Two datasets make the same samples from the same records:

* ``InstructionDataset`` checks, tokenizes and measures every record up front, so training
  never meets a bad sample and the batches group by exact lengths. The chapters' toy data
  (thousands of records) uses it.
* ``LazyInstructionDataset`` does that work when a record is read, in ``__getitem__``: in
  DataLoader workers, while the model trains. LLaVA-1.5's 665K records would take about 1.5
  hours and 9.5 GB to prepare up front; lazily, the first step starts once the source is
  indexed (data.sources), batches group by LLaVA's cheap estimate (words + image tokens),
  and a bad record becomes a *skip marker* ``{"skip": reason, "id": id}`` that ``collate``
  drops and the training loop reports (``dataset.report.record_batch``). When more than
  ``max_skip_ratio`` of the records read were skipped, ``report.check()`` stops the run.
"""

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from minillava.conversation import IMAGE_MARKER, TokenizationMismatchError, get_template, to_messages
from minillava.data.batching import pad_views
from minillava.data.sources import DataError, estimate
from minillava.splicing import IGNORE_INDEX

MIN_SKIPS = 3   # 1 skip among the first 4 records read is 25%, but says little about the data


class SkipSample(Exception):
    """A record that cannot become a training sample; the message is the reason."""


class TooManySkipped(DataError):
    """More records were skipped than --max-skip-ratio allows; ``table`` holds the reasons and counts."""

    def __init__(self, message: str, table: str = ""):
        super().__init__(message)
        self.table = table


@dataclass
class SkipReport:
    """Counts of skipped records by reason, with a few example ids for each."""

    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    max_ratio: float | None = None   # check() stops above this share of skipped records (None: never)
    source: str = "records"          # named in the error
    hint: str = ""                   # what to look at first, named in the error
    kept_label = "kept"

    def skip(self, reason: str, record_id) -> None:
        self.reasons[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < 3 and record_id not in examples:   # read lazily, a bad record comes back each epoch
            examples.append(record_id)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    @property
    def seen(self) -> int:
        return self.kept + self.skipped

    def check(self) -> None:
        """Raise TooManySkipped when more than ``max_ratio`` of the records seen were skipped.

        The ratio is judged once there are MIN_SKIPS skips (at once when no skip is allowed).
        """
        skipped, seen, limit = self.skipped, self.seen, self.max_ratio
        if limit is None or skipped <= limit * seen or (skipped < MIN_SKIPS and limit > 0):
            return
        reasons = "; ".join(f"{reason}: {n} (e.g. {', '.join(map(str, self.examples[reason]))})"
                            for reason, n in self.reasons.most_common())
        raise TooManySkipped(f"{self.source}: {skipped} of the {seen} records read were skipped ({skipped / seen:.0%}, "
                             f"more than --max-skip-ratio {limit:g}): {reasons}. {self.hint}Fix or remove those "
                             "records, or allow more with --max-skip-ratio", self.summary())

    def summary(self) -> str:
        """A markdown table: kept, then each skip reason with its count and example ids."""
        lines = ["| records | count | examples |", "|---|---:|---|", f"| {self.kept_label} | {self.kept} | |"]
        for reason, n in self.reasons.most_common():
            lines.append(f"| skipped: {reason} | {n} | {', '.join(map(str, self.examples[reason]))} |")
        return "\n".join(lines)


class ReadReport(SkipReport):
    """A SkipReport filled while training reads the records (LazyInstructionDataset): a record read
    twice (two epochs) counts twice."""

    kept_label = "kept (reads)"

    def record_batch(self, kept: int, skipped: list[tuple[str, object]]) -> None:
        """Count a micro-batch: ``kept`` samples used, ``skipped`` (reason, record id) pairs."""
        self.kept += kept
        for reason, record_id in skipped:
            self.skip(reason, record_id)


def load_llava_json(path: str | Path) -> list[dict]:
    """Read a LLaVA JSON file (a list of records) or JSONL file (one record per line)."""
    text = Path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()] if str(path).endswith(".jsonl") \
        else json.loads(text)


class SampleMaker:
    """What both datasets share: a record -> (input_ids, labels, images), then -> a training item.

    Args:
        tokenizer: a transformers tokenizer with ``<image>`` as one token.
        template: conversation template name (``"plain"`` for stage 1, ``"vicuna_v1"``...).
        processor: image -> (3, H, W) tensor (e.g. ``image.ImageProcessor``-style preprocess),
            or for AnyRes -> (views, 3, H, W): base view and tiles of that one image.
        image_folder: where relative image paths are resolved.
        tokens_per_image: how many positions an image takes after splicing.
        max_length: the longest spliced sequence allowed; longer text is cut, never an image.
    """

    def __init__(self, tokenizer, template: str, processor: Callable, *, image_folder=None,
                 tokens_per_image: int, max_length: int | None = None, system: str | None = None):
        self.tokenizer, self.template, self.processor = tokenizer, get_template(template), processor
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.tokens_per_image, self.max_length, self.system = tokens_per_image, max_length, system

    def _load(self, image) -> Image.Image:
        """A record's image, decoded: a PIL image as it is, a path (relative to image_folder), or
        a ``datasets`` image left encoded ({"bytes", "path"}). Raises SkipSample if it cannot be."""
        if isinstance(image, Image.Image):
            return image
        if isinstance(image, dict) and image.get("bytes") is not None:
            source = io.BytesIO(image["bytes"])
        else:
            source = self._path(image.get("path") if isinstance(image, dict) else image)
        try:
            with Image.open(source) as opened:
                opened.load()   # decode fully now: a truncated file fails here, not mid-batch
        except (OSError, SyntaxError):
            raise SkipSample("corrupt image file")
        return opened

    def _path(self, image) -> Path:
        if not isinstance(image, (str, Path)):
            raise SkipSample("malformed record: 'image' is not a file name")
        path = Path(image) if self.image_folder is None else self.image_folder / image
        if not path.is_file():
            raise SkipSample("missing image file")
        return path

    def _prepare(self, record, load: Callable) -> dict:
        """input_ids, labels and the record's images as ``load`` returns them; SkipSample if it is bad."""
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise SkipSample("malformed record: no 'conversations' list")
        conversations = record["conversations"]
        if conversations and isinstance(conversations[0], dict) and conversations[0].get("from") == "gpt":
            # LLaVA's preprocess (v1, llama_2, mpt) drops a first turn that is not the human's: some
            # ShareGPT records of the 665K mixture open with the assistant.
            conversations = conversations[1:]
        try:
            messages = to_messages(conversations)
        except (ValueError, TypeError, KeyError) as err:
            raise SkipSample(f"malformed conversation: {str(err).split(';')[0]}")
        images = record.get("image")
        images = [load(image) for image in ([] if images is None else images if isinstance(images, list) else [images])]
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

    def _item(self, sample: dict) -> dict:
        """input_ids, labels; pixel_values (n_images, C, H, W), or for AnyRes (n_images, views,
        C, H, W) zero-padded along the views, with image_sizes [(height, width), ...]; None
        for text only."""
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
        if not isinstance(image, Image.Image):   # a datasets image left encoded
            image = self._load(image)
        return self.processor(image), (image.height, image.width)


class InstructionDataset(SampleMaker, torch.utils.data.Dataset):
    """LLaVA-format records -> samples for ``train``, every record checked up front, with a report
    of what was skipped. ``lengths`` are exact spliced lengths (for length grouping).

    Args:
        records: LLaVA JSON records (or rows of a datasets.Dataset with PIL images); the rest
            as ``SampleMaker``.
    """

    def __init__(self, records, tokenizer, template: str, processor: Callable, **options):
        super().__init__(tokenizer, template, processor, **options)
        self.samples, self.lengths, self.has_image = [], [], []
        self.report = SkipReport()
        for i, record in enumerate(records):
            try:
                sample = self._prepare(record, self._check)
            except SkipSample as reason:
                self.report.skip(str(reason), record.get("id", i) if isinstance(record, dict) else i)
                continue
            self.samples.append(sample)
            n_images = len(sample["images"])
            self.lengths.append(len(sample["input_ids"]) + n_images * (self.tokens_per_image - 1))
            self.has_image.append(n_images > 0)
        self.report.kept = len(self.samples)

    def _check(self, image):
        """The image, decoded once to prove it can be; kept as its path (bytes, not megabytes) if it has one."""
        self._load(image)
        return self._path(image) if isinstance(image, (str, Path)) else image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self._item(self.samples[i])


class LazyInstructionDataset(SampleMaker, torch.utils.data.Dataset):
    """The same samples as ``InstructionDataset``, each made when it is read (see the module docstring).

    Args:
        records: a source from ``data.sources.open_source`` (or any sequence of LLaVA records).
        max_skip_ratio: the share of skipped records ``report.check()`` allows.
        name: the data's name in the skip report's error (default: the source's name).
        The rest as ``SampleMaker``.

    ``lengths`` estimate each spliced length as LLaVA does (words + image tokens) and
    ``has_image`` tells the modality, both without reading an image or running the tokenizer.
    ``dataset[i]`` is a sample, or ``{"skip": reason, "id": record id}`` for a bad record.
    """

    def __init__(self, records, tokenizer, template: str, processor: Callable, *, max_skip_ratio: float = 0.05,
                 name: str | None = None, **options):
        super().__init__(tokenizer, template, processor, **options)
        self.records = records
        if hasattr(records, "words"):   # an indexed source has its estimates already
            words, images = records.words, records.images
        else:
            words, images = np.array([estimate(record) for record in records], dtype=np.int64).reshape(-1, 2).T
        self.lengths = np.asarray(words, dtype=np.int64) + np.asarray(images, dtype=np.int64) * self.tokens_per_image
        self.has_image = np.asarray(images) > 0
        folder = f"image paths are resolved in {self.image_folder}; " if self.image_folder is not None else ""
        self.report = ReadReport(max_ratio=max_skip_ratio, source=name or getattr(records, "name", "records"),
                                 hint=folder)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        try:
            return self._item(self._prepare(record, self._load))
        except SkipSample as reason:
            return {"skip": str(reason), "id": record.get("id", i) if isinstance(record, dict) else i}
