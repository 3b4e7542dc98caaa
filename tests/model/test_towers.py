"""Every supported family (CLIP, MetaCLIP 2, SigLIP) on random weights, offline: unsteered = the library's own
image features bit for bit; steered = an independent computation written here over the same weights (for
SigLIP: the library's last hidden state, then its pooling head's ``nn.MultiheadAttention`` with the foveal
row as ``attn_mask``); geometry and preprocessing from the checkpoint; refusals name why."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from falip import FoveatedCLIP
from falip.model.attention_maps import cls_attention_map
from falip.model.heads import head_contributions
from falip.model.interventions import Unleash
from falip.model.random_clip import random_clip, save_random_checkpoint
from falip.model.steering import FULL_ROWS, Steering
from falip.prompts import FovealBias

FAMILIES = ["clip", "metaclip_2", "siglip"]
BOXES = [(2.0, 3.0, 20.0, 30.0), (8.0, 0.0, 32.0, 14.0), (0.0, 0.0, 9.0, 9.0), (10.0, 10.0, 28.0, 31.0)]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return random_clip("tiny", seed=3, family=request.param)


@pytest.fixture(scope="module")
def siglip():
    return random_clip("tiny", seed=4, family="siglip")


def pixels(count, size=32, seed=0):
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def bias_of(model, formulation="cls", boxes=BOXES):
    return FovealBias(alpha=2.0, formulation=formulation).build(boxes, model.image_size, model.patch_size)


def test_unsteered_is_the_librarys_own_image_features_bit_for_bit(model):
    batch = pixels(3)
    with torch.inference_mode():
        library = model.clip.get_image_features(pixel_values=batch).pooler_output
    assert torch.equal(model.encode_image(batch), library / library.norm(dim=-1, keepdim=True))


def siglip_by_hand(model, batch, bias, layers=()):
    """SigLIP written out from the library's modules: embeddings, encoder layers (the bias's patch rows added in
    ``layers`` through the layers' own mask argument), post-norm, then the pooling head's own
    ``nn.MultiheadAttention`` with the bias's probe row as its additive ``attn_mask``, layernorm and MLP."""
    vision = model.clip.vision_model
    heads = vision.config.num_attention_heads
    with torch.inference_mode():
        hidden = vision.embeddings(batch)
        for index, layer in enumerate(vision.encoder.layers):
            hidden = layer(hidden, bias[:, None, 1:, 1:] if index in layers else None)
        hidden = vision.post_layernorm(hidden)
        head = vision.head
        probe = head.probe.expand(len(batch), -1, -1)
        attn_mask = bias[:, 0:1, 1:].repeat_interleave(heads, dim=0)  # (B * heads, 1, N)
        pooled = head.attention(probe, hidden, hidden, attn_mask=attn_mask, need_weights=False)[0]
        pooled = pooled + head.mlp(head.layernorm(pooled))
        return F.normalize(pooled[:, 0], dim=-1)


def test_siglip_default_falip_biases_the_probes_logits_in_the_head(siglip):
    batch = pixels(4, seed=1)
    bias = bias_of(siglip)
    steered = siglip.encode_image(batch, bias, [-4, -3, -2, -1])
    assert torch.allclose(steered, siglip_by_hand(siglip, batch, bias), atol=1e-5)
    assert not torch.allclose(steered, siglip.encode_image(batch), atol=1e-3)  # the bias does something


def test_siglip_regions_share_every_layer_of_their_image(siglip):
    """The probe row acts after the layers: the regions of one image reuse its layers (image_index)."""
    batch = pixels(2, seed=2)
    index = torch.tensor([0, 0, 1, 1])
    bias = bias_of(siglip)
    shared = siglip.encode_image(batch, bias, None, image_index=index)
    expanded = siglip.encode_image(batch[index], bias, None)
    assert torch.allclose(shared, expanded, atol=1e-6)
    assert torch.allclose(shared, siglip_by_hand(siglip, batch[index], bias), atol=1e-5)


@pytest.mark.parametrize("formulation", ["all", "patches", "diag"])
def test_siglip_patch_rows_act_in_the_encoder_layers_they_name(siglip, formulation):
    batch = pixels(4, seed=3)
    bias = bias_of(siglip, formulation)
    steered = siglip.encode_image(batch, bias, [-1])
    last = siglip.num_layers - 1
    assert torch.allclose(steered, siglip_by_hand(siglip, batch, bias, layers={last}), atol=1e-5)
    assert torch.allclose(siglip.encode_image(batch, bias, [-1], plan=FULL_ROWS), steered, atol=1e-6)
    index = torch.tensor([0, 1, 2, 3, 0])
    assert torch.allclose(siglip.encode_image(batch, torch.cat([bias, bias[:1]]), [-1], image_index=index),
                          siglip_by_hand(siglip, batch[index], torch.cat([bias, bias[:1]]), layers={last}), atol=1e-5)


