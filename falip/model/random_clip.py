"""Randomly initialised CLIP-family models of known shapes, for tests and benchmarks (never for results).

``vit-b16`` has the vision tower of OpenAI's ViT-B/16 (224 px, patch 16, 12 layers x 768, 12 heads) and
``vit-l14`` that of ViT-L/14 (224 px, patch 14, 24 layers x 1024, 16 heads), so that speed and memory can
be measured without downloading weights. ``family`` picks the ``transformers`` class: ``clip``, ``siglip``
(an attention-pooling head, no [CLS]; texts padded to the context, as SigLIP was trained) or ``metaclip_2``.
:func:`save_random_checkpoint` writes one as a checkpoint folder (``save_pretrained`` + tokenizer +
``preprocessor_config.json``) that ``FoveatedCLIP.from_pretrained`` and ``model.path=`` load.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, MetaClip2Config, MetaClip2Model, SiglipConfig, SiglipModel

from .clip import FoveatedCLIP
from .open_clip_tower import import_open_clip
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, build_word_tokenizer

PRESETS = {
    # vision: image, patch, layers, width, heads; text: layers, width, heads; projection
    "tiny": dict(image_size=32, patch_size=8, vision_layers=4, vision_width=32, vision_heads=4,
                 text_layers=2, text_width=32, text_heads=4, projection_dim=16),
    "vit-b16": dict(image_size=224, patch_size=16, vision_layers=12, vision_width=768, vision_heads=12,
                    text_layers=12, text_width=512, text_heads=8, projection_dim=512),
    "vit-l14": dict(image_size=224, patch_size=14, vision_layers=24, vision_width=1024, vision_heads=16,
                    text_layers=12, text_width=768, text_heads=12, projection_dim=768),
}
# per family: the config and model classes, and the preprocessing its checkpoints ship (mean, std, resample)
FAMILIES = {
    "clip": (CLIPConfig, CLIPModel, dict(image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711], resample=3)),
    "metaclip_2": (MetaClip2Config, MetaClip2Model, dict(image_mean=[0.48145466, 0.4578275, 0.40821073],
                                                         image_std=[0.26862954, 0.26130258, 0.27577711], resample=3)),
    "siglip": (SiglipConfig, SiglipModel, dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=2)),
}
TOY_WORDS = "a photo of the an this is red green blue yellow purple circle square triangle cross . ,".split()


def random_clip_config(preset: str = "tiny", family: str = "clip", **overrides):
    """The ``transformers`` config of a random model of ``family`` with ``preset``'s sizes (``overrides``
    replace any of them, e.g. ``image_size=256``; ``foveal_alpha`` is stored in the config)."""
    foveal_alpha = overrides.pop("foveal_alpha", None)
    dims = {**PRESETS[preset], **overrides}
    tokenizer_vocab = len(TOY_WORDS) + 4
    text = dict(vocab_size=tokenizer_vocab, hidden_size=dims["text_width"],
                intermediate_size=4 * dims["text_width"], num_hidden_layers=dims["text_layers"],
                num_attention_heads=dims["text_heads"], max_position_embeddings=16,
                bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    vision = dict(image_size=dims["image_size"], patch_size=dims["patch_size"], hidden_size=dims["vision_width"],
                  intermediate_size=4 * dims["vision_width"], num_hidden_layers=dims["vision_layers"],
                  num_attention_heads=dims["vision_heads"])
    config_class = FAMILIES[family][0]
    if family == "siglip":  # the text head projects to the image features' width (the vision width)
        config = config_class(text_config={**text, "projection_size": dims["vision_width"]}, vision_config=vision)
    else:
        config = config_class(text_config=text, vision_config=vision, projection_dim=dims["projection_dim"])
    if foveal_alpha is not None:
        config.foveal_alpha = float(foveal_alpha)
    return config


def random_clip(preset: str = "tiny", seed: int = 0, attn_implementation: str = "sdpa",
                dtype: torch.dtype = torch.float32, family: str = "clip", **overrides) -> FoveatedCLIP:
    """A seeded random model of ``family`` wrapped as :class:`FoveatedCLIP`, with a word-level toy tokenizer."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    torch.manual_seed(seed)
    config = random_clip_config(preset, family, **overrides)
    model = FAMILIES[family][1]._from_config(config, attn_implementation=attn_implementation, dtype=dtype).eval()
    return FoveatedCLIP(model, build_word_tokenizer(TOY_WORDS), dict(FAMILIES[family][2]),
                        source=f"random:{family}:{preset}:seed{seed}")


