"""Judges: who scores open-ended answers for LLaVA-Bench, behind one interface.

A judge reads what an LLM judge reads -- the image as text (captions and boxes), the
question and two answers -- and gives each answer a score from 1 to 10::

    verdicts = judge.judge_many([JudgeRequest(context, question, answer_1, answer_2), ...])
    verdict.scores    # (score of Assistant 1, score of Assistant 2), or None if it failed
    verdict.failure   # why it failed: "unparseable reply", "request failed: HTTP 429 (...)"
    verdict.retries   # failed attempts (429, 500, timeouts) before the final one

* ``OpenAIJudge`` asks any OpenAI-compatible chat model (GPT-4, a local vLLM or Ollama,
  or ``minillava data serve``) through the ``openai`` client, with counted retries.
* ``RuleJudge`` scores offline from the scene graph (see its scale below), so the whole
  suite runs without a network. ``minillava.data.server.TeacherServer(judge=RuleJudge())``
  answers judge prompts with it, which is how ``OpenAIJudge`` is tested without an API.

``judge_both_orders`` asks every question twice, reference first and model first, and
averages (``llava_bench.combine_orders``): a judge's preference for one position then cancels.
``summarize`` turns the records into LLaVA-Bench's relative scores; a failed judgement
is counted in n_failed and never averaged in.
"""

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from minillava.data.engine import run_sync
from minillava.data.prompts import parse_toy_context
from minillava.data.teachers import OpenAITeacher, TeacherError
from minillava.data.validate import check, toy_facts
from minillava.eval import llava_bench
from minillava.eval.scenes import answer_key
from minillava.toyworld import BACKGROUNDS, COLORS, SHAPES, SIZES


class JudgeRequest(NamedTuple):
    """One judgement to make: the image as text, the question and two answers, in this order."""
    context: str
    question: str
    answer_1: str
    answer_2: str


@dataclass(frozen=True)
class Verdict:
    """A judge's scores for (Assistant 1, Assistant 2), or None and the reason it failed."""
    scores: tuple[float, float] | None
    failure: str | None = None
    retries: tuple[str, ...] = ()   # reasons of the failed attempts before the last one
    text: str = ""                  # the judge's reply: its explanation shows where it went wrong


# ----------------------------------------------------------------------------
# The rule judge

_POSITION_WORDS = ("left", "right", "top", "bottom", "centre", "above", "below", "larger", "smaller",
                   "leftmost", "rightmost", "highest", "lowest")
# Words whose presence says what an answer claims about a toy scene, each to its canonical form.
_CONTENT_WORDS = ({w: w for w in (*COLORS, *BACKGROUNDS, *SIZES, *SHAPES, *_POSITION_WORDS, "yes", "no")}
                  | {shape + ("es" if shape.endswith("s") else "s"): shape for shape in SHAPES}
                  | {"center": "centre", "grey": "gray"})


# The judge reads words plainly, not with VQA's official answer processing (eval.vqa), whose
# number words stop at ten: "a cross has twelve" corners must say 12. Punctuation is a space
# except inside a word or a number ("don't", "3.5"); thousands commas go ("1,000" -> "1000").
_THOUSANDS = re.compile(r"(?<=\d),(?=\d)")
_PUNCTUATION = re.compile(r"(?<=\w)'(?=\w)|(?<=\d)\.(?=\d)|([^\w\s])")
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def content_words(text: str) -> set[str]:
    """The checkable words of an answer: colours, shapes, sizes, numbers, positions, yes/no."""
    text = _THOUSANDS.sub("", text.lower().replace("\u2019", "'"))
    text = _PUNCTUATION.sub(lambda match: " " if match[1] else match[0], text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split()]   # "two" == "2"
    return {_CONTENT_WORDS.get(w, w) for w in words if w in _CONTENT_WORDS or w.isdigit()}


_JUDGE_PROMPT = re.compile(r"\[Context\]\n(?P<context>.*?)\n\n\[Question\]\n(?P<question>.*?)\n\n"
                           r"\[Assistant 1\]\n(?P<answer_1>.*?)\n\[End of Assistant 1\]\n\n"
                           r"\[Assistant 2\]\n(?P<answer_2>.*?)\n\[End of Assistant 2\]", re.DOTALL)


