"""PointCLIP (V1) multi-view depth maps of point clouds, as its released zero-shot code computes them.

Read from ZrrSkywalker/PointCLIP ``trainers/mv_utils_zs.py`` (``PCViews``, ``points2depth``,
``distribute``) and ``trainers/zeroshot.py`` (``mv_proj``); re-written here, vectorised over shapes,
views and points:

* 6 views, each a rotation ``R = Rx @ Ry @ Rz`` of the released Euler angles applied as ``p @ R^T``,
  then a translation ``z += 1.6`` (the released ``TRANS = -1.6`` subtracted);
* perspective projection ``u = x / z``, ``v = y / z``; pixel row ``ceil((u + 1) * R / 2 - 0.5)``,
  column ``ceil((v + 1) * R / 2 - 0.5)`` (1x1 splats); points off the canvas or with ``z < 0`` dropped;
* pixel value = sum(1) / sum(1 / z) over its points: the harmonic mean of their depths; empty = 0;
* model input: the map repeated to 3 channels and resized bilinearly (``align_corners=True``) to the
  model's input size, with **no** mean/std normalisation (raw depths, as the released code feeds CLIP).

The arithmetic follows the released code's float32 steps (``eps = 1e-12`` added to the depth), so the
maps match it to float32 rounding (``tests/data/test_pointcloud_projection.py`` compares with a literal
per-point loop). Non-finite points are dropped (the released code has none to meet).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ...geometry import Region

RESOLUTION = 128
TRANSLATION = (0.0, 0.0, -1.6)
# (x, y, z) Euler angles of the released 6 views, radians.
VIEW_ANGLES = (
    (0.0, 0.0, math.pi / 2),
    (math.pi / 2, 0.0, math.pi / 2),
    (math.pi, 0.0, math.pi / 2),
    (3 * math.pi / 2, 0.0, math.pi / 2),
    (0.0, -math.pi / 2, math.pi / 2),
    (0.0, math.pi / 2, math.pi / 2),
)
NUM_VIEWS = len(VIEW_ANGLES)
EPS = 1e-12


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``(V, 3)`` Euler angles (x, y, z) -> ``(V, 3, 3)`` rotations ``Rx @ Ry @ Rz``."""
    x, y, z = angles.unbind(-1)
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], -1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).reshape(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], -1).reshape(-1, 3, 3)
    return rx @ ry @ rz


def view_transforms(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The released views: ``(V, 3, 3)`` matrices to right-multiply points by (``R^T``) and the ``(3,)`` translation."""
    angles = torch.tensor(np.asarray(VIEW_ANGLES), dtype=torch.float64).float()  # the released float32 angles
    rotations = euler_to_matrix(angles).transpose(1, 2)
    return rotations.to(device), torch.tensor(TRANSLATION, dtype=torch.float32, device=device)


def depth_maps(points: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """``(B, V=6, resolution, resolution)`` float32 depth maps of ``points`` ``(B, N, 3)`` (any device).

    Row ``i`` / column ``j`` of a map = the released code's ``_x`` / ``_y`` pixel; 0 where no point lands.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    points = points.float()
    rotations, translation = view_transforms(points.device)
    batch, count = points.shape[:2]
    views = torch.matmul(points[:, None], rotations[None]) - translation  # (B, V, N, 3)
    x, y, depth = views.unbind(-1)
    u, v = x / (depth + EPS), y / (depth + EPS)
    row = torch.ceil((u + 1) * resolution / 2 - 0.5)
    col = torch.ceil((v + 1) * resolution / 2 - 0.5)
    used = ((row >= 0) & (row <= resolution - 1) & (col >= 0) & (col <= resolution - 1) & (depth >= 0)
            & torch.isfinite(views).all(-1))
    weight = torch.where(used, 1 / (depth + EPS), torch.zeros_like(depth))
    weighted = torch.where(used, depth * weight, torch.zeros_like(depth))
    index = torch.where(used, row * resolution + col, torch.zeros_like(row)).long().reshape(batch * NUM_VIEWS, count)
    cells = resolution * resolution
    total_weight = torch.zeros(batch * NUM_VIEWS, cells, device=points.device).scatter_add_(
        1, index, weight.reshape(batch * NUM_VIEWS, count))
    total_value = torch.zeros(batch * NUM_VIEWS, cells, device=points.device).scatter_add_(
        1, index, weighted.reshape(batch * NUM_VIEWS, count))
    total_weight = total_weight + (total_weight == 0).float()
    return (total_value / total_weight).reshape(batch, NUM_VIEWS, resolution, resolution)


def model_inputs(maps: torch.Tensor, input_size: int) -> torch.Tensor:
    """``(B, V, R, R)`` depth maps -> ``(B * V, 3, input_size, input_size)`` CLIP inputs: 3 channels,
    bilinear with ``align_corners=True``, no normalisation (PointCLIP's ``mv_proj``)."""
    flat = maps.reshape(-1, 1, maps.shape[-2], maps.shape[-1]).repeat(1, 3, 1, 1)
    return F.interpolate(flat, size=(input_size, input_size), mode="bilinear", align_corners=True)


def foreground_region(view: torch.Tensor, with_mask: bool = True) -> Region | None:
    """The region of attention of one model-input view ``(3, S, S)`` (or ``(S, S)``): the bounding box
    (xyxy, input pixels, x = column) of its foreground (pixels > 0) and, with ``with_mask``, the
    foreground itself as the region's mask; ``None`` for an empty view (it gets no bias)."""
    plane = view[0] if view.dim() == 3 else view
    foreground = (plane > 0).cpu().numpy()
    rows, cols = np.nonzero(foreground)
    if rows.size == 0:
        return None
    box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    return Region((box,), foreground if with_mask else None)