def save_random_checkpoint(folder: str | Path, preset: str = "tiny", seed: int = 0, family: str = "clip",
                           **overrides) -> Path:
    """Write a random model of ``family`` as a checkpoint folder (weights, config, tokenizer, preprocessor)."""
    folder = Path(folder)
    model = random_clip(preset, seed, family=family, **overrides)
    model.clip.save_pretrained(folder, safe_serialization=True)
    model.tokenizer.save_pretrained(folder)
    size = model.image_size
    processor = {**FAMILIES[family][2], "size": {"height": size, "width": size}, "do_resize": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
    return folder


def save_random_open_clip(folder: str | Path, preset: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Write a random open_clip ``CLIP`` (its own ViT, ``[CLS]``-pooled; CLIP's BPE text tower) in open_clip's
    Hub layout -- ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
    ``open_clip_model.safetensors`` -- which ``model.name=open_clip:local-dir:<folder>`` loads. Needs the
    extra ``falip[open_clip]``."""
    from safetensors.torch import save_file

    open_clip = import_open_clip()
    dims = {**PRESETS[preset], **overrides}
    model_cfg = {"embed_dim": dims["projection_dim"],
                 "vision_cfg": {"image_size": dims["image_size"], "patch_size": dims["patch_size"],
                                "layers": dims["vision_layers"], "width": dims["vision_width"],
                                "head_width": dims["vision_width"] // dims["vision_heads"]},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": dims["text_width"],
                              "heads": dims["text_heads"], "layers": dims["text_layers"]}}
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg)
    with torch.no_grad():  # open_clip leaves the vision tower's layer norms and biases at 1 and 0: stir them
        for name, parameter in model.named_parameters():
            if name.startswith("visual.") and parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    preprocess = {"mean": list(FAMILIES["clip"][2]["image_mean"]), "std": list(FAMILIES["clip"][2]["image_std"]),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess},
                                                             indent=1))
    return folder


TIMM_SIGLIP_B16 = "vit_base_patch16_siglip_224"  # the vision trunk of open_clip's ViT-B-16-SigLIP / -SigLIP2


def random_open_clip_probe(seed: int = 0, words: tuple[str, ...] = ("a", "photo", "of", "the", "cat", "dog"),
                           **trunk_overrides):
    """(model config, model, tokenizer) of a random open_clip SigLIP-style model: a timm ViT trunk pooled by an
    attention-pooling probe (``ViT-B-16-SigLIP2``'s, or smaller with ``trunk_overrides`` such as ``depth``,
    ``embed_dim``, ``num_heads``, ``img_size``, ``patch_size``, which only an in-memory model can have: a saved
    config names the timm trunk), a sigmoid logit bias, a one-layer text tower and a word-level HF tokenizer
    (open_clip's ``HFTokenizer`` over it). Needs the extra ``falip[open_clip]``."""
    open_clip = import_open_clip()
    import timm

    torch.manual_seed(seed)
    trunk = timm.create_model(TIMM_SIGLIP_B16, pretrained=False, num_classes=0, global_pool="map", **trunk_overrides)
    width = int(trunk.embed_dim)
    model_cfg = {"embed_dim": width, "init_logit_bias": -10.0,
                 "vision_cfg": {"image_size": int(trunk.patch_embed.img_size[0]), "timm_model_name": TIMM_SIGLIP_B16,
                                "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"},
                 "text_cfg": {"context_length": 16, "vocab_size": len(words) + 4, "hf_tokenizer_name": "local-dir",
                              "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32, "heads": 2, "layers": 1,
                              "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
                              "norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"}}}
    model = open_clip.model.CustomTextCLIP(**model_cfg)  # builds the named trunk, replaced by this one
    model.visual.trunk = trunk
    with torch.no_grad():  # timm leaves layer norms and biases at 1 and 0: stir them
        for name, parameter in model.named_parameters():
            if name.startswith("visual.") and parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    tokenizer = build_word_tokenizer(words, max_length=16)
    return model_cfg, model.eval(), tokenizer


def save_random_open_clip_probe(folder: str | Path, seed: int = 0) -> Path:
    """Write :func:`random_open_clip_probe` (``ViT-B-16-SigLIP2``'s vision trunk, random) in open_clip's Hub
    layout with its tokenizer files, which ``model.name=open_clip:local-dir:<folder>`` loads."""
    from safetensors.torch import save_file

    model_cfg, model, tokenizer = random_open_clip_probe(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    tokenizer.save_pretrained(folder)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "squash"}
    config = {"model_cfg": {**model_cfg, "custom_text": True}, "preprocess_cfg": preprocess}  # CustomTextCLIP
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    return folder
