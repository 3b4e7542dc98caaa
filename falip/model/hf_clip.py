"""HF ``transformers`` CLIP as a :class:`~falip.model.tower.VisionTower` (one of the tower modules that know
a backbone's names; HF SigLIP is :mod:`falip.model.hf_siglip`, which shares the layer code here).

The tower drives ``CLIPVisionTransformer`` step by step: ``embeddings`` + ``pre_layrnorm``, each
``CLIPEncoderLayer`` with the additive ``attention_mask`` that both the ``eager`` and ``sdpa`` attention
implementations add to the logits, ``post_layernorm`` of the ``[CLS]`` row (row 0) and
``visual_projection``. The exact trims compute a layer for some query rows with the layer's own modules
(layer norms, projections, MLP, the model's attention function from transformers' attention interface):
no modelling code is copied. Hook sites map onto module hooks: ``q``/``k``/``v`` = the outputs of
``q_proj``/``k_proj``/``v_proj``, ``z`` = the input of ``out_proj``, ``resid_pre`` = the layer's input.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward

from .tower import Hook, VisionTower, check_site

CLS = slice(0, 1)
PATCHES = slice(1, None)


class HFEncoderLayers(VisionTower):
    """What HF CLIP-family encoder layers share (``layer_norm1`` -> ``self_attn`` with ``q_proj``/``k_proj``/
    ``v_proj``/``out_proj`` -> ``layer_norm2`` -> ``mlp``, an additive ``attention_mask``): the layer steps,
    the row-trimmed layer, the per-head terms and the hook sites. Subclasses give ``_layer(i)``, the
    embedding and the readout."""

    def __init__(self, vision: nn.Module, vision_config) -> None:
        super().__init__()
        self.vision = vision
        self.image_size, self.patch_size = int(vision_config.image_size), int(vision_config.patch_size)
        self.num_layers = int(vision_config.num_hidden_layers)
        self.num_heads = int(vision_config.num_attention_heads)
        self.head_dim = int(vision_config.hidden_size) // self.num_heads
        self._config = vision_config

    @property
    def attn_implementation(self) -> str:
        return self._config._attn_implementation or "eager"

    def _layer(self, index: int) -> nn.Module:
        return self.vision.encoder.layers[index]

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self._layer(index)(hidden, mask)

    def _attend(self, attention: nn.Module, queries, keys, values, mask):
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
        output, _ = interface(attention, queries, keys, values, mask, scaling=attention.scale, dropout=0.0)
        return output

    def layer_rows(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None, rows: slice,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
        layer = self._layer(index)
        attention = layer.self_attn
        images, tokens, width = hidden.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        normed = layer.layer_norm1(hidden)
        keys = attention.k_proj(normed).view(images, tokens, heads, head_dim).transpose(1, 2)
        values = attention.v_proj(normed).view(images, tokens, heads, head_dim).transpose(1, 2)
        queries = attention.q_proj(normed[:, rows])
        residual = hidden[:, rows]
        if image_index is not None:
            queries, keys, values, residual = (queries[image_index], keys[image_index], values[image_index],
                                               residual[image_index])
        batch, count = queries.shape[:2]
        queries = queries.view(batch, count, heads, head_dim).transpose(1, 2)
        output = self._attend(attention, queries, keys, values, None if mask is None else mask[..., rows, :])
        hidden_rows = residual + attention.out_proj(output.reshape(batch, count, width))
        return hidden_rows + layer.mlp(layer.layer_norm2(hidden_rows))

    def head_terms(self, index: int, z_pooled: torch.Tensor) -> torch.Tensor:
        out_proj = self._layer(index).self_attn.out_proj
        batch, size = z_pooled.shape[0], z_pooled.shape[1] // self.num_heads
        per_head = z_pooled.reshape(batch, self.num_heads, size)
        weight = out_proj.weight.reshape(out_proj.weight.shape[0], self.num_heads, size)  # (width, H, d)
        return torch.einsum("bhd,whd->bhw", per_head.to(weight.dtype), weight)

    def head_bias(self, index: int) -> torch.Tensor:
        out_proj = self._layer(index).self_attn.out_proj
        return out_proj.bias if out_proj.bias is not None else torch.zeros(out_proj.out_features)

    def attention_scale(self, index: int) -> float:
        return float(self._layer(index).self_attn.scale)

    def add_hook(self, index: int, site: str, fn: Hook, first: bool = False) -> Callable[[], None]:
        check_site(site)
        layer = self._layer(index)
        attention = layer.self_attn
        if site in ("q", "k", "v"):
            def on_output(module, args, output):
                return fn(output)
            handle = getattr(attention, f"{site}_proj").register_forward_hook(on_output, prepend=first)
        elif site == "z":
            def on_input(module, args):
                replaced = fn(args[0])
                return None if replaced is None else (replaced,)
            handle = attention.out_proj.register_forward_pre_hook(on_input, prepend=first)
        else:  # resid_pre
            def on_layer_input(module, args):
                replaced = fn(args[0])
                return None if replaced is None else (replaced,) + tuple(args[1:])
            handle = layer.register_forward_pre_hook(on_layer_input, prepend=first)
        return handle.remove



class HFCLIPTower(HFEncoderLayers):
    """The vision side of a ``transformers`` ``CLIPModel`` (its modules are shared, not copied): ``[CLS]``
    (row 0) is the pooled row."""

    pooled_rows = CLS
    patch_rows = PATCHES

    def __init__(self, clip_model: nn.Module):
        super().__init__(clip_model.vision_model, clip_model.config.vision_config)
        self.projection = clip_model.visual_projection
        self._library: Callable[..., torch.Tensor] = lambda pixels: clip_model.get_image_features(
            pixel_values=pixels).pooler_output

    @property
    def dtype(self) -> torch.dtype:
        return self.projection.weight.dtype

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision.pre_layrnorm(self.vision.embeddings(pixels))

    def pooled_stream_layer(self, index: int, image_hidden: torch.Tensor, pooled: torch.Tensor,
                            mask: torch.Tensor | None, image_index: torch.Tensor) -> torch.Tensor:
        layer = self._layer(index)
        attention = layer.self_attn
        heads, head_dim = attention.num_heads, attention.head_dim
        patches = layer.layer_norm1(image_hidden[:, PATCHES])
        own = layer.layer_norm1(pooled)
        keys = torch.cat([attention.k_proj(own), attention.k_proj(patches)[image_index]], dim=1)
        values = torch.cat([attention.v_proj(own), attention.v_proj(patches)[image_index]], dim=1)
        batch, tokens, width = keys.shape

        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, tensor.shape[1], heads, head_dim).transpose(1, 2)

        output = self._attend(attention, split(attention.q_proj(own)), split(keys), split(values),
                              None if mask is None else mask[..., CLS, :])
        hidden = pooled + attention.out_proj(output.reshape(batch, 1, width))
        return hidden + layer.mlp(layer.layer_norm2(hidden))

    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the [CLS] row is biased inside the layers; CLIP's readout takes no mask")
        pooled = hidden[:, 0] if image_index is None else hidden[image_index, 0]
        return self.projection(self.vision.post_layernorm(pooled))

    def library_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._library(pixels)


class HFText:
    """What the text sides of ``transformers`` models share: their HF tokenizer (``None``: texts cannot be
    encoded), padded as the family was trained (:attr:`padding`)."""

    padding = "longest"

    def __init__(self, model: nn.Module, tokenizer=None):
        self._model, self.tokenizer = model, tokenizer

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this FoveatedCLIP has no tokenizer: pass tokenizer= or use from_pretrained")
        return self.tokenizer

    def tokenize(self, texts, max_length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Texts -> ``(input_ids, attention_mask or None)``, truncated to ``max_length`` tokens."""
        tokens = self._require_tokenizer()(list(texts), padding=self.padding, truncation=True, max_length=max_length,
                                           return_tensors="pt")
        return tokens["input_ids"], tokens.get("attention_mask")

    def token_ids(self, texts) -> list[list[int]]:
        """Each text's token ids before truncation."""
        return self._require_tokenizer()(list(texts), truncation=False, verbose=False)["input_ids"]

    @property
    def unknown_token_id(self) -> int | None:
        """The id unknown words map to; ``None`` when the tokenizer never meets one (CLIP's byte-level BPE, whose
        unknown token is also its end/start/padding token)."""
        tokenizer = self._require_tokenizer()
        unknown = getattr(tokenizer, "unk_token_id", None)
        special = {getattr(tokenizer, f"{kind}_token_id", None) for kind in ("bos", "eos", "pad")}
        return None if unknown in special else unknown

    def config_value(self, key: str):
        return getattr(self._model.config, key, None)


class HFCLIPText(HFText):
    """The text side and the shared scalars of a ``transformers`` ``CLIPModel``: projected text features,
    the context length, the learned logit scale and a config value (e.g. ``foveal_alpha``)."""

    padding = "longest"  # CLIP's text tower reads the EOS row under a causal mask: padding is never seen
    probability = "softmax"  # contrastive training: a softmax over the candidates

    @property
    def logit_bias(self) -> float:
        return 0.0

    @property
    def context(self) -> int:
        return int(self._model.config.text_config.max_position_embeddings)

    @property
    def width(self) -> int:
        return int(self._model.config.projection_dim)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._model.logit_scale

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self._model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
