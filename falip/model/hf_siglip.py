"""HF ``transformers`` SigLIP (and SigLIP 2's fixed-resolution checkpoints) as a
:class:`~falip.model.tower.VisionTower`: a tower module, the only place that knows SigLIP's module names.

SigLIP has no ``[CLS]`` token: its encoder's sequence is the patch tokens alone, and the image is pooled
after the last layer by an attention-pooling head (``SiglipMultiheadAttentionPoolingHead``): a learned probe
query attends over the post-layer-normed tokens (``nn.MultiheadAttention``), then a residual MLP. In the
steering layout (falip/model/tower.py) that probe is the pooled row 0, so FALIP's default ``cls``
formulation places the foveal row on the probe's attention logits over the patch tokens, in every head --
the analogue of CLIP's ``[CLS]`` row. A bias's patch rows (``all``, ``patches``, ``diag``) act in the
encoder layers it names, through the layers' own additive ``attention_mask``.

The pooling head with a bias is computed with the head's own modules (its ``in_proj``/``out_proj`` weights,
``layernorm`` and ``mlp``) and ``scaled_dot_product_attention`` for the attention; the keys and values are
projected once per image and shared by the image's regions. Without steering, the library's own
``get_image_features`` runs (bit for bit).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .hf_clip import HFEncoderLayers, HFText
from .tower import PROBE_PATCH_ROWS, PROBE_ROWS, probe_sequence_mask, probe_sequence_rows

PROBE, PATCHES = PROBE_ROWS, PROBE_PATCH_ROWS


class HFSiglipTower(HFEncoderLayers):
    """The vision side of a ``transformers`` ``SiglipModel``: patch tokens only, pooled by the head's probe."""

    pooled_rows = PROBE
    patch_rows = PATCHES
    pooled_in_sequence = False

    def __init__(self, siglip_model: nn.Module):
        vision = siglip_model.vision_model
        vision = vision if hasattr(vision, "encoder") else vision.vision_model  # older transformers nest it
        if getattr(vision, "head", None) is None:
            raise ValueError("this SigLIP checkpoint has no attention-pooling head (vision_use_head=false): its image "
                             "features are not pooled by a probe, so FALIP has no pooled row to steer")
        super().__init__(vision, siglip_model.config.vision_config)
        self._library: Callable[..., torch.Tensor] = lambda pixels: siglip_model.get_image_features(
            pixel_values=pixels).pooler_output

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.post_layernorm.weight.dtype

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision.embeddings(pixels)

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return super().layer(index, hidden, probe_sequence_mask(mask))

    def layer_rows(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None, rows: slice,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
        return super().layer_rows(index, hidden, probe_sequence_mask(mask), probe_sequence_rows(rows), image_index)

    def pooled_stream_layer(self, index, image_hidden, pooled, mask, image_index):
        raise ValueError("cls_stream computes the pooled row inside the layers; SigLIP pools after them")

    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        normed = self.vision.post_layernorm(hidden)
        head = self.vision.head
        if mask is None:
            pooled = head(normed)  # the library's own head
            return pooled if image_index is None else pooled[image_index]
        attention = head.attention
        width, heads = attention.embed_dim, attention.num_heads
        w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else (None,) * 3
        keys, values = F.linear(normed, w_k, b_k), F.linear(normed, w_v, b_v)  # once per image
        if image_index is not None:
            keys, values = keys[image_index], values[image_index]
        batch, tokens = keys.shape[:2]

        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(tensor.shape[0], tensor.shape[1], heads, width // heads).transpose(1, 2)

        query = split(F.linear(head.probe, w_q, b_q)).expand(batch, -1, -1, -1)
        logits_bias = mask[..., PROBE, PATCHES].to(keys.dtype)  # (R or 1, 1 or H, 1, N): the probe's row
        attended = F.scaled_dot_product_attention(query, split(keys), split(values), attn_mask=logits_bias)
        pooled = attention.out_proj(attended.transpose(1, 2).reshape(batch, 1, width))
        pooled = pooled + head.mlp(head.layernorm(pooled))
        return pooled[:, 0]

    def library_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._library(pixels)


class HFSiglipText(HFText):
    """The text side and the shared scalars of a ``SiglipModel``. SigLIP was trained on texts padded to
    ``max_length`` (64 tokens) without an attention mask, so it reads them that way; its scores are
    ``sigmoid(logit_scale * cos + logit_bias)`` -- a monotone map of the cosine, so every argmax and every
    table metric is the same as with the cosine alone."""

    padding = "max_length"
    probability = "sigmoid"  # the sigmoid loss: every (image, text) pair on its own

    @property
    def context(self) -> int:
        return int(self._model.config.text_config.max_position_embeddings)

    @property
    def width(self) -> int:
        config = self._model.config.text_config
        return int(getattr(config, "projection_size", None) or config.hidden_size)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._model.logit_scale

    @property
    def logit_bias(self) -> float:
        return float(self._model.logit_bias.detach().float())

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._model.get_text_features(input_ids=input_ids).pooler_output  # no mask, as trained
