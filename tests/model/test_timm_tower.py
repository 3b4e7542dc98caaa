"""open_clip's probe-pooled timm towers (``ViT-B-16-SigLIP2``'s trunk; the optional extra falip[open_clip]) on
random weights, offline: unsteered = open_clip's own ``encode_image`` bit for bit; steered = an independent
computation written here over the same weights -- timm's own blocks with the bias's patch rows as their
``attn_mask``, ``norm``, then the pooling head by hand (latent query, keys and values, the foveal row added to
the latent's logits, softmax, output projection, residual MLP); trims, interventions, geometry, texts and
refusals; ``falip-run`` end to end on a saved ViT-B-16-SigLIP2-shaped checkpoint. Skipped, with the reason,
where open_clip cannot be imported (``make test-open-clip`` runs these)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from falip import FoveatedCLIP
from falip.model.attention_maps import cls_attention_map
from falip.model.heads import head_contributions
from falip.model.interventions import ReplaceValues, Unleash
from falip.model.open_clip_tower import import_open_clip
from falip.model.random_clip import random_open_clip_probe, save_random_open_clip_probe
from falip.model.steering import EXACT, FULL_ROWS, Steering
from falip.prompts import FovealBias

try:
    open_clip = import_open_clip()
except ImportError as error:  # not installed, or its torchvision does not match torch
    pytest.skip(f"open_clip is not importable here: {error}", allow_module_level=True)

BOXES = [(2.0, 3.0, 40.0, 30.0), (8.0, 20.0, 64.0, 50.0), (0.0, 0.0, 15.0, 15.0)]
TINY = dict(depth=3, embed_dim=32, num_heads=4, mlp_ratio=2.0)


def wrap(tmp_path, seed=0, **trunk):
    """A FoveatedCLIP around an in-memory random model, its tokenizer read back through open_clip's HFTokenizer."""
    _, model, tokenizer = random_open_clip_probe(seed, **{**TINY, **trunk})
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    hf = open_clip.tokenizer.HFTokenizer(str(tmp_path / "tokenizer"), context_length=16, clean="canonicalize")
    return FoveatedCLIP(model, hf, {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}, source="random probe tower")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return wrap(tmp_path_factory.mktemp("probe"), seed=1, img_size=64)


def pixels(count, size=64, seed=0):
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def bias_of(model, formulation="cls", boxes=BOXES):
    return FovealBias(alpha=2.0, formulation=formulation).build(boxes, model.image_size, model.patch_size)


@torch.no_grad()
def by_hand(model, batch, bias, layers=()):
    """timm's own embedding and blocks (the bias's patch rows as ``attn_mask`` in ``layers``), ``norm``, then the
    attention-pooling head written out: the latent's query against every token's key, plus the bias's probe row,
    softmax per head, the values, ``proj``, and the residual MLP after ``norm``."""
    trunk = model.clip.visual.trunk
    hidden = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(batch)))
    for index, block in enumerate(trunk.blocks):
        hidden = block(hidden, attn_mask=bias[:, None, 1:, 1:] if index in layers else None)
    hidden = trunk.norm(hidden)
    pool = trunk.attn_pool
    heads, size = pool.num_heads, pool.head_dim
    query = pool.q(pool.latent)[0, 0].view(heads, size)  # (H, d)
    keys, values = pool.kv(hidden).view(len(batch), -1, 2, heads, size).unbind(2)  # (B, N, H, d) each
    logits = torch.einsum("hd,bnhd->bhn", query, keys) / math.sqrt(size) + bias[:, None, 0, 1:]
    pooled = torch.einsum("bhn,bnhd->bhd", logits.softmax(-1), values).reshape(len(batch), heads * size)
    pooled = pool.proj(pooled)
    pooled = pooled + pool.mlp(pool.norm(pooled))
    return F.normalize(pooled, dim=-1)


def test_the_model_is_a_probe_tower_with_sigmoid_scores(model):
    assert model.model_type == "open_clip" and type(model.tower).__name__ == "TimmProbeTower"
    assert not model.tower.pooled_in_sequence and (model.image_size, model.patch_size, model.num_tokens) == (64, 16, 17)
    assert model.probability == "sigmoid" and model.logit_bias == pytest.approx(-10.0)


