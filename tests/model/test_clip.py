"""FoveatedCLIP against an independent, hand-written ViT forward over the same weights."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from falip import FoveatedCLIP, foveal_attention_bias
from falip.model.steering import FULL_ROWS
from falip.model.clip import CheckpointNotFoundError
from falip.model.random_clip import random_clip


def reference_image_embedding(model: FoveatedCLIP, pixels, bias=None, layers=None):
    """CLIP's vision tower written out with plain tensor ops (float64), bias added to the logits."""
    sd = {k: v.detach().double() for k, v in model.clip.state_dict().items()}
    cfg = model.clip.config.vision_config
    heads, width, patch = cfg.num_attention_heads, cfg.hidden_size, cfg.patch_size
    eps = cfg.layer_norm_eps
    x = pixels.double()
    batch = x.shape[0]
    # Patch embedding as an explicit unfold + matmul (not a conv module).
    patches = x.unfold(2, patch, patch).unfold(3, patch, patch)  # B,3,g,g,p,p
    grid = patches.shape[2]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(batch, grid * grid, -1)
    kernel = sd["vision_model.embeddings.patch_embedding.weight"].reshape(width, -1)
    tokens = patches @ kernel.T
    cls = sd["vision_model.embeddings.class_embedding"].expand(batch, 1, width)
    h = torch.cat([cls, tokens], 1) + sd["vision_model.embeddings.position_embedding.weight"]

    def ln(t, name):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]

    def lin(t, name):
        return t @ sd[name + ".weight"].T + sd[name + ".bias"]

    h = ln(h, "vision_model.pre_layrnorm")
    n_layers = cfg.num_hidden_layers
    chosen = set(range(n_layers)) if layers is None else {l % n_layers for l in layers}
    for i in range(n_layers):
        p = f"vision_model.encoder.layers.{i}"
        y = ln(h, p + ".layer_norm1")
        q, k, v = (lin(y, f"{p}.self_attn.{n}_proj").reshape(batch, -1, heads, width // heads).transpose(1, 2)
                   for n in "qkv")
        logits = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
        if bias is not None and i in chosen:
            logits = logits + bias.double()[:, None]
        att = torch.exp(logits - logits.amax(-1, keepdim=True))
        att = att / att.sum(-1, keepdim=True)
        out = (att @ v).transpose(1, 2).reshape(batch, -1, width)
        h = h + lin(out, p + ".self_attn.out_proj")
        y = lin(ln(h, p + ".layer_norm2"), p + ".mlp.fc1")
        y = y * torch.sigmoid(1.702 * y)  # quick_gelu
        h = h + lin(y, p + ".mlp.fc2")
    pooled = ln(h[:, 0], "vision_model.post_layernorm")
    emb = pooled @ sd["visual_projection.weight"].T
    return emb / emb.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def model(tiny_clip_each_attention):
    return tiny_clip_each_attention


def random_boxes(n, size, generator):
    xy = torch.rand(n, 2, generator=generator) * size * 0.7
    wh = torch.rand(n, 2, generator=generator) * size * 0.5 + 2
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("layers", [None, [-2, -1], [0]])
@pytest.mark.parametrize("formulation", ["cls", "all", "diag"])
def test_biased_forward_matches_hand_written_attention(model, layers, formulation):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    bias = foveal_attention_bias(random_boxes(4, 32, g), 32, 8, alpha=3.0, formulation=formulation)
    with torch.no_grad():
        ours = model.encode_image(pixels, bias, bias_layers=layers)
        plain = model.encode_image(pixels)
    ref = reference_image_embedding(model, pixels, bias, layers)
    assert (ours.double() - ref).abs().max() < 1e-5
    assert (plain.double() - ref).abs().max() > 1e-3, "the bias must actually change the embedding"


def test_unbiased_forward_is_plain_clip_exactly(model):
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.clip.get_image_features(pixel_values=pixels).pooler_output
        expected = features / features.norm(dim=-1, keepdim=True)
        assert torch.equal(model.encode_image(pixels), expected)
        # a zero bias through every row of every layer: plain CLIP, bit for bit
        assert torch.equal(model.encode_image(pixels, torch.zeros(3, 17, 17), plan=FULL_ROWS), expected)
        # with the exact trims (last layer: [CLS] row only) only the rounding of smaller products differs
        assert (model.encode_image(pixels, torch.zeros(3, 17, 17)) - expected).abs().max() < 1e-6
        assert (model.encode_image(pixels).double() - reference_image_embedding(model, pixels)).abs().max() < 1e-5


@pytest.mark.parametrize("layers", [None, [-2, -1], [0], []])
def test_image_index_shares_the_unbiased_layers(model, layers, monkeypatch):
    """Regions that read the same image: the pixels pass once, and the result equals expanding them."""
    g = torch.Generator().manual_seed(5)
    images = torch.randn(2, 3, 32, 32, generator=g)
    index = [0, 0, 1, 0, 1]
    bias = foveal_attention_bias(random_boxes(5, 32, g), 32, 8, alpha=3.0)
    seen = []
    monkeypatch.setattr(model.clip.vision_model.encoder.layers[0], "forward", (
        lambda original: lambda hidden, *a, **k: (seen.append(hidden.shape[0]), original(hidden, *a, **k))[1]
    )(model.clip.vision_model.encoder.layers[0].forward))
    with torch.no_grad():
        shared = model.encode_image(images, bias, layers, image_index=index)
        expanded = model.encode_image(images[index], bias, layers)
        plain = model.encode_image(images, image_index=torch.tensor(index))
    ref = reference_image_embedding(model, images[index], bias, layers)
    assert (shared.double() - ref).abs().max() < 1e-5 and torch.allclose(shared, expanded, atol=1e-6)
    assert torch.allclose(plain, model.encode_image(images)[index], atol=1e-6)
    # layer 0 runs on 2 images when it is unbiased, on 5 rows when it carries the bias
    assert seen[0] == (5 if layers is None or 0 in layers else 2)


def test_bad_image_index_raises(model):
    pixels = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        model.encode_image(pixels, torch.zeros(3, 17, 17), image_index=[0, 2, 1])
    with pytest.raises(ValueError, match="batch"):
        model.encode_image(pixels, torch.zeros(2, 17, 17), image_index=[0, 1, 1])


def test_bias_lives_for_one_call_only(model):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    bias = foveal_attention_bias([(0, 0, 16, 16), (8, 8, 32, 24)], 32, 8, alpha=5.0)
    with torch.no_grad():
        before = model.encode_image(pixels)
        biased = model.encode_image(pixels, bias)
        after = model.encode_image(pixels)
    assert not torch.allclose(before, biased)
    assert torch.equal(before, after)


def test_bias_shapes_broadcast_and_per_head(model):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    bias = foveal_attention_bias([(0, 0, 16, 16)], 32, 8, alpha=2.0)
    with torch.no_grad():
        shared = model.encode_image(pixels, bias[0])
        batched = model.encode_image(pixels, bias.expand(2, -1, -1))
        per_head = model.encode_image(pixels, bias[:, None].expand(2, 4, -1, -1))
    assert torch.allclose(shared, batched, atol=1e-6) and torch.allclose(shared, per_head, atol=1e-6)


def test_bad_bias_and_layers_raise(model):
    pixels = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="17, 17"):
        model.encode_image(pixels, torch.zeros(1, 10, 10))
    with pytest.raises(ValueError, match="does not exist"):
        model.encode_image(pixels, torch.zeros(1, 17, 17), bias_layers=[4])
    with pytest.raises(ValueError, match="batch"):
        model.encode_image(pixels, torch.zeros(2, 17, 17))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_close_to_float32(dtype):
    full = random_clip("tiny", seed=5)
    low = random_clip("tiny", seed=5, dtype=dtype)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    bias = foveal_attention_bias([(0, 0, 16, 16), (8, 8, 32, 24)], 32, 8, alpha=2.0)
    with torch.no_grad():
        out = low.encode_image(pixels, bias, [-1])
        assert out.dtype == dtype
        assert (out.float() - full.encode_image(pixels, bias, [-1])).abs().max() < 5e-2


