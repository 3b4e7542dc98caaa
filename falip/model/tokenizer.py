"""A real word-level HF tokenizer for the sandbox CLIP (and for randomly initialised test models).

Words are lower-cased and split on whitespace and punctuation (``tokenizers``' ``Whitespace``
pre-tokenizer); each sequence is wrapped as ``[BOS] ... [EOS]``; unknown words map to ``[UNK]``.
Saved with ``save_pretrained`` it loads back through ``AutoTokenizer.from_pretrained``.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


def build_word_tokenizer(words: Iterable[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over ``words`` (deduplicated, order kept) after the 4 special tokens."""
    vocab: dict[str, int] = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_length)
