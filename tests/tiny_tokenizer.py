"""Small tokenizers trained in the tests, with every special token the templates use.

``well_behaved(corpus)`` is a byte-level BPE laid out like Llama-3's or Qwen's (a leading
space or punctuation sticks to the next word, newline runs are words of their own), the
kind of tokenizer for which a template's segment boundaries are safe.

The real families, offline: ``sentencepiece_model`` trains a Llama-style SentencePiece model,
``llama_slow`` / ``llama_fast`` load it as transformers' slow (legacy True/False) and fast
LlamaTokenizer (legacy True/False); ``mistral``, ``llama3`` and ``qwen2`` follow those
families' layouts and special tokens.
"""

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from minillava.conversation import IMAGE_MARKER

EXTRA_SPECIALS = [IMAGE_MARKER, "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]", "<<SYS>>",
                  "<</SYS>>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Llama-3's pre-tokenizer regex: a leading space or punctuation sticks to the next word,
# runs of newlines are words of their own.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_tokenizer(pre_tokenizer, corpus, byte_level=True, vocab_size=500):
    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel() if byte_level else decoders.Metaspace()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False,
                                  special_tokens=["<s>", "</s>", "<pad>", "<unk>"] + EXTRA_SPECIALS)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   additional_special_tokens=EXTRA_SPECIALS)


def well_behaved(corpus, vocab_size=500):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return train_tokenizer(pre, corpus, vocab_size=vocab_size)


# ---------------------------------------------------------------- real tokenizer families, offline
# Each is built the way its family is: the same model type, pre-tokenizer and special tokens,
# with a tiny vocabulary learnt from the test corpus.

LLAMA_SPECIALS = [t for t in EXTRA_SPECIALS if not t.startswith(("<|", "[", "<<"))]   # <image>
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")   # Qwen2 splits digits one by one


def sentencepiece_model(corpus, folder, vocab_size=700, control_symbols=()) -> str:
    """A Llama-style SentencePiece BPE model (byte fallback, dummy prefix, split digits) -> its path."""
    import sentencepiece as spm
    prefix = f"{folder}/tokenizer"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, control_symbols=list(control_symbols), minloglevel=2)
    return prefix + ".model"


def llama_slow(model_file, legacy, specials=LLAMA_SPECIALS):
    """Transformers' Python SentencePiece tokenizer, set up as LlamaTokenizer(use_fast=False) was:
    BOS added, legacy=True the setting LLaVA-1.5 trained with (legacy=False needs protobuf)."""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
    tok = SentencePieceBackend(vocab_file=model_file, legacy=legacy, bos_token="<s>", eos_token="</s>",
                               unk_token="<unk>", special_tokens_pattern="bos")
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def llama_fast(model_file, legacy, specials=LLAMA_SPECIALS):
    """transformers' LlamaTokenizer (fast) on the same SentencePiece model: vocabulary and merges
    read as transformers' converter does; legacy=False puts the word-start marker only at the start."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges
    sp = spm.SentencePieceProcessor(model_file=model_file)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    tok = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab), legacy=legacy, add_bos_token=True,
                         bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def mistral(corpus, folder):
    """Mistral-style: a SentencePiece model with [INST] and [/INST] as control symbols, fast, legacy=False."""
    model_file = sentencepiece_model(corpus, folder, control_symbols=["[INST]", "[/INST]"])
    return llama_fast(model_file, legacy=False, specials=["[INST]", "[/INST]", IMAGE_MARKER])


def _byte_level(corpus, split, specials, bos, eos, pad, vocab_size=500):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=specials)
    tok.train_from_iterator(corpus, trainer)
    if bos:   # Llama-3 puts BOS in front of every encoding
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[t for t in specials if t not in (bos, eos, pad)])


def llama3(corpus):
    """Llama-3 layout: byte-level BPE, its split regex, <|begin_of_text|> as BOS, header tokens."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", IMAGE_MARKER]
    return _byte_level(corpus, LLAMA3_SPLIT, specials, "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>")


def qwen2(corpus):
    """Qwen2 layout: byte-level BPE, single-digit split, no BOS, ChatML markers."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_MARKER]
    return _byte_level(corpus, QWEN2_SPLIT, specials, None, "<|im_end|>", "<|endoftext|>")
