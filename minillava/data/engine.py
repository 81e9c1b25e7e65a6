"""The data engine: from scenes to LLaVA training samples, through a text-only teacher.

For each image and each response kind (conversation, detail, complex) the engine

1. writes the image as text (``prompts.toy_context`` / ``coco_context``),
2. builds a chat request: system message, few-shot turns, the context (``Request``),
3. looks the request up in the cache, or asks the teacher (concurrently, counted),
4. parses the reply, strips lead-ins, drops leaking turns (``parse``),
5. drops turns that contradict the annotation (``validate``),
6. lays the rest out as a LLaVA sample, <image> before or after the first question.

Every request ends in exactly one place of the ``Report``: a kept sample, a dropped
sample (with its reason), or a failed request (with its reason); every dropped turn
and every failed attempt is counted too. Nothing is silently lost.

In a notebook, one call shows every intermediate text::

    trace = sample_from_scene(7, "conversation")
    trace.request.messages[-1]["content"], trace.raw, trace.turns, trace.dropped, trace.sample
"""

import asyncio
import json
import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from minillava.data.cache import Cache, request_key
from minillava.data.parse import ParseError, clean_turns, parse_response, to_llava_turns
from minillava.data.prompts import (BRIEF_INSTRUCTIONS, DETAIL_INSTRUCTIONS, KINDS, build_messages,
                                    coco_context, few_shot, toy_context)
from minillava.data.teachers import (RuleTeacher, TeacherError, cost_usd, estimate_tokens, is_json_mode,
                                     messages_tokens)
from minillava.data.validate import Facts, check, coco_facts, toy_facts
from minillava.toyworld import make_scene, render


# ----------------------------------------------------------------------------
# Items and requests


@dataclass(frozen=True)
class Item:
    """One image as the engine sees it: where it is, how the teacher reads it, what is checkable."""
    id: str
    image: str                 # path relative to the output folder: LLaVA's "image" field
    context: str               # the symbolic image the teacher reads
    facts: Facts | None        # what answers are checked against (None: not checked)


def toy_item(scene: int | dict, variant: str = "base") -> Item:
    """The item for a toy scene, given its seed or its annotation."""
    annotation = make_scene(scene, variant).annotation() if isinstance(scene, int) else scene
    item_id = f"{annotation['variant']}-{annotation['seed']:06d}"
    return Item(item_id, f"images/{item_id}.png", toy_context(annotation), toy_facts(annotation))


def coco_item(image: dict, captions: list[str], instances: list[dict], categories: dict[int, str]) -> Item:
    """The item for a COCO image: its "images" entry, its captions, its "annotations", id -> name."""
    try:
        names = [categories[a["category_id"]] for a in instances]
        objects = [(name, a["bbox"]) for name, a in zip(names, instances)]
        context = coco_context(captions, objects, image["width"], image["height"])
        return Item(str(image["id"]), image["file_name"], context, coco_facts(names, list(categories.values())))
    except KeyError as err:
        raise ValueError(f"COCO record is missing {err}: pass an 'images' entry (id, file_name, width, "
                         f"height) and 'annotations' entries (category_id, bbox) of one image") from None


@dataclass(frozen=True)
class Request:
    """One chat request to the teacher. key hashes what determines the answer (the cache key)."""
    item: Item
    kind: str
    model: str
    messages: list
    params: dict
    key: str

    @property
    def custom_id(self) -> str:
        """Deterministic per image and kind: the Batch API's custom_id and the sample id."""
        return f"{self.item.id}-{self.kind}"


def make_requests(items: list[Item], kinds=KINDS, model: str = RuleTeacher.model,
                  params: dict | None = None) -> list[Request]:
    """A request per item and kind, in that order."""
    params = dict(params or {})
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown response kinds {sorted(unknown)}; choose from {KINDS}")
    json_mode = is_json_mode(params)
    requests = []
    for item in items:
        for kind in kinds:
            messages = build_messages(kind, item.context, json_mode)
            requests.append(Request(item, kind, model, messages, params, request_key(model, messages, params)))
    return requests


# ----------------------------------------------------------------------------
# One reply -> one sample


class Drop(NamedTuple):
    turn: tuple[str, str]   # (question, answer) as the teacher wrote them, lead-ins stripped
    reason: str             # the category counted in the report, e.g. "hallucination: count"
    detail: str = ""        # the specific problem, for reading


@dataclass
class Trace:
    """Everything one request went through; sample is None when nothing survived."""
    request: Request
    raw: str | None = None
    turns: list = field(default_factory=list)     # kept (question, answer) turns
    dropped: list = field(default_factory=list)   # Drop records
    sample: dict | None = None
    reason: str | None = None                     # why there is no sample
    detail: str = ""                              # ... in words