def test_unsteered_is_open_clips_own_encode_image_bit_for_bit(model):
    batch = pixels(3)
    with torch.inference_mode():
        library = model.clip.encode_image(batch)
    assert torch.equal(model.encode_image(batch), library / library.norm(dim=-1, keepdim=True))


def test_default_falip_biases_the_latents_logits_in_the_pooling_head(model):
    batch = pixels(len(BOXES), seed=1)
    bias = bias_of(model)
    steered = model.encode_image(batch, bias, [-2, -1])
    assert (steered - by_hand(model, batch, bias)).abs().max() < 1e-5  # the cls row: the head only, any layers
    assert (steered - model.encode_image(batch)).abs().max() > 1e-3  # the bias acts


@pytest.mark.parametrize("formulation", ["all", "patches"])
def test_patch_rows_act_in_the_layers_they_name_and_trims_agree(model, formulation):
    batch = pixels(len(BOXES), seed=2)
    bias = bias_of(model, formulation)
    steered = model.encode_image(batch, bias, [-2, -1], plan=FULL_ROWS)
    assert (steered - by_hand(model, batch, bias, layers={1, 2})).abs().max() < 1e-5
    shared = model.encode_image(batch[:1], bias, [-2, -1], image_index=[0, 0, 0], plan=EXACT)  # one image, 3 boxes
    assert (shared - model.encode_image(batch[:1].expand(3, -1, -1, -1), bias, [-2, -1], plan=FULL_ROWS)).abs().max() < 1e-5


