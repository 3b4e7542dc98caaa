"""The foveal attention bias: a region of attention (ROA) -> an additive (N+1)x(N+1) attention-logit bias.

FALIP adds a bias ``M`` to the attention logits of CLIP's vision transformer,
``softmax(Q K^T / sqrt(d) + M) V``. ``M`` is zero except at the tokens of the ROA, where it holds a
min-max-stretched 2D Gaussian centred on the ROA. Which entries of ``M`` get it is the
*formulation*: ``cls`` (the paper's method: only the pooled ``[CLS]`` query row), ``all`` (every query
row) or ``diag`` (each ROA token attending to itself) -- the paper's ablation a / b / c -- and ``patches``
(every patch query row, the pooled row left alone: on an attention-pooled tower, the encoder's rows only).

Token layout (the towers' steering layout, falip/model/tower.py): index 0 is the pooled query row
(``[CLS]`` for CLIP, the attention-pooling probe for SigLIP), patch token ``(row r, col c)`` of a grid
with ``gw`` columns has index ``1 + r * gw + c``.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from ..geometry import Region, clip_box_to_image

FORMULATIONS = ("cls", "all", "patches", "diag")
CELL_RULES = ("overlap", "released")

DEFAULT_ALPHA = 0.2
DEFAULT_SIGMA = 100.0
DEFAULT_EPS = 1e-6


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def roa_cells(
    box: Sequence[float],
    image_size: int | Sequence[int],
    patch_size: int,
    cell_rule: str = "released",
) -> tuple[int, int, int, int]:
    """Token-grid cells covered by one box, as inclusive ``(row0, row1, col0, col1)``.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the model-input frame (``image_size``, square side
    or ``(height, width)``). It is clipped to the frame first.

    ``cell_rule``:
      * ``"released"`` (default): the released FALIP code's arithmetic, columns
        ``max(ceil(x0/p),1)-1 .. max(ceil(x1/p),1)-1``. It differs from ``overlap`` only when a box
        edge lies exactly on a patch boundary (e.g. ``x0 = 16`` also takes column 0, which the box
        only touches). With this rule :func:`foveal_token_weights` also reproduces the released
        code's float32 values (:func:`released_roa_gaussian`).
      * ``"overlap"``: every cell whose area overlaps the box, columns ``floor(x0/p) .. ceil(x1/p)-1``
        (rows likewise), with the Gaussian in exact float64 arithmetic.

    Raises :class:`falip.geometry.BoxError` (a ``ValueError``) for a malformed or empty box, or one
    that lies wholly outside the frame.
    """
    if cell_rule not in CELL_RULES:
        raise ValueError(f"cell_rule must be one of {CELL_RULES}, got {cell_rule!r}")
    height, width = _pair(image_size)
    x0, y0, x1, y1 = clip_box_to_image(box, width, height, frame="model-input frame")
    grid_h, grid_w = height // patch_size, width // patch_size
    if cell_rule == "overlap":
        c0, c1 = math.floor(x0 / patch_size), math.ceil(x1 / patch_size) - 1
        r0, r1 = math.floor(y0 / patch_size), math.ceil(y1 / patch_size) - 1
    else:
        c0, c1 = max(math.ceil(x0 / patch_size), 1) - 1, max(math.ceil(x1 / patch_size), 1) - 1
        r0, r1 = max(math.ceil(y0 / patch_size), 1) - 1, max(math.ceil(y1 / patch_size), 1) - 1
    # Pixels past the last whole patch are dropped by the patch embedding: clamp to the grid.
    c0, c1 = min(c0, grid_w - 1), min(c1, grid_w - 1)
    r0, r1 = min(r0, grid_h - 1), min(r1, grid_h - 1)
    return r0, r1, c0, c1


def foveal_token_weights(
    boxes: torch.Tensor | Sequence[Sequence[float]],
    image_size: int | Sequence[int],
    patch_size: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    sigma: float = DEFAULT_SIGMA,
    eps: float = DEFAULT_EPS,
    cell_rule: str = "released",
) -> torch.Tensor:
    """Per-patch foveal weights ``(B, grid_h, grid_w)`` (float64): the normalised Gaussian on each ROA.

    Over the ROA's ``h x w`` cells, ``R[i,j] = exp(-((i-(h-1)/2)^2 + (j-(w-1)/2)^2) / (2 sigma^2))`` and
    ``Rn = alpha * (R - min R + eps) / (max R - min R + eps)``; cells outside the ROA are 0.

    ``eps`` (1e-6, as in the released code) keeps the division finite when ``R`` is constant
    (ROAs of 1 cell, 1xN or 2x2 cells...) -- those get ``alpha`` everywhere -- and keeps the corner
    cells at a tiny positive value instead of exactly 0.

    Because of the min-max stretch the *shape* of ``Rn`` does not depend on ``sigma`` once sigma is
    large against the ROA (the default sigma=100 is >> 14 cells): ``R`` is then ~ ``1 - d^2/(2 sigma^2)``,
    and stretching an affine function of ``d^2`` to [0, alpha] removes ``sigma``. The profile is a
    paraboloid: ``alpha`` at the ROA centre, ~0 at its corners. Small sigmas (~1 cell) give a peaked
    Gaussian instead; very large ones (thousands) shrink the spread of ``R`` towards ``eps``, which
    then flattens the profile towards ``alpha``.

    ``cell_rule="released"`` computes ``Rn`` as the released code does (:func:`released_roa_gaussian`:
    float32, ``R`` from the distance), bit for bit; ``"overlap"`` computes it in float64. The two
    differ by up to ~1.5e-4 x alpha on the same cells (at sigma = 100).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    height, width = _pair(image_size)
    grid_h, grid_w = height // patch_size, width // patch_size
    box_list = boxes.tolist() if isinstance(boxes, torch.Tensor) else [list(b) for b in boxes]
    if any(len(b) != 4 for b in box_list):
        raise ValueError("boxes must have shape (B, 4): x0, y0, x1, y1 in model-input pixels")
    if not box_list:
        return torch.zeros(0, grid_h, grid_w, dtype=torch.float64)
    cells = torch.tensor([roa_cells(box, (height, width), patch_size, cell_rule) for box in box_list],
                         dtype=torch.float64)[:, :, None, None]  # (B, 4, 1, 1): r0, r1, c0, c1
    if cell_rule == "released":
        return _released_weights(cells[:, :, 0, 0].long().tolist(), grid_h, grid_w, alpha, sigma, eps)
    r0, r1, c0, c1 = cells.unbind(1)
    rows = torch.arange(grid_h, dtype=torch.float64)[None, :, None]
    cols = torch.arange(grid_w, dtype=torch.float64)[None, None, :]

    def gaussian(di: torch.Tensor, dj: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(di**2 + dj**2) / (2 * sigma**2))

    # i - (h-1)/2 with i = row - r0 is row - (r0+r1)/2; the max of R sits at the cell(s) nearest the
    # centre (offset 0 or 1/2), the min at the corners (offset (h-1)/2, (w-1)/2).
    gauss = gaussian(rows - (r0 + r1) / 2, cols - (c0 + c1) / 2)
    high = gaussian(((r1 - r0) % 2) / 2, ((c1 - c0) % 2) / 2)
    low = gaussian((r1 - r0) / 2, (c1 - c0) / 2)
    inside = (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)
    weights = torch.where(inside, alpha * (gauss - low + eps) / (high - low + eps), torch.zeros((), dtype=torch.float64))
    return weights