def process(request: Request, text: str) -> Trace:
    """Parse, clean and validate a teacher's reply, and lay it out as a LLaVA sample."""
    trace = Trace(request, raw=text)
    try:
        pairs, unanswered = parse_response(text, request.kind, is_json_mode(request.params))
    except ParseError as err:
        trace.reason, trace.detail = "unparseable", str(err)
        return trace
    trace.dropped += [Drop((q, ""), "unanswered question") for q in unanswered]
    kept, leaked = clean_turns(pairs)
    trace.dropped += [Drop(turn, reason) for turn, reason in leaked]
    for q, a in kept:
        problems = check(q, a, request.item.facts) if request.item.facts else []
        if problems:
            trace.dropped.append(Drop((q, a), "hallucination: " + problems[0].split(":")[0], "; ".join(problems)))
        else:
            trace.turns.append((q, a))
    if not trace.turns:
        trace.reason, trace.detail = "no turn left", "; ".join(sorted({d.reason for d in trace.dropped}))
        return trace
    rng = random.Random(request.key)   # per request: a rerun lays the sample out identically
    turns = [(rng.choice(DETAIL_INSTRUCTIONS), trace.turns[0][1])] if request.kind == "detail" else trace.turns
    trace.sample = {"id": request.custom_id, "image": request.item.image,
                    "conversations": to_llava_turns(turns, rng)}
    return trace


# ----------------------------------------------------------------------------
# The run report


