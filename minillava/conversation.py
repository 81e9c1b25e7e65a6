"""Conversation templates: turning a chat into one string, token ids and a loss mask.

A language model never sees "messages"; it sees one long string laid out by a
*template* ("USER: ... ASSISTANT: ...</s>"). Visual instruction tuning trains only
on the assistant's answers, so every token also needs a label: its own id where
the model should learn to produce it, IGNORE_INDEX (-100) everywhere else.

Original LLaVA builds the string first and then finds the answers again by
splitting it and tokenising the pieces. When the pieces' token counts disagree
with the whole string's (the tokenizer merged text across a split point, or the
template does not match the model) it masks the entire sample, prints
"WARNING: tokenization mismatch ... (ignored)" and carries on: the loss of that
sample is silently zero. Here the template produces *segments*, each marked as
supervised or not; we tokenise each segment, concatenate, and then check the
result against the whole string tokenised in one go. Any disagreement raises
TokenizationMismatchError; nothing is ever masked silently.

Where the segments are cut matters. A cut is safe where the tokenizer itself
always cuts: next to a special token, or where its pre-tokenizer starts a new
word. So an answer segment starts *with* the whitespace that precedes the answer
(vicuna: masked "...ASSISTANT:" + supervised " {answer}</s>"): byte-level BPE
tokenizers (GPT-2, Llama-3, Qwen) glue a leading space to the next word, and
SentencePiece-style ones start a word at the space, so " answer" tokenises the same
alone as inside the prompt. Cutting after the space instead ("ASSISTANT: " + "answer")
would turn " answer" into " " + "answer" and break the check. Headers that end in
newlines (chatml, llama_3) keep them on the masked side: newline runs are words of
their own for those tokenizers. The answer's end-of-turn marker ("</s>",
"<|im_end|>", plain's "\\n") is supervised, so the model learns when to stop.
"""

import json
from dataclasses import dataclass

from minillava.splicing import IGNORE_INDEX

IMAGE_MARKER = "<image>"
_ROLE_FROM_JSON = {"human": "user", "gpt": "assistant", "system": "system"}


class TokenizationMismatchError(ValueError):
    """Segment-wise and whole-string tokenisation disagree, so the label mask would be wrong."""

    def __init__(self, template, tokenizer, pieces: list[int], whole: list[int]):
        position = next((i for i, (a, b) in enumerate(zip(pieces, whole)) if a != b),
                        min(len(pieces), len(whole)))
        self.position = position

        def near(ids):  # the differing token and its right neighbours, or <end>
            return tokenizer.convert_ids_to_tokens(ids[position:position + 3]) or ["<end>"]

        super().__init__(
            f"tokenization mismatch for template {template.name!r} with "
            f"{type(tokenizer).__name__} ({tokenizer.name_or_path!r}): the segments give "
            f"{len(pieces)} ids, the whole prompt {len(whole)}; first difference at position "
            f"{position}: segments {near(pieces)} vs whole {near(whole)}. The tokenizer does not "
            "tokenise the text at a prompt/answer boundary the same alone as in context (it "
            "merges across it, or marks word starts differently), so the loss mask cannot be "
            "placed. Fix: use the template that matches this language model, or load its "
            "tokenizer with flags that keep words apart at those boundaries (e.g. legacy=False "
            "for SentencePiece/LLaMA tokenizers, add_prefix_space=False for byte-level BPE).")


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

        Raises TokenizationMismatchError when tokenising segment by segment disagrees
        with tokenising the whole prompt, and ValueError when the tokenizer lacks the
        <image> token or nothing would be supervised.
        """
        segments = self._segments(messages, False, system)
        if not segments[-1][1]:
            raise ValueError("tokenize needs a conversation that ends with an assistant answer")
        prefix = [tokenizer.bos_token_id] if self.bos and tokenizer.bos_token_id is not None else []
        input_ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
        for text, supervised in segments:
            ids = tokenizer.encode(text, add_special_tokens=False)
            input_ids += ids
            labels += ids if supervised else [IGNORE_INDEX] * len(ids)

        prompt = "".join(text for text, _ in segments)
        n_images = prompt.count(IMAGE_MARKER)
        if n_images:
            image_id = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
            if image_id in (None, tokenizer.unk_token_id) or input_ids.count(image_id) != n_images:
                raise ValueError(
                    f"{type(tokenizer).__name__} does not turn {IMAGE_MARKER} into one token per "
                    "image; add it: tokenizer.add_special_tokens({'additional_special_tokens': "
                    f"['{IMAGE_MARKER}']}}) and resize the model's token embeddings")

        whole = prefix + tokenizer.encode(prompt, add_special_tokens=False)
        if whole != input_ids:
            raise TokenizationMismatchError(self, tokenizer, input_ids, whole)

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
