"""The OpenAI chat-completions protocol, as ``minillava serve`` speaks it.

A request body is checked field by field before it goes anywhere near the model, and every
problem becomes an ``APIError``: an HTTP status and OpenAI's error shape,

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

so a client gets a 4xx that names the field and the fix, never a 500 or a dropped
connection. Fields are those of OpenAI's API; a field this server does not implement is
refused by name rather than silently ignored (a client that asked for ``tools`` must not get
an answer that pretends to have used them), and so is any unknown field (a typo).

Two defaults differ from OpenAI's on purpose: ``temperature`` is 0 (greedy, as
``Assistant.ask``: the same question gets the same answer) and ``max_tokens`` is the
assistant's own ``max_new_tokens``.

Messages become the course's own: text with one ``<image>`` marker per picture, the pictures
in a list in the order of their markers (``conversation.to_messages`` then moves the markers
where LLaVA trained them: the start of the first user turn).
"""

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from minillava.conversation import IMAGE_MARKER
from minillava.serve.images import ImageError, ImageLimits, load_image

# Fields of OpenAI's request that this server implements.
FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "stream",
          "stream_options", "n", "user", "frequency_penalty", "presence_penalty", "logprobs"}
# Fields it accepts only with the value that asks for nothing (clients often send them so).
NO_OP = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False}
# Fields of OpenAI's request that it does not implement: refused by name.
UNSUPPORTED = {"tools", "tool_choice", "functions", "function_call", "top_logprobs", "logit_bias",
               "response_format", "seed", "audio", "modalities", "prediction", "parallel_tool_calls",
               "reasoning_effort", "store", "metadata", "service_tier", "web_search_options"}
TYPES = {"stream": (bool, "true or false"), "user": (str, "a string"), "stream_options": (dict, "an object")}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4          # as OpenAI: up to 4 stop strings
MAX_STOP_CHARS = 100


class APIError(Exception):
    """A request refused: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400: the request itself is wrong."""
    return APIError(400, message, param=param, code=code)


@dataclass
class ChatRequest:
    """A checked request: the conversation as the assistant reads it, and how to answer."""

    messages: list[dict]               # [{"role", "content"}], content with <image> markers
    images: list                       # PIL images, in the order of the markers
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int | None = None      # None: the assistant's own max_new_tokens
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False        # stream_options.include_usage: a last chunk with the token counts

    @property
    def sampling(self) -> tuple:
        """Requests with the same sampling can share a batched generation (greedy ignores top_p)."""
        return (0.0,) if self.temperature == 0 else (self.temperature, self.top_p)


def parse_json(raw: bytes):
    """The body as JSON (NaN and Infinity refused: they are not JSON), or a 400."""
    def no_constant(name):
        raise ValueError(f"{name} is not a JSON number")
    try:
        return json.loads(raw, parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError) as err:   # JSONDecodeError is a ValueError
        raise bad(f"the body is not valid JSON ({err}); send a JSON object like "
                  '{"model": "...", "messages": [{"role": "user", "content": "Hi"}]}', code="invalid_json") from None


def _type_error(param: str, expected: str, value) -> APIError:
    return bad(f"{param} must be {expected}, got {type(value).__name__} {json.dumps(value)[:40]}", param,
               code="invalid_type")


def _number(body: dict, name: str, default, low: float, high: float, integer: bool = False, open_low=False):
    """``body[name]``, a number (an int where ``integer``) in [low, high] ((low, high] if open_low)."""
    value = body.get(name, default)
    if value is None:
        return default
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise _type_error(name, "an integer" if integer else "a number", value)
    if value < low or value > high or (open_low and value == low):
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise bad(f"{name} must be in {interval}, got {value}", name, code="invalid_value")
    return value


def _stops(value) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _type_error("stop", "a string or a list of strings", value)
    if len(stops) > MAX_STOPS or not all(0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise bad(f"stop takes up to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters", "stop",
                  code="invalid_value")
    return stops


def _content(content, role: str, where: str, image_urls: list) -> str:
    """A message's content (a string or a list of parts) -> text; its image URLs go to image_urls."""
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list) and content:
        parts = content
    else:
        raise _type_error(f"{where}.content", "a string or a non-empty list of content parts", content)
    texts, markers = [], []
    for i, part in enumerate(parts):
        at = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and set(part) == {"type", "text"} and isinstance(part["text"], str):
            if IMAGE_MARKER in part["text"]:
                raise bad(f"{at}: the text contains {IMAGE_MARKER}, which marks where a picture goes; send "
                          "pictures as image_url parts, and the marker is placed for you", at)
            texts.append(part["text"])
        elif kind == "image_url" and set(part) == {"type", "image_url"} and isinstance(part["image_url"], dict):
            if role != "user":
                raise bad(f"{at}: a picture in a {role} message; pictures go in user messages", at)
            url = part["image_url"]
            if set(url) - {"url", "detail"} or not isinstance(url.get("url"), str):
                raise bad(f'{at}.image_url must be {{"url": "data:image/png;base64,..."}} '
                          '(and optionally "detail")', at, code="invalid_type")
            image_urls.append((f"{at}.image_url.url", url["url"]))
            markers.append(IMAGE_MARKER)
        else:
            raise bad(f'{at} must be {{"type": "text", "text": "..."}} or {{"type": "image_url", "image_url": '
                      f'{{"url": "..."}}}}, got {json.dumps(part)[:60]}', at, code="invalid_type")
    return "\n".join(markers + texts)