def test_text_embeddings_normalised_and_padding_invariant(model):
    with torch.no_grad():
        both = model.encode_text(["a photo of a red circle", "blue"])
        alone = model.encode_text(["blue"])
    assert both.shape == (2, 16)
    assert torch.allclose(both.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(both[1], alone[0], atol=1e-6)


def test_from_pretrained_round_trip(tmp_path):
    original = random_clip("tiny", seed=7)
    original.clip.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')
    loaded = FoveatedCLIP.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.preprocessor.image_mean == (0.5, 0.5, 0.5) and loaded.preprocessor.image_std == (0.25, 0.25, 0.25)
    assert loaded.attn_implementation == "eager"
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(pixels), original.encode_image(pixels), atol=1e-6)
        assert torch.allclose(loaded.encode_text(["red square"]), original.encode_text(["red square"]), atol=1e-6)


def test_missing_checkpoints_give_actionable_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(CheckpointNotFoundError, match=r"does-not-exist/clip-xyz.*huggingface-cli download.*model.path"):
        FoveatedCLIP.from_pretrained("does-not-exist/clip-xyz")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        FoveatedCLIP.from_pretrained(tmp_path / "no" / "such" / "dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="without CLIP weights") as error:
        FoveatedCLIP.from_pretrained(tmp_path / "empty")
    message = str(error.value)
    assert "--local-dir" in message and f"download {tmp_path / 'empty'}" not in message, message


def test_an_uncached_hub_id_on_a_machine_without_the_hub_fails_at_once(tmp_path, monkeypatch):
    """No retries for half a minute: the Hub endpoint is probed once (here a closed local port)."""
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError, match=r"'org/clip-abc' is not in the HF cache and the Hub is "
                                                      r"unreachable from this machine.*hf download org/clip-abc"):
        FoveatedCLIP.from_pretrained("org/clip-abc")
    assert time.perf_counter() - started < 5