def parse_judge_prompt(messages: list[dict]) -> JudgeRequest:
    """The request a ``llava_bench.judge_prompt`` message list was built from (its inverse)."""
    if not messages or messages[0].get("content") != llava_bench.SYSTEM_PROMPT:
        raise ValueError("not a judge prompt: build it with minillava.eval.llava_bench.judge_prompt")
    match = _JUDGE_PROMPT.search(messages[-1].get("content", ""))
    if match is None:
        raise ValueError("the judge prompt's user message lacks [Context], [Question] or an [Assistant] block")
    return JudgeRequest(**match.groupdict())


class RuleJudge:
    """Scores answers about toy scenes from the scene graph: offline, deterministic, free.

    It reads the scene back from the context (``prompts.parse_toy_context``), exactly the
    text an LLM judge gets, and scores each answer on its own, blind to its position:

        score = 1 + 9 x coverage - 3 x contradictions, clipped to 1..10, one decimal

    * coverage: the share of the content words (``content_words``) of the rules' own
      answer to the question (``scenes.answer_key``) that the answer also says. "There
      are two circles" covers "2" and "circle"; "Yes" covers neither.
    * contradictions: the reasons ``data.validate.check`` finds -- presence, absence,
      count and colour claims the scene refutes.

    The rules' answer -- LLaVA-Bench's reference -- therefore always scores 10, and the
    relative score of a model is its mean score in tenths of that. It is a keyword
    judge: it cannot follow reasoning, and it can only score questions the rules wrote
    (any other is a failed judgement, reported, not guessed).

    ``position_bias`` takes that many points off Assistant 2 (not below 1). Real LLM
    judges favour one position; this reproduces the effect offline, to show what
    judging in both orders cures. Leave it at 0 for scoring.
    """

    name = "rule"
    system_prompt = llava_bench.SYSTEM_PROMPT   # the judge prompts it answers (data.server routes them here)

    def __init__(self, position_bias: float = 0.0):
        if position_bias < 0:
            raise ValueError(f"position_bias must be >= 0 (points off Assistant 2), got {position_bias}")
        self.position_bias = position_bias

    def score_answer(self, annotation: dict, question: str, answer: str) -> tuple[float, str]:
        """(score, explanation) of one answer to a question about the scene."""
        key = answer_key(annotation).get(question)
        if key is None:
            raise ValueError(f"the rule judge can only score questions the rules write; {question!r} is not "
                             f"one of this scene's (see minillava.eval.scenes.answer_key)")
        expected = content_words(key.answer)
        covered = expected & content_words(answer)
        coverage = len(covered) / len(expected) if expected else 1.0
        problems = check(question, answer, toy_facts(annotation))
        score = min(max(1 + 9 * coverage - 3 * len(problems), llava_bench.MIN_SCORE), llava_bench.MAX_SCORE)
        why = f"says {len(covered)} of {len(expected)} key words" + "".join(f"; {p}" for p in problems)
        return round(score, 1), why

    def _judge(self, request: JudgeRequest) -> tuple[float, float, str]:
        annotation = parse_toy_context(request.context)
        (s1, why_1), (s2, why_2) = (self.score_answer(annotation, request.question, answer)
                                    for answer in (request.answer_1, request.answer_2))
        s2 = max(llava_bench.MIN_SCORE, s2 - self.position_bias)
        return s1, s2, f"Assistant 1 {why_1}.\nAssistant 2 {why_2}."

    def judge_many(self, requests: list[JudgeRequest]) -> list[Verdict]:
        verdicts = []
        for request in requests:
            try:
                s1, s2, why = self._judge(request)
            except ValueError as err:
                verdicts.append(Verdict(None, f"rule judge: {err}"))
            else:
                verdicts.append(Verdict((s1, s2), text=why))
        return verdicts

    def reply(self, messages: list[dict]) -> str:
        """What an LLM judge would write for these messages: scores on line one, then why.

        Raises ValueError for messages that are not a judge prompt about a toy scene.
        """
        s1, s2, why = self._judge(parse_judge_prompt(messages))
        return f"{s1:g} {s2:g}\n{why}"


# ----------------------------------------------------------------------------
# The OpenAI judge