@pytest.mark.parametrize("family", ["clip", "metaclip_2"])
def test_clip_family_bias_matches_the_clip_tower_reference(family):
    """MetaCLIP 2 runs through the CLIP tower: the [CLS]-row bias equals the plan without trims, and shared
    image rows equal expanded ones."""
    model = random_clip("tiny", seed=3, family=family)
    batch = pixels(2, seed=4)
    bias = bias_of(model)[:4]
    index = torch.tensor([0, 0, 1, 1])
    trimmed = model.encode_image(batch, bias, [-2, -1], image_index=index)
    full = model.encode_image(batch[index], bias, [-2, -1], plan=FULL_ROWS)
    assert torch.allclose(trimmed, full, atol=1e-5)


def test_siglip_refuses_what_reads_a_pooled_row_inside_the_layers(siglip):
    batch = pixels(2, seed=5)
    bias = bias_of(siglip)[:2]
    with pytest.raises(ValueError, match="attention-pooling probe"):
        siglip.encode_image(batch, steering=Steering(bias=bias, bias_layers=[-1], intervention=Unleash()))
    with pytest.raises(ValueError, match="per-head decomposition .* attention-pooling probe"):
        head_contributions(siglip, batch)
    with pytest.raises(ValueError, match="attention map .* attention-pooling probe"):
        cls_attention_map(siglip, batch)


def test_siglip_texts_are_padded_to_the_context_without_a_mask(siglip):
    tokens = siglip.tokenizer(["a red circle"], padding=siglip.text.padding, truncation=True,
                              max_length=siglip.text.context, return_tensors="pt")
    assert tokens["input_ids"].shape[1] == siglip.text.context
    with torch.inference_mode():
        library = siglip.clip.get_text_features(input_ids=tokens["input_ids"]).pooler_output
    assert torch.allclose(siglip.encode_text(["a red circle"]), F.normalize(library, dim=-1), atol=1e-6)
    assert siglip.logit_bias == pytest.approx(float(siglip.clip.logit_bias.detach()))


@pytest.mark.parametrize("size,patch", [(224, 16), (256, 16), (384, 16), (224, 14)])
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_geometry_and_preprocessing_come_from_the_checkpoint(tmp_path, family, size, patch):
    folder = save_random_checkpoint(tmp_path / family, family=family, image_size=size, patch_size=patch,
                                    vision_layers=1, text_layers=1)
    model = FoveatedCLIP.from_pretrained(folder)
    grid = size // patch
    assert (model.image_size, model.patch_size, model.num_tokens) == (size, patch, grid * grid + 1)
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert model.preprocessor.image_mean == tuple(processor["image_mean"])
    assert model.preprocessor.resample == processor["resample"]
    from PIL import Image
    image = Image.new("RGB", (640, 480), (255, 0, 0))
    assert model.preprocess(image).shape == (1, 3, size, size)
    bias = FovealBias(alpha=1.0).build([(0, 0, size / 2, size / 2)], size, patch)
    assert bias.shape == (1, grid * grid + 1, grid * grid + 1)
    assert model.encode_image(model.preprocess(image), bias, [-1]).shape[0] == 1


def test_an_unsupported_model_type_is_one_line_naming_the_supported_ones(tmp_path):
    folder = save_random_checkpoint(tmp_path / "m", family="siglip")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "siglip2"}))
    with pytest.raises(OSError, match=r"model_type 'siglip2' is not supported \(SigLIP 2 NaFlex.*supported: "
                                      r"\['clip', 'metaclip_2', 'siglip'\]"):
        FoveatedCLIP.from_pretrained(folder)


def test_the_shipped_attention_pooled_sandbox_model_loads_as_siglip_and_falip_steers_it():
    """falip/sandbox/model_siglip: a SigLIP tower whose probe-row bias picks the referred object (docs/sandbox.md)."""
    from falip.cli import compose
    from falip.prompts import FALIP, ORIGINAL_CLIP
    from falip.sandbox.evaluation import rec_accuracy, scene_rec_split

    config = compose(["model=sandbox_siglip"])
    model = FoveatedCLIP.from_pretrained(config["model"]["path"])
    assert model.model_type == "siglip" and not model.tower.pooled_in_sequence
    assert model.foveal_alpha == config["model"]["foveal_alpha"] == 4.0
    accuracy = rec_accuracy(model, [ORIGINAL_CLIP, FALIP], scene_rec_split(30, 3, 777_001))
    assert accuracy["FALIP"] > accuracy["Original CLIP"] + 30, accuracy
