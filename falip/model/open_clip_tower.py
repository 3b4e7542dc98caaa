"""open_clip models (the optional extra ``falip[open_clip]``) as a :class:`~falip.model.tower.VisionTower`: a
tower module, the only place that knows open_clip's module names.

Supported: open_clip's own ``VisionTransformer`` pooled by its ``[CLS]`` token (``pool_type='tok'``, no
attentional pooler) with the default ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) -- the ViTs of
OpenAI, LAION, DataComp and DFN (``ViT-B-16``, ``ViT-B-16-quickgelu``, ``ViT-L-14``, ...). Its text side is
open_clip's CLIP text tower with the CLIP BPE tokenizer.

Not supported, each refused in one line naming why: towers that open_clip takes from timm
(``EVA02-*``, ``PE-Core-*``, ``ViT-*-SigLIP*``: their blocks, rotary embeddings and pooling heads live in
timm, behind another set of module names -- the HF SigLIP tower covers SigLIP and SigLIP 2 checkpoints), the
``custom`` blocks (qk-norm, scaled cosine attention), average pooling and attentional poolers, and
HF-tokenizer text towers.

A steered layer is computed by hand from the block's own weights (``ln_1``, ``attn.in_proj_weight``/
``in_proj_bias``, ``attn.out_proj``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``) with
``scaled_dot_product_attention`` and the additive mask, so that the hook sites (q, k, v, z) exist even though
``nn.MultiheadAttention`` fuses them; an unsteered call is the library's own ``encode_image`` (bit for bit).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .tower import Hook, VisionTower, check_site

PREFIX = "open_clip:"
CLS = slice(0, 1)
PATCHES = slice(1, None)
INTERPOLATION = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL's resample codes


def import_open_clip():
    """The ``open_clip`` module, or a one-line error saying how to install it."""
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(f"model.name=open_clip:... needs the optional extra: pip install 'falip[open_clip]' "
                          f"(open_clip_torch; it imports torchvision, whose build must match torch's) [{error}]") from None
    except RuntimeError as error:  # torchvision built for another torch (e.g. 'operator torchvision::nms does not exist')
        raise ImportError(f"open_clip could not be imported: its torchvision does not match this torch "
                          f"{torch.__version__} ({str(error).splitlines()[0]}); install the torchvision built for "
                          f"it (docs/method.md, 'open_clip towers')") from None
    return open_clip


def load_open_clip(architecture: str, weights: str | None = None, cache_dir: str | None = None) -> tuple[nn.Module, Any, dict]:
    """(model, tokenizer, preprocessing dict) of an open_clip model, on the CPU in float32.

    ``architecture``: a built-in name (``ViT-B-16``) with ``weights`` a state-dict file (``.safetensors``, or a
    ``torch.save`` file read with ``weights_only=True``) or a pretrained tag (read from the HF cache offline); or
    ``local-dir:<folder>`` / ``hf-hub:<org/repo>`` (open_clip's Hub layout: ``open_clip_config.json`` +
    ``open_clip_model.safetensors``), which carry their weights."""
    open_clip = import_open_clip()
    schema = architecture.startswith(("local-dir:", "hf-hub:"))
    if not schema and architecture not in open_clip.list_models():
        near = difflib.get_close_matches(architecture, open_clip.list_models(), n=3)
        raise ValueError(f"open_clip has no architecture {architecture!r}" + (f"; did you mean {near}?" if near else "")
                         + " (open_clip.list_models() lists them)")
    if schema and weights:
        raise ValueError(f"open_clip:{architecture} carries its own weights; leave model.path/model.pretrained unset")
    if weights and (Path(weights).suffix in (".safetensors", ".bin", ".pt", ".pth")) and not Path(weights).is_file():
        raise FileNotFoundError(f"open_clip weights file '{weights}' does not exist (model.path)")
    if schema and architecture.startswith("local-dir:"):
        folder = Path(architecture.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"'{folder}' has no open_clip_config.json (open_clip's Hub layout: the config "
                                    f"and open_clip_model.safetensors)")
    if not schema and not weights:
        raise ValueError(f"open_clip:{architecture} needs weights: model.path=<state-dict file> or "
                         f"model.pretrained=<tag> (open_clip.list_pretrained() lists the tags)")
    try:
        model = open_clip.create_model(architecture, pretrained=None if schema else weights, cache_dir=cache_dir,
                                       device="cpu", require_pretrained=True)
    except RuntimeError as error:  # open_clip reports weights it cannot find or fetch as RuntimeError
        raise FileNotFoundError(f"open_clip:{architecture} weights {weights or ''} could not be loaded: "
                                f"{str(error).splitlines()[0]} (offline, a pretrained tag is read from the HF cache: "
                                f"fetch it on a machine with internet access first)") from None
    tokenizer = open_clip.get_tokenizer(architecture, cache_dir=cache_dir)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    return model.eval(), tokenizer, {
        "image_mean": list(preprocess.get("mean", ())), "image_std": list(preprocess.get("std", ())),
        "resample": INTERPOLATION.get(str(preprocess.get("interpolation", "bicubic")), 3)}


def _unsupported(visual: nn.Module) -> str | None:
    """Why open_clip's vision tower ``visual`` cannot be steered here, or ``None``."""
    kind = type(visual).__name__
    if kind != "VisionTransformer":
        return (f"its vision tower is {kind} (timm or a CNN), not open_clip's own VisionTransformer; timm towers "
                f"(EVA02, PE-Core, SigLIP in open_clip) are not supported -- use the HF checkpoint of SigLIP")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        return "it does not pool with its [CLS] token (attentional pooler or average pooling)"
    for block in visual.transformer.resblocks:
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            return "its blocks are open_clip's custom attention blocks (qk-norm or scaled cosine attention)"
    if visual.image_size[0] != visual.image_size[1] or visual.patch_size[0] != visual.patch_size[1]:
        return "its input or patches are not square"
    return None


