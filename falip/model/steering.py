"""Steering as one value per call, an execution plan per call, and the one loop that runs them on any tower.

:class:`Steering` is everything a visual prompt does inside the tower for one forward: the additive
attention bias and its layers, an attention intervention, the reference stream two-stream interventions
read, and the rows' ROA tokens. :class:`ExecutionPlan` is *how* the forward runs: the exact trims (on by
default) and the opt-in approximate ``cls_stream``. Both are values passed per call -- nothing is stored
on a model -- and :func:`encode_steered` runs them on any :class:`~falip.model.tower.VisionTower`.

Exact trims (they change no value beyond the rounding of differently shaped products;
tests/model/test_trims.py): the last layer computes the pooled rows only (only they are read), and when
the bias touches only the pooled query rows, the first biased layer computes its patch rows once per
image. ``cls_stream`` (approximate, never a default): from the first biased layer on, only the pooled
rows are recomputed per region, over the image's unbiased patch tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .interventions import Intervention, resolve_layers
from .tower import VisionTower, capture, hooked

BIAS_ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


@dataclass(frozen=True)
class Steering:
    """What acts inside the tower for one call (all optional; empty = the plain backbone).

    ``bias`` ``(B, T, T)`` (or ``(T, T)``, or per head ``(B, H, T, T)``) is added to the attention logits
    of every head in ``bias_layers`` (``None`` = all; negative = from the end). ``intervention`` acts in its
    own layers; two-stream interventions read ``reference_pixels`` (one row per image, ``reference_index``
    mapping rows to it) or, when not given, the same pixels without the bias. ``roa_tokens`` ``(B, T)``
    bool marks each row's pooled + ROA tokens (``feature_mask``)."""

    bias: torch.Tensor | None = None
    bias_layers: Sequence[int] | None = None
    intervention: Intervention | None = None
    reference_pixels: torch.Tensor | None = None
    reference_index: torch.Tensor | Sequence[int] | None = None
    roa_tokens: torch.Tensor | None = None

    @property
    def empty(self) -> bool:
        return self.bias is None and self.intervention is None


@dataclass(frozen=True)
class ExecutionPlan:
    """How a steered forward runs: ``trims`` (exact, default on; off = every row of every layer, the
    reference the trims are tested against) and ``cls_stream`` (approximate, opt-in)."""

    trims: bool = True
    cls_stream: bool = False


EXACT = ExecutionPlan()
FULL_ROWS = ExecutionPlan(trims=False)  # for hooks that read a layer's inner tensors at every row


@dataclass(frozen=True)
class PlanUsed:
    """Which trims one forward used (for tests and benchmarks): decided by :func:`plan_used`."""

    pooled_only_last_layer: bool
    shared_first_biased_layer: bool
    cls_stream: bool


def plan_used(plan: ExecutionPlan, tower: VisionTower, mask: torch.Tensor | None, biased: set[int], first: int,
              image_index: torch.Tensor | None, intervention: Intervention | None) -> PlanUsed:
    """The trims a forward with these inputs runs: the last-layer trim whenever ``plan.trims`` and no
    intervention; the shared first biased layer when, in addition, rows of one image share pixels and the
    mask touches only the pooled query rows; ``cls_stream`` only in that case and when asked for."""
    trim = plan.trims and intervention is None and tower.pooled_in_sequence
    share = (trim and image_index is not None and mask is not None and first in biased
             and not _touches_patch_rows(tower, mask))
    return PlanUsed(trim, share, share and plan.cls_stream)


def layer_set(bias_layers: Sequence[int] | None, num_layers: int) -> set[int]:
    """``bias_layers`` as non-negative indices (``None`` = all); an index the tower lacks is an error."""
    return set(resolve_layers(bias_layers, num_layers, what="bias layer"))


def bias_as_mask(tower: VisionTower, bias: torch.Tensor, batch: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """``bias`` as the additive mask ``(B or 1, 1 or H, T, T)`` the tower's layers take."""
    tokens = tower.num_tokens
    if bias.shape[-2:] != (tokens, tokens):
        raise ValueError(f"attention_bias must end in ({tokens}, {tokens}) for this model "
                         f"({tower.grid_size}x{tower.grid_size} patches + {tokens - tower.grid_size ** 2} "
                         f"pooled row(s)), got {tuple(bias.shape)}")
    if bias.dim() == 2:
        mask = bias[None, None]
    elif bias.dim() == 3:
        mask = bias[:, None]
    elif bias.dim() == 4:
        mask = bias
    else:
        raise ValueError(f"attention_bias must be (T,T), (B,T,T) or (B,heads,T,T), got {tuple(bias.shape)}")
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"attention_bias has batch {mask.shape[0]} but pixel_values has batch {batch}")
    return mask.to(device=device, dtype=dtype)


def row_index(index: torch.Tensor | Sequence[int] | None, num_images: int, device: torch.device) -> torch.Tensor | None:
    """``index`` (which pixel row each output row reads) checked and on ``device``."""
    if index is None:
        return None
    index = torch.as_tensor(index, dtype=torch.long)
    if index.dim() != 1 or index.numel() == 0:
        raise ValueError(f"image_index must be a non-empty 1-D sequence of row numbers, got shape {tuple(index.shape)}")
    if int(index.min()) < 0 or int(index.max()) >= num_images:
        raise ValueError(f"image_index must lie in 0..{num_images - 1} (the rows of pixel_values), "
                         f"got {int(index.min())}..{int(index.max())}")
    return index.to(device)


