"""Pre-norm ViT layers computed here, step by step, from a block's own weights: the base of the towers whose
library fuses attention into one call (``nn.MultiheadAttention`` in open_clip, timm's ``Attention``), so that
the hook sites (q, k, v, z, resid_pre) exist and an additive mask reaches the logits.

A layer is ``residual + attention(norm1(residual))`` then ``+ mlp(norm2(.))``; a subclass says how its block
normalises, projects q/k/v (qk-norms included) and finishes (output projection, layer scales, MLP). The
attention itself is ``scaled_dot_product_attention`` with the additive mask, at the tower's
``attention_scale``. This module names no library's modules: the subclasses (tower modules) do.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .tower import Hook, VisionTower, check_site


class HandWrittenLayers(VisionTower):
    """Layer steps, row-trimmed layers, the approximate pooled stream, per-head terms and hook sites, over the
    per-block pieces a subclass gives (:meth:`_block`, :meth:`_norm1`, :meth:`_projections`,
    :meth:`_out_projection`, :meth:`_finish`)."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: dict[tuple[int, str], list[Hook]] = {}

    @property
    def attn_implementation(self) -> str:
        return "sdpa"

    # ------------------------------------------------------------------ what a subclass gives
    @abstractmethod
    def _block(self, index: int) -> nn.Module:
        """Block ``index`` of the tower's layers."""

    @abstractmethod
    def _norm1(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The block's pre-attention normalisation."""

    @abstractmethod
    def _projections(self, block: nn.Module, normed: torch.Tensor, query_rows: torch.Tensor):
        """``(queries of query_rows, keys of normed, values of normed)``, each ``(B, L, H*d)``, qk-norms applied."""

    @abstractmethod
    def _out_projection(self, block: nn.Module) -> nn.Linear:
        """The linear map from the heads' outputs side by side (``z``) to the residual stream."""

    @abstractmethod
    def _finish(self, block: nn.Module, residual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``residual`` + the attention update made from ``z``, then the block's MLP step."""

    def _sequence_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """A steering-layout mask -> the layers' sequence (the same for towers whose pooled rows are in it)."""
        return mask

    def _sequence_rows(self, rows: slice) -> slice:
        """Steering-layout rows -> rows of the layers' sequence."""
        return rows

    # ------------------------------------------------------------------ the contract
    def _site(self, index: int, site: str, tensor: torch.Tensor) -> torch.Tensor:
        for fn in self._hooks.get((index, site), ()):
            replaced = fn(tensor)
            tensor = tensor if replaced is None else replaced
        return tensor

    def _attend(self, index: int, queries, keys, values, mask) -> torch.Tensor:
        """``(B, Lq, H*d)`` queries over ``(B, L, H*d)`` keys/values with the additive ``mask`` -> ``(B, Lq, H*d)``."""
        batch, count = queries.shape[:2]

        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, tensor.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        output = F.scaled_dot_product_attention(split(queries), split(keys), split(values),
                                                attn_mask=None if mask is None else mask.to(queries.dtype),
                                                scale=self.attention_scale(index))
        return output.transpose(1, 2).reshape(batch, count, self.num_heads * self.head_dim)

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        block = self._block(index)
        hidden = self._site(index, "resid_pre", hidden)
        normed = self._norm1(block, hidden)
        queries, keys, values = self._projections(block, normed, normed)
        queries, keys, values = (self._site(index, site, tensor) for site, tensor in
                                 (("q", queries), ("k", keys), ("v", values)))
        z = self._site(index, "z", self._attend(index, queries, keys, values, self._sequence_mask(mask)))
        return self._finish(block, hidden, z)

    def layer_rows(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None, rows: slice,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
        block = self._block(index)
        rows, mask = self._sequence_rows(rows), self._sequence_mask(mask)
        normed = self._norm1(block, hidden)
        queries, keys, values = self._projections(block, normed, normed[:, rows])
        residual = hidden[:, rows]
        if image_index is not None:
            queries, keys, values, residual = (queries[image_index], keys[image_index], values[image_index],
                                               residual[image_index])
        z = self._attend(index, queries, keys, values, None if mask is None else mask[..., rows, :])
        return self._finish(block, residual, z)

    def pooled_stream_layer(self, index: int, image_hidden: torch.Tensor, pooled: torch.Tensor,
                            mask: torch.Tensor | None, image_index: torch.Tensor) -> torch.Tensor:
        if not self.pooled_in_sequence:
            raise ValueError(f"cls_stream computes the pooled row inside the layers; {type(self).__name__} pools "
                             f"after them")
        block = self._block(index)
        own, patches = self._norm1(block, pooled), self._norm1(block, image_hidden[:, self.patch_rows])
        own_q, own_k, own_v = self._projections(block, own, own)
        _, patch_k, patch_v = self._projections(block, patches, patches[:, :0])
        keys = torch.cat([own_k, patch_k[image_index]], dim=1)
        values = torch.cat([own_v, patch_v[image_index]], dim=1)
        z = self._attend(index, own_q, keys, values, None if mask is None else mask[..., self.pooled_rows, :])
        return self._finish(block, pooled, z)

    def hooked_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The unsteered forward through these layers (whose sites run the installed hooks), then the readout."""
        hidden = self.embed(pixels)
        for index in range(self.num_layers):
            hidden = self.layer(index, hidden, None)
        return self.readout(hidden)

    def head_terms(self, index: int, z_pooled: torch.Tensor) -> torch.Tensor:
        weight = self._out_projection(self._block(index)).weight
        per_head = z_pooled.reshape(z_pooled.shape[0], self.num_heads, self.head_dim)
        return torch.einsum("bhd,whd->bhw", per_head.to(weight.dtype),
                            weight.reshape(weight.shape[0], self.num_heads, self.head_dim))

    def head_bias(self, index: int) -> torch.Tensor:
        out_proj = self._out_projection(self._block(index))
        return out_proj.bias if out_proj.bias is not None else torch.zeros(out_proj.out_features)

    def add_hook(self, index: int, site: str, fn: Hook, first: bool = False) -> Callable[[], None]:
        check_site(site)
        hooks = self._hooks.setdefault((index, site), [])
        hooks.insert(0, fn) if first else hooks.append(fn)

        def remove() -> None:
            if fn in hooks:
                hooks.remove(fn)
        return remove

    @property
    def hooks_installed(self) -> bool:
        return any(self._hooks.values())
