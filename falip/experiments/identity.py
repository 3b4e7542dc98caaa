"""What proves that a resumed item is the item it was: a digest of everything the loader read for it.

A resume reuses finished work only when it can prove it is the same work. The config hash covers the
settings, the weights and the code; this module covers the data: an item's digest is a sha256 over its
content as the loader produced it (image path or id, every candidate box, every sentence, label,
mask, point array ...), its regions, and the identity of its lines (:meth:`Task.lines`), plus the
split's own context (its class names, group names). A split's digest covers all of its items in order.

So an annotation file edited, reordered or cut between two runs changes the digests of exactly the
items it changed (they are recomputed), while every other item is still recognised (reused), wherever it
moved in the split. Image *pixels* are not hashed (an image file is identified by its path or id, an
in-memory image by its size and mode), as an evaluation harness identifies its documents.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..tasks.base import Task

# Split fields that describe where or how a split was read, not what it holds.
_NOT_CONTENT = {"source", "notes"}


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data, deterministically (arrays by digest, images by size and mode)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__,
                **{f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {str(key): canonical(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {"__array__": hashlib.sha256(array.tobytes()).hexdigest(), "shape": list(array.shape),
                "dtype": str(array.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image carried in memory
        return {"__image__": list(value.size), "mode": value.mode}
    return str(value)


def digest(value: Any) -> str:
    """sha256 (hex, 32 characters) of :func:`canonical` ``(value)``."""
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True).encode()).hexdigest()[:32]


def _is_item_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and dataclasses.is_dataclass(value[0])


@dataclass(frozen=True)
class SplitIdentity:
    """Per item, the digest that proves it is the same item; and the whole split's digest."""

    item_keys: list[str]
    split_key: str

    @classmethod
    def of(cls, task: Task, split: Any) -> "SplitIdentity":
        context = {f.name: getattr(split, f.name) for f in dataclasses.fields(split)
                   if f.name not in _NOT_CONTENT and not _is_item_list(getattr(split, f.name))} \
            if dataclasses.is_dataclass(split) else {}
        context_key = digest(context)
        items, regions = task.items(split), task.regions(split)
        keys = [digest([context_key, items[index], regions[index], task.lines(split, index)])
                for index in range(len(items))]
        return cls(keys, digest([context_key, keys]))
