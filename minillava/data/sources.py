"""Where training records come from: LLaVA JSON/JSONL files, `datasets` folders, parquet files, the hub.

LLaVA-1.5's stage-2 file holds 665K records (about 1 GB of JSON). Reading it into a list of
dicts costs gigabytes before training starts, so a source here is an *index* instead: for a
JSON or JSONL file, each record's byte offset and size in the file, and two cheap numbers per
record for length grouping -- its word count and its number of images, as LLaVA's
``modality_lengths`` estimates lengths without tokenizing. A record is read (and parsed)
only when the training loop asks for it: ``records[i]``. Arrow-backed sources (a folder
written by ``datasets.Dataset.save_to_disk``, a parquet file, a hub dataset) are memory-mapped
by ``datasets`` already; their images stay undecoded until a record is read.

The whole file is still parsed once, up front: a malformed file stops the run at once, with
the file, line and column, rather than hours later. Errors about the data as a whole (a file
that is not JSON, not a list of records, a table without a ``conversations`` column, a hub id
that cannot be reached) raise ``DataError``, a one-line message naming the problem and the fix.
Problems of single records (a missing image, a conversation in the wrong shape) are not
errors here: the dataset skips those records and counts them (data.dataset).
"""

import codecs
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np

from minillava.errors import UserError

CHUNK = 1 << 20          # characters of a JSON list decoded at a time while indexing it
MAX_RECORD = 64 << 20    # a "record" still unparsed after this many characters is malformed, not cut off
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")   # owner/name
KINDS = "a LLaVA JSON/JSONL file, a parquet file, a `datasets` folder (save_to_disk) or a hub id (owner/name)"


class DataError(UserError):
    """A data source that cannot be used; the message names the source, the problem and the fix."""


def source_kind(spec: str) -> str:
    """What ``spec`` names, without reading it: json, jsonl, parquet, datasets or hub."""
    path = Path(spec)
    if path.is_file():
        if path.suffix in (".json", ".jsonl", ".parquet"):
            return path.suffix[1:]
        raise DataError(f"{spec} is neither .json, .jsonl nor .parquet; give {KINDS}")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "datasets"
        raise DataError(f"{spec} is a folder but not a `datasets` folder (no dataset_info.json or "
                        f"dataset_dict.json: write it with Dataset.save_to_disk); give {KINDS}")
    if HUB_ID.match(spec) and not path.suffix:
        if offline():
            raise DataError(f"no file or folder at {spec}, and as a hub id it cannot be reached: the hub is switched "
                            "off (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE); give a local source, or unset it")
        return "hub"
    raise DataError(f"no file at {spec}; give {KINDS}")


