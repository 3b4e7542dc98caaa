"""open_clip towers (the optional extra falip[open_clip]) on random weights written in open_clip's Hub layout,
offline: unsteered = open_clip's own ``encode_image`` bit for bit; steered = open_clip's own blocks called
with the foveal bias as their ``attn_mask`` (``nn.MultiheadAttention`` adds it to the logits); exact trims,
interventions, head terms and attention maps through the contract; refusals name why. Skipped, with the
reason, where open_clip cannot be imported (``make test-open-clip`` runs these in an environment that has it)."""
from __future__ import annotations

import json

import pytest
import torch

from falip import FoveatedCLIP
from falip.model.attention_maps import cls_attention_map
from falip.model.clip import CheckpointNotFoundError
from falip.model.heads import head_contributions
from falip.model.interventions import ReplaceValues, Unleash
from falip.model.open_clip_tower import import_open_clip
from falip.model.random_clip import save_random_open_clip
from falip.model.steering import EXACT, FULL_ROWS, Steering
from falip.prompts import FovealBias

try:
    open_clip = import_open_clip()
except ImportError as error:  # not installed, or its torchvision does not match torch
    pytest.skip(f"open_clip is not importable here: {error}", allow_module_level=True)

BOXES = [(2.0, 3.0, 40.0, 30.0), (8.0, 20.0, 64.0, 50.0), (0.0, 0.0, 15.0, 15.0)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_random_open_clip(tmp_path_factory.mktemp("open_clip") / "tiny", image_size=64, patch_size=16, seed=1)


@pytest.fixture(scope="module")
def model(folder):
    return FoveatedCLIP.from_pretrained(f"open_clip:local-dir:{folder}")


def pixels(count, size=64, seed=0):
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def bias_of(model, formulation="cls"):
    return FovealBias(alpha=2.0, formulation=formulation).build(BOXES, model.image_size, model.patch_size)


@torch.no_grad()
def library_by_hand(model, batch, bias, layers):
    """open_clip's own modules: its embedding, its blocks (``attn_mask`` = the bias, per image and head, in the
    biased layers), ``ln_post`` of [CLS] and ``proj``."""
    visual = model.clip.visual
    hidden = visual._embeds(batch)
    heads = visual.transformer.resblocks[0].attn.num_heads
    mask = bias.unsqueeze(1).expand(-1, heads, -1, -1).reshape(-1, *bias.shape[-2:])
    for index, block in enumerate(visual.transformer.resblocks):
        hidden = block(hidden, attn_mask=mask if index in layers else None)
    features = visual.ln_post(hidden[:, 0]) @ visual.proj
    return features / features.norm(dim=-1, keepdim=True)


def test_the_model_is_an_open_clip_tower_with_the_checkpoints_geometry_and_preprocessing(model, folder):
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert model.model_type == "open_clip" and type(model.tower).__name__ == "OpenCLIPTower"
    assert (model.image_size, model.patch_size, model.num_tokens) == (64, 16, 17)
    assert model.preprocessor.image_mean == tuple(config["preprocess_cfg"]["mean"])
    assert model.preprocessor.resample == 3 and model.probability == "softmax" and model.logit_bias == 0.0


def test_unsteered_is_open_clips_own_encode_image_bit_for_bit(model):
    batch = pixels(3)
    with torch.inference_mode():
        library = model.clip.encode_image(batch)
    assert torch.equal(model.encode_image(batch), library / library.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("formulation", ["cls", "all"])
@pytest.mark.parametrize("layers", [[0, 1, 2, 3], [-2, -1], [-1]])
def test_the_bias_equals_open_clips_own_blocks_with_attn_mask(model, formulation, layers):
    batch = pixels(len(BOXES), seed=1)
    bias = bias_of(model, formulation)
    got = model.encode_image(batch, bias, layers, plan=FULL_ROWS)
    expected = library_by_hand(model, batch, bias, {layer % model.num_layers for layer in layers})
    assert (got - expected).abs().max() < 1e-5
    assert (got - model.encode_image(batch)).abs().max() > 1e-3  # the bias acts
    trimmed = model.encode_image(batch[:1], bias, layers, image_index=[0, 0, 0], plan=EXACT)  # one image, 3 boxes
    assert (trimmed - model.encode_image(batch[:1].expand(3, -1, -1, -1), bias, layers, plan=FULL_ROWS)).abs().max() < 1e-5


def test_geometry_follows_the_checkpoint(tmp_path):
    for size, patch in ((224, 14), (96, 16)):
        tower = FoveatedCLIP.from_pretrained(
            f"open_clip:local-dir:{save_random_open_clip(tmp_path / f'{size}_{patch}', image_size=size, patch_size=patch)}")
        assert (tower.grid_size, tower.num_tokens) == (size // patch, (size // patch) ** 2 + 1)
        batch = pixels(1, size)
        bias = FovealBias(alpha=2.0).build([(0.0, 0.0, size / 2, size / 2)], size, patch)
        assert (tower.encode_image(batch, bias, [-1], plan=FULL_ROWS)
                - library_by_hand(tower, batch, bias, {tower.num_layers - 1})).abs().max() < 1e-5


@torch.no_grad()
def test_interventions_head_terms_and_attention_maps_go_through_the_contract(model):
    batch = pixels(2, seed=2)
    plain = model.encode_image(batch)
    same = Steering(intervention=ReplaceValues(layers=(-1,)), reference_pixels=batch, reference_index=[0, 1])
    assert (model.encode_image(batch, steering=same) - plain).abs().max() < 1e-5
    unleash = Steering(intervention=Unleash(layers=None))
    assert (model.encode_image(batch, steering=unleash) - plain).abs().max() < 1e-5  # 2 z - z without a bias
    contributions = head_contributions(model, batch)
    assert contributions.shape[:3] == (2, model.num_layers, model.num_heads)
    attention = cls_attention_map(model, batch[:1], layer=-1)
    visual = model.clip.visual  # by hand: the last block's [CLS] query over every key, mean over heads
    hidden = visual._embeds(batch[:1])
    for block in visual.transformer.resblocks[:-1]:
        hidden = block(hidden)
    last = visual.transformer.resblocks[-1]
    queries, keys, _ = torch.nn.functional.linear(last.ln_1(hidden), last.attn.in_proj_weight,
                                                  last.attn.in_proj_bias).chunk(3, dim=-1)
    heads, size = model.num_heads, queries.shape[-1] // model.num_heads
    logits = torch.einsum("hd,hkd->hk", queries[0, 0].view(heads, size), keys[0].view(-1, heads, size).transpose(0, 1))
    expected = (logits / size ** 0.5).softmax(-1).mean(0)[1:].view(4, 4)
    assert attention.shape == (1, 4, 4) and (attention[0] - expected).abs().max() < 1e-5
    assert not any(model.tower._hooks.values())  # every hook removed


def test_texts_use_open_clips_tokenizer_and_text_tower(model):
    texts = ["a photo of a cat", "a red square"]
    with torch.inference_mode():
        library = model.clip.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts, context_length=16))
    assert torch.equal(model.encode_text(texts), library / library.norm(dim=-1, keepdim=True))
    assert model.unknown_token_counts(texts) == [(0, 7), (0, 5)]  # BPE: every word is known; SOT and EOT counted


def test_refusals_name_why(tmp_path, folder):
    with pytest.raises(CheckpointNotFoundError, match="needs weights"):
        FoveatedCLIP.from_pretrained("open_clip:ViT-B-16")
    with pytest.raises(CheckpointNotFoundError, match="did you mean"):
        FoveatedCLIP.from_pretrained("open_clip:ViT-B-61", weights="x.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        FoveatedCLIP.from_pretrained("open_clip:ViT-B-16", weights=tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="no open_clip_config.json"):
        FoveatedCLIP.from_pretrained(f"open_clip:local-dir:{tmp_path}")


def test_a_weights_file_loads_into_a_built_in_architecture(tmp_path, folder):
    """model.name=open_clip:<architecture> model.path=<state dict>: the architecture's config, the file's
    weights (a full-size ViT-B-16 is built, so only its geometry and the loaded weights are checked)."""
    from safetensors.torch import save_file

    reference = open_clip.create_model("ViT-B-16", pretrained=None)
    state = {name: tensor + 0.01 for name, tensor in reference.state_dict().items() if tensor.is_floating_point()}
    save_file(state, str(tmp_path / "vit_b16.safetensors"))
    model = FoveatedCLIP.from_pretrained("open_clip:ViT-B-16", weights=tmp_path / "vit_b16.safetensors")
    assert (model.image_size, model.patch_size, model.num_layers, model.num_heads) == (224, 16, 12, 12)
    assert torch.equal(model.clip.visual.proj, state["visual.proj"])


def test_falip_run_on_an_open_clip_checkpoint_end_to_end(shapes_rec_on, folder):
    """``falip-run experiment=shapes_rec model.name=open_clip:local-dir:<folder>``: the sandbox REC experiment on a
    random open_clip tower, offline, writes its table with the model's provenance."""
    sidecar, table = shapes_rec_on(f"open_clip:local-dir:{folder}")
    assert sidecar["status"] == "complete" and sidecar["model"]["model_type"] == "open_clip"
    assert "FALIP" in table
