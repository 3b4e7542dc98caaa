"""open_clip models (the optional extra ``falip[open_clip]``) as a :class:`~falip.model.tower.VisionTower`: a
tower module, the only place that knows open_clip's module names.

Supported: open_clip's own ``VisionTransformer`` pooled by its ``[CLS]`` token (``pool_type='tok'``, no
attentional pooler) with the default ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) -- the ViTs of
OpenAI, LAION, DataComp and DFN (``ViT-B-16``, ``ViT-B-16-quickgelu``, ``ViT-L-14``, ...) -- here; and the
timm towers pooled by an attention-pooling probe (``ViT-B-16-SigLIP2``, ``ViT-B-16-SigLIP``, ...) in
:mod:`falip.model.timm_tower`. The text side is open_clip's text tower with its tokenizer: CLIP's BPE, or the
HF tokenizer the model names (SigLIP's, padded to the context as trained).

Not supported, each refused in one line naming why: the other timm towers (``EVA02-*``, ``PE-Core-*``: timm
``Eva`` blocks with rotary position embeddings), the ``custom`` blocks (qk-norm, scaled cosine attention),
average pooling and open_clip's attentional pooler (CoCa), and HF-transformers text towers.

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

from .manual_layers import HandWrittenLayers
from .timm_tower import TimmEvaTower, TimmProbeTower
from .tower import VisionTower

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
        hint = "" if schema or Path(str(weights)).suffix else (" (offline, a pretrained tag is read from the HF cache: "
                                                               "fetch it on a machine with internet access first)")
        raise FileNotFoundError(f"open_clip:{architecture} weights{' ' + weights if weights else ''} could not be "
                                f"loaded: {str(error).splitlines()[0]}{hint}") from None
    tokenizer = open_clip.get_tokenizer(architecture, cache_dir=cache_dir)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    return model.eval(), tokenizer, {
        "image_mean": list(preprocess.get("mean", ())), "image_std": list(preprocess.get("std", ())),
        "resample": INTERPOLATION.get(str(preprocess.get("interpolation", "bicubic")), 3)}


def open_clip_tower(model: nn.Module) -> VisionTower:
    """The tower of an open_clip model: its own [CLS] ViT here, a probe-pooled timm ViT in the timm module."""
    if type(model.visual).__name__ == "TimmModel":
        return TimmEvaTower(model) if type(model.visual.trunk).__name__ == "Eva" else TimmProbeTower(model)
    return OpenCLIPTower(model)


def _unsupported(visual: nn.Module) -> str | None:
    """Why open_clip's vision tower ``visual`` cannot be steered here, or ``None``."""
    kind = type(visual).__name__
    if kind != "VisionTransformer":
        return f"its vision tower is {kind} (a CNN or a text-conditioned tower), not a ViT"
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        return "it does not pool with its [CLS] token (attentional pooler or average pooling)"
    for block in visual.transformer.resblocks:
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            return "its blocks are open_clip's custom attention blocks (qk-norm or scaled cosine attention)"
    if visual.image_size[0] != visual.image_size[1] or visual.patch_size[0] != visual.patch_size[1]:
        return "its input or patches are not square"
    return None


class OpenCLIPTower(HandWrittenLayers):
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

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def _block(self, index: int) -> nn.Module:
        return self.visual.transformer.resblocks[index]

    def _norm1(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return block.ln_1(hidden)

    def _projections(self, block: nn.Module, normed: torch.Tensor, query_rows: torch.Tensor):
        attention = block.attn
        weights = attention.in_proj_weight.chunk(3)
        biases = attention.in_proj_bias.chunk(3) if attention.in_proj_bias is not None else (None,) * 3
        return (F.linear(query_rows, weights[0], biases[0]), F.linear(normed, weights[1], biases[1]),
                F.linear(normed, weights[2], biases[2]))

    def _out_projection(self, block: nn.Module) -> nn.Linear:
        return block.attn.out_proj

    def _finish(self, block: nn.Module, residual: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hidden = residual + block.ls_1(block.attn.out_proj(z))
        return hidden + block.ls_2(block.mlp(block.ln_2(hidden)))

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(pixels)

    def readout(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("the [CLS] row is biased inside the layers; this tower's readout takes no mask")
        pooled = self.visual.ln_post(hidden[:, 0] if image_index is None else hidden[image_index, 0])
        return pooled if self.visual.proj is None else pooled @ self.visual.proj

    def library_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """open_clip's ``encode_image``; while hooks are installed (a reader such as the per-head decomposition),
        the same forward through this tower's layers, whose sites run them (``nn.MultiheadAttention`` has none)."""
        return self.hooked_features(pixels) if self.hooks_installed else self._library(pixels)


class OpenCLIPText:
    """The text side and shared scalars of an open_clip model: its tokenizer -- CLIP's byte-level BPE (every
    word is known) or the HF tokenizer the model names (SigLIP's: texts padded to the context as trained) --,
    ``encode_text``, the context, the logit scale, and the logit bias of sigmoid-trained models (their
    probabilities are ``sigmoid``, as SigLIP's)."""

    def __init__(self, model: nn.Module, tokenizer: Any = None):
        self._model, self.tokenizer = model, tokenizer
        if tokenizer is not None and not (hasattr(tokenizer, "encode") or hasattr(tokenizer, "tokenizer")):
            raise ValueError(f"this open_clip model's tokenizer ({type(tokenizer).__name__}) is neither CLIP's BPE "
                             f"tokenizer nor an HF tokenizer: not supported")

    @property
    def probability(self) -> str:
        return "softmax" if getattr(self._model, "logit_bias", None) is None else "sigmoid"

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this FoveatedCLIP has no tokenizer: pass tokenizer= or load it with "
                             "FoveatedCLIP.from_pretrained('open_clip:<architecture>')")
        return self.tokenizer

    @property
    def _hf(self):
        """The HF tokenizer inside open_clip's ``HFTokenizer`` (``None`` for CLIP's BPE tokenizer)."""
        return getattr(self._require_tokenizer(), "tokenizer", None)

    def tokenize(self, texts, max_length: int) -> tuple[torch.Tensor, None]:
        return self._require_tokenizer()(list(texts), context_length=max_length), None

    def token_ids(self, texts) -> list[list[int]]:
        tokenizer = self._require_tokenizer()
        if self._hf is not None:  # open_clip cleans the text, then the HF tokenizer adds its specials
            return [list(ids) for ids in self._hf([tokenizer.clean_fn(text) for text in texts])["input_ids"]]
        return [[tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id] for text in texts]

    @property
    def unknown_token_id(self) -> int | None:
        return None if self._hf is None else self._hf.unk_token_id

    @property
    def context(self) -> int:
        return int(self._model.context_length)

    @property
    def width(self) -> int:
        text = getattr(self._model, "text", None)  # CustomTextCLIP keeps its text tower as one module
        if text is not None:
            return int(text.output_dim)
        projection = self._model.text_projection  # CLIP: a (width, embed) matrix, or a Linear
        return int(projection.out_features if isinstance(projection, nn.Linear) else projection.shape[-1])

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
