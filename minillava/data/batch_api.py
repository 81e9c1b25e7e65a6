"""The OpenAI Batch API path: half the price, up to 24 hours, no rate limits to fight.

Instead of calling the endpoint, write every request into a JSONL file, one line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``, upload it as a
batch job (at most 50,000 requests per file), and later download the results file.
``custom_id`` is deterministic per image and kind ("base-000007-conversation"), so
results map back to their requests whatever order they come in. Ingesting puts each
answer into the same cache a live run uses; the engine then runs with nothing to send.

Uploading and polling are left to the ``openai`` client (``client.files.create``,
``client.batches.create``, ``client.batches.retrieve``): they need no logic of ours.
"""

import json
from collections import Counter
from pathlib import Path

from minillava.data.cache import Cache

MAX_BATCH_REQUESTS = 50_000


def write_batch_requests(requests, path: str | Path, cache: Cache | None = None) -> int:
    """Write the requests (those not in cache, each key once) as a Batch API JSONL file; returns the count."""
    todo = {r.key: r for r in requests if cache is None or r.key not in cache}
    if len(todo) > MAX_BATCH_REQUESTS:
        raise ValueError(f"{len(todo)} requests exceed the Batch API's {MAX_BATCH_REQUESTS} per file; "
                         f"split the seeds into several runs")
    ids = Counter(r.custom_id for r in todo.values())
    clashes = [i for i, n in ids.items() if n > 1]
    if clashes:
        raise ValueError(f"custom_id {clashes[0]!r} names two different requests; give items unique ids")
    with open(path, "w", encoding="utf-8") as f:
        for r in todo.values():
            body = {"model": r.model, "messages": r.messages, **r.params}
            f.write(json.dumps({"custom_id": r.custom_id, "method": "POST", "url": "/v1/chat/completions",
                                "body": body}, ensure_ascii=False) + "\n")
    return len(todo)


def ingest_batch_results(path: str | Path, requests, cache: Cache) -> Counter:
    """Put the answers of a Batch API results file into the cache; returns what happened per line.

    Counts "ingested", "already cached", "error: <code>" (the request failed in the batch;
    a later run or batch sends it again), "unknown custom_id" and "malformed line".
    """
    by_id = {r.custom_id: r for r in requests}
    outcome = Counter()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            custom_id, response = record["custom_id"], record.get("response") or {}
        except (json.JSONDecodeError, KeyError, TypeError):
            outcome["malformed line"] += 1
            continue
        request = by_id.get(custom_id)
        if request is None:
            outcome["unknown custom_id"] += 1
        elif response.get("status_code") != 200:
            error = record.get("error") or {}
            outcome[f"error: {error.get('code') or response.get('status_code')}"] += 1
        elif request.key in cache:
            outcome["already cached"] += 1
        else:
            try:
                body = response["body"]
                text = body["choices"][0]["message"]["content"] or ""
                usage = body.get("usage") or {}
            except (KeyError, IndexError, TypeError, AttributeError):
                outcome["malformed line"] += 1
                continue
            cache.put(request.key, text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            outcome["ingested"] += 1
    return outcome