@functools.lru_cache(maxsize=4096)
def released_roa_gaussian(height: int, width: int, alpha: float, sigma: float, eps: float) -> np.ndarray:
    """The normalised Gaussian of an ``height x width`` ROA, with the released FALIP code's arithmetic.

    Bit for bit as ``generate_gaussian_mask_region`` of the released code (``executor.py``) under the
    numpy 1.x its requirements pin: the Gaussian is computed in float64 from the distance
    (``exp(-0.5 * (sqrt(dx^2 + dy^2) / sigma)^2)``) and stored in float32; the stretch is float32
    arithmetic, ``((R - min) + eps) / den * alpha``, where ``den = max + eps - min`` is a float64
    scalar (numpy 1.x promotes a float32 scalar with a Python float to float64) rounded once to
    float32 when it divides the float32 array. With sigma = 100, ``R`` is ~1 - 1e-4 everywhere, so
    the stretch magnifies that float32 rounding to ~1.5e-4 x alpha against the exact values.
    Returns a read-only float32 array (cached: at most one per ROA shape).
    """
    cy, cx = (height - 1) / 2, (width - 1) / 2
    ys = np.arange(height, dtype=np.float64)[:, None]
    xs = np.arange(width, dtype=np.float64)[None, :]
    distance = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    gauss = np.exp(-0.5 * (distance / sigma) ** 2).astype(np.float32)
    low, high = gauss.min(), gauss.max()
    denominator = np.float32(np.float64(high) + eps - np.float64(low))
    weights = ((gauss - low) + np.float32(eps)) / denominator * np.float32(alpha)
    weights.setflags(write=False)
    return weights


def _released_weights(cells: list[list[int]], grid_h: int, grid_w: int, alpha: float, sigma: float,
                      eps: float) -> torch.Tensor:
    """``(B, grid_h, grid_w)`` float64 holding the released code's float32 values on each ROA."""
    weights = np.zeros((len(cells), grid_h, grid_w), dtype=np.float32)
    for index, (r0, r1, c0, c1) in enumerate(cells):
        weights[index, r0:r1 + 1, c0:c1 + 1] = released_roa_gaussian(r1 - r0 + 1, c1 - c0 + 1, float(alpha),
                                                                      float(sigma), float(eps))
    return torch.from_numpy(weights).double()