def test_preprocess_modes_and_normalisation(model):
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    for resize in ("squash", "crop"):
        pixels = model.preprocess(image, resize)
        assert pixels.shape == (1, 3, 32, 32)
        red = (1.0 - model.preprocessor.image_mean[0]) / model.preprocessor.image_std[0]
        assert torch.allclose(pixels[0, 0], torch.full((32, 32), red), atol=1e-5)
    with pytest.raises(ValueError, match="resize"):
        model.preprocess(image, "pad")


def test_preprocess_matches_a_float64_reference(model):
    """Squash and crop of a random non-square image equal PIL bicubic + (x / 255 - mean) / std in float64."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    size = model.image_size
    squashed = image.resize((size, size), Image.BICUBIC)
    short = size * 53 // 37  # shortest edge to `size`, like CLIP's Resize(size) + CenterCrop(size)
    resized = image.resize((short, size), Image.BICUBIC)
    left = int(round((short - size) / 2.0))
    cropped = resized.crop((left, 0, left + size, size))
    mean, std = np.asarray(model.preprocessor.image_mean)[:, None, None], np.asarray(model.preprocessor.image_std)[:, None, None]
    for resize, reference in (("squash", squashed), ("crop", cropped)):
        expected = (np.asarray(reference, dtype=np.float64).transpose(2, 0, 1) / 255.0 - mean) / std
        got = model.preprocess(image, resize)
        assert got.dtype == torch.float32 and got.is_contiguous()
        np.testing.assert_allclose(got[0].numpy(), expected, atol=2e-6)


def test_encoders_record_no_autograd_unless_asked(tiny_clip):
    pixels = torch.randn(2, 3, 32, 32)
    bias = foveal_attention_bias([(0, 0, 16, 16)] * 2, 32, 8)
    for call in (lambda **kw: tiny_clip.encode_image(pixels, **kw), lambda **kw: tiny_clip.encode_image(pixels, bias, **kw),
                 lambda **kw: tiny_clip.encode_text(["a red circle"], **kw)):
        plain = call()
        assert not plain.requires_grad and plain.is_inference()
        tracked = call(requires_grad=True)
        assert tracked.requires_grad and torch.equal(tracked.detach(), plain)
