"""Encoding: region embeddings under visual prompts (batched across images) and cached text embeddings."""
from .regions import encode_items, encode_regions
from .text import TextCache

__all__ = ["encode_regions", "encode_items", "TextCache"]
