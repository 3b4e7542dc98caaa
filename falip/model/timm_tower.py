"""open_clip's timm towers pooled by an attention-pooling probe -- ``ViT-B-16-SigLIP2``, ``ViT-B-16-SigLIP``
and their kin in open_clip (``TimmModel`` around a timm ``VisionTransformer`` with ``global_pool='map'``) -- as
a :class:`~falip.model.tower.VisionTower`: a tower module, the only place that knows timm's module names.

Like HF SigLIP (:mod:`falip.model.hf_siglip`), the layers' sequence is the patch tokens alone and the image is
pooled after the last layer (``norm``) by ``attn_pool`` (timm's ``AttentionPoolLatent``: one learned latent
query over the tokens, then a residual MLP). In the steering layout that latent is the pooled row 0: FALIP's
default row is added to the latent's attention logits over the patch tokens (``attn_pool``'s own
``attn_mask``), in every head; a bias's patch rows act in the layers it names, computed by hand from each
``Block``'s weights (``norm1``, ``attn.qkv``, ``attn.q_norm``/``k_norm``, ``attn.norm``, ``attn.proj``,
``ls1``, ``norm2``, ``mlp``, ``ls2``) with ``scaled_dot_product_attention`` and the additive mask. Unsteered,
open_clip's own ``encode_image`` runs (bit for bit).

Supported: timm ``VisionTransformer`` trunks with standard ``Block``/``Attention`` blocks (qk-norm included;
no gated attention), no prefix tokens ([CLS] or registers), a fixed image size, one latent query
(:class:`TimmProbeTower`); and timm ``Eva`` trunks pooled by their [CLS] token -- EVA02-CLIP (``EVA02-B-16``,
``EVA02-L-14``) -- with the rotary embedding written out (:class:`TimmEvaTower`). Refused in one line naming
why: every other timm trunk, PE-Core (an ``Eva`` pooled by a probe over rotary tokens) among them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .manual_layers import HandWrittenLayers
from .tower import PROBE_PATCH_ROWS, PROBE_ROWS, probe_sequence_mask, probe_sequence_rows


def unsupported_timm(visual: nn.Module) -> str | None:
    """Why open_clip's timm vision tower ``visual`` cannot be steered here, or ``None``."""
    trunk = getattr(visual, "trunk", None)
    kind = type(trunk).__name__
    if kind != "VisionTransformer":
        return f"its timm trunk is {kind}, not a timm VisionTransformer pooled by an attention-pooling probe"
    pool = getattr(trunk, "attn_pool", None)
    if pool is None or type(pool).__name__ != "AttentionPoolLatent":
        return f"its timm VisionTransformer pools with global_pool={trunk.global_pool!r}, not an attention-pooling probe"
    if pool.latent_len != 1 or pool.pos_embed is not None or pool.pool != "token":
        return "its attention-pooling head has several latent queries or its own position embedding"
    if trunk.num_prefix_tokens or getattr(trunk, "dynamic_img_size", False):
        return "its sequence has prefix tokens ([CLS] or registers) or a dynamic image size"
    for block in trunk.blocks:
        if type(block).__name__ != "Block" or type(block.attn).__name__ != "Attention" or \
                getattr(block.attn, "gate", None) is not None:
            return f"its blocks are timm {type(block).__name__}/{type(block.attn).__name__} (gated or parallel), not Block/Attention"
    return None


