"""One CLIP encoder layer computed for some query rows only: the exact trims of a biased forward.

Only the ``[CLS]`` output of the last layer is read, so the last layer needs one query row, not
``T``; and when the bias touches only the ``[CLS]`` query row (FALIP's formulation), the patch rows
of the first biased layer see the same inputs and no bias for every region of an image, so they are
computed once per image. Both trims change no value beyond the rounding of differently shaped
matrix products (tests/model/test_trims.py compares them with the full layers, eager and sdpa).

The layer's own modules do the work (its layer norms, projections, MLP and the model's attention
function from transformers' attention interface), called on fewer rows: no modelling code is copied.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward


def layer_rows(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None, rows: slice,
               index: torch.Tensor | None = None) -> torch.Tensor:
    """``layer``'s output at the token positions ``rows`` of ``hidden`` ``(I, T, D)``, keys and values
    from all ``T`` tokens. With ``index`` ``(R,)``, output row ``r`` reads image ``index[r]`` (its keys,
    values and residual) and mask row ``r``: the rows of one image then share everything but the mask.
    ``mask`` is the additive attention mask ``(R or I, 1 or heads, T, T)`` or ``None``."""
    attention = layer.self_attn
    images, tokens, width = hidden.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    normed = layer.layer_norm1(hidden)
    keys = attention.k_proj(normed).view(images, tokens, heads, head_dim).transpose(1, 2)
    values = attention.v_proj(normed).view(images, tokens, heads, head_dim).transpose(1, 2)
    queries = attention.q_proj(normed[:, rows])
    residual = hidden[:, rows]
    if index is not None:
        queries, keys, values, residual = queries[index], keys[index], values[index], residual[index]
    batch, count = queries.shape[:2]
    queries = queries.view(batch, count, heads, head_dim).transpose(1, 2)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    output, _ = interface(attention, queries, keys, values, None if mask is None else mask[..., rows, :],
                          scaling=attention.scale, dropout=0.0)
    hidden_rows = residual + attention.out_proj(output.reshape(batch, count, width))
    return hidden_rows + layer.mlp(layer.layer_norm2(hidden_rows))


CLS = slice(0, 1)
PATCHES = slice(1, None)


def shared_first_biased_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                              last: bool) -> torch.Tensor:
    """The first biased layer when the bias is on the ``[CLS]`` row only: per image ``hidden`` ``(I, T, D)``,
    per region ``mask`` and ``index`` ``(R,)``. Patch rows once per image, unbiased (unless ``last``: not
    needed); the ``[CLS]`` row once per region, biased. Returns ``(R, T, D)`` (``(R, 1, D)`` if ``last``)."""
    cls = layer_rows(layer, hidden, mask, CLS, index)
    if last:
        return cls
    return torch.cat([cls, layer_rows(layer, hidden, None, PATCHES)[index]], dim=1)


def cls_stream_layer(layer: nn.Module, image_hidden: torch.Tensor, cls: torch.Tensor, mask: torch.Tensor | None,
                     index: torch.Tensor) -> torch.Tensor:
    """**Approximate** (``run.cls_stream``): one layer for the per-region ``[CLS]`` tokens ``cls`` ``(R, 1, D)``
    only, attending to themselves and to their image's *unbiased* patch tokens (``image_hidden``
    ``(I, T, D)``, row ``index[r]``), with mask row 0. The patch tokens never see a region's ``[CLS]``:
    that is the approximation (exact in a layer's first step, not after)."""
    attention = layer.self_attn
    heads, head_dim = attention.num_heads, attention.head_dim
    patches = layer.layer_norm1(image_hidden[:, 1:])
    own = layer.layer_norm1(cls)
    keys = torch.cat([attention.k_proj(own), attention.k_proj(patches)[index]], dim=1)
    values = torch.cat([attention.v_proj(own), attention.v_proj(patches)[index]], dim=1)
    batch, tokens, width = keys.shape

    def split(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(batch, tensor.shape[1], heads, head_dim).transpose(1, 2)

    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    output, _ = interface(attention, split(attention.q_proj(own)), split(keys), split(values),
                          None if mask is None else mask[..., CLS, :], scaling=attention.scale, dropout=0.0)
    hidden = cls + attention.out_proj(output.reshape(batch, 1, width))
    return hidden + layer.mlp(layer.layer_norm2(hidden))