@dataclass
class Report:
    """What a run did. Every request is kept, dropped or failed; every failed attempt is counted."""
    model: str
    requests: int = 0                                   # requests the run needed
    cache_hits: int = 0                                 # answered from the cache: nothing sent
    sent: int = 0                                       # answered by the teacher in this run
    failed: Counter = field(default_factory=Counter)    # requests given up, by last failure
    failures: Counter = field(default_factory=Counter)  # every failed attempt, retried or not
    kept: Counter = field(default_factory=Counter)      # samples by kind
    dropped: Counter = field(default_factory=Counter)   # samples by reason
    turns_kept: Counter = field(default_factory=Counter)     # turns by kind
    turns_dropped: Counter = field(default_factory=Counter)  # turns by reason
    prompt_tokens: int = 0                              # spent in this run (cache hits are free)
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    cache_repaired: int = 0                             # torn cache lines cut off (resumed after a kill)
    captions: int = 0                                   # stage-1 caption samples written

    def add(self, trace: Trace) -> None:
        kind = trace.request.kind
        if trace.sample is not None:
            self.kept[kind] += 1
        else:
            self.dropped[trace.reason] += 1
        self.turns_kept[kind] += len(trace.turns)
        self.turns_dropped.update(d.reason for d in trace.dropped)

    def to_dict(self) -> dict:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}

    def summary(self) -> str:
        cost = "unknown (no price for this model)" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        lines = [f"model {self.model}: {self.requests} requests, {self.cache_hits} from cache, "
                 f"{self.sent} sent, {sum(self.failed.values())} failed",
                 f"samples kept {dict(self.kept)}, dropped {dict(self.dropped)}",
                 f"turns kept {sum(self.turns_kept.values())}, dropped {dict(self.turns_dropped)}",
                 f"failed attempts {dict(self.failures)}; requests given up {dict(self.failed)}",
                 f"tokens {self.prompt_tokens} prompt + {self.completion_tokens} completion, cost {cost}"]
        if self.captions:
            lines.append(f"stage-1 caption samples {self.captions}")
        if self.cache_repaired:
            lines.append(f"cache: {self.cache_repaired} torn line cut off (an interrupted write; resent)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------
# Running requests


def _uncached(requests: list[Request], cache: Cache) -> list[Request]:
    """The requests the cache cannot answer, each distinct request once."""
    return list({r.key: r for r in requests if r.key not in cache}.values())


def run_sync(coroutine):
    """asyncio.run, also inside a running event loop (Jupyter), by using a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _fetch(todo: list[Request], teacher, cache: Cache, concurrency: int, report: Report, progress: bool):
    """Ask the teacher for every request in todo, `concurrency` at a time, caching each answer."""
    from tqdm.auto import tqdm

    pending = iter(todo)   # shared by the workers: each takes the next request when it is free
    prices = getattr(teacher, "prices", None)

    with tqdm(total=len(todo), desc=f"teacher {teacher.model}", unit="req", disable=not progress) as bar:
        async def worker():
            for request in pending:
                try:
                    completion = await teacher.complete(request.messages, request.params)
                except TeacherError as err:
                    report.failures.update(err.failures)
                    report.failed[err.failures[-1]] += 1
                else:
                    cache.put(request.key, completion.text, completion.prompt_tokens, completion.completion_tokens)
                    report.failures.update(completion.failures)
                    report.sent += 1
                    report.prompt_tokens += completion.prompt_tokens
                    report.completion_tokens += completion.completion_tokens
                bar.update()

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo))))))
    report.cost_usd = cost_usd(teacher.model, report.prompt_tokens, report.completion_tokens, prices)


def run(requests: list[Request], teacher=None, cache: Cache | None = None, *, concurrency: int = 8,
        progress: bool = False) -> tuple[list[Trace], Report]:
    """Answer every request (cache first), and process each answer into a Trace.

    Failed requests have no trace; they are counted in report.failed and retried by a
    rerun with the same cache.
    """
    teacher = teacher or RuleTeacher()
    cache = cache if cache is not None else Cache()
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    report = Report(teacher.model, requests=len(requests), cache_repaired=cache.repaired)
    todo = _uncached(requests, cache)
    report.cache_hits = sum(r.key in cache for r in requests)
    run_sync(_fetch(todo, teacher, cache, concurrency, report, progress))
    traces = [process(r, cache.get(r.key)["text"]) for r in requests if r.key in cache]
    for trace in traces:
        report.add(trace)
    return traces, report


def sample_from_scene(scene: int | dict, kind: str = "conversation", teacher=None, *,
                      variant: str = "base", params: dict | None = None) -> Trace:
    """One toy scene (seed or annotation) to one training sample, every step kept in the Trace."""
    teacher = teacher or RuleTeacher()
    (request,) = make_requests([toy_item(scene, variant)], [kind], teacher.model, params)
    traces, report = run([request], teacher)
    if not traces:
        raise RuntimeError(f"the teacher failed: {dict(report.failed)}")
    return traces[0]


def plan(requests: list[Request], cache: Cache, prices: tuple | None = None) -> dict:
    """What a run would send and roughly cost, without sending anything (the dry run).

    Completion tokens are estimated from the few-shot answers' lengths (typical) and
    bounded by max_tokens when the request sets it.
    """
    def typical_answer(request):   # the mean length of this kind's few-shot answers
        examples = few_shot(request.kind, is_json_mode(request.params))
        return sum(estimate_tokens(answer) for _, answer in examples) // len(examples)

    todo = _uncached(requests, cache)
    prompt = sum(messages_tokens(r.messages) for r in todo)
    typical = sum(typical_answer(r) for r in todo)
    bound = sum(r.params.get("max_tokens", 0) for r in todo) if all("max_tokens" in r.params for r in todo) else None
    model = requests[0].model if requests else ""
    return {"model": model, "requests": len(requests), "cached": sum(r.key in cache for r in requests),
            "to_send": len(todo),
            "prompt_tokens": prompt, "completion_tokens": typical,
            "cost_usd": cost_usd(model, prompt, typical, prices),
            "max_cost_usd": None if bound is None else cost_usd(model, prompt, bound, prices)}


# ----------------------------------------------------------------------------
# Files


def caption_samples(seeds, variant: str = "base") -> list[dict]:
    """Stage-1 (feature alignment) samples: a brief-description instruction and one true caption."""
    samples = []
    for seed in seeds:
        item_id = f"{variant}-{seed:06d}"
        rng = random.Random(f"caption-{item_id}")
        caption = rng.choice(make_scene(seed, variant).captions())
        samples.append({"id": f"{item_id}-caption", "image": f"images/{item_id}.png",
                        "conversations": to_llava_turns([(rng.choice(BRIEF_INSTRUCTIONS), caption)], rng)})
    return samples


def _write_json(path: Path, data) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a JSON file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def generate(seeds, out_dir: str | Path, teacher=None, *, kinds=KINDS, variant: str = "base",
             params: dict | None = None, concurrency: int = 8, progress: bool = False) -> Report:
    """A full toy-world run into out_dir, resumable: rerun the same call after any interruption.

    Writes images/*.png, cache.jsonl (every answer, append-only), llava_instruct.json
    (conversation/detail/complex samples), llava_captions.json (stage 1) and report.json.
    """
    teacher = teacher or RuleTeacher()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    items = [toy_item(seed, variant) for seed in seeds]
    for seed, item in zip(seeds, items):
        path = out / item.image
        if not path.exists():   # a resumed run keeps the images it already drew
            render(make_scene(seed, variant)).save(path)
    cache = Cache(out / "cache.jsonl")
    traces, report = run(make_requests(items, kinds, teacher.model, params), teacher, cache,
                         concurrency=concurrency, progress=progress)
    captions = caption_samples(seeds, variant)
    report.captions = len(captions)
    _write_json(out / "llava_instruct.json", [t.sample for t in traces if t.sample is not None])
    _write_json(out / "llava_captions.json", captions)
    _write_json(out / "report.json", report.to_dict())
    return report


def to_dataset(samples: list[dict], root: str | Path) -> "datasets.Dataset":  # noqa: F821
    """A datasets.Dataset of LLaVA samples; images load from root / sample["image"] (None if text-only)."""
    import datasets   # heavy import, only needed here

    features = datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(),
        "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")})})
    rows = [{"id": s["id"], "conversations": s["conversations"],
             "image": str(Path(root) / s["image"]) if "image" in s else None} for s in samples]
    return datasets.Dataset.from_list(rows, features=features)
