"""Conversation templates: turning a chat into one string, token ids and a loss mask.

A language model never sees "messages"; it sees one long string laid out by a
*template* ("USER: ... ASSISTANT: ...</s>"). Visual instruction tuning trains only
on the assistant's answers, so every token also needs a label: its own id where
the model should learn to produce it, IGNORE_INDEX (-100) everywhere else.

Original LLaVA builds the string first and then finds the answers again by
splitting it and counting the tokens of the pieces, with per-tokenizer corrections
(`- 2`, `legacy` off-by-ones). When its counts disagree with the whole string's it
masks the entire sample, prints "WARNING: tokenization mismatch ... (ignored)" and
carries on: the loss of that sample is silently zero. Here the template renders the
conversation once and remembers the character spans of the answers; the string is
tokenized once (each stretch between <image> markers on its own, as LLaVA does), and
a token is supervised when its characters lie in an answer span (label_tokens has
the exact rule for tokens on a span's edge). That needs no assumption about how a
tokenizer treats a piece of text alone, so it works for byte-level BPE (Llama-3,
Qwen2) and SentencePiece (Llama/Vicuna, Mistral; legacy on or off, slow or fast)
alike. Only a token that holds prompt text *and* answer text (a tokenizer that
merges "ASSISTANT:" with the answer's first word) cannot be labelled: that raises
TokenizationMismatchError; nothing is ever masked silently.

An answer span starts *with* the whitespace before the answer (vicuna: masked
"...ASSISTANT:" + supervised " {answer}</s>"), so the token that opens the answer,
"Ġanswer" or "▁answer", is supervised whole. Headers that end in newlines (chatml,
llama_3) keep them on the masked side. The answer's end-of-turn marker ("</s>",
"<|im_end|>", plain's "\\n") is supervised, so the model learns when to stop.
"""

import json
from dataclasses import dataclass

from minillava.splicing import IGNORE_INDEX

IMAGE_MARKER = "<image>"
_ROLE_FROM_JSON = {"human": "user", "gpt": "assistant", "system": "system"}


class TokenizationMismatchError(ValueError):
    """A token mixes prompt text and answer text, so the loss mask cannot be placed."""

    def __init__(self, template, tokenizer, text: str, straddle: "_Straddle"):
        self.position = straddle.position   # of the token, in input_ids
        where = straddle.char
        super().__init__(
            f"tokenization mismatch for template {template.name!r} with "
            f"{type(tokenizer).__name__} ({tokenizer.name_or_path!r}): token {straddle.token!r} at "
            f"position {self.position} covers prompt and answer text at the {straddle.edge} of an "
            f"answer ({text[max(0, where - 15):where]!r} | {text[where:where + 15]!r}), so the loss "
            "mask cannot be placed. Fix: use the template that matches this language model; its "
            "prompts must end where the tokenizer starts a new token (a space, a newline or a "
            "special token), which a tokenizer whose pre-tokenizer splits words guarantees.")


class _Straddle(Exception):
    """Raised inside label_tokens; tokenize turns it into TokenizationMismatchError."""

    def __init__(self, position: int, char: int, edge: str, token: str = "?"):
        super().__init__(position, char, edge)
        self.position, self.char, self.edge, self.token = position, char, edge, token


def to_messages(conversations: list[dict]) -> list[dict]:
    """Validate and normalise a conversation into [{"role", "content"}] messages.

    Accepts chat messages or LLaVA's JSON form [{"from": "human"|"gpt", "value"}].
    Roles must be an optional system message, then user/assistant alternating,
    starting with user. Every <image> marker in the user turns is moved to the start
    of the first user turn as "<image>\\n" per image (LLaVA's normalisation, keeping
    the count for multi-image samples).
    """
    if not conversations:
        raise ValueError("empty conversation: give at least one user message")
    messages = []
    for i, m in enumerate(conversations):
        if "from" in m:
            if m["from"] not in _ROLE_FROM_JSON:
                raise ValueError(f"message {i}: unknown 'from' {m['from']!r}; "
                                 f"use one of {list(_ROLE_FROM_JSON)}")
            m = {"role": _ROLE_FROM_JSON[m["from"]], "content": m.get("value")}
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be a string, "
                             f"got {type(m.get('content')).__name__}")
        messages.append({"role": m.get("role"), "content": m["content"]})

    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(turns):
        expected = ("user", "assistant")[i % 2]
        if m["role"] != expected:
            raise ValueError(
                f"turn {i} has role {m['role']!r} but {expected!r} was expected: after an optional "
                "system message, roles must alternate user, assistant, user, ... starting with user")
        if m["role"] != "user" and IMAGE_MARKER in m["content"]:
            raise ValueError(f"{IMAGE_MARKER} found in an {m['role']} turn; images belong in user turns")
    if not turns:
        raise ValueError("conversation has a system message but no user message")
    if messages[0]["role"] == "system" and IMAGE_MARKER in messages[0]["content"]:
        raise ValueError(f"{IMAGE_MARKER} found in the system message; images belong in user turns")

    users = [m for m in turns if m["role"] == "user"]
    n_images = sum(m["content"].count(IMAGE_MARKER) for m in users)
    if n_images:
        for m in users:  # as LLaVA does: drop the markers, strip what remains of that turn
            if IMAGE_MARKER in m["content"]:
                m["content"] = m["content"].replace(IMAGE_MARKER, "").strip()
        text = users[0]["content"].strip()
        users[0]["content"] = "\n".join([IMAGE_MARKER] * n_images + ([text] if text else []))
    return messages