class _TimmTrunkTower(HandWrittenLayers):
    """What the timm towers share: the trunk inside open_clip's ``TimmModel``, its geometry from ``patch_embed``,
    its blocks, and open_clip's ``encode_image`` as the library's features."""

    def __init__(self, model: nn.Module, why: str | None):
        super().__init__()
        if why:
            raise ValueError(f"this open_clip model cannot be steered: {why}")
        self.visual = model.visual
        trunk = self.visual.trunk
        size, patch = trunk.patch_embed.img_size, trunk.patch_embed.patch_size
        if size[0] != size[1] or patch[0] != patch[1]:
            raise ValueError("this open_clip model cannot be steered: its input or patches are not square")
        self.image_size, self.patch_size = int(size[0]), int(patch[0])
        self.num_layers = len(trunk.blocks)
        self.num_heads = int(trunk.blocks[0].attn.num_heads)
        self.head_dim = int(trunk.blocks[0].attn.head_dim)
        self._library: Callable[[torch.Tensor], torch.Tensor] = model.encode_image

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.trunk.patch_embed.proj.weight.dtype

    def _block(self, index: int) -> nn.Module:
        return self.visual.trunk.blocks[index]

    def _norm1(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return block.norm1(hidden)

    def _out_projection(self, block: nn.Module) -> nn.Linear:
        if not isinstance(block.attn.norm, nn.Identity):
            raise ValueError("this timm tower normalises the heads' outputs together before the output projection "
                             "(scale_norm; EVA02's inner layer norm): they do not split into per-head terms")
        return block.attn.proj

    def _per_head_norm(self, norm: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
        """A per-head norm (timm's ``q_norm``/``k_norm``, over ``head_dim``) of ``(B, L, H*d)`` rows."""
        shape = tensor.shape
        return norm(tensor.view(*shape[:-1], self.num_heads, self.head_dim)).reshape(shape)

    def library_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """open_clip's ``encode_image``; while hooks are installed, the same forward through this tower's layers."""
        return self.hooked_features(pixels) if self.hooks_installed else self._library(pixels)


class TimmProbeTower(_TimmTrunkTower):
    """The vision side of an open_clip model whose ``visual`` is a ``TimmModel`` around a probe-pooled timm ViT."""

    pooled_rows = PROBE_ROWS
    patch_rows = PROBE_PATCH_ROWS
    pooled_in_sequence = False

    def __init__(self, model: nn.Module):
        super().__init__(model, unsupported_timm(model.visual))

    def _projections(self, block: nn.Module, normed: torch.Tensor, query_rows: torch.Tensor):
        attention = block.attn
        weights = attention.qkv.weight.chunk(3)
        biases = attention.qkv.bias.chunk(3) if attention.qkv.bias is not None else (None,) * 3

        return (self._per_head_norm(attention.q_norm, F.linear(query_rows, weights[0], biases[0])),
                self._per_head_norm(attention.k_norm, F.linear(normed, weights[1], biases[1])),
                F.linear(normed, weights[2], biases[2]))

    def _finish(self, block: nn.Module, residual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hidden = residual + block.drop_path1(block.ls1(block.attn.proj(block.attn.norm(z))))
        return hidden + block.drop_path2(block.ls2(block.mlp(block.norm2(hidden))))

    def _sequence_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        return probe_sequence_mask(mask)

    def _sequence_rows(self, rows: slice) -> slice:
        return probe_sequence_rows(rows)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        trunk = self.visual.trunk
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))

    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        trunk = self.visual.trunk
        normed = trunk.norm(hidden)
        if image_index is not None:
            normed = normed[image_index]
        if mask is None:
            pooled = trunk.attn_pool(normed)
        else:  # the probe's row of the layout, on the latent's logits over the patch tokens: (R or 1, 1 or H, 1, N)
            pooled = trunk.attn_pool(normed, attn_mask=mask[..., PROBE_ROWS, PROBE_PATCH_ROWS].to(normed.dtype))
        return self.visual.head(trunk.head(trunk.head_drop(trunk.fc_norm(pooled))))


def unsupported_timm_eva(visual: nn.Module) -> str | None:
    """Why open_clip's timm ``Eva`` tower (EVA02) cannot be steered here, or ``None``."""
    trunk = getattr(visual, "trunk", None)
    if type(trunk).__name__ != "Eva":
        return f"its timm trunk is {type(trunk).__name__}, not Eva"
    if getattr(trunk, "global_pool", None) != "token" or getattr(trunk, "attn_pool", None) is not None:
        return (f"its timm Eva pools with global_pool={getattr(trunk, 'global_pool', None)!r} (PE-Core: a probe over "
                f"rotary tokens), not its [CLS] token")
    if trunk.num_prefix_tokens != 1 or trunk.cls_token is None or getattr(trunk, "dynamic_img_size", False):
        return "its sequence has register tokens or a dynamic image size"
    if trunk.rope is None or getattr(trunk, "rope_mixed", False) or not hasattr(trunk.rope, "feat_shape"):
        return "its rotary embedding is absent, mixed per layer or has no fixed grid"
    for block in trunk.blocks:
        if type(block).__name__ != "EvaBlock" or getattr(block.attn, "gate", None) is not None:
            return f"its blocks are timm {type(block).__name__} (or gated), not EvaBlock"
    return None


class TimmEvaTower(_TimmTrunkTower):
    """The vision side of an open_clip model around a timm ``Eva`` trunk pooled by its [CLS] token (EVA02-CLIP):
    FALIP as for CLIP, the [CLS] row in the biased layers. Each layer is written out from the ``EvaBlock``'s
    weights: q/k/v projections (fused ``qkv`` with ``q_bias``/``v_bias``, or ``q_proj``/``k_proj``/``v_proj``),
    qk-norms, the rotary embedding applied to the patch rows' queries and keys (not to [CLS]), attention with the
    additive mask, ``attn.norm`` (EVA02's inner layer norm), ``proj``, ``gamma_1``, then ``norm2``, the SwiGLU
    ``mlp`` and ``gamma_2``. The ``q``/``k`` hook sites hold the rotated queries and keys (what the logits use).
    EVA02's inner layer norm mixes the heads before the output projection, so the per-head decomposition refuses."""

    pooled_rows = slice(0, 1)
    patch_rows = slice(1, None)

    def __init__(self, model: nn.Module):
        super().__init__(model, unsupported_timm_eva(model.visual))

    def _rotate(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rows ``(B, L, H*d)`` of one of three shapes -- the whole sequence ([CLS] + patches), the patches alone,
        or [CLS] alone -- with the rotary embedding applied to their patch rows."""
        from timm.layers import apply_rot_embed_cat

        patches = self.grid_size ** 2
        count = tensor.shape[1]
        if count in (0, 1):
            return tensor  # [CLS] (or nothing): no rotary position
        if count not in (patches, patches + 1):
            raise ValueError(f"{count} rows are neither [CLS], the patches nor the whole sequence")
        shape = tensor.shape
        heads = tensor.view(shape[0], count, self.num_heads, self.head_dim).transpose(1, 2)
        start = count - patches
        rope = self.visual.trunk.rope.get_embed().to(tensor.device)
        half = getattr(self._block(0).attn, "rotate_half", False)
        rotated = torch.cat([heads[:, :, :start], apply_rot_embed_cat(heads[:, :, start:], rope, half=half)], dim=2)
        return rotated.type_as(tensor).transpose(1, 2).reshape(shape)

    def _projections(self, block: nn.Module, normed: torch.Tensor, query_rows: torch.Tensor):
        attention = block.attn
        if attention.qkv is not None:
            weights = attention.qkv.weight.chunk(3)
            if attention.q_bias is not None:
                biases = (attention.q_bias, attention.k_bias, attention.v_bias)
                if attention.qkv.bias is not None:
                    biases = tuple(own + extra for own, extra in zip(attention.qkv.bias.chunk(3), biases))
            else:
                biases = attention.qkv.bias.chunk(3) if attention.qkv.bias is not None else (None,) * 3
            project = [lambda x, w=w, b=b: F.linear(x, w, b) for w, b in zip(weights, biases)]
        else:
            project = [attention.q_proj, attention.k_proj, attention.v_proj]

        queries = self._rotate(self._per_head_norm(attention.q_norm, project[0](query_rows)))
        keys = self._rotate(self._per_head_norm(attention.k_norm, project[1](normed)))
        return queries, keys, project[2](normed)

    def _finish(self, block: nn.Module, residual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        update = block.attn.proj(block.attn.norm(z))
        hidden = residual + block.drop_path1(update if block.gamma_1 is None else block.gamma_1 * update)
        mlp = block.mlp(block.norm2(hidden))
        return hidden + block.drop_path2(mlp if block.gamma_2 is None else block.gamma_2 * mlp)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        trunk = self.visual.trunk
        hidden, _ = trunk._pos_embed(trunk.patch_embed(pixels))
        return trunk.norm_pre(hidden)

    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the [CLS] row is biased inside the layers; this tower's readout takes no mask")
        trunk = self.visual.trunk
        normed = trunk.norm(hidden if image_index is None else hidden[image_index])
        return self.visual.head(trunk.head(trunk.head_drop(trunk.fc_norm(normed[:, 0]))))