@pytest.mark.parametrize("size,patch", [(224, 16), (256, 16), (384, 16), (224, 14)])
def test_geometry_follows_the_trunk(tmp_path, size, patch):
    tower = wrap(tmp_path, img_size=size, patch_size=patch, depth=1)
    assert (tower.grid_size, tower.num_tokens) == (size // patch, (size // patch) ** 2 + 1)
    batch = pixels(1, size)
    bias = FovealBias(alpha=2.0).build([(0.0, 0.0, size / 2, size / 2)], size, patch)
    assert (tower.encode_image(batch, bias, [-1]) - by_hand(tower, batch, bias)).abs().max() < 1e-5


@torch.no_grad()
def test_what_acts_on_or_reads_a_pooled_row_inside_the_layers_refuses_in_one_line(model):
    batch = pixels(2, seed=3)
    for intervention in (ReplaceValues(layers=(-1,)), Unleash(layers=(-1,))):
        with pytest.raises(ValueError, match="attention-pooling probe"):
            model.encode_image(batch, steering=Steering(bias=bias_of(model)[:2], bias_layers=[-1],
                                                        intervention=intervention, reference_pixels=batch))
    with pytest.raises(ValueError, match="per-head decomposition .* attention-pooling probe"):
        head_contributions(model, batch)
    with pytest.raises(ValueError, match="attention map .* attention-pooling probe"):
        cls_attention_map(model, batch)
    assert not any(model.tower._hooks.values())  # every hook removed


def test_texts_use_the_models_hf_tokenizer_padded_to_the_context(model):
    texts = ["a photo of the cat", "a zebra"]
    ids = model.tokenizer(texts)
    assert ids.shape == (2, model.clip.context_length)  # padded to the context, as trained
    with torch.inference_mode():
        library = model.clip.encode_text(ids)
    assert torch.equal(model.encode_text(texts), library / library.norm(dim=-1, keepdim=True))
    assert model.unknown_token_counts(texts) == [(0, 7), (1, 4)]  # 'zebra' is not in the vocabulary


@pytest.fixture(scope="module")
def eva(tmp_path_factory):
    """open_clip's EVA02-B-16 with a tiny random timm Eva trunk (rotary embedding, SwiGLU, inner layer norm)."""
    import timm

    model = open_clip.create_model("EVA02-B-16", pretrained=None)
    torch.manual_seed(3)
    model.visual.trunk = timm.create_model("eva02_base_patch16_clip_224", pretrained=False, num_classes=512,
                                           global_pool="token", img_size=64, depth=3, embed_dim=32, num_heads=4,
                                           ref_feat_shape=(4, 4))
    with torch.no_grad():
        for name, parameter in model.visual.named_parameters():  # timm's init is near zero: make it matter
            if parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
    return FoveatedCLIP(model.eval(), open_clip.get_tokenizer("EVA02-B-16"), {}, source="random EVA02")


@torch.no_grad()
def eva_by_hand(model, batch, bias, layers):
    """timm's own Eva blocks (rotary embedding from the trunk, the bias per image and head as ``attn_mask`` in
    ``layers``), ``norm``, [CLS], ``fc_norm``, ``head``."""
    trunk = model.clip.visual.trunk
    hidden, rope = trunk._pos_embed(trunk.patch_embed(batch))
    hidden = trunk.norm_pre(hidden)
    for index, block in enumerate(trunk.blocks):
        hidden = block(hidden, rope=rope, attn_mask=bias[:, None] if index in layers else None)
    features = model.clip.visual.head(trunk.head(trunk.fc_norm(trunk.norm(hidden)[:, 0])))
    return F.normalize(features, dim=-1)


def test_eva02_unsteered_is_open_clips_own_and_the_bias_equals_timms_blocks(eva):
    assert type(eva.tower).__name__ == "TimmEvaTower" and eva.tower.pooled_in_sequence and eva.num_tokens == 17
    batch = pixels(len(BOXES), seed=4)
    with torch.inference_mode():
        library = eva.clip.encode_image(batch)
    assert torch.equal(eva.encode_image(batch), library / library.norm(dim=-1, keepdim=True))
    for formulation in ("cls", "all"):
        bias = bias_of(eva, formulation)
        steered = eva.encode_image(batch, bias, [-2, -1], plan=FULL_ROWS)
        assert (steered - eva_by_hand(eva, batch, bias, {1, 2})).abs().max() < 1e-5, formulation
        assert (steered - eva.encode_image(batch)).abs().max() > 1e-3
        shared = eva.encode_image(batch[:1], bias, [-2, -1], image_index=[0, 0, 0], plan=EXACT)
        assert (shared - eva.encode_image(batch[:1].expand(3, -1, -1, -1), bias, [-2, -1], plan=FULL_ROWS)).abs().max() < 1e-5


@torch.no_grad()
def test_eva02_interventions_and_maps_work_and_head_terms_refuse(eva):
    batch = pixels(2, seed=5)
    plain = eva.encode_image(batch)
    same = Steering(intervention=ReplaceValues(layers=(-1,)), reference_pixels=batch, reference_index=[0, 1])
    assert (eva.encode_image(batch, steering=same) - plain).abs().max() < 1e-5
    attention = cls_attention_map(eva, batch[:1], layer=-1)
    assert attention.shape == (1, 4, 4) and (attention >= 0).all() and attention.sum() < 1.0 + 1e-5
    with pytest.raises(ValueError, match="inner layer norm"):
        head_contributions(eva, batch)
    assert not any(eva.tower._hooks.values())


def test_pe_core_is_refused_naming_why():
    pe = open_clip.create_model("PE-Core-B-16", pretrained=None)
    with pytest.raises(ValueError, match="PE-Core: a probe over rotary tokens"):
        FoveatedCLIP(pe)


def test_falip_run_on_a_saved_siglip2_shaped_checkpoint_end_to_end(tmp_path, shapes_rec_on):
    """``model.name=open_clip:local-dir:<folder>`` with ViT-B-16-SigLIP2's vision trunk (random): the checkpoint
    loads with its geometry and preprocessing, and the sandbox REC experiment runs on it, offline."""
    folder = save_random_open_clip_probe(tmp_path / "siglip2", seed=2)
    loaded = FoveatedCLIP.from_pretrained(f"open_clip:local-dir:{folder}")
    assert (loaded.image_size, loaded.patch_size, loaded.num_layers, loaded.num_heads) == (224, 16, 12, 12)
    assert loaded.preprocessor.image_mean == (0.5, 0.5, 0.5) and loaded.probability == "sigmoid"
    sidecar, table = shapes_rec_on(f"open_clip:local-dir:{folder}", "run.limit=6")
    assert sidecar["status"] == "complete" and sidecar["model"]["model_type"] == "open_clip"
    assert "FALIP" in table