def mask_token_coverage(mask, image_size: int | Sequence[int], patch_size: int) -> torch.Tensor:
    """``(grid_h, grid_w)`` bool: the patch tokens a model-input-pixel mask covers (any pixel of the patch)."""
    height, width = _pair(image_size)
    grid_h, grid_w = height // patch_size, width // patch_size
    array = np.asarray(mask, dtype=bool)
    if array.shape != (height, width):
        raise ValueError(f"mask is {array.shape}, the model input is {(height, width)}")
    cells = array[:grid_h * patch_size, :grid_w * patch_size].reshape(grid_h, patch_size, grid_w, patch_size)
    return torch.from_numpy(cells.any(axis=(1, 3)))


def foveal_region_weights(
    regions: Sequence[Region],
    image_size: int | Sequence[int],
    patch_size: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    sigma: float = DEFAULT_SIGMA,
    eps: float = DEFAULT_EPS,
    cell_rule: str = "released",
) -> torch.Tensor:
    """Per-patch foveal weights ``(B, grid_h, grid_w)`` of B regions (model-input pixels).

    A region of several boxes gets the element-wise max of its boxes' weights (the union of their
    foveal Gaussians, order-independent); a region with a mask keeps only the tokens the mask covers.
    A one-box region without a mask gets exactly :func:`foveal_token_weights` of its box; ``None``
    (no region) gets zeros.
    """
    regions = [None if region is None else Region.of(region) for region in regions]
    boxes = [box for region in regions if region is not None for box in region.boxes]
    per_box = foveal_token_weights(boxes, image_size, patch_size, alpha=alpha, sigma=sigma, eps=eps,
                                   cell_rule=cell_rule) if boxes else None
    weights, start = [], 0
    for region in regions:
        if region is None:  # no region (e.g. an empty point-cloud view): no bias on this row
            height, width = _pair(image_size)
            weights.append(torch.zeros(height // patch_size, width // patch_size, dtype=torch.float64))
            continue
        count = len(region.boxes)
        combined = per_box[start] if count == 1 else per_box[start:start + count].amax(0)
        start += count
        if region.mask is not None:
            covered = mask_token_coverage(region.mask, image_size, patch_size)
            if not covered.any():
                raise ValueError("the region's mask covers no patch token of the model input")
            combined = torch.where(covered, combined, torch.zeros((), dtype=combined.dtype))
        weights.append(combined)
    if not weights:
        return per_box
    dtype = per_box.dtype if per_box is not None else torch.float64
    return torch.stack([weight.to(dtype) for weight in weights])


def bias_from_token_weights(weights: torch.Tensor, formulation: str = "cls") -> torch.Tensor:
    """Place per-patch weights ``(B, gh, gw)`` or ``(B, N)`` into a ``(B, N+1, N+1)`` attention bias.

    ``cls``: row 0 (the pooled query) at the patch-token columns; ``all``: every row (the pooled row
    included) at those columns; ``patches``: every patch row at those columns; ``diag``: the diagonal
    entries of the patch tokens.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    flat = weights.reshape(weights.shape[0], -1)
    batch, num_patches = flat.shape
    bias = flat.new_zeros(batch, num_patches + 1, num_patches + 1)
    if formulation == "cls":
        bias[:, 0, 1:] = flat
    elif formulation == "all":
        bias[:, :, 1:] = flat[:, None, :]
    elif formulation == "patches":
        bias[:, 1:, 1:] = flat[:, None, :]
    else:
        bias[:, 1:, 1:] = torch.diag_embed(flat)
    return bias


def foveal_attention_bias(
    boxes: torch.Tensor | Sequence[Sequence[float]],
    image_size: int | Sequence[int],
    patch_size: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    sigma: float = DEFAULT_SIGMA,
    eps: float = DEFAULT_EPS,
    formulation: str = "cls",
    cell_rule: str = "released",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FALIP's additive attention bias ``(B, N+1, N+1)`` for ``B`` boxes (xyxy, model-input pixels).

    ``N = (H // patch_size) * (W // patch_size)`` patch tokens plus ``[CLS]`` at index 0. Computed in
    float64 with ``cell_rule="overlap"``, in the released code's float32 arithmetic (bit for bit) with
    ``cell_rule="released"`` (they differ by up to ~1.5e-4 * alpha at sigma 100), returned in ``dtype``. See :func:`foveal_token_weights` for the Gaussian and its ``eps`` and
    :func:`roa_cells` for which cells a box covers.
    """
    weights = foveal_token_weights(
        boxes, image_size, patch_size, alpha=alpha, sigma=sigma, eps=eps, cell_rule=cell_rule
    )
    return bias_from_token_weights(weights.to(dtype), formulation)  # placed in dtype: same values, less memory
