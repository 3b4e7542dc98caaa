"""FoveatedCLIP: any HuggingFace ``transformers`` CLIP checkpoint, with an attention bias per call.

The bias is an argument of :meth:`FoveatedCLIP.encode_image`, never state on the model: the vision
tower is run layer by layer and each chosen ``CLIPEncoderLayer`` receives the bias as its
``attention_mask`` -- the additive-mask extension point that both the ``eager`` and ``sdpa``
attention implementations of ``transformers`` add to the logits before the softmax. Without a bias
the call is ``CLIPModel.get_image_features`` itself, so it is plain CLIP bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from ..errors import FalipError
from ..geometry import ResizeGeometry
from .bias import DEFAULT_ALPHA
from .interventions import Intervention, capture, hooks, resolve_layers
from .preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocessor
from .trimmed import CLS, cls_stream_layer, layer_rows, shared_first_biased_layer

BIAS_ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _autograd(requires_grad: bool):
    """Inference mode (no autograd record, less memory) unless gradients are asked for."""
    return contextlib.nullcontext() if requires_grad else torch.inference_mode()


class CheckpointNotFoundError(FalipError, OSError):
    """A CLIP checkpoint could not be found locally, in the HF cache, or on the Hub."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} was asked for but CUDA is not available on this machine")
    return device


def _how_to_fill(folder: str) -> str:
    return (f"Put a HF CLIP checkpoint in it (config.json, model.safetensors, tokenizer and preprocessor files): "
            f"on a machine with internet access, `hf download openai/clip-vit-base-patch16 --local-dir {folder}`, "
            f"or `CLIPModel.from_pretrained(<hub id>).save_pretrained('{folder}')` plus the processor's "
            f"save_pretrained; or leave model.path unset and name a Hub id with model.name.")


def _how_to_get(name: str) -> str:
    return (f"Download it on a machine with internet access with `huggingface-cli download {name}` "
            f"(or `hf download {name}`), which fills the HF cache, or save it with "
            f"`CLIPModel.from_pretrained('{name}').save_pretrained(<dir>)` and point the run at it "
            f"with `model.path=<dir>`.")


def _read_preprocessor_config(name_or_path: str, cache_dir: str | None, local_files_only: bool) -> dict:
    """The checkpoint's ``preprocessor_config.json`` as a dict ({} if the checkpoint has none)."""
    local = Path(name_or_path) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(name_or_path).is_dir():
        return {}
    from transformers.utils import cached_file

    try:
        path = cached_file(name_or_path, "preprocessor_config.json", cache_dir=cache_dir,
                           local_files_only=local_files_only,
                           _raise_exceptions_for_missing_entries=False)
    except OSError:
        return {}
    return json.loads(Path(path).read_text()) if path else {}


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``org/name``; anything else that is path-shaped is treated as a local directory."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