class OpenAIJudge:
    """An LLM judge on any OpenAI-compatible endpoint, through the real ``openai`` client.

    model        e.g. "gpt-4o", or the name a local server answers to
    base_url     None: the SDK's default (OPENAI_BASE_URL, else api.openai.com)
    api_key_env  the environment variable holding the key; keys come from the environment only
    temperature  0 by default: a judge should give the same scores when asked again
    timeout, max_attempts, backoff   per attempt; 429, 5xx and timeouts are retried and counted
    concurrency  judgements in flight at once

    A reply whose first line is not two scores in 1..10 is a failed judgement
    ("unparseable reply"), never a placeholder score.
    """

    def __init__(self, model: str, base_url: str | None = None, *, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 256, timeout: float = 60.0,
                 max_attempts: int = 5, backoff: float = 1.0, concurrency: int = 4):
        # The data engine's OpenAI teacher is exactly the client a judge needs: one chat
        # request, retried with backoff, every failed attempt counted.
        self._client = OpenAITeacher(model, base_url, api_key_env=api_key_env, timeout=timeout,
                                     max_attempts=max_attempts, backoff=backoff)
        self.name = f"openai:{model}"
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.concurrency = concurrency

    def judge_many(self, requests: list[JudgeRequest]) -> list[Verdict]:
        return run_sync(self._judge_all(requests))   # also works inside Jupyter's running event loop

    async def _judge_all(self, requests: list[JudgeRequest]) -> list[Verdict]:
        slots = asyncio.Semaphore(max(1, self.concurrency))

        async def one(request: JudgeRequest) -> Verdict:
            async with slots:
                try:
                    completion = await self._client.complete(llava_bench.judge_prompt(*request), self.params)
                except TeacherError as err:
                    return Verdict(None, f"request failed: {err.reason}", tuple(err.failures))
            scores = llava_bench.parse_scores(completion.text)
            return Verdict(scores, None if scores else "unparseable reply", tuple(completion.failures),
                           completion.text)

        try:
            return list(await asyncio.gather(*(one(request) for request in requests)))
        finally:
            # The client's connections belong to this event loop, which ends here.
            await self._client.client.close()


# ----------------------------------------------------------------------------
# Both orders, and LLaVA-Bench's summary


def judge_both_orders(judge, items: list[tuple[str, str, str, str]]) -> list[dict]:
    """Judge every (context, question, reference, answer) twice: reference first, then model first.

    Returns one record per item: "scores" ((reference, model), averaged over both orders,
    or None if either judgement failed), "ref_first" and "model_first" (the raw scores as
    the judge gave them, Assistant 1 first, or None), "failures" (reasons) and "retries"
    (failed attempts of both requests).
    """
    requests = []
    for context, question, reference, answer in items:
        requests += [JudgeRequest(context, question, reference, answer),
                     JudgeRequest(context, question, answer, reference)]
    verdicts = judge.judge_many(requests)
    records = []
    for ref_first, model_first in zip(verdicts[0::2], verdicts[1::2], strict=True):
        pair = (ref_first, model_first)
        records.append({"scores": llava_bench.combine_orders(ref_first.scores, model_first.scores),
                        "ref_first": ref_first.scores, "model_first": model_first.scores,
                        "failures": [v.failure for v in pair if v.failure],
                        "retries": [reason for v in pair for reason in v.retries]})
    return records


def _relative(pairs: list) -> float | None:
    """Relative score (mean model / mean reference x 100) of (reference, model) pairs."""
    if not pairs:
        return None
    return llava_bench.relative_scores([{"category": "all", "scores": p} for p in pairs])["overall"]["relative"]


def summarize(records: list[dict]) -> dict:
    """LLaVA-Bench metrics of judged records (from judge_both_orders, plus "category").

    relative (overall) and relative_<category>, the mean reference and model scores,
    n_scored and n_failed; judge_retries (failed attempts, retried) and judge_failures
    (reason -> count). relative_ref_first / relative_model_first are what a single order
    would have reported, on the same scored items: their gap is the judge's position bias.
    """
    summary = llava_bench.relative_scores([{"category": r["category"], "scores": r["scores"]} for r in records])
    overall = summary.pop("overall")
    metrics = {"relative": overall["relative"], "reference": overall["reference"], "model": overall["model"],
               "n_scored": overall["n_scored"], "n_failed": overall["n_failed"]}
    metrics.update({f"relative_{category}": s["relative"] for category, s in summary.items()})
    scored = [r for r in records if r["scores"] is not None]
    metrics["relative_ref_first"] = _relative([r["ref_first"] for r in scored])
    metrics["relative_model_first"] = _relative([r["model_first"][::-1] for r in scored])
    metrics["judge_retries"] = sum(len(r["retries"]) for r in records)
    metrics["judge_failures"] = dict(Counter(reason for r in records for reason in r["failures"]))
    return metrics
