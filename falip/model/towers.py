"""Which tower module drives a checkpoint: chosen by its ``config.json`` ``model_type`` (``open_clip`` for a
model loaded through open_clip, which has no config.json).

One entry per supported family (tower + text side). ``siglip`` covers SigLIP and SigLIP 2's
fixed-resolution checkpoints (e.g. ``google/siglip2-base-patch16-224``, which are ``SiglipModel``s);
``siglip2`` (NaFlex: variable resolution with a patch mask) is not supported yet: its patch grid changes per
image, which the foveal bias's fixed token grid does not follow.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .hf_clip import HFCLIPText, HFCLIPTower
from .hf_siglip import HFSiglipText, HFSiglipTower
from .open_clip_tower import OpenCLIPText, open_clip_tower
from .tower import VisionTower

FAMILIES: dict[str, tuple[Callable[..., VisionTower], type]] = {
    "clip": (HFCLIPTower, HFCLIPText),
    "metaclip_2": (HFCLIPTower, HFCLIPText),  # MetaCLIP 2: CLIP's layout and module names under its own class
    "siglip": (HFSiglipTower, HFSiglipText),
    "open_clip": (open_clip_tower, OpenCLIPText),  # open_clip's [CLS] ViTs, probe-pooled timm ViTs (falip[open_clip])
}
UNSUPPORTED = {
    "siglip2": "SigLIP 2 NaFlex checkpoints change their patch grid per image; use a fixed-resolution SigLIP 2 "
               "checkpoint (e.g. google/siglip2-base-patch16-224, model_type 'siglip')",
}


def model_type_of(model: nn.Module) -> str:
    """A ``transformers`` model's ``config.json`` ``model_type``; ``open_clip`` for an open_clip model."""
    if type(model).__module__.split(".")[0] == "open_clip":
        return "open_clip"
    return str(getattr(getattr(model, "config", None), "model_type", "") or "")


def check_model_type(kind: str) -> None:
    """A one-line error for a ``model_type`` no tower module handles, naming the supported ones."""
    if kind not in FAMILIES:
        why = UNSUPPORTED.get(kind, "no tower module handles it")
        supported = sorted(name for name in FAMILIES if name != "open_clip")  # open_clip models have no config.json
        raise ValueError(f"model_type {kind!r} is not supported ({why}); supported: {supported} (and open_clip "
                         f"models: model.name=open_clip:<architecture>)")


def towers_for(model: nn.Module, tokenizer: Any = None) -> tuple[VisionTower, Any]:
    """The (vision tower, text side with ``tokenizer``) of a loaded model, by its ``model_type``."""
    kind = model_type_of(model)
    check_model_type(kind)
    tower_class, text_class = FAMILIES[kind]
    return tower_class(model), text_class(model, tokenizer)