def offline() -> bool:
    """Whether the environment switches the Hugging Face hub off (as huggingface_hub reads it)."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def open_source(spec: str):
    """The records of ``spec`` (see ``source_kind``) as an indexed, lazily read sequence."""
    kind = source_kind(spec)
    if kind in ("json", "jsonl"):
        return JsonRecords(spec)
    import datasets   # heavy (seconds): only for the Arrow-backed sources

    if kind == "parquet":
        return ArrowRecords(datasets.Dataset.from_parquet(spec), Path(spec).name)
    if kind == "datasets":
        return ArrowRecords(_one_split(datasets.load_from_disk(spec), spec), Path(spec).name)
    try:
        loaded = datasets.load_dataset(spec)
    except (OSError, ConnectionError, ValueError) as err:   # offline, unknown id, no access
        raise DataError(f"cannot reach the hub dataset {spec} ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "where the hub can be reached, save it with datasets.load_dataset(...).save_to_disk(DIR) "
                        "and give DIR") from None
    return ArrowRecords(_one_split(loaded, spec), spec)


def estimate(record) -> tuple[int, int]:
    """A record's words (summed over its turns, as LLaVA's modality_lengths) and its number of images."""
    if not isinstance(record, dict):
        return 0, 0
    turns = record.get("conversations")
    words = sum(len(str(t.get("value", "")).split()) for t in turns if isinstance(t, dict)) \
        if isinstance(turns, list) else 0
    image = record.get("image")
    return words, 0 if image is None else len(image) if isinstance(image, list) else 1


class JsonRecords:
    """A LLaVA JSON (a list of records) or JSONL (a record per line) file, indexed, read record by record.

    Memory: four numbers per record (offset, size, words, images): 18 bytes.
    """

    def __init__(self, path: str | Path):
        self.path, self.name = Path(path), Path(path).name
        rows = _index_jsonl(self.path) if self.path.suffix == ".jsonl" else _index_json(self.path)
        table = np.fromiter(itertools.chain.from_iterable(rows), np.int64).reshape(-1, 4)   # no list of tuples
        self.offsets, self.sizes = table[:, 0].copy(), table[:, 1].astype(np.int32)   # copies: the table goes
        self.words, self.images = table[:, 2].astype(np.int32), table[:, 3].astype(np.int16)
        _require_conversations(self, (json.loads(self._read(i)) for i in range(min(len(self), 100))))

    def __len__(self) -> int:
        return len(self.offsets)

    def _read(self, i: int) -> bytes:
        # Opened per read: a file object shared by forked DataLoader workers would share its position.
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[i]))
            return f.read(int(self.sizes[i]))

    def __getitem__(self, i: int) -> dict:
        return json.loads(self._read(i))


def _index_jsonl(path: Path):
    """(offset, size, words, images) of each line's record; a line that is not JSON stops with its position."""
    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    where = f"line {number}, column {err.colno}" if isinstance(err, json.JSONDecodeError) \
                        else f"line {number}"
                    raise DataError(f"{path}: not valid JSON at {where} ({_why(err)}); fix or remove that "
                                    "line (JSONL: one record per line)") from None
                yield offset, len(line), *estimate(record)
            offset += len(line)


def _index_json(path: Path):
    """(offset, size, words, images) of each record of a JSON list, decoded a chunk at a time.

    ``raw_decode`` parses one record and says where it ended; the text is decoded from UTF-8
    incrementally, so byte offsets are the encoded lengths of what was consumed.
    """
    decoder, utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        text, pos, offset, eof = "", 0, 0, False   # offset: byte position of text[pos] in the file
        lines_before, line_start, count = 0, 0, 0   # dropped: newlines, characters of the current line; records

        def more() -> None:
            nonlocal text, pos, eof, lines_before, line_start
            lines_before += text.count("\n", 0, pos)
            newline = text.rfind("\n", 0, pos)
            line_start = pos - newline - 1 if newline >= 0 else line_start + pos
            chunk = f.read(CHUNK)
            eof = not chunk
            text = text[pos:] + utf8.decode(chunk, final=eof)
            pos = 0

        def fail(at: int, why: str) -> DataError:
            line, newline = lines_before + text.count("\n", 0, at) + 1, text.rfind("\n", 0, at)
            column = at - newline if newline >= 0 else line_start + at + 1
            return DataError(f"{path}: not valid JSON at line {line}, column {column} (record {count + 1}): {why}; "
                             "fix or remove that record")

        def skip_space() -> None:   # between records: JSON's whitespace (ASCII: a byte a character)
            nonlocal pos, offset
            while True:
                while pos < len(text) and text[pos] in " \t\n\r":
                    pos, offset = pos + 1, offset + 1
                if pos < len(text) or eof:
                    return
                more()

        def expect(character: str, why: str) -> None:
            nonlocal pos, offset
            skip_space()
            if text[pos:pos + 1] != character:
                raise fail(pos, "the list is not closed with ]" if pos >= len(text) else why)
            pos, offset = pos + 1, offset + 1

        try:
            more()
            skip_space()
            if text[pos:pos + 1] != "[":
                raise DataError(f"{path} does not hold a JSON list of LLaVA records (it starts with "
                                f"{text[pos:pos + 20]!r}); give a list [{{\"id\", \"image\", \"conversations\"}}, "
                                "...], or a JSONL file of such records")
            pos, offset = pos + 1, offset + 1
            skip_space()
            if text[pos:pos + 1] == "]":
                return
            while True:
                while True:
                    if not eof and len(text) - pos < CHUNK:
                        more()
                    try:
                        record, end = decoder.raw_decode(text, pos)
                        break
                    except json.JSONDecodeError as err:
                        if eof or len(text) - pos >= MAX_RECORD:
                            raise fail(err.pos, err.msg) from None
                        more()
                size = len(text[pos:end].encode())
                yield offset, size, *estimate(record)
                pos, offset, count = end, offset + size, count + 1
                skip_space()
                if text[pos:pos + 1] == "]":
                    return
                expect(",", "expected ',' or the list's closing ']' after a record")
                skip_space()
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not UTF-8 text ({_why(err)}); LLaVA files are UTF-8 JSON") from None