def parse_messages(messages, limits: ImageLimits, image_root: Path | None) -> tuple[list[dict], list]:
    """OpenAI messages -> (the course's messages, the pictures); roles' order is the template's to check."""
    if not isinstance(messages, list) or not messages:
        raise _type_error("messages", "a non-empty list of messages", messages)
    converted, urls = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _type_error(where, 'an object like {"role": "user", "content": "..."}', m)
        if set(m) - {"role", "content", "name"}:
            raise bad(f"{where} has fields this server does not take: {sorted(set(m) - {'role', 'content', 'name'})} "
                      "(a message is role, content and optionally name)", where, code="unknown_parameter")
        if not isinstance(m.get("role"), str) or m["role"] not in ROLES:
            raise bad(f"{where}.role must be one of {sorted(ROLES)}, got {json.dumps(m.get('role'))}",
                      f"{where}.role", code="invalid_value")
        if not isinstance(m.get("name", ""), str):
            raise _type_error(f"{where}.name", "a string", m["name"])
        role = ROLES[m["role"]]
        converted.append({"role": role, "content": _content(m.get("content"), role, where, urls)})
    if len(urls) > limits.max_images:
        raise bad(f"{len(urls)} pictures in one request; this server takes at most {limits.max_images} "
                  "(--max-images)", "messages", code="too_many_images")
    images = []
    for where, url in urls:
        try:
            images.append(load_image(url, limits, image_root))
        except ImageError as err:
            raise bad(f"{where}: {err}", where, err.code) from None
    return converted, images


def parse_request(body, limits: ImageLimits, image_root: Path | None = None) -> ChatRequest:
    """A chat-completions body (parsed JSON) -> a ChatRequest, or an APIError naming the problem."""
    if not isinstance(body, dict):
        raise _type_error("the body", "a JSON object", body)
    for name in body:
        if name in UNSUPPORTED:
            raise bad(f"{name} is not supported by this server; leave it out", name, code="unsupported_parameter")
        if name not in FIELDS:
            raise bad(f"unknown field {name!r}; the fields are {', '.join(sorted(FIELDS))}", name,
                      code="unknown_parameter")
    for name, value in NO_OP.items():
        if name in body and (body[name] != value or isinstance(body[name], bool) != isinstance(value, bool)):
            raise bad(f"{name} must be {json.dumps(value)} (or left out): this server does not implement others",
                      name, code="unsupported_value")
    if not isinstance(body.get("model"), str):
        raise _type_error("model", "a string (GET /v1/models lists the one served)", body.get("model"))
    for name, (kind, expected) in TYPES.items():
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise _type_error(name, expected, body[name])
    options = body.get("stream_options") or {}
    if set(options) - {"include_usage"} or not isinstance(options.get("include_usage", False), bool):
        raise bad('stream_options takes only {"include_usage": true|false}', "stream_options", code="invalid_value")
    if options and not body.get("stream"):
        raise bad("stream_options is only for stream: true", "stream_options", code="invalid_value")
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise bad("give max_tokens or max_completion_tokens, not both", "max_tokens", code="invalid_value")
    limit = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    messages, images = parse_messages(body.get("messages"), limits, image_root)
    return ChatRequest(
        messages, images,
        temperature=_number(body, "temperature", 0.0, 0, 2),
        top_p=_number(body, "top_p", 1.0, 0, 1, open_low=True),
        max_tokens=_number(body, limit, None, 1, 2**31 - 1, integer=True),
        stop=_stops(body.get("stop")),
        stream=bool(body.get("stream")),
        include_usage=bool(options.get("include_usage")),
    )


# Answers, in OpenAI's shapes.

def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(id: str, model: str, reply) -> dict:
    """The whole answer (a ``chat.Reply``) as a ``chat.completion`` object."""
    return {"id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason, "logprobs": None}],
            "usage": usage(reply.prompt_tokens, reply.completion_tokens)}


def chunk(id: str, model: str, delta: dict | None = None, finish_reason: str | None = None,
          usage_counts: dict | None = None) -> dict:
    """One ``chat.completion.chunk`` of a stream; with ``usage_counts``, the last one (no choices)."""
    out = {"id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if usage_counts is not None:
        return {**out, "choices": [], "usage": usage_counts}
    return {**out, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}]}


def model_list(model: str) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "minillava"}]}
