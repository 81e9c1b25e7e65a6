"""Teachers: whoever writes the answers, behind one small interface.

    completion = await teacher.complete(messages, params)
    completion.text, completion.prompt_tokens, completion.completion_tokens, completion.failures

A teacher has a ``model`` name and may have ``prices`` (USD per million prompt and
completion tokens; default ``PRICES[model]``); a request that fails for good raises
``TeacherError``.

* ``RuleTeacher`` answers offline with ``rules.rule_response``: it reads the scene back from the
  symbolic context in the prompt, exactly the information GPT-4 gets, and replies in
  the same raw text format, so one parser serves both teachers.
* ``OpenAITeacher`` calls any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp,
  Ollama, or ``minillava data serve``) through the ``openai`` package. The SDK's own
  retries are switched off (max_retries=0) and done here instead, so that every failed
  attempt -- 429, 5xx, timeout, dropped connection -- is counted and reported, with
  exponential backoff (or the server's Retry-After) in between.

The API key is read from the environment when the client is built and handed to the
SDK; it is never stored on the teacher, logged, or written anywhere.
"""

import asyncio
import hashlib
import os
import random
from dataclasses import dataclass, field

from minillava.data.prompts import kind_of, parse_toy_context
from minillava.data.rules import rule_response

# USD per million (prompt, completion) tokens, for estimates only: prices change, so check your
# provider's pricing page, and pass prices= (--price-in/--price-out) for any other model.
PRICES = {"gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "gpt-4.1": (2.00, 8.00),
          "gpt-4.1-mini": (0.40, 1.60), "minillava-rules": (0.0, 0.0)}


@dataclass
class Completion:
    """One answer, its token usage, and the failed attempts it took to get it."""
    text: str
    prompt_tokens: int
    completion_tokens: int
    failures: list[str] = field(default_factory=list)


class TeacherError(RuntimeError):
    """A request that failed for good; failures lists every attempt's reason."""

    def __init__(self, reason: str, failures: list[str]):
        super().__init__(reason)
        self.reason, self.failures = reason, failures


def estimate_tokens(text: str) -> int:
    """About four characters per token for English: good enough for estimates, not for billing."""
    return max(1, len(text) // 4)


def messages_tokens(messages: list[dict]) -> int:
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)   # + a few tokens of role framing


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int, prices: tuple | None = None) -> float | None:
    """Estimated cost in USD, or None when the model's price is unknown."""
    prices = prices or PRICES.get(model)
    if prices is None:
        return None
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6


def is_json_mode(params: dict) -> bool:
    return (params.get("response_format") or {}).get("type") == "json_object"


# ----------------------------------------------------------------------------
# The rule teacher


class RuleTeacher:
    """Writes true answers from the scene in the prompt's last user message; offline and free."""

    model = "minillava-rules"   # free: see PRICES

    def answer(self, messages: list[dict], json_mode: bool = False) -> str:
        """The reply text. Raises ValueError for a request minillava did not build."""
        kind = kind_of(messages)
        context = messages[-1]["content"]
        annotation = parse_toy_context(context)
        # Seeded by the request itself: the same prompt always gets the same answer.
        rng = random.Random(hashlib.sha256(f"{kind}\n{context}".encode()).hexdigest())
        return rule_response(kind, annotation, rng, json_mode)

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        try:
            text = self.answer(messages, is_json_mode(params))
        except ValueError as err:   # a request it cannot answer fails like a 400 from an API would
            raise TeacherError(f"rejected: {err}", ["rejected"]) from None
        return Completion(text, messages_tokens(messages), estimate_tokens(text))


# ----------------------------------------------------------------------------
# The OpenAI teacher


def _failure(err: Exception) -> tuple[str, bool]:
    """(reason, retry?) for an exception from the openai client."""
    import openai
    if isinstance(err, openai.APITimeoutError):
        return "timeout", True
    if isinstance(err, openai.APIConnectionError):
        return "connection error", True
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        return f"HTTP {code}", code in (408, 409, 429) or code >= 500
    return type(err).__name__, False


class OpenAITeacher:
    """Chat completions from an OpenAI-compatible endpoint, with counted retries and backoff.

    model        e.g. "gpt-4o-mini", or the name a local server answers to
    base_url     None: the SDK's default (OPENAI_BASE_URL, else api.openai.com)
    api_key_env  the environment variable holding the key (a local server needs any value)
    timeout      seconds per attempt before it counts as a timeout
    max_attempts attempts per request before giving up (the request is then reported failed,
                 and a rerun retries it: nothing is cached for it)
    backoff      first retry delay in seconds; doubles each attempt, with jitter, up to max_backoff
    prices       USD per million (prompt, completion) tokens; default: PRICES[model], if listed
    """

    def __init__(self, model: str, base_url: str | None = None, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_attempts: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                 prices: tuple[float, float] | None = None):
        if not os.environ.get(api_key_env):
            raise ValueError(f"no API key: set the {api_key_env} environment variable (for a local "
                             f"server any value works, e.g. {api_key_env}=local). Keys are read from "
                             "the environment only, never from arguments or files.")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.model, self.base_url, self.prices = model, base_url, prices or PRICES.get(model)
        self.api_key_env, self.timeout = api_key_env, timeout
        self.max_attempts, self.backoff, self.max_backoff = max_attempts, backoff, max_backoff
        self._jitter = random.Random(0)
        self._client, self._loop = None, None

    @property
    def client(self):
        """An AsyncOpenAI client for the running event loop (its connections belong to one loop)."""
        from openai import AsyncOpenAI   # imported here: the rule teacher needs no client

        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._client = AsyncOpenAI(api_key=os.environ[self.api_key_env], base_url=self.base_url,
                                       timeout=self.timeout, max_retries=0)   # we retry, to count every failure
            self._loop = loop
        return self._client

    def _delay(self, attempt: int, err: Exception) -> float:
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass   # an HTTP date instead of seconds: fall back to our own schedule
        return min(self.backoff * 2 ** attempt, self.max_backoff) * self._jitter.uniform(0.5, 1.0)

    async def complete(self, messages: list[dict], params: dict) -> Completion:
        failures = []
        for attempt in range(self.max_attempts):
            try:
                response = await self.client.chat.completions.create(model=self.model, messages=messages, **params)
            except Exception as err:  # noqa: BLE001 -- sorted into retryable or not right here
                reason, retry = _failure(err)
                failures.append(reason)
                if not retry or attempt + 1 == self.max_attempts:
                    raise TeacherError(f"{reason} (gave up after {attempt + 1} attempt{'s' * bool(attempt)})",
                                       failures) from None
                await asyncio.sleep(self._delay(attempt, err))
                continue
            text = response.choices[0].message.content or ""   # None for a refusal: parsed as empty
            usage = response.usage
            prompt, completion = ((usage.prompt_tokens, usage.completion_tokens) if usage
                                  else (messages_tokens(messages), estimate_tokens(text)))
            return Completion(text, prompt, completion, failures)