def _why(err: Exception) -> str:
    return err.msg if isinstance(err, json.JSONDecodeError) else str(err).split(":")[0]


class ArrowRecords:
    """A ``datasets.Dataset`` of LLaVA records (id, image, conversations), memory-mapped.

    Images stay encoded (``Image(decode=False)``: {"bytes", "path"}) until a record is read, so
    neither indexing nor a record's trip to a DataLoader worker decodes one.
    """

    def __init__(self, dataset, name: str):
        import datasets

        if "conversations" not in dataset.column_names:
            raise DataError(f"{name} has no 'conversations' column (it has {', '.join(dataset.column_names)}); "
                            "LLaVA records need conversations [{from, value}, ...] and an optional image")
        if isinstance(dataset.features.get("image"), datasets.Image):
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        self.dataset, self.name = dataset, name
        turns = (t for batch in dataset.select_columns(["conversations"]).iter(batch_size=10_000)   # memory flat
                 for t in batch["conversations"])
        self.words = np.fromiter((estimate({"conversations": t})[0] for t in turns), np.int32, len(dataset))
        self.images = _image_counts(dataset)
        _require_conversations(self, (dataset[i] for i in range(min(len(self), 100))))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[int(i)]


def _image_counts(dataset) -> np.ndarray:
    """Images per row, read from the Arrow column without decoding (or even copying) one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "image" not in dataset.column_names:
        return np.zeros(len(dataset), np.int16)
    counts = []
    for table in dataset.select_columns(["image"]).with_format("arrow").iter(batch_size=10_000):
        column = table.column("image")
        n = pc.list_value_length(column).fill_null(0) if pa.types.is_list(column.type) else pc.is_valid(column)
        counts.append(n.to_numpy(zero_copy_only=False).astype(np.int16))
    return np.concatenate(counts)


def _one_split(loaded, spec: str):
    """A Dataset, or the train split of a DatasetDict (or its only split)."""
    if not hasattr(loaded, "keys"):
        return loaded
    if "train" in loaded or len(loaded) == 1:
        return loaded["train" if "train" in loaded else next(iter(loaded))]
    raise DataError(f"{spec} holds the splits {', '.join(loaded)} and none is 'train'; save the split to train "
                    "on as a folder of its own (dataset_dict[NAME].save_to_disk(DIR)) and give DIR")


def _require_conversations(records, first) -> None:
    """Refuse a source none of whose first records is a LLaVA record: the wrong file, not a few bad records."""
    if len(records) == 0:
        raise DataError(f"{records.name} holds no records; give a file with LLaVA records in it")
    if not any(isinstance(r, dict) and isinstance(r.get("conversations"), list) for r in first):
        raise DataError(f"{records.name}: none of its first records has a 'conversations' list, so it is not "
                        "LLaVA data ({\"id\", \"image\", \"conversations\": [{\"from\", \"value\"}, ...]})")
