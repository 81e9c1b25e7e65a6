"""The toy text the language model reads, and the tokenizer learnt from it.

toy-lm never sees a pixel. It learns Vicuna's skills at toy scale from documents drawn
from the toy world: captions, chats, world knowledge, and questions answered over scenes
*written out in words* (``rules.scene_text``) where LLaVA puts "<image>". Stage 1 then only
has to make images readable as such words.

The tokenizer is byte-level BPE trained on the same text, with <image> and every chat
template's markers as single special tokens.
"""

import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from minillava.conversation import IMAGE_MARKER, TEMPLATES, get_template
from minillava.data import rules
from minillava.data.prompts import BRIEF_INSTRUCTIONS, DETAIL_INSTRUCTIONS
from minillava.eval.scenes import DESCRIBE_PROMPT
from minillava.toyworld import TRAIN_SEEDS, Scene, make_scene

# ----------------------------------------------------------------------------
# The toy text: what the language model reads


def written_scene_turn(annotation: dict, instruction: str) -> str:
    """A user turn with the scene written where LLaVA puts "<image>\\n"."""
    return rules.scene_text(annotation) + "\n" + instruction


def document_messages(pairs: list[tuple[str, str]], annotation: dict | None = None) -> list[dict]:
    """(question, answer) pairs -> a document's messages; the written scene opens the first question.

    Not conversation.to_messages, which validates a stored conversation (LLaVA's JSON or chat
    messages) and moves its <image> markers: here there is no image, only its annotation written out.
    """
    messages = []
    for i, (q, a) in enumerate(pairs):
        if i == 0 and annotation is not None:
            q = written_scene_turn(annotation, q)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


# Vicuna has met a request for a description in countless wordings; a toy LM that met six may take
# an unseen one (CHAIR's "Please describe this image in detail.") for another question and answer in
# a few words (issue 19: one of two slot LMs did, benchmarks/describe_prompts.py). These wordings,
# composed from parts, are for the toy text only; stage 2 keeps DETAIL_INSTRUCTIONS, and CHAIR's own
# wording is left out, so that it stays unseen.
_ASK = ("Describe", "Please describe", "Could you describe", "Tell me about", "Explain", "Walk me through",
        "Write a description of", "Go over")
_WHAT = ("the image", "this picture", "the scene", "what you see", "this photo", "the picture in front of you")
_HOW = ("in detail", "thoroughly", "carefully", "in full", "object by object", "with every detail you can see")
DETAIL_WORDINGS = tuple(sorted({f"{ask} {what} {how}." for ask in _ASK for what in _WHAT for how in _HOW}
                               - {DESCRIBE_PROMPT})) + DETAIL_INSTRUCTIONS


def _detail(instructions: tuple[str, ...]):
    """A detail document: one of these requests, then the scene's detailed description."""
    return lambda ann, rng: document_messages(
        [(rng.choice(instructions), rules.detailed_description(ann, rng))], ann)


# Each kind of document: (weight, template, how to write it from a scene and an rng).
DOCUMENT_KINDS = {
    # questions over a written scene, answered in full sentences (LLaVA's conversations)
    "conversation": (4, "vicuna_v1", lambda ann, rng: document_messages(
        rules.conversation_qa(ann, rng, rng.randint(4, 8)), ann)),
    # the same facts in one word, with LLaVA-1.5's format prompt (its VQA data)
    "short_answer": (5, "vicuna_v1", lambda ann, rng: document_messages(
        rules.short_answer_qa(ann, rng, rng.randint(4, 8)), ann)),
    "detail": (1, "vicuna_v1", _detail(DETAIL_INSTRUCTIONS)),
    "reasoning": (1, "vicuna_v1", lambda ann, rng: document_messages([rules.complex_reasoning(ann, rng)], ann)),
    "brief": (1, "vicuna_v1", lambda ann, rng: document_messages(
        [(rng.choice(BRIEF_INSTRUCTIONS), rng.choice(Scene.from_annotation(ann).captions()))], ann)),
    # a caption alone in stage 1's layout ("<image>" + caption + "\n", here without the image)
    "caption": (1, "plain", lambda ann, rng: document_messages(
        [("", rng.choice(Scene.from_annotation(ann).captions()))])),
    # text-only chats: greetings and world knowledge (ShareGPT's place in the LLaVA mix)
    "chat": (1, "vicuna_v1", lambda ann, rng: document_messages(rules.text_only_chat(rng))),
    # many knowledge questions in one chat: more facts per system prompt
    "knowledge": (2, "vicuna_v1", lambda ann, rng: document_messages(rules.knowledge_qa(rng, rng.randint(4, 8)))),
    # detail documents asked in DETAIL_WORDINGS: off in the shipped mix (weight 0, last, so that the
    # shipped mix draws the same documents); a recipe's lm_mix turns them on
    "detail_any": (0, "vicuna_v1", _detail(DETAIL_WORDINGS)),
}


def lm_documents(n: int, seed: int = 0, weights: dict[str, float] | None = None) -> list[tuple[str, list[dict]]]:
    """n documents as (template name, messages): the first n training scenes, one each.

    weights: kind -> weight, replacing DOCUMENT_KINDS' weights for the kinds it names (experiments
    with the mix, e.g. benchmarks/lm_layouts.py --mix short_answer=16).
    """
    unknown = set(weights or ()) - set(DOCUMENT_KINDS)
    if unknown:
        raise ValueError(f"unknown document kinds {sorted(unknown)}; valid: {', '.join(DOCUMENT_KINDS)}")
    rng = random.Random(f"lm-documents-{seed}")
    kinds = list(DOCUMENT_KINDS)
    weights = [(weights or {}).get(k, DOCUMENT_KINDS[k][0]) for k in kinds]
    documents = []
    for scene_seed in TRAIN_SEEDS[:n]:
        _, template, write = DOCUMENT_KINDS[rng.choices(kinds, weights)[0]]
        documents.append((template, write(make_scene(scene_seed).annotation(), rng)))
    return documents


# ----------------------------------------------------------------------------
# The tokenizer

# Ids 0..3 are fixed. The end-of-sequence id is deliberately not 2: CLIP's text tower
# takes a config with eos_token_id == 2 for an old checkpoint and then pools at the
# highest token id instead of at the end of the caption.
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", IMAGE_MARKER]
# Every other template's markers are single tokens as well, so any template in
# conversation.py tokenises without merging across its markers.
CHAT_MARKERS = ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<|im_start|>", "<|im_end|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Llama-3's pre-tokenizer: a word keeps its leading space (" yes"), digits go in groups
# of up to three, newlines are words of their own. Answers in the vicuna template start
# with a space, so the prompt/answer cut is always a word boundary (see conversation.py).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
MAX_VOCAB = 1024


def tokenizer_texts(documents: list[tuple[str, list[dict]]]) -> list[str]:
    """The strings the tokenizer learns from: every document as rendered, every template."""
    texts = [get_template(template).render(messages) for template, messages in documents]
    demo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    return texts + [t.render(demo) for t in TEMPLATES.values()]


def train_tokenizer(texts: list[str], vocab_size: int = MAX_VOCAB) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``, as a transformers tokenizer.

    Bytes are the base alphabet, so any string tokenises (no unknown token). The toy
    text has only about 300 distinct words: at 1024 entries almost every one of them
    is a single token, with and without its leading space.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + CHAT_MARKERS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=[IMAGE_MARKER] + CHAT_MARKERS, model_max_length=1024)
    # So that tokenizer.apply_chat_template renders vicuna_v1, the template the LM learns.
    tokenizer.chat_template = get_template("vicuna_v1").to_jinja()
    return tokenizer
