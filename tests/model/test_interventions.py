"""Attention interventions and the per-head decomposition, each against a hand-written attention over the
same weights (the layer's own Linear / LayerNorm / MLP modules, attention and head mixing written here)."""
import pytest
import torch

from falip import foveal_attention_bias, head_contributions
from falip.encoding.regions import encode_regions
from falip.model.interventions import FeatureMask, ReplaceQueriesKeys, ReplaceValues, Unleash
from falip.model.steering import Steering
from falip.prompts import ORIGINAL_CLIP, FovealBias, RedCircle, VisualPrompt
from falip.prompts.prompt import PastaBias, RoaMaskBias


def manual_forward(model, pixels, bias=None, bias_layers=(), unleash_layers=(), heads=None, record=None):
    """The vision tower with attention by hand; ``unleash_layers``: [CLS] head outputs z' -> 2 z' - z with
    z recomputed without the bias on the same q, k, v. ``record`` receives each layer's [CLS] update."""
    vision = model.clip.vision_model
    hidden = vision.pre_layrnorm(vision.embeddings(pixels))
    for index, layer in enumerate(vision.encoder.layers):
        attention = layer.self_attn
        x = layer.layer_norm1(hidden)
        batch, tokens, _ = x.shape
        H, d = attention.num_heads, attention.head_dim
        q, k, v = (proj(x).view(batch, tokens, H, d).transpose(1, 2)
                   for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        logits = q @ k.transpose(-1, -2) * attention.scale
        biased = logits + (bias[:, None] if bias is not None and index in bias_layers else 0)
        z = (torch.softmax(biased, -1) @ v).transpose(1, 2).reshape(batch, tokens, H * d)
        if index in unleash_layers:
            plain = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(batch, tokens, H * d)
            chosen = range(H) if heads is None else heads
            for h in chosen:
                z[:, 0, h * d:(h + 1) * d] = 2 * z[:, 0, h * d:(h + 1) * d] - plain[:, 0, h * d:(h + 1) * d]
        update = attention.out_proj(z)
        if record is not None:
            record.append(update[:, 0])
        hidden = hidden + update
        hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
    features = model.clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
    return features / features.norm(dim=-1, keepdim=True)


@pytest.fixture
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


BOXES = [(0.0, 0.0, 16.0, 24.0), (8.0, 8.0, 32.0, 32.0), (16.0, 0.0, 32.0, 16.0)]


def test_head_contributions_sum_to_the_layers_cls_update(tiny_clip_each_attention, pixels):
    model = tiny_clip_each_attention
    bias = foveal_attention_bias(BOXES, 32, 8, alpha=3.0)
    for attention_bias, layers in ((None, ()), (bias, (1, 2, 3))):
        updates = []
        with torch.no_grad():
            manual_forward(model, pixels, attention_bias, layers, record=updates)
        g = head_contributions(model, pixels, attention_bias=attention_bias, bias_layers=list(layers) or None)
        assert g.shape == (3, 4, 4, 32)
        for index, layer in enumerate(model.clip.vision_model.encoder.layers):
            total = g[:, index].sum(1) + layer.self_attn.out_proj.bias
            assert torch.allclose(total, updates[index], atol=1e-5), index
    last_two = head_contributions(model, pixels, layers=[-2, -1])
    assert torch.equal(last_two, head_contributions(model, pixels)[:, 2:])


def test_one_pass_unleash_equals_the_hand_written_definition(tiny_clip_each_attention, pixels):
    model = tiny_clip_each_attention
    bias = foveal_attention_bias(BOXES, 32, 8, alpha=3.0)
    for heads in (None, (0, 2)):
        got = model.encode_image(pixels, steering=Steering(bias=bias, bias_layers=[-2, -1], intervention=Unleash(layers=(-2, -1), heads=heads)))
        with torch.no_grad():
            expected = manual_forward(model, pixels, bias, (2, 3), unleash_layers=(2, 3), heads=heads)
        assert torch.allclose(got, expected, atol=1e-5), heads
    plain_falip = model.encode_image(pixels, bias, [-2, -1])
    assert not torch.allclose(got, plain_falip, atol=1e-4), "unleash changes the embedding"


def test_two_pass_unleash_reads_the_unedited_images_heads(tiny_clip, pixels):
    """With a reference image, z comes from that image's own forward: a reference equal to the prompted
    pixels and no bias gives z' = z, so 2 z' - z = z' and the embedding is plain CLIP's."""
    same = tiny_clip.encode_image(pixels, steering=Steering(intervention=Unleash(), reference_pixels=pixels, reference_index=[0, 1, 2]))
    assert torch.allclose(same, tiny_clip.encode_image(pixels), atol=1e-6)
    other = torch.flip(pixels, dims=[-1])
    moved = tiny_clip.encode_image(pixels, steering=Steering(intervention=Unleash(), reference_pixels=other, reference_index=[0, 1, 2]))
    assert not torch.allclose(moved, tiny_clip.encode_image(pixels), atol=1e-4)


@pytest.mark.parametrize("intervention", [ReplaceValues(), ReplaceQueriesKeys(), ReplaceValues(layers=None)])
def test_replacing_with_the_unedited_images_own_tensors_is_plain_clip(tiny_clip, pixels, intervention):
    plain = tiny_clip.encode_image(pixels)
    same = tiny_clip.encode_image(pixels, steering=Steering(intervention=intervention, reference_pixels=pixels, reference_index=[0, 1, 2]))
    assert torch.allclose(same, plain, atol=1e-6)
    edited = tiny_clip.encode_image(pixels + 0.5, steering=Steering(intervention=intervention, reference_pixels=pixels, reference_index=[0, 1, 2]))
    assert not torch.allclose(edited, tiny_clip.encode_image(pixels + 0.5), atol=1e-4)


def test_replace_v_matches_a_hand_written_two_stream_forward(tiny_clip, pixels):
    edited = pixels + 0.5
    got = tiny_clip.encode_image(edited, steering=Steering(intervention=ReplaceValues(layers=(-1,)), reference_pixels=pixels, reference_index=[0, 1, 2]))
    vision = tiny_clip.clip.vision_model
    with torch.no_grad():
        reference = vision.pre_layrnorm(vision.embeddings(pixels))
        for layer in vision.encoder.layers[:3]:
            reference = layer(reference, None)
        values = vision.encoder.layers[3].self_attn.v_proj(vision.encoder.layers[3].layer_norm1(reference))
        layer3 = vision.encoder.layers[3].self_attn.v_proj
        handle = layer3.register_forward_hook(lambda module, args, out: values)
        try:
            expected = manual_forward(tiny_clip, edited)
        finally:
            handle.remove()
    assert torch.allclose(got, expected, atol=1e-5)


def test_pasta_with_alpha_one_is_plain_clip_and_steers_otherwise(tiny_clip):
    from PIL import Image
    import numpy as np

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    boxes = [(2.0, 3.0, 20.0, 18.0), (30.0, 20.0, 48.0, 38.0)]
    plain = encode_regions(tiny_clip, image, boxes, ORIGINAL_CLIP)
    neutral = encode_regions(tiny_clip, image, boxes, VisualPrompt("P", bias=PastaBias(alpha=1.0)))
    assert torch.allclose(neutral, plain, atol=1e-6)
    steered = encode_regions(tiny_clip, image, boxes, VisualPrompt("P", bias=PastaBias(alpha=0.01, heads=(1, 3))))
    assert not torch.allclose(steered, plain, atol=1e-4)
    bias = PastaBias(heads=(1, 3)).build([(0.0, 0.0, 16.0, 16.0)], 32, 8, num_heads=4)
    assert bias.shape == (1, 4, 17, 17) and (bias[0, [0, 2]] == 0).all()
    outside = bias[0, 1, 5]  # row 5, keys: [CLS] and the ROA's 4 tokens keep 0, the rest log(0.01)
    assert outside[0] == 0 and outside[1] == 0 and torch.isclose(outside[3], torch.tensor(np.log(0.01), dtype=torch.float32))


def test_feature_mask_and_roa_mask_match_their_definitions(tiny_clip, pixels):
    everything = torch.ones(3, 17, dtype=torch.bool)
    assert torch.allclose(tiny_clip.encode_image(pixels, steering=Steering(intervention=FeatureMask(), roa_tokens=everything)),
                          tiny_clip.encode_image(pixels), atol=1e-6)
    keep = torch.zeros(3, 17, dtype=torch.bool)
    keep[:, :5] = True
    masked = tiny_clip.encode_image(pixels, steering=Steering(intervention=FeatureMask(layers=(-1,)), roa_tokens=keep))
    vision = tiny_clip.clip.vision_model
    with torch.no_grad():
        hidden = vision.pre_layrnorm(vision.embeddings(pixels))
        for layer in vision.encoder.layers[:3]:
            hidden = layer(hidden, None)
        hidden = vision.encoder.layers[3](hidden * keep[:, :, None], None)
        expected = tiny_clip.clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
    assert torch.allclose(masked, expected / expected.norm(dim=-1, keepdim=True), atol=1e-5)
    hard = RoaMaskBias().build([(0.0, 0.0, 16.0, 16.0)], 32, 8)
    assert torch.isinf(hard[0, 0]).sum() == 16 - 4 and (hard[0, 1:] == 0).all()


def test_every_intervention_leaves_the_next_plain_call_unchanged(tiny_clip, pixels):
    plain = tiny_clip.encode_image(pixels)
    bias = foveal_attention_bias(BOXES, 32, 8, alpha=3.0)
    tiny_clip.encode_image(pixels, steering=Steering(bias=bias, intervention=Unleash()))
    tiny_clip.encode_image(pixels, steering=Steering(intervention=ReplaceValues(), reference_pixels=pixels + 1, reference_index=[0, 1, 2]))
    tiny_clip.encode_image(pixels, steering=Steering(intervention=FeatureMask(), roa_tokens=torch.ones(3, 17, dtype=torch.bool)))
    head_contributions(tiny_clip, pixels)
    assert torch.equal(tiny_clip.encode_image(pixels), plain)
    assert all(not layer.self_attn.out_proj._forward_pre_hooks and not layer._forward_pre_hooks
               and not layer.self_attn.v_proj._forward_hooks for layer in tiny_clip.clip.vision_model.encoder.layers)


def test_prompts_carry_interventions_through_the_encoder(tiny_clip):
    from PIL import Image
    import numpy as np

    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    boxes = [(2.0, 3.0, 20.0, 18.0), (30.0, 20.0, 48.0, 38.0)]
    unleashed = VisualPrompt("U", bias=FovealBias(alpha=3.0, layers=(-2, -1)), intervention=Unleash(layers=(-2, -1)))
    got = encode_regions(tiny_clip, image, boxes, unleashed)
    pixels = tiny_clip.preprocess(image).expand(2, -1, -1, -1)
    bias = FovealBias(alpha=3.0, layers=(-2, -1)).build(
        [tiny_clip.geometry(50, 40).box_to_input(b) for b in boxes], 32, 8)
    with torch.no_grad():
        expected = manual_forward(tiny_clip, pixels, bias, (2, 3), unleash_layers=(2, 3))
    assert torch.allclose(got, expected, atol=1e-5)
    circled = VisualPrompt("R", edits=(RedCircle(),), intervention=ReplaceValues())
    assert circled.needs_reference_image and encode_regions(tiny_clip, image, boxes, circled).shape == (2, 16)


def test_unleash_on_the_calibrated_top_k_heads(tiny_clip, pixels, tmp_path):
    rows = ["prompt,layer,head,mean_change"] + [f"FALIP,{layer},{head},{(head * 7 + layer) % 5}"
                                                for layer in range(4) for head in range(4)]
    (tmp_path / "sensitivity.csv").write_text("\n".join(rows) + "\n")
    calibrated = Unleash(layers=(-1,), top_k=2, calibration=str(tmp_path / "sensitivity.csv"))
    assert calibrated.heads_of(3, 4) == [0, 3]  # layer 3: changes 3, 0, 2, 4 -> the two largest: heads 3 and 0
    bias = foveal_attention_bias(BOXES, 32, 8, alpha=3.0)
    got = tiny_clip.encode_image(pixels, steering=Steering(bias=bias, bias_layers=[-1], intervention=calibrated))
    with torch.no_grad():
        expected = manual_forward(tiny_clip, pixels, bias, (3,), unleash_layers=(3,), heads=calibrated.heads_of(3, 4))
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="together"):
        Unleash(top_k=2)