def _fill(fmt: str, content: str) -> str:
    # replace(), not format(): contents may contain braces of their own
    return fmt.replace("{content}", content)


def image_token_id(tokenizer) -> int:
    """The id that stands for one image in the token sequence (the tokenizer's <image> token)."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    if image_id is None or image_id == tokenizer.unk_token_id:
        raise ValueError(
            f"{type(tokenizer).__name__} does not turn {IMAGE_MARKER} into one token per "
            "image; add it: tokenizer.add_special_tokens({'additional_special_tokens': "
            f"['{IMAGE_MARKER}']}}) and resize the model's token embeddings")
    return image_id


def label_tokens(text: str, spans: list[tuple[int, int]], tokenizer,
                 bos: bool = True) -> tuple[list[int], list[bool]]:
    """Token ids of a rendered conversation, and which of them lie in the answer `spans`.

    `spans` are [start, end) character ranges of `text` (the supervised segments). The
    text is tokenized as LLaVA's `tokenizer_image_token` does: BOS, then each stretch
    between <image> markers on its own, the image token in between. For most tokenizers
    (byte-level BPE, SentencePiece with legacy=True) that is the whole text tokenized once;
    a fast SentencePiece tokenizer with legacy=False marks only the start of a text as a
    word start, so the text after an image starts a word, as in LLaVA's training.

    A token is supervised when all its characters lie in a span. A token at the edge of
    a span whose characters outside it are only whitespace is supervised too (SentencePiece's
    "▁A" after "ASSISTANT:" when the prompt ended with the space; LLaVA supervises it as
    well); a token with non-whitespace on both sides cannot be placed and raises _Straddle.
    A token with no characters (a word-start marker the tokenizer inserted) goes with the
    character after it. Fast tokenizers give each token's characters (offset mapping);
    for slow ones we find each span edge as LLaVA does, by tokenizing the text before it.
    """
    ids = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
    flags = [False] * len(ids)
    chunks = text.split(IMAGE_MARKER)
    label_chunk = _label_by_offsets if getattr(tokenizer, "is_fast", False) else _label_by_prefixes
    start = 0
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(image_token_id(tokenizer))
            flags.append(False)
        local = [(max(s, start) - start, min(e, start + len(chunk)) - start)
                 for s, e in spans if max(s, start) < min(e, start + len(chunk))]
        try:
            chunk_ids, chunk_flags = label_chunk(chunk, local, tokenizer)
        except _Straddle as err:   # positions in the chunk -> in the whole sequence
            raise _Straddle(len(ids) + err.position, start + err.char, err.edge, err.token) from None
        ids += chunk_ids
        flags += chunk_flags
        start += len(chunk) + len(IMAGE_MARKER)
    return ids, flags


def encode(text: str, tokenizer, bos: bool = True) -> list[int]:
    """Token ids of a rendered prompt exactly as training tokenizes it (see label_tokens)."""
    return label_tokens(text, [], tokenizer, bos)[0]


def _label_by_offsets(text, spans, tokenizer):
    """Fast tokenizers: classify each token by the characters its offsets cover."""
    if not spans:
        ids = tokenizer.encode(text, add_special_tokens=False)
        return ids, [False] * len(ids)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    flags = []
    for position, (a, z) in enumerate(encoded["offset_mapping"]):
        inside = [any(s <= i < e for s, e in spans) for i in range(a, max(z, a + 1))]
        if all(inside) or not any(inside):   # an empty token takes the side of the next character
            flags.append(inside[0])
            continue
        outside = "".join(text[i] for i, yes in zip(range(a, z), inside) if not yes)
        if not outside.isspace():
            edge = "start" if inside[-1] else "end"
            char = a + (inside.index(True) if edge == "start" else inside.index(False))
            raise _Straddle(position, char, edge, text[a:z])
        flags.append(True)
    return encoded["input_ids"], flags


def _label_by_prefixes(text, spans, tokenizer):
    """Slow tokenizers (no offsets): each span edge is where the text before it ends in tokens."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    flags = [False] * len(ids)
    for s, e in spans:
        first, last = _edge(text, ids, tokenizer, s, -1), _edge(text, ids, tokenizer, e, +1)
        flags[first:last] = [True] * (last - first)
    return ids, flags


