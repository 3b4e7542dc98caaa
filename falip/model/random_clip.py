"""Randomly initialised CLIP models of known shapes, for tests and benchmarks (never for results).

``vit-b16`` has the vision tower of OpenAI's ViT-B/16 (224 px, patch 16, 12 layers x 768, 12 heads) and
``vit-l14`` that of ViT-L/14 (224 px, patch 14, 24 layers x 1024, 16 heads), so that speed and memory can
be measured without downloading weights.
"""
from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

from .clip import FoveatedCLIP
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, build_word_tokenizer

PRESETS = {
    # vision: image, patch, layers, width, heads; text: layers, width, heads; projection
    "tiny": dict(image_size=32, patch_size=8, vision_layers=4, vision_width=32, vision_heads=4,
                 text_layers=2, text_width=32, text_heads=4, projection_dim=16),
    "vit-b16": dict(image_size=224, patch_size=16, vision_layers=12, vision_width=768, vision_heads=12,
                    text_layers=12, text_width=512, text_heads=8, projection_dim=512),
    "vit-l14": dict(image_size=224, patch_size=14, vision_layers=24, vision_width=1024, vision_heads=16,
                    text_layers=12, text_width=768, text_heads=12, projection_dim=768),
}
TOY_WORDS = "a photo of the an this is red green blue yellow purple circle square triangle cross . ,".split()


def random_clip_config(preset: str = "tiny", **overrides) -> CLIPConfig:
    dims = {**PRESETS[preset], **overrides}
    tokenizer_vocab = len(TOY_WORDS) + 4
    text = dict(vocab_size=tokenizer_vocab, hidden_size=dims["text_width"],
                intermediate_size=4 * dims["text_width"], num_hidden_layers=dims["text_layers"],
                num_attention_heads=dims["text_heads"], max_position_embeddings=16,
                bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    vision = dict(image_size=dims["image_size"], patch_size=dims["patch_size"], hidden_size=dims["vision_width"],
                  intermediate_size=4 * dims["vision_width"], num_hidden_layers=dims["vision_layers"],
                  num_attention_heads=dims["vision_heads"])
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=dims["projection_dim"])


def random_clip(preset: str = "tiny", seed: int = 0, attn_implementation: str = "sdpa",
                dtype: torch.dtype = torch.float32, **overrides) -> FoveatedCLIP:
    """A seeded random CLIP wrapped as :class:`FoveatedCLIP`, with a word-level toy tokenizer."""
    torch.manual_seed(seed)
    config = random_clip_config(preset, **overrides)
    model = CLIPModel._from_config(config, attn_implementation=attn_implementation, dtype=dtype).eval()
    return FoveatedCLIP(model, build_word_tokenizer(TOY_WORDS), source=f"random:{preset}:seed{seed}")