def encode_steered(tower: VisionTower, pixel_values: torch.Tensor, steering: Steering = Steering(),
                   image_index: torch.Tensor | Sequence[int] | None = None,
                   plan: ExecutionPlan = EXACT) -> tuple[torch.Tensor, PlanUsed | None]:
    """Unnormalised image features ``(R, E)`` of ``pixel_values`` under ``steering``, run as ``plan`` says,
    and the trims used (``None`` for an unsteered call: the library's own forward, bit for bit).

    ``image_index`` ``(R,)`` says which pixel row each output row reads: the layers before the first
    steered one run once per image."""
    device, dtype = pixel_values.device, pixel_values.dtype
    index = row_index(image_index, pixel_values.shape[0], device)
    if steering.empty:
        features = tower.library_features(pixel_values)
        return (features if index is None else features[index]), None
    if tower.attn_implementation not in BIAS_ATTN_IMPLEMENTATIONS:
        raise ValueError(f"an attention bias needs attn_implementation in {BIAS_ATTN_IMPLEMENTATIONS}; "
                         f"this model uses {tower.attn_implementation!r}")
    rows = pixel_values.shape[0] if index is None else index.shape[0]
    intervention = steering.intervention
    biased = layer_set(steering.bias_layers, tower.num_layers) if steering.bias is not None else set()
    acted = resolve_layers(intervention.layers, tower.num_layers) if intervention is not None else []
    if intervention is not None and not tower.pooled_in_sequence:
        raise ValueError(f"{type(intervention).__name__} acts on the pooled [CLS] row inside the layers; this tower "
                         f"pools with an attention-pooling probe after them (no pooled row in its layers): use a "
                         f"bias-only prompt")
    hooks = []
    if intervention is not None:
        one_pass = steering.reference_pixels is None  # same pixels as the reference (a bias-only prompt)
        needed = intervention.references(one_pass)
        reference, reference_rows = {}, None
        if needed:
            source = pixel_values if one_pass else steering.reference_pixels.to(device=device, dtype=dtype)
            reference_rows = index if one_pass else row_index(steering.reference_index, source.shape[0], device)
            with capture(tower, acted, needed) as store:
                _run_layers(tower, source, None, set(), None, tower.num_layers, FULL_ROWS, None)
            reference = dict(store)
        roa = None if steering.roa_tokens is None else steering.roa_tokens.to(device)
        hooks = intervention.hooks(tower, acted, reference, reference_rows, roa)
    mask = bias_as_mask(tower, steering.bias, rows, dtype, device) if steering.bias is not None else None
    if mask is not None and not tower.pooled_in_sequence and not _touches_patch_rows(tower, mask):
        biased = set()  # the bias acts on the probe's logits in the head alone: every layer runs once per image
    first = min(biased | set(acted), default=tower.num_layers)
    used = plan_used(plan, tower, mask, biased, first, index, intervention)
    with hooked(tower, hooks, first=True):  # before any reader, so that readers see what the layers used
        return _run_layers(tower, pixel_values, mask, biased, index, first, plan, used), used


def _touches_patch_rows(tower: VisionTower, mask: torch.Tensor) -> bool:
    """Whether the mask has entries in query rows beyond the pooled ones (the patch rows)."""
    return bool(mask[..., tower.pooled_rows.stop:, :].count_nonzero())


def _run_layers(tower: VisionTower, pixel_values: torch.Tensor, mask: torch.Tensor | None, biased: set[int],
                index: torch.Tensor | None, first: int, plan: ExecutionPlan, used: PlanUsed | None) -> torch.Tensor:
    """The tower layer by layer: ``mask`` in the ``biased`` layers; rows gathered by ``index`` before layer
    ``first`` (the first layer where rows of one image differ); the trims of ``used``."""
    last = tower.num_layers - 1
    pooled = tower.pooled_rows
    trim_last = used is not None and used.pooled_only_last_layer
    share_first = used is not None and used.shared_first_biased_layer
    hidden = tower.embed(pixel_values)
    if used is not None and used.cls_stream:  # approximate: from the first biased layer on, pooled rows only
        for position in range(first):
            hidden = tower.layer(position, hidden, None)
        stream = hidden[index][:, pooled]
        for position in range(first, tower.num_layers):
            stream = tower.pooled_stream_layer(position, hidden, stream, mask if position in biased else None, index)
            if position < last:
                hidden = tower.layer(position, hidden, None)
        return tower.readout(stream)
    for position in range(tower.num_layers):
        layer_mask = mask if position in biased else None
        if position == first and share_first:
            stream = tower.layer_rows(position, hidden, layer_mask, pooled, index)
            if position == last:
                hidden = stream
            else:
                rest = slice(pooled.stop, None)
                hidden = torch.cat([stream, tower.layer_rows(position, hidden, None, rest)[index]], dim=1)
            continue
        if position == first and index is not None:
            hidden = hidden[index]  # from here on each region has its own bias / intervention
        if trim_last and position == last:
            hidden = tower.layer_rows(position, hidden, layer_mask, pooled)
        else:
            hidden = tower.layer(position, hidden, layer_mask)
    pool_mask = None if tower.pooled_in_sequence else mask
    if first == tower.num_layers and index is not None:
        return tower.readout(hidden, pool_mask, index)  # the rows of one image share every layer
    return tower.readout(hidden, pool_mask)
