"""Per-head decomposition of the ``[CLS]`` token's attention update (the paper's "Unleash" analysis).

In a layer, the attention output of ``[CLS]`` is ``W_o z + b_o`` with ``z`` the heads' outputs side by
side; so it is a sum of per-head terms ``G_h = W_o[:, h] z_h`` plus the bias ``b_o``. This module
reads ``z`` at the output projection's input (a hook, no copy of CLIP's code) and returns the G_h.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .clip import FoveatedCLIP
from .interventions import capture, resolve_layers


def split_heads(z_cls: torch.Tensor, out_proj: torch.nn.Linear, heads: int) -> torch.Tensor:
    """``(B, H, width)``: each head's term ``W_o[:, h] z_h`` of ``out_proj(z_cls)`` (without its bias)."""
    batch, size = z_cls.shape[0], z_cls.shape[1] // heads
    per_head = z_cls.reshape(batch, heads, size)
    weight = out_proj.weight.reshape(out_proj.weight.shape[0], heads, size)  # (width, H, d)
    return torch.einsum("bhd,whd->bhw", per_head.to(weight.dtype), weight)


def head_contributions(model: FoveatedCLIP, pixel_values: torch.Tensor, *, attention_bias: torch.Tensor | None = None,
                       bias_layers: Sequence[int] | None = None, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Each head's contribution to the ``[CLS]`` residual stream, ``(B, n_layers, n_heads, width)``.

    For every layer in ``layers`` (default all; negative = from the end), ``G_h`` is head ``h``'s share of
    that layer's attention update of ``[CLS]`` (before ``post_layernorm``): summed over heads and added
    to the output projection's bias it is the update itself. With ``attention_bias`` / ``bias_layers``
    the forward is biased as in :meth:`FoveatedCLIP.encode_image`.
    """
    chosen = resolve_layers(layers, model.num_layers)
    encoder_layers = model.clip.vision_model.encoder.layers
    with torch.inference_mode(), model.full_rows(), capture({i: encoder_layers[i] for i in chosen}, ("z",)) as store:
        model.encode_image(pixel_values, attention_bias, bias_layers)
        stacked = [split_heads(store[(i, "z")][:, 0], encoder_layers[i].self_attn.out_proj,
                               encoder_layers[i].self_attn.num_heads) for i in chosen]
        return torch.stack(stacked, dim=1).float()