class OpenCLIPTower(VisionTower):
    """The vision side of an open_clip ``CLIP`` model with its own ``VisionTransformer`` ([CLS] at row 0)."""

    pooled_rows = CLS
    patch_rows = PATCHES

    def __init__(self, model: nn.Module):
        super().__init__()
        visual = model.visual
        why = _unsupported(visual)
        if why:
            raise ValueError(f"this open_clip model cannot be steered: {why}")
        self.visual = visual
        self.image_size, self.patch_size = int(visual.image_size[0]), int(visual.patch_size[0])
        self.num_layers = len(visual.transformer.resblocks)
        self.num_heads = int(visual.transformer.resblocks[0].attn.num_heads)
        self.head_dim = int(visual.transformer.resblocks[0].attn.head_dim)
        self._library: Callable[[torch.Tensor], torch.Tensor] = model.encode_image
        self._hooks: dict[tuple[int, str], list[Hook]] = {}

    @property
    def attn_implementation(self) -> str:
        return "sdpa"

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def _block(self, index: int) -> nn.Module:
        return self.visual.transformer.resblocks[index]

    def _site(self, index: int, site: str, tensor: torch.Tensor) -> torch.Tensor:
        for fn in self._hooks.get((index, site), ()):
            replaced = fn(tensor)
            tensor = tensor if replaced is None else replaced
        return tensor

    def _projections(self, block: nn.Module, normed: torch.Tensor, query_rows: torch.Tensor):
        attention = block.attn
        weights = attention.in_proj_weight.chunk(3)
        biases = attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else (None,) * 3
        return (F.linear(query_rows, weights[0], biases[0]), F.linear(normed, weights[1], biases[1]),
                F.linear(normed, weights[2], biases[2]))

    def _attend(self, queries, keys, values, mask) -> torch.Tensor:
        """``(B, Lq, H*d)`` queries over ``(B, L, H*d)`` keys/values with the additive ``mask`` -> ``(B, Lq, H*d)``."""
        batch, count = queries.shape[:2]

        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, tensor.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        output = F.scaled_dot_product_attention(split(queries), split(keys), split(values),
                                                attn_mask=None if mask is None else mask.to(queries.dtype))
        return output.transpose(1, 2).reshape(batch, count, self.num_heads * self.head_dim)

    def _finish(self, block: nn.Module, residual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hidden = residual + block.ls_1(block.attn.out_proj(z))
        return hidden + block.ls_2(block.mlp(block.ln_2(hidden)))

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(pixels)

    def layer(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        block = self._block(index)
        hidden = self._site(index, "resid_pre", hidden)
        normed = block.ln_1(hidden)
        queries, keys, values = self._projections(block, normed, normed)
        queries, keys, values = (self._site(index, site, tensor) for site, tensor in
                                 (("q", queries), ("k", keys), ("v", values)))
        z = self._site(index, "z", self._attend(queries, keys, values, mask))
        return self._finish(block, hidden, z)

    def layer_rows(self, index: int, hidden: torch.Tensor, mask: torch.Tensor | None, rows: slice,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
        block = self._block(index)
        normed = block.ln_1(hidden)
        queries, keys, values = self._projections(block, normed, normed[:, rows])
        residual = hidden[:, rows]
        if image_index is not None:
            queries, keys, values, residual = (queries[image_index], keys[image_index], values[image_index],
                                               residual[image_index])
        z = self._attend(queries, keys, values, None if mask is None else mask[..., rows, :])
        return self._finish(block, residual, z)

    def pooled_stream_layer(self, index: int, image_hidden: torch.Tensor, pooled: torch.Tensor,
                            mask: torch.Tensor | None, image_index: torch.Tensor) -> torch.Tensor:
        block = self._block(index)
        own, patches = block.ln_1(pooled), block.ln_1(image_hidden[:, PATCHES])
        own_q, own_k, own_v = self._projections(block, own, own)
        _, patch_k, patch_v = self._projections(block, patches, patches[:, :0])
        keys = torch.cat([own_k, patch_k[image_index]], dim=1)
        values = torch.cat([own_v, patch_v[image_index]], dim=1)
        z = self._attend(own_q, keys, values, None if mask is None else mask[..., CLS, :])
        return self._finish(block, pooled, z)

    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the [CLS] row is biased inside the layers; this tower's readout takes no mask")
        pooled = self.visual.ln_post(hidden[:, 0] if image_index is None else hidden[image_index, 0])
        return pooled if self.visual.proj is None else pooled @ self.visual.proj

    def library_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """open_clip's ``encode_image``; while hooks are installed (a reader such as the per-head decomposition),
        the same forward through this tower's layers, whose sites run them (``nn.MultiheadAttention`` has none)."""
        if not any(self._hooks.values()):
            return self._library(pixels)
        hidden = self.embed(pixels)
        for index in range(self.num_layers):
            hidden = self.layer(index, hidden, None)
        return self.readout(hidden)

    def head_terms(self, index: int, z_pooled: torch.Tensor) -> torch.Tensor:
        weight = self._block(index).attn.out_proj.weight
        per_head = z_pooled.reshape(z_pooled.shape[0], self.num_heads, self.head_dim)
        return torch.einsum("bhd,whd->bhw", per_head.to(weight.dtype),
                            weight.reshape(weight.shape[0], self.num_heads, self.head_dim))

    def head_bias(self, index: int) -> torch.Tensor:
        out_proj = self._block(index).attn.out_proj
        return out_proj.bias if out_proj.bias is not None else torch.zeros(out_proj.out_features)

    def add_hook(self, index: int, site: str, fn: Hook, first: bool = False) -> Callable[[], None]:
        check_site(site)
        hooks = self._hooks.setdefault((index, site), [])
        hooks.insert(0, fn) if first else hooks.append(fn)

        def remove() -> None:
            if fn in hooks:
                hooks.remove(fn)
        return remove


class OpenCLIPText:
    """The text side and shared scalars of an open_clip ``CLIP`` model: its BPE tokenizer (every word is known:
    byte-level BPE), ``encode_text``, the context, the logit scale (and bias, for sigmoid-trained models)."""

    probability = "softmax"

    def __init__(self, model: nn.Module, tokenizer: Any = None):
        self._model, self.tokenizer = model, tokenizer
        if tokenizer is not None and not hasattr(tokenizer, "encode"):
            raise ValueError("this open_clip model's tokenizer is not open_clip's CLIP BPE tokenizer (an HF "
                             "tokenizer text tower): not supported")

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this FoveatedCLIP has no tokenizer: pass tokenizer= or use from_open_clip")
        return self.tokenizer

    def tokenize(self, texts, max_length: int) -> tuple[torch.Tensor, None]:
        return self._require_tokenizer()(list(texts), context_length=max_length), None

    def token_ids(self, texts) -> list[list[int]]:
        tokenizer = self._require_tokenizer()
        return [[tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id] for text in texts]

    @property
    def unknown_token_id(self) -> None:
        return None

    @property
    def context(self) -> int:
        return int(self._model.context_length)

    @property
    def width(self) -> int:
        return int(self._model.visual.output_dim)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._model.logit_scale

    @property
    def logit_bias(self) -> float:
        bias = getattr(self._model, "logit_bias", None)
        return 0.0 if bias is None else float(bias.detach().float())

    def config_value(self, key: str):
        return None  # an open_clip model has no config.json: the model config's foveal_alpha is the CLI's

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self._model.encode_text(input_ids)
