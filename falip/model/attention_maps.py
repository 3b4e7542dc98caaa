"""What the pooled row ([CLS]) attends to: its attention over the patch tokens in one layer, or rolled out.

The attention probabilities are recomputed from the ``q`` and ``k`` each layer really used (captured at
the tower's hook sites during the forward, the bias of that layer added), so the map is the one the
model computed, for any attention implementation (sdpa does not return its weights).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .clip import FoveatedCLIP
from .steering import FULL_ROWS, Steering, bias_as_mask
from .tower import capture, require_pooled_row_in_layers


def attention_probabilities(model: FoveatedCLIP, pixel_values: torch.Tensor, attention_bias: torch.Tensor | None = None,
                            bias_layers: Sequence[int] | None = None,
                            steering: Steering | None = None) -> list[torch.Tensor]:
    """Per layer, the attention probabilities ``(B, H, T, T)`` of the (steered) forward: the ``q`` and ``k`` the
    layer used (after any intervention) and its bias."""
    tower = model.tower
    require_pooled_row_in_layers(tower, "the attention map")
    layers = list(range(model.num_layers))
    if steering is None:
        steering = Steering(bias=attention_bias, bias_layers=bias_layers)
    attention_bias, bias_layers = steering.bias, steering.bias_layers
    biased = model.biased_layers(bias_layers) if attention_bias is not None else set()
    with torch.inference_mode(), capture(tower, layers, ("q", "k")) as store:
        model.encode_image(pixel_values, steering=steering, plan=FULL_ROWS)
        mask = None
        if attention_bias is not None:
            mask = bias_as_mask(tower, attention_bias, pixel_values.shape[0], torch.float32, model.device)
        out = []
        for index in layers:
            q, k = store[(index, "q")].float(), store[(index, "k")].float()
            batch, tokens, _ = q.shape
            shape = (batch, tokens, tower.num_heads, tower.head_dim)
            logits = (q.view(shape).transpose(1, 2) @ k.view(shape).transpose(1, 2).transpose(-1, -2)
                      * tower.attention_scale(index))
            if mask is not None and index in biased:
                logits = logits + mask
            out.append(torch.softmax(logits, dim=-1))
        return out


def cls_attention_map(model: FoveatedCLIP, pixel_values: torch.Tensor, attention_bias: torch.Tensor | None = None,
                      bias_layers: Sequence[int] | None = None, layer: int | str = -1,
                      steering: Steering | None = None) -> torch.Tensor:
    """``(B, grid, grid)``: the pooled row's attention to each patch, mean over heads, in ``layer`` (an index)
    or ``"rollout"`` (Abnar & Zuidema 2020: per layer the head-mean attention plus the identity, rows
    renormalised, multiplied through the layers)."""
    tower = model.tower
    probabilities = attention_probabilities(model, pixel_values, attention_bias, bias_layers, steering)
    pooled, patches = tower.pooled_rows.start, tower.patch_rows
    if layer == "rollout":
        tokens = probabilities[0].shape[-1]
        rollout = torch.eye(tokens).expand(probabilities[0].shape[0], -1, -1)
        for layer_probabilities in probabilities:
            mixed = layer_probabilities.mean(1) + torch.eye(tokens)
            rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        row = rollout[:, pooled, patches]
    else:
        row = probabilities[int(layer)].mean(1)[:, pooled, patches]
    grid = model.grid_size
    return row.reshape(-1, grid, grid)