def _edge(text, ids, tokenizer, cut, step):
    """How many of `ids` spell text[:cut]; if a token crosses `cut`, move the cut over the
    whitespace outside the span (step -1 before a start, +1 after an end) to the token's edge."""
    at = cut
    while True:
        head = tokenizer.encode(text[:at], add_special_tokens=False)
        if ids[:len(head)] == head:
            return len(head)
        crossed = at - 1 if step < 0 else at   # the character the next step adds to the span
        if not 0 <= crossed < len(text) or not text[crossed].isspace():
            position = next((i for i, (a, b) in enumerate(zip(head, ids)) if a != b), len(head))
            token = tokenizer.convert_ids_to_tokens(ids[position:position + 1]) or ["<end>"]
            raise _Straddle(position, cut, "start" if step < 0 else "end", token[0])
        at += step


@dataclass(frozen=True)
class Template:
    """A conversation layout. Format strings hold "{content}" where the text goes.

    system_format  how a non-empty system prompt renders ("" = template has none)
    user_format    a user turn (masked)
    assistant_header  opens an assistant turn (masked); also the generation prompt
    answer_format  the answer and its end-of-turn marker (supervised)
    round_sep      put before every user turn but the first (llama_2's "<s>")
    system_in_first_user  the system block goes inside the first user turn (llama_2)
    caption_only   stage-1 captioning: one user/assistant pair; the instruction text
                   is dropped and only its image markers stay
    bos            prepend the tokenizer's BOS token (when it has one)
    """

    name: str
    system: str
    system_format: str
    user_format: str
    assistant_header: str
    answer_format: str
    round_sep: str = ""
    system_in_first_user: bool = False
    caption_only: bool = False
    bos: bool = True

    def _segments(self, messages, add_generation_prompt: bool, system) -> list[tuple[str, bool]]:
        """The rendered conversation as (text, supervised) pieces; merged, no empty pieces."""
        messages = to_messages(messages)
        if messages[0]["role"] == "system":
            if system is not None:
                raise ValueError("system prompt given twice: use a system message or system=, not both")
            system, messages = messages[0]["content"], messages[1:]
        system = self.system if system is None else system
        if system and not self.system_format:
            raise ValueError(f"template {self.name!r} has no system prompt; drop the system message")
        if self.caption_only and len(messages) > 2:
            raise ValueError(f"template {self.name!r} takes one user turn and one caption, "
                             f"got {len(messages)} turns")
        if add_generation_prompt and messages[-1]["role"] != "user":
            raise ValueError("add_generation_prompt needs a conversation that ends with a user turn")

        system_block = _fill(self.system_format, system) if system else ""
        segments = [] if self.system_in_first_user else [(system_block, False)]
        for i, m in enumerate(messages):
            if m["role"] == "user":
                content = m["content"]
                if self.caption_only:
                    content = IMAGE_MARKER * content.count(IMAGE_MARKER)
                if i == 0 and self.system_in_first_user:
                    content = system_block + content
                turn = _fill(self.user_format, content)
                segments.append(((self.round_sep if i else "") + turn, False))
            else:
                segments.append((self.assistant_header, False))
                segments.append((_fill(self.answer_format, m["content"]), True))
        if add_generation_prompt:
            segments.append((self.assistant_header, False))

        merged = []  # only prompt/answer boundaries need cutting; fewer cuts, fewer risks
        for text, supervised in segments:
            if merged and merged[-1][1] == supervised:
                merged[-1] = (merged[-1][0] + text, supervised)
            elif text:
                merged.append((text, supervised))
        return merged

    def render(self, messages: list[dict], add_generation_prompt: bool = False,
               system: str | None = None) -> str:
        """The prompt string, exactly as LLaVA's conversation code lays it out (without BOS).

        system=None keeps the template's default system prompt (or the system message);
        "" drops the system block.
        """
        return "".join(text for text, _ in self._segments(messages, add_generation_prompt, system))

    def tokenize(self, messages: list[dict], tokenizer, *, system: str | None = None,
                 max_length: int | None = None) -> dict[str, list[int]]:
        """Token ids and labels (IGNORE_INDEX outside the assistant answers) for training.

        The ids are `encode(render(messages))`, BOS first where the template wants it;
        a token is supervised when its characters lie in an answer (see label_tokens).
        Raises TokenizationMismatchError when a token mixes prompt and answer text, and
        ValueError when the tokenizer lacks the <image> token or nothing would be supervised.
        """
        segments = self._segments(messages, False, system)
        if not segments[-1][1]:
            raise ValueError("tokenize needs a conversation that ends with an assistant answer")
        text, spans = "", []
        for piece, supervised in segments:
            if supervised:
                spans.append((len(text), len(text) + len(piece)))
            text += piece
        try:
            input_ids, supervised = label_tokens(text, spans, tokenizer, bos=self.bos)
        except _Straddle as err:
            raise TokenizationMismatchError(self, tokenizer, text, err) from None
        labels = [i if s else IGNORE_INDEX for i, s in zip(input_ids, supervised)]

        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be positive, got {max_length}")
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            if all(label == IGNORE_INDEX for label in labels):
                raise ValueError(
                    f"max_length={max_length} cuts off every answer token, so this sample would train "
                    "on nothing; raise max_length or drop the sample")
        return {"input_ids": input_ids, "labels": labels}

    def to_jinja(self) -> str:
        """A Hugging Face chat template that renders like `render`.

        Use it as tokenizer.chat_template. It expects messages already passed through
        to_messages (roles checked, <image> markers at the start of the first user
        turn) and, like most chat templates, leaves BOS to the tokenizer.
        """
        user_pre, user_suf = self.user_format.split("{content}")
        answer_pre, answer_suf = self.answer_format.split("{content}")
        system_pre, system_suf = (self.system_format or "{content}").split("{content}")
        constants = dict(default_system=self.system, system_pre=system_pre, system_suf=system_suf,
                         user_pre=user_pre, user_suf=user_suf, header=self.assistant_header,
                         answer_pre=answer_pre, answer_suf=answer_suf, round_sep=self.round_sep,
                         image=IMAGE_MARKER, system_in_first_user=self.system_in_first_user,
                         caption_only=self.caption_only)
        # json.dumps gives valid Jinja literals: quoted, escaped strings and true/false
        sets = "".join(f"{{%- set {k} = {json.dumps(v)} -%}}\n" for k, v in constants.items())
        return sets + _JINJA_BODY


