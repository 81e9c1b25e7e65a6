"""Data mixing: the mixture decides the behaviour.

LLaVA-1.5's stage-2 data is a *mix* (665K samples): the GPT-4 instructions, academic VQA
with a format prompt ("Answer the question using a single word or phrase."), multiple
choice with a letter prompt, and text-only ShareGPT chats. Each source teaches a
behaviour: without the format prompts, short-answer accuracy falls because answers get
verbose; without text-only chats, the model forgets how to chat without an image.

Here each source is a list of LLaVA records with a weight; ``mix`` draws a total number
of records so that each source's share follows the weights (largest-remainder rounding;
a source smaller than its share is cycled through again, reshuffled), shuffles the
result, and returns a table of the mixture it *actually* used. The builders below make
the toy counterparts of LLaVA-1.5's academic sources.
"""

import random
from dataclasses import dataclass

from minillava.data.engine import caption_samples, toy_item
from minillava.data.rules import FORMAT_PROMPT, knowledge_qa, short_answer_qa, text_only_chat
from minillava.toyworld import COLORS, SHAPES, make_scene

CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCD"


@dataclass
class Source:
    """A named list of LLaVA records and its weight in the mixture."""

    name: str
    records: list[dict]
    weight: float


def _record(record_id: str, turns: list[tuple[str, str]], seed: int | None = None) -> dict:
    """LLaVA JSON for (question, answer) turns; an image (first question gets <image>) if seed is given."""
    conversations = []
    for i, (q, a) in enumerate(turns):
        human = f"<image>\n{q}" if (i == 0 and seed is not None) else q
        conversations += [{"from": "human", "value": human}, {"from": "gpt", "value": a}]
    record = {"id": record_id, "conversations": conversations}
    if seed is not None:
        record["image"] = toy_item(seed).image
    return record


def vqa_records(seeds, per_image: int = 2) -> list[dict]:
    """Academic-style short-answer VQA: one-word answers under the format prompt."""
    return [_record(f"vqa-{seed:06d}", short_answer_qa(make_scene(seed).annotation(), random.Random(f"vqa-{seed}"),
                                                         n=per_image), seed) for seed in seeds]


def _options(answer: str, rng: random.Random) -> list[str] | None:
    """Four options holding the answer, with distractors of the same kind (shape, colour, number)."""
    for pool in (SHAPES, tuple(COLORS), tuple(str(k) for k in range(1, 7))):
        if answer in pool:
            options = [answer] + rng.sample([p for p in pool if p != answer], 3)
            rng.shuffle(options)
            return options
    return None


def choice_records(seeds) -> list[dict]:
    """Multiple choice with the letter prompt, built from the short-answer facts."""
    records = []
    for seed in seeds:
        rng = random.Random(f"choice-{seed}")
        for q, a in short_answer_qa(make_scene(seed).annotation(), rng):
            options = _options(a, rng)
            if options:
                question = q.replace(f"\n{FORMAT_PROMPT}", "")
                lines = "\n".join(f"{letter}. {o}" for letter, o in zip(LETTERS, options))
                records.append(_record(f"choice-{seed:06d}", [(f"{question}\n{lines}\n{CHOICE_PROMPT}",
                                                               LETTERS[options.index(a)])], seed))
                break
    return records


def text_records(n: int, seed: int = 0) -> list[dict]:
    """Text-only chats and knowledge questions (the ShareGPT counterpart): no image key."""
    rng = random.Random(f"text-{seed}")
    return [_record(f"text-{seed}-{i:06d}", text_only_chat(rng) if i % 2 else knowledge_qa(rng, 2))
            for i in range(n)]


def caption_records(seeds) -> list[dict]:
    """Stage-1 captions (a brief-description instruction + one true caption)."""
    return caption_samples(seeds)


def mix(sources: list[Source], total: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Draw ``total`` records with source shares proportional to the weights.

    Returns (records, table): the shuffled mixture and, per source, its weight, the
    share it was asked for, the records drawn and how many times its pool was cycled.
    """
    weights = [s.weight for s in sources]
    if not sources or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"mix needs sources with non-negative weights summing to > 0, got {weights}")
    empty = [s.name for s in sources if s.weight > 0 and not s.records]
    if empty:
        raise ValueError(f"source(s) {empty} have a weight but no records; build them or set the weight to 0")
    exact = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    # Largest remainder: hand out the leftover records to the largest fractional parts.
    for i in sorted(range(len(sources)), key=lambda i: exact[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    rng = random.Random(seed)
    records, table = [], []
    for source, n in zip(sources, counts):
        drawn = []
        while len(drawn) < n:  # cycle through the pool, reshuffled each time
            pool = list(source.records)
            rng.shuffle(pool)
            drawn += pool[: n - len(drawn)]
        records += drawn
        table.append({"source": source.name, "weight": source.weight, "share": round(n / max(total, 1), 3),
                      "records": n, "pool": len(source.records),
                      "passes": round(n / len(source.records), 2) if source.records else 0})
    rng.shuffle(records)
    return records, table


def mixture_table(table: list[dict]) -> str:
    """The mixture as a markdown table."""
    lines = ["| source | weight | share | records | pool | passes |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['source']} | {r['weight']:g} | {r['share']:.1%} | {r['records']} | {r['pool']} | {r['passes']:g} |"
              for r in table]
    return "\n".join(lines)
