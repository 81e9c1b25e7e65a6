"""Never pay twice: an append-only JSONL cache of teacher answers.

A GPT-4 data run costs real money and takes hours, so it will be interrupted: a
crash, a rate-limit storm, a laptop lid. Every answer is therefore appended to a JSONL
file the moment it arrives, keyed by a hash of everything that determines it (model,
messages, sampling parameters). A rerun looks each request up first and sends only
what is missing:

* nothing lost: an answer on disk is never asked for again;
* nothing duplicated: a key is written once, and the output is rebuilt from the cache;
* a killed process can leave half a line at the end of the file; it is cut off (and
  counted) when the file is opened, and that one request is simply sent again.

Only the answer text and token usage are stored: never a key or request header.
"""

import hashlib
import json
from pathlib import Path


def request_key(model: str, messages: list[dict], params: dict) -> str:
    """A stable hash of what determines an answer; any change to the request changes it."""
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """{key: {"text", "prompt_tokens", "completion_tokens"}}, persisted to an append-only JSONL file.

    path=None keeps the cache in memory only (notebooks, tests).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self.repaired = 0   # torn lines cut off on opening
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self):
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):   # a write was cut short by a kill: drop the torn tail
            with open(self.path, "r+b") as f:
                f.truncate(end)
            self.repaired += 1
        for number, line in enumerate(data[:end].splitlines(), 1):
            try:
                record = json.loads(line)
                key, entry = record.pop("key"), record
            except (json.JSONDecodeError, KeyError, AttributeError):
                raise ValueError(f"{self.path}:{number} is not a cache record; the cache file was edited "
                                 f"or is not a cache: move it away to start afresh") from None
            self.entries.setdefault(key, entry)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Store an answer (first write wins) and append it to the file before returning."""
        if key in self.entries:
            return
        entry = {"text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        self.entries[key] = entry
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Closed (so flushed to the OS) before returning: a killed process loses nothing written.
            # No fsync: a power cut may lose the last lines, which a rerun simply sends again.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, **entry}, ensure_ascii=False) + "\n")