class FoveatedCLIP(nn.Module):
    """A ``transformers`` ``CLIPModel`` whose vision attention can be biased for one call.

    ``encode_image`` / ``encode_text`` return L2-normalised projected embeddings; ``preprocess``
    turns PIL images into the model's square input ("squash" or "crop", see
    :func:`falip.geometry.resize_geometry`); ``geometry`` says where a box lands in that input.
    """

    def __init__(self, clip_model: nn.Module, tokenizer: Any = None, image_processor: Any = None,
                 source: str | None = None):
        super().__init__()
        self.clip = clip_model
        self.tokenizer = tokenizer
        config = image_processor if isinstance(image_processor, dict) else (
            vars(image_processor) if image_processor is not None else {})
        vision = clip_model.config.vision_config
        self.preprocessor = ImagePreprocessor(
            image_size=int(vision.image_size), patch_size=int(vision.patch_size),
            image_mean=tuple(float(v) for v in (config.get("image_mean") or OPENAI_CLIP_MEAN)),
            image_std=tuple(float(v) for v in (config.get("image_std") or OPENAI_CLIP_STD)))
        self.source = source or getattr(clip_model.config, "_name_or_path", "") or "<in-memory CLIPModel>"
        self.num_layers = int(vision.num_hidden_layers)
        # Exact trims of biased forwards (falip/model/trimmed.py): on by default; False runs every row of
        # every layer (the reference the trims are tested against). last_trims: what the last call used.
        self.trims = True
        self.last_trims: dict[str, bool] = {}
        # Opt-in APPROXIMATE mode (run.cls_stream): for [CLS]-row biases over shared pixels, the biased
        # layers recompute only [CLS] per region over the image's unbiased patch tokens. Never a default.
        self.cls_stream = False

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = "cpu",
        dtype: str | torch.dtype | None = "float32",
        attn_implementation: str = "sdpa",
        cache_dir: str | None = None,
        local_files_only: bool | None = None,
    ) -> "FoveatedCLIP":
        """Load a HF CLIP checkpoint: a Hub id (from the HF cache when offline) or a local directory.

        Raises :class:`CheckpointNotFoundError` naming the checkpoint and how to obtain it when it is
        not a directory, not in the cache, and cannot be downloaded.
        """
        from transformers import AutoTokenizer, CLIPModel

        name = os.fspath(name_or_path)
        if _looks_like_path(name) and not Path(name).expanduser().is_dir():
            raise CheckpointNotFoundError(
                f"CLIP checkpoint directory '{name}' does not exist. " + _how_to_get("openai/clip-vit-base-patch16"))
        if Path(name).expanduser().is_dir():
            name = str(Path(name).expanduser())
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        try:
            model = CLIPModel.from_pretrained(name, dtype=resolve_dtype(dtype), cache_dir=cache_dir,
                                              attn_implementation=attn_implementation,
                                              local_files_only=local_files_only)
        except (OSError, ValueError) as error:
            if Path(name).is_dir():
                where, advice = "a local directory without CLIP weights", _how_to_fill(name)
            else:
                where = "not a local directory, not in the HF cache" + (
                    " (offline)" if local_files_only else ", and not downloadable from here")
                advice = _how_to_get(name)
            raise CheckpointNotFoundError(
                f"Could not load CLIP checkpoint '{name}': {where}. {advice} "
                f"[{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}]") from error
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, cache_dir=cache_dir, local_files_only=local_files_only)
        except (OSError, ValueError) as error:
            raise CheckpointNotFoundError(
                f"CLIP checkpoint '{name}' has weights but no loadable tokenizer ({error}). "
                f"{_how_to_fill(name) if Path(name).is_dir() else _how_to_get(name)}") from error
        processor_config = _read_preprocessor_config(name, cache_dir, local_files_only)
        wrapped = cls(model, tokenizer, processor_config, source=name)
        return wrapped.to(resolve_device(device)).eval()

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> int:
        return self.preprocessor.image_size

    @property
    def patch_size(self) -> int:
        return self.preprocessor.patch_size

    @property
    def grid_size(self) -> int:
        return self.preprocessor.grid_size

    @property
    def num_tokens(self) -> int:
        """Tokens of the vision transformer: patches + [CLS]."""
        return self.preprocessor.num_tokens

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.visual_projection.weight.dtype

    @property
    def foveal_alpha(self) -> float:
        """This checkpoint's default foveal alpha: ``foveal_alpha`` in its config.json if it has one (the
        sandbox CLIP: 8.0), else the paper's 0.2 (chosen for OpenAI's ViT-B/16)."""
        value = getattr(self.clip.config, "foveal_alpha", None)
        return float(value) if value is not None else DEFAULT_ALPHA

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.detach().float().exp())

    @property
    def attn_implementation(self) -> str:
        return self.clip.config.vision_config._attn_implementation or "eager"

    @contextlib.contextmanager
    def full_rows(self):
        """Within the block, every layer computes every row (no trims): for hooks that read a layer's
        inner tensors (attention maps, per-head contributions)."""
        previous, self.trims = self.trims, False
        try:
            yield self
        finally:
            self.trims = previous

    # ------------------------------------------------------------------ images
    def geometry(self, image_width: int, image_height: int, resize: str = "squash") -> ResizeGeometry:
        """Where an image of this size lands in the model input under ``resize`` (boxes map through it)."""
        return self.preprocessor.geometry(image_width, image_height, resize)

    def preprocess(self, images: Image.Image | Sequence[Image.Image], resize: str = "squash") -> torch.Tensor:
        """PIL image(s) -> normalised pixels ``(B, 3, S, S)`` float32 on the model's device.

        ``resize="squash"``: whole image to ``S x S`` (bicubic; ReCLIP/FALIP harness default).
        ``resize="crop"``: CLIP's shortest-side resize + center crop.
        """
        return self.preprocessor(images, resize).to(self.device)

    def _layer_set(self, bias_layers: Sequence[int] | None) -> set[int]:
        if bias_layers is None:
            return set(range(self.num_layers))
        chosen = set()
        for layer in bias_layers:
            if not -self.num_layers <= int(layer) < self.num_layers:
                raise ValueError(f"bias layer {layer} does not exist: the vision tower has "
                                 f"{self.num_layers} layers (valid: {-self.num_layers}..{self.num_layers - 1})")
            chosen.add(int(layer) % self.num_layers)
        return chosen

    def _bias_as_mask(self, attention_bias: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        tokens = self.num_tokens
        if attention_bias.shape[-2:] != (tokens, tokens):
            raise ValueError(f"attention_bias must end in ({tokens}, {tokens}) for this model "
                             f"({self.grid_size}x{self.grid_size} patches + [CLS]), got {tuple(attention_bias.shape)}")
        if attention_bias.dim() == 2:
            mask = attention_bias[None, None]
        elif attention_bias.dim() == 3:
            mask = attention_bias[:, None]
        elif attention_bias.dim() == 4:
            mask = attention_bias
        else:
            raise ValueError(f"attention_bias must be (T,T), (B,T,T) or (B,heads,T,T), got {tuple(attention_bias.shape)}")
        if mask.shape[0] not in (1, batch):
            raise ValueError(f"attention_bias has batch {mask.shape[0]} but pixel_values has batch {batch}")
        return mask.to(device=self.device, dtype=dtype)

    def encode_image(
        self,
        pixel_values: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        bias_layers: Sequence[int] | None = None,
        image_index: torch.Tensor | Sequence[int] | None = None,
        requires_grad: bool = False,
        intervention: Intervention | None = None,
        reference_pixels: torch.Tensor | None = None,
        reference_index: torch.Tensor | Sequence[int] | None = None,
        roa_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L2-normalised projected image embeddings ``(B, D)``, computed under ``torch.inference_mode``
        unless ``requires_grad=True`` (then autograd records the call, e.g. for attribution maps).

        ``attention_bias`` ``(B, T, T)`` (or ``(T, T)``, or per head ``(B, heads, T, T)``), ``T`` =
        :attr:`num_tokens`, is added to the attention logits of every head in the vision layers
        ``bias_layers`` (``None`` = all; negative indices count from the end, e.g. ``[-4, -3, -2, -1]``
        = the released FALIP code's last 4 of 12) for this call only. It is cast to the activation dtype.

        ``image_index`` (``B`` ints) says which row of ``pixel_values`` each output row reads, so that
        the K regions of one image pass its pixels once: the patch embedding and every layer before
        the first biased one see no bias, hence are the same for all K rows and run once per image
        (for the released protocol's last 4 of 12 layers, 8 layers once per image instead of once per
        region). Only the rounding of the batched matrix products can differ from passing the
        expanded pixels.

        ``intervention`` (:mod:`falip.model.interventions`) acts inside the attention of its layers
        for this call only. Two-stream interventions read a reference stream: ``reference_pixels``
        (the unedited image, one row per image, ``reference_index`` mapping rows to it) or, when not
        given, ``pixel_values`` themselves run without the bias. ``roa_tokens`` ``(B, T)`` bool marks
        each row's [CLS] + ROA tokens (for ``feature_mask``).
        """
        with _autograd(requires_grad):
            return self._encode_image(pixel_values, attention_bias, bias_layers, image_index, intervention,
                                      reference_pixels, reference_index, roa_tokens)

    def _encode_image(self, pixel_values: torch.Tensor, attention_bias: torch.Tensor | None,
                      bias_layers: Sequence[int] | None, image_index, intervention: Intervention | None = None,
                      reference_pixels: torch.Tensor | None = None, reference_index=None,
                      roa_tokens: torch.Tensor | None = None) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        index = self._image_index(image_index, pixel_values.shape[0])
        rows = pixel_values.shape[0] if index is None else index.shape[0]
        if attention_bias is None and intervention is None:
            features = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
            features = features / features.norm(dim=-1, keepdim=True)
            return features if index is None else features[index]
        if self.attn_implementation not in BIAS_ATTN_IMPLEMENTATIONS:
            raise ValueError(f"an attention bias needs attn_implementation in {BIAS_ATTN_IMPLEMENTATIONS}; "
                             f"this model uses {self.attn_implementation!r}")
        biased = self._layer_set(bias_layers) if attention_bias is not None else set()
        acted = set(resolve_layers(intervention.layers, self.num_layers)) if intervention is not None else set()
        encoder_layers = self.clip.vision_model.encoder.layers
        registrations = []
        if intervention is not None:
            one_pass = reference_pixels is None  # same pixels as the reference (a bias-only prompt)
            needed = intervention.references(one_pass)
            reference, row_index = {}, None
            if needed:
                source = pixel_values if one_pass else reference_pixels.to(device=self.device, dtype=self.dtype)
                source_index = index if one_pass else self._image_index(reference_index, source.shape[0])
                with capture({i: encoder_layers[i] for i in acted}, needed) as store:
                    self._run_layers(source, None, set(), None)
                reference, row_index = dict(store), source_index
            registrations = intervention.registrations({i: encoder_layers[i] for i in acted}, reference, row_index,
                                                       None if roa_tokens is None else roa_tokens.to(self.device))
        mask = self._bias_as_mask(attention_bias, rows, self.dtype) if attention_bias is not None else None
        with hooks(registrations):
            return self._run_layers(pixel_values, mask, biased, index, first=min(biased | acted, default=self.num_layers),
                                    trim=self.trims and intervention is None)

    def _run_layers(self, pixel_values: torch.Tensor, mask: torch.Tensor | None, biased: set[int],
                    index: torch.Tensor | None, first: int | None = None, trim: bool = False) -> torch.Tensor:
        """The vision tower layer by layer: ``mask`` added in the ``biased`` layers; rows gathered by
        ``index`` before layer ``first`` (the first layer where rows of one image differ).

        With ``trim`` (:attr:`trims`), the exact trims of :mod:`falip.model.trimmed`: the last layer
        computes the ``[CLS]`` row only, and when the mask touches only the ``[CLS]`` query row, the
        first biased layer computes its patch rows once per image (``index``). With :attr:`cls_stream`
        (approximate, opt-in) the same case runs :func:`falip.model.trimmed.cls_stream_layer` in every
        layer from the first biased one."""
        vision = self.clip.vision_model
        first = min(biased, default=self.num_layers) if first is None else first
        last = self.num_layers - 1
        share_first = (trim and index is not None and mask is not None and first in biased
                       and not bool(mask[..., 1:, :].count_nonzero()))
        stream = share_first and self.cls_stream
        self.last_trims = {"cls_only_last_layer": trim, "shared_first_biased_layer": share_first, "cls_stream": stream}
        hidden = vision.pre_layrnorm(vision.embeddings(pixel_values))
        if stream:  # approximate: from the first biased layer on, only [CLS] is recomputed per region
            layers = vision.encoder.layers
            for position in range(first):
                hidden = layers[position](hidden, None)
            cls = hidden[index][:, :1]
            for position in range(first, self.num_layers):
                cls = cls_stream_layer(layers[position], hidden, cls, mask if position in biased else None, index)
                if position < last:
                    hidden = layers[position](hidden, None)
            features = self.clip.visual_projection(vision.post_layernorm(cls[:, 0]))
            return features / features.norm(dim=-1, keepdim=True)
        for position, layer in enumerate(vision.encoder.layers):
            layer_mask = mask if position in biased else None
            if position == first and share_first:
                hidden = shared_first_biased_layer(layer, hidden, layer_mask, index, last=position == last)
                continue
            if position == first and index is not None:
                hidden = hidden[index]  # from here on each region has its own bias / intervention
            if trim and position == last:
                hidden = layer_rows(layer, hidden, layer_mask, CLS)
            else:
                hidden = layer(hidden, layer_mask)
        if first == self.num_layers and index is not None:
            hidden = hidden[index]
        features = self.clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
        return features / features.norm(dim=-1, keepdim=True)

    def _image_index(self, image_index: torch.Tensor | Sequence[int] | None, num_images: int) -> torch.Tensor | None:
        if image_index is None:
            return None
        index = torch.as_tensor(image_index, dtype=torch.long)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"image_index must be a non-empty 1-D sequence of row numbers, got shape {tuple(index.shape)}")
        if int(index.min()) < 0 or int(index.max()) >= num_images:
            raise ValueError(f"image_index must lie in 0..{num_images - 1} (the rows of pixel_values), "
                             f"got {int(index.min())}..{int(index.max())}")
        return index.to(self.device)

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: Sequence[str], batch_size: int = 256, requires_grad: bool = False) -> torch.Tensor:
        """L2-normalised projected text embeddings ``(T, D)`` (truncated to the model's context), under
        ``torch.inference_mode`` unless ``requires_grad=True``."""
        with _autograd(requires_grad):
            return self._encode_text(texts, batch_size)

    @property
    def text_context(self) -> int:
        """The text encoder's context in tokens (longer texts are truncated to it)."""
        return int(self.clip.config.text_config.max_position_embeddings)

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has before truncation (``> text_context``: it will be cut)."""
        if self.tokenizer is None:
            raise ValueError("this FoveatedCLIP has no tokenizer: pass tokenizer= or use from_pretrained")
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]

    def _encode_text(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this FoveatedCLIP has no tokenizer: pass tokenizer= or use from_pretrained")
        if isinstance(texts, str):
            texts = [texts]
        max_length = self.text_context
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                    max_length=max_length, return_tensors="pt")
            features = self.clip.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                   attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
            chunks.append(features / features.norm(dim=-1, keepdim=True))
        if not chunks:
            return torch.empty(0, int(self.clip.config.projection_dim), device=self.device, dtype=self.dtype)
        return torch.cat(chunks)
