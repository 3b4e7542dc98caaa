"""A visual prompt = an edit chain + an optional foveal attention bias: every compared method, as data.

====================  ===================================  ===============
prompt                edits                                bias
====================  ===================================  ===============
Original CLIP         --                                   --
FALIP                 --                                   FovealBias()  (the released code's setting)
RedCircle             RedCircle()                          --
RedCircle+FALIP       RedCircle()                          FovealBias()
Blur                  BlurOutside()                        --
Crop                  Crop()                               --
Grayscale             GrayscaleOutside()                   --
====================  ===================================  ===============

Tasks never branch on a prompt's name: they hand (image, boxes, prompt) to the region encoder
(:mod:`falip.encoding.regions`). Configs build prompts with :mod:`falip.prompts.config`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image

from ..geometry import Box, Region
from ..model.bias import (CELL_RULES, DEFAULT_EPS, DEFAULT_SIGMA, FORMULATIONS, bias_from_token_weights,
                          foveal_region_weights)
from ..model.clip import FoveatedCLIP
from ..model.interventions import Intervention
from .edits import BlurOutside, Crop, Edited, GrayscaleOutside, ImageEdit, RedCircle

ROA_MODES = ("mask", "boxes")  # FovealBias.roa
# The layers the released FALIP code biases: the last 4 (of ViT-B/16's 12).
RELEASED_LAYERS = (-4, -3, -2, -1)


@dataclass(frozen=True)
class FovealBias:
    """FALIP's foveal attention bias, as configured data. The defaults are the released code's setting.

    ``alpha``: the bias at the ROA centre; ``None`` = the model's own (:attr:`FoveatedCLIP.foveal_alpha`:
    0.2, the paper's value, for OpenAI checkpoints; 8.0 for the sandbox CLIP). ``layers``: vision
    layers that get the bias (negative = from the end; ``None`` = all). The released FALIP code
    biases the last 4 of ViT-B/16's 12 layers, the paper text says "the MSA module" (read: all
    layers) -- both are a config value. ``cell_rule``: ``released`` = the released code's token
    cells and float32 arithmetic, bit for bit; ``overlap`` = the cells a box overlaps, exact float64
    (:func:`falip.model.bias.roa_cells`). ``roa``: ``mask`` = a region's mask when it has one (only the
    tokens it covers get the bias; else its boxes), ``boxes`` = its boxes only, masks ignored (e.g. a
    point-cloud view's foreground box rather than its foreground tokens).
    """

    name: ClassVar[str] = "foveal"
    alpha: float | None = None
    sigma: float = DEFAULT_SIGMA
    formulation: str = "cls"
    layers: tuple[int, ...] | None = RELEASED_LAYERS
    cell_rule: str = "released"
    eps: float = DEFAULT_EPS
    roa: str = "mask"

    def __post_init__(self) -> None:
        if self.roa not in ROA_MODES:
            raise ValueError(f"bias roa must be one of {ROA_MODES}, got {self.roa!r}")
        if self.alpha is not None and (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))):
            raise ValueError(f"bias alpha must be a number (or null = the model's), got {self.alpha!r}")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or self.sigma <= 0:
            raise ValueError(f"bias sigma must be a number > 0, got {self.sigma!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise ValueError(f"bias eps must be a number >= 0, got {self.eps!r}")
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"bias formulation must be one of {FORMULATIONS}, got {self.formulation!r}")
        if self.cell_rule not in CELL_RULES:
            raise ValueError(f"bias cell_rule must be one of {CELL_RULES}, got {self.cell_rule!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))

    def for_model(self, model: FoveatedCLIP) -> "FovealBias":
        """This bias with ``alpha=None`` replaced by the model's :attr:`~FoveatedCLIP.foveal_alpha`."""
        return self if self.alpha is not None else replace(self, alpha=model.foveal_alpha)

    def build(self, input_regions: Sequence[Region | Box], image_size: int, patch_size: int,
              num_heads: int | None = None) -> torch.Tensor:
        """``(K, T, T)`` float32 bias for K regions (or boxes) in model-input pixels (``alpha`` must be
        set: :meth:`for_model`). A region of several boxes gets the max of their biases; a masked one
        only the tokens its mask covers (:func:`falip.model.bias.foveal_region_weights`); a ``None`` region
        gets no bias."""
        if self.alpha is None:
            raise ValueError("this FovealBias takes its alpha from the model: build the bias of bias.for_model(model)")
        regions = list(input_regions)
        if self.roa == "boxes":
            regions = [None if region is None else Region(Region.of(region).boxes) for region in regions]
        weights = foveal_region_weights(regions, image_size, patch_size, alpha=self.alpha,
                                        sigma=self.sigma, eps=self.eps, cell_rule=self.cell_rule)
        return bias_from_token_weights(weights.float(), self.formulation)

    def config(self) -> dict[str, Any]:
        values = asdict(self)
        values["layers"] = list(self.layers) if self.layers is not None else None
        return {"name": self.name, **values}


def roa_token_mask(input_regions: Sequence[Region | Box], image_size: int, patch_size: int,
                   cell_rule: str = "released") -> torch.Tensor:
    """``(K, T)`` bool: ``[CLS]`` and the patch tokens of each region (its foveal weights' support);
    every token for a ``None`` region (nothing to steer to)."""
    regions = list(input_regions)
    weights = foveal_region_weights(regions, image_size, patch_size, alpha=1.0, cell_rule=cell_rule)
    inside = weights.reshape(weights.shape[0], -1) > 0
    inside[[index for index, region in enumerate(regions) if region is None]] = True
    return torch.cat([torch.ones(inside.shape[0], 1, dtype=torch.bool), inside], dim=1)


@dataclass(frozen=True)
class PastaBias:
    """PASTA (post-hoc attention steering, Zhang et al. 2024) on CLIP: ``log(alpha)`` is added to the
    attention logits of every query row for the keys *outside* the region (and [CLS]), in ``heads``
    (``None`` = all) of ``layers`` -- down-weighting them by ``alpha`` before renormalisation. The
    adaptation to CLIP is inferred (docs/method.md). ``alpha = 1`` is plain CLIP."""

    name: ClassVar[str] = "pasta"
    alpha: float = 0.01
    layers: tuple[int, ...] | None = RELEASED_LAYERS
    heads: tuple[int, ...] | None = None
    cell_rule: str = "released"

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha <= 1:
            raise ValueError(f"pasta alpha must be in (0, 1], got {self.alpha!r}")
        for key in ("layers", "heads"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))

    def for_model(self, model: FoveatedCLIP) -> "PastaBias":
        return self

    def build(self, input_regions: Sequence[Region | Box], image_size: int, patch_size: int,
              num_heads: int | None = None) -> torch.Tensor:
        """``(K, T, T)`` (all heads) or ``(K, H, T, T)`` (chosen heads; needs ``num_heads``)."""
        keep = roa_token_mask(input_regions, image_size, patch_size, self.cell_rule)  # (K, T)
        bias = torch.zeros(keep.shape[0], keep.shape[1], keep.shape[1])
        bias[:, :, :] = torch.where(keep, 0.0, math.log(self.alpha))[:, None, :]
        if self.heads is None:
            return bias
        if num_heads is None:
            raise ValueError("a PASTA bias on chosen heads needs num_heads")
        per_head = torch.zeros(keep.shape[0], num_heads, keep.shape[1], keep.shape[1])
        per_head[:, list(self.heads)] = bias[:, None]
        return per_head

    def config(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("layers", "heads"):
            values[key] = list(values[key]) if values[key] is not None else None
        return {"name": self.name, **values}


@dataclass(frozen=True)
class RoaMaskBias:
    """The hard feature mask: ``[CLS]`` attends only to itself and the region's tokens (``-inf`` on every
    other key of its row) in ``layers`` -- the attention-level variant of the paper's "feature mask"."""

    name: ClassVar[str] = "roa_mask"
    layers: tuple[int, ...] | None = RELEASED_LAYERS
    cell_rule: str = "released"

    def __post_init__(self) -> None:
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))

    def for_model(self, model: FoveatedCLIP) -> "RoaMaskBias":
        return self

    def build(self, input_regions: Sequence[Region | Box], image_size: int, patch_size: int,
              num_heads: int | None = None) -> torch.Tensor:
        keep = roa_token_mask(input_regions, image_size, patch_size, self.cell_rule)
        bias = torch.zeros(keep.shape[0], keep.shape[1], keep.shape[1])
        bias[:, 0, :] = torch.where(keep, 0.0, float("-inf"))
        return bias

    def config(self) -> dict[str, Any]:
        values = asdict(self)
        values["layers"] = list(values["layers"]) if values["layers"] is not None else None
        return {"name": self.name, **values}


