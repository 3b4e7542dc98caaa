"""FoveatedCLIP: any HuggingFace ``transformers`` CLIP checkpoint, with steering per call.

The vision side is a :class:`~falip.model.tower.VisionTower` (:class:`~falip.model.hf_clip.HFCLIPTower`
for HF CLIP); a call's steering (:class:`~falip.model.steering.Steering`: the attention bias and its
layers, an intervention, a reference stream, ROA tokens) and its execution plan
(:class:`~falip.model.steering.ExecutionPlan`: exact trims, the opt-in ``cls_stream``) are arguments of
:meth:`FoveatedCLIP.encode_image`, never state on the model. Without steering the call is the library's
own image features (``CLIPModel.get_image_features``), so it is plain CLIP bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from ..errors import FalipError
from ..geometry import ResizeGeometry
from .bias import DEFAULT_ALPHA
from .preprocessing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, RESAMPLE_BICUBIC, ImagePreprocessor
from .open_clip_tower import PREFIX as OPEN_CLIP_PREFIX
from .open_clip_tower import load_open_clip
from .steering import EXACT, ExecutionPlan, PlanUsed, Steering, encode_steered, layer_set
from .towers import check_model_type, model_type_of, towers_for

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


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF Hub (``HF_ENDPOINT``, default huggingface.co) accepts a connection within ``timeout`` s:
    on a machine without internet, ``from_pretrained`` would otherwise retry for about half a minute."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hf_cache(name: str, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str)


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
        self.tower, self.text = towers_for(clip_model, tokenizer)
        self.tokenizer = tokenizer
        config = image_processor if isinstance(image_processor, dict) else (
            vars(image_processor) if image_processor is not None else {})
        self.preprocessor = ImagePreprocessor(
            image_size=self.tower.image_size, patch_size=self.tower.patch_size,
            image_mean=tuple(float(v) for v in (config.get("image_mean") or OPENAI_CLIP_MEAN)),
            image_std=tuple(float(v) for v in (config.get("image_std") or OPENAI_CLIP_STD)),
            resample=int(config.get("resample", RESAMPLE_BICUBIC)))
        self.source = (source or getattr(getattr(clip_model, "config", None), "_name_or_path", "")
                       or "<in-memory CLIPModel>")
        self.num_layers = self.tower.num_layers

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
        weights: str | os.PathLike | None = None,
    ) -> "FoveatedCLIP":
        """Load a HF checkpoint (CLIP, MetaCLIP 2, SigLIP): a Hub id (from the HF cache when offline) or a local
        directory; or an open_clip model, ``open_clip:<architecture>`` with ``weights`` a state-dict file or a
        pretrained tag, or ``open_clip:local-dir:<folder>`` / ``open_clip:hf-hub:<repo>`` (the optional extra
        ``falip[open_clip]``).

        Raises :class:`CheckpointNotFoundError` naming the checkpoint and how to obtain it when it is
        not a directory, not in the cache, and cannot be downloaded.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        name = os.fspath(name_or_path)
        if name.startswith(OPEN_CLIP_PREFIX):
            return cls._from_open_clip(name, None if weights is None else os.fspath(weights), device, dtype, cache_dir)
        if weights is not None:
            raise ValueError(f"weights= is for open_clip models (open_clip:<architecture>); '{name}' carries its own")
        if _looks_like_path(name) and not Path(name).expanduser().is_dir():
            raise CheckpointNotFoundError(
                f"CLIP checkpoint directory '{name}' does not exist. " + _how_to_get("openai/clip-vit-base-patch16"))
        if Path(name).expanduser().is_dir():
            name = str(Path(name).expanduser())
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        if not Path(name).is_dir() and not _in_hf_cache(name, cache_dir) and (local_files_only or not _hub_reachable()):
            where = "offline (HF_HUB_OFFLINE)" if local_files_only else "the Hub is unreachable from this machine"
            raise CheckpointNotFoundError(f"Checkpoint '{name}' is not in the HF cache and {where}. "
                                          + _how_to_get(name))
        kind = None
        try:
            config = AutoConfig.from_pretrained(name, cache_dir=cache_dir, local_files_only=local_files_only)
            kind = str(getattr(config, "model_type", ""))
            check_model_type(kind)
            model = AutoModel.from_pretrained(name, config=config, dtype=resolve_dtype(dtype), cache_dir=cache_dir,
                                              attn_implementation=attn_implementation,
                                              local_files_only=local_files_only)
        except (OSError, ValueError) as error:
            if kind is not None and "is not supported" in str(error):
                raise CheckpointNotFoundError(f"Checkpoint '{name}': {error}") from None
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

    @classmethod
    def _from_open_clip(cls, name: str, weights: str | None, device, dtype, cache_dir: str | None) -> "FoveatedCLIP":
        architecture = name.removeprefix(OPEN_CLIP_PREFIX)
        try:
            model, tokenizer, preprocessing = load_open_clip(architecture, weights, cache_dir)
        except (OSError, ValueError, ImportError) as error:
            raise CheckpointNotFoundError(f"Could not load '{name}': {error}") from None
        source = f"{name}" + (f" ({weights})" if weights else "")
        wrapped = cls(model.to(resolve_dtype(dtype)), tokenizer, preprocessing, source=source)
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
        """Tokens of the vision transformer: patches + the pooled row(s) ([CLS])."""
        return self.tower.num_tokens

    @property
    def num_heads(self) -> int:
        return self.tower.num_heads

    @property
    def device(self) -> torch.device:
        return self.text.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tower.dtype

    @property
    def foveal_alpha(self) -> float:
        """This checkpoint's default foveal alpha: ``foveal_alpha`` in its config.json if it has one (the
        sandbox CLIP: 8.0), else the paper's 0.2 (chosen for OpenAI's ViT-B/16)."""
        value = self.text.config_value("foveal_alpha")
        return float(value) if value is not None else DEFAULT_ALPHA

    @property
    def logit_scale(self) -> float:
        return float(self.text.logit_scale.detach().float().exp())

    @property
    def probability(self) -> str:
        """How this family reads its logits as probabilities: ``softmax`` over the candidates (CLIP's
        contrastive loss) or ``sigmoid`` of each (SigLIP's pairwise loss)."""
        return self.text.probability

    @property
    def model_type(self) -> str:
        """The checkpoint's ``config.json`` ``model_type`` (``clip``, ``siglip``, ``metaclip_2``): its tower family."""
        return model_type_of(self.clip)

    @property
    def logit_bias(self) -> float:
        """SigLIP's learned logit bias (its scores are ``sigmoid(logit_scale * cos + logit_bias)``); 0 for CLIP.
        A constant shift: no argmax, softmax over candidates or table metric depends on it."""
        return self.text.logit_bias

    @property
    def attn_implementation(self) -> str:
        return self.tower.attn_implementation

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

    def encode_image(
        self,
        pixel_values: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        bias_layers: Sequence[int] | None = None,
        image_index: torch.Tensor | Sequence[int] | None = None,
        *,
        steering: Steering | None = None,
        plan: ExecutionPlan = EXACT,
        requires_grad: bool = False,
    ) -> torch.Tensor:
        """L2-normalised projected image embeddings ``(B, D)``, computed under ``torch.inference_mode``
        unless ``requires_grad=True`` (then autograd records the call, e.g. for attribution maps).

        ``attention_bias`` ``(B, T, T)`` (or ``(T, T)``, or per head ``(B, heads, T, T)``), ``T`` =
        :attr:`num_tokens`, is added to the attention logits of every head in the vision layers
        ``bias_layers`` (``None`` = all; negative indices count from the end, e.g. ``[-4, -3, -2, -1]``
        = the released FALIP code's last 4 of 12) for this call only. It is cast to the activation dtype.
        ``steering`` (:class:`~falip.model.steering.Steering`) carries the same bias plus an attention
        intervention, its reference stream and the rows' ROA tokens (give the bias one way, not both).

        ``image_index`` (``B`` ints) says which row of ``pixel_values`` each output row reads, so that
        the K regions of one image pass its pixels once: the patch embedding and every layer before
        the first steered one see no steering, hence are the same for all K rows and run once per image.
        Only the rounding of the batched matrix products can differ from passing the expanded pixels.

        ``plan`` (:class:`~falip.model.steering.ExecutionPlan`): the exact trims (default) or every row of
        every layer (``FULL_ROWS``), and the opt-in approximate ``cls_stream``.
        """
        return self.encode_image_with_plan(pixel_values, attention_bias, bias_layers, image_index, steering=steering,
                                           plan=plan, requires_grad=requires_grad)[0]

    def encode_image_with_plan(self, pixel_values: torch.Tensor, attention_bias: torch.Tensor | None = None,
                               bias_layers: Sequence[int] | None = None,
                               image_index: torch.Tensor | Sequence[int] | None = None, *,
                               steering: Steering | None = None, plan: ExecutionPlan = EXACT,
                               requires_grad: bool = False) -> tuple[torch.Tensor, PlanUsed | None]:
        """:meth:`encode_image` and the trims the call used (``None`` for an unsteered call)."""
        if steering is None:
            steering = Steering(bias=attention_bias, bias_layers=bias_layers)
        elif attention_bias is not None or bias_layers is not None:
            raise ValueError("give the bias either as attention_bias/bias_layers or inside steering, not both")
        with _autograd(requires_grad):
            pixels = pixel_values.to(device=self.device, dtype=self.dtype)
            features, used = encode_steered(self.tower, pixels, steering, image_index, plan)
            return features / features.norm(dim=-1, keepdim=True), used

    def biased_layers(self, bias_layers: Sequence[int] | None) -> set[int]:
        """``bias_layers`` as non-negative layer indices of this tower (``None`` = all)."""
        return layer_set(bias_layers, self.num_layers)

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: Sequence[str], batch_size: int = 256, requires_grad: bool = False, *,
                    warn_unknown: bool = True) -> torch.Tensor:
        """L2-normalised projected text embeddings ``(T, D)`` (truncated to the model's context), under
        ``torch.inference_mode`` unless ``requires_grad=True``. Texts with words the tokenizer does not know
        (mapped to its unknown token: the sandbox model knows 41 words) raise a ``UserWarning`` unless
        ``warn_unknown=False``."""
        if warn_unknown and not isinstance(texts, str):
            unknown = [text for text, (count, _) in zip(texts, self.unknown_token_counts(texts)) if count]
            if unknown:
                warnings.warn(f"{len(unknown)} of {len(texts)} texts have words this model's tokenizer does not know "
                              f"(e.g. {unknown[0]!r}): they are encoded as its unknown token", stacklevel=2)
        with _autograd(requires_grad):
            return self._encode_text(texts, batch_size)

    def unknown_token_counts(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Per text, (tokens that are the tokenizer's unknown token, tokens) -- (0, n) for a tokenizer whose
        unknown token is also its end/start/padding token (CLIP's BPE: it never meets an unknown word)."""
        unknown = self.text.unknown_token_id
        return [(0 if unknown is None else sum(token == unknown for token in row), len(row))
                for row in self.text.token_ids(texts)]

    @property
    def text_context(self) -> int:
        """The text encoder's context in tokens (longer texts are truncated to it)."""
        return self.text.context

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has before truncation (``> text_context``: it will be cut)."""
        return [total for _, total in self.unknown_token_counts(texts)]

    def _encode_text(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        chunks = []
        for start in range(0, len(texts), batch_size):
            input_ids, mask = self.text.tokenize(texts[start:start + batch_size], self.text_context)
            features = self.text.features(input_ids.to(self.device), None if mask is None else mask.to(self.device))
            chunks.append(features / features.norm(dim=-1, keepdim=True))
        if not chunks:
            return torch.empty(0, self.text.width, device=self.device, dtype=self.dtype)
        return torch.cat(chunks)
