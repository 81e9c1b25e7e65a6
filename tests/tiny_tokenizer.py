"""Small tokenizers trained in the tests, with every special token the templates use.

``well_behaved(corpus)`` is a byte-level BPE laid out like Llama-3's or Qwen's (a leading
space or punctuation sticks to the next word, newline runs are words of their own), the
kind of tokenizer for which a template's segment boundaries are safe.
"""

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
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