@dataclass(frozen=True)
class VisualPrompt:
    """A named (edit chain, attention bias) pair: how a region is shown to CLIP."""

    name: str
    edits: tuple[ImageEdit, ...] = field(default=())
    bias: FovealBias | PastaBias | RoaMaskBias | None = None
    intervention: Intervention | None = None
    grid_point: tuple[tuple[str, Any], ...] = ()  # the values a config grid gave this prompt, e.g. (("alpha", 0.2),)

    @property
    def edits_depend_on_region(self) -> bool:
        """True when each region gets its own pixels (every edit is drawn for one region)."""
        return bool(self.edits)

    @property
    def region_dependent(self) -> bool:
        """False for plain CLIP: every region of an image then has the same embedding (one forward)."""
        return self.edits_depend_on_region or self.bias is not None or self.intervention is not None

    @property
    def needs_reference_image(self) -> bool:
        """The intervention reads a reference stream of the *unedited* image (edited pixels differ)."""
        return self.intervention is not None and self.edits_depend_on_region and bool(
            self.intervention.references(one_pass=False))

    def apply_edits(self, image: Image.Image, regions: Sequence[Region | Box]) -> list[Edited]:
        """Run the edit chain for every region: ``[(edited image, region in its frame), ...]``."""
        results: list[Edited] = [(image, Region.of(region)) for region in regions]
        for edit in self.edits:
            if all(img is image for img, _ in results):  # first edit: share per-image work across regions
                results = edit.apply(image, [region for _, region in results])
            else:
                results = [edit.apply_one(img, region) for img, region in results]
        return results

    def config(self) -> dict[str, Any]:
        return {"edits": [edit.config() for edit in self.edits],
                "bias": self.bias.config() if self.bias is not None else None,
                "intervention": self.intervention.config() if self.intervention is not None else None}


# The paper's methods, ready to use from Python.
ORIGINAL_CLIP = VisualPrompt("Original CLIP")
FALIP = VisualPrompt("FALIP", bias=FovealBias())
RED_CIRCLE = VisualPrompt("RedCircle", edits=(RedCircle(),))
RED_CIRCLE_FALIP = VisualPrompt("RedCircle+FALIP", edits=(RedCircle(),), bias=FovealBias())
BLUR = VisualPrompt("Blur", edits=(BlurOutside(),))
CROP = VisualPrompt("Crop", edits=(Crop(),))
GRAYSCALE = VisualPrompt("Grayscale", edits=(GrayscaleOutside(),))