# The same walk as Template._segments, in Jinja; "-" trims the whitespace around tags.
_JINJA_BODY = """\
{%- if messages[0]['role'] == 'system' -%}
  {%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = default_system -%}{%- set turns = messages -%}
{%- endif -%}
{%- set system_block = (system_pre + system + system_suf) if system else '' -%}
{%- if not system_in_first_user -%}{{ system_block }}{%- endif -%}
{%- for m in turns -%}
  {%- if m['role'] == 'user' -%}
    {%- set content = m['content'] -%}
    {%- if caption_only -%}{%- set content = image * content.count(image) -%}{%- endif -%}
    {%- if not loop.first -%}{{ round_sep }}
    {%- elif system_in_first_user -%}{%- set content = system_block + content -%}{%- endif -%}
    {{ user_pre + content + user_suf }}
  {%- else -%}
    {{ header + answer_pre + m['content'] + answer_suf }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ header }}{%- endif -%}
"""

_VICUNA = dict(system_format="{content} ", user_format="USER: {content} ",
               assistant_header="ASSISTANT:", answer_format=" {content}</s>")
_LLAVA_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the "
                 "visual content that the user provides, and assist the user with a variety of "
                 "tasks using natural language.")

TEMPLATES = {t.name: t for t in [
    # Stage 1 (feature alignment): "<image>" + caption + "\n".
    Template("plain", system="", system_format="", user_format="{content}", assistant_header="",
             answer_format="{content}\n", caption_only=True),
    Template("vicuna_v1", system="A chat between a curious user and an artificial intelligence "
             "assistant. The assistant gives helpful, detailed, and polite answers to the user's "
             "questions.", **_VICUNA),
    Template("llava_v1", system="A chat between a curious human and an artificial intelligence "
             "assistant. The assistant gives helpful, detailed, and polite answers to the human's "
             "questions.", **_VICUNA),
    Template("llama_2", system=_LLAVA_SYSTEM, system_format="<<SYS>>\n{content}\n<</SYS>>\n\n",
             user_format="[INST] {content} [/INST]", assistant_header="",
             answer_format=" {content} </s>", round_sep="<s>", system_in_first_user=True),
    # MPT-style ChatML: turns follow each other with no newline in between.
    Template("chatml", system="A conversation between a user and an LLM-based AI assistant. The "
             "assistant gives helpful and honest answers.",
             system_format="<|im_start|>system\n{content}<|im_end|>",
             user_format="<|im_start|>user\n{content}<|im_end|>",
             assistant_header="<|im_start|>assistant\n", answer_format="{content}<|im_end|>", bos=False),
    # Llama-3 Instruct headers (contents are not trimmed, unlike Meta's own Jinja template).
    Template("llama_3", system=_LLAVA_SYSTEM,
             system_format="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
             user_format="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
             assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
             answer_format="{content}<|eot_id|>"),
]}


def get_template(name: str) -> Template:
    """The registered template called `name` (default for LLaVA-1.5 training: "vicuna_v1")."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
