"""Region encoding equals doing each step by hand, whatever the batching."""
import numpy as np
import pytest
import torch
from PIL import Image

from falip import foveal_attention_bias
from falip.model.bias import bias_from_token_weights, foveal_token_weights
from falip.geometry import BoxError
from falip.prompts import CROP, FALIP, ORIGINAL_CLIP, RED_CIRCLE_FALIP, FovealBias, VisualPrompt
from falip.encoding.regions import RegionEncoder, encode_regions, prepare_regions


@pytest.fixture(scope="module")
def model(tiny_clip):
    return tiny_clip


def scene(seed, w=48, h=40):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


BOXES = [(2.0, 3.0, 20.0, 25.0), (22.5, 10.0, 47.0, 39.0), (0.0, 0.0, 48.0, 40.0)]


def test_falip_regions_equal_manual_pipeline(model):
    image = scene(0)
    prompt = VisualPrompt("F", bias=FovealBias(alpha=2.0, layers=(-1,)))
    ours = encode_regions(model, image, BOXES, prompt)
    geometry = model.geometry(48, 40, "squash")
    bias = foveal_attention_bias([geometry.box_to_input(b) for b in BOXES], 32, 8, alpha=2.0)
    with torch.no_grad():
        manual = model.encode_image(model.preprocess(image).expand(3, -1, -1, -1), bias, [-1])
    assert torch.allclose(ours, manual, atol=1e-6)
    assert not torch.allclose(ours[0], ours[1])


def test_original_clip_costs_one_forward_and_ties(model):
    encoder = RegionEncoder(model, ORIGINAL_CLIP, batch_size=8)
    ready = encoder.add("a", prepare_regions(model.preprocessor, scene(1), BOXES, ORIGINAL_CLIP)) + encoder.flush()
    [(key, emb)] = ready
    assert key == "a" and emb.shape == (3, 16) and encoder.image_forwards == 1
    assert torch.equal(emb[0], emb[1]) and torch.equal(emb[1], emb[2])


def test_crop_equals_encoding_the_crop(model):
    image = scene(2)
    ours = encode_regions(model, image, BOXES[:2], CROP)
    with torch.no_grad():
        manual = model.encode_image(model.preprocess([image.crop(b) for b in BOXES[:2]]))
    assert torch.allclose(ours, manual, atol=1e-6)


def test_batching_across_images_does_not_change_results(model):
    images = [scene(s) for s in range(5)]
    boxes = [BOXES[: 1 + s % 3] for s in range(5)]
    expected = [encode_regions(model, im, bx, RED_CIRCLE_FALIP) for im, bx in zip(images, boxes)]
    encoder = RegionEncoder(model, RED_CIRCLE_FALIP, batch_size=4)
    got = {}
    for index, (im, bx) in enumerate(zip(images, boxes)):
        got.update(encoder.add(index, prepare_regions(model.preprocessor, im, bx, RED_CIRCLE_FALIP)))
    got.update(encoder.flush())
    assert encoder.image_forwards == sum(len(b) for b in boxes)
    for index in range(5):
        assert torch.allclose(got[index], expected[index], atol=1e-5)


def test_bad_regions_raise(model):
    with pytest.raises(BoxError, match="outside"):
        prepare_regions(model.preprocessor, scene(3), [(60, 50, 70, 60)], FALIP)
    with pytest.raises(BoxError, match="empty"):
        prepare_regions(model.preprocessor, scene(3), [(10, 10, 10, 30)], FALIP)
    with pytest.raises(ValueError, match="no regions"):
        prepare_regions(model.preprocessor, scene(3), [], FALIP)


def test_forwards_run_in_full_batches_across_images(model, monkeypatch):
    calls = []
    encode = model.encode_image

    def spy(pixels, bias=None, layers=None, image_index=None, steering=None, **kwargs):
        chosen = steering.bias if steering is not None else bias
        calls.append((pixels.shape[0], None if chosen is None else chosen.shape[0], image_index))
        return encode(pixels, bias, layers, image_index=image_index, steering=steering, **kwargs)

    monkeypatch.setattr(model, "encode_image", spy)
    encoder = RegionEncoder(model, FALIP, batch_size=4)
    sizes = [1, 2, 3, 1, 2]  # 9 rows: images straddle batches, only the last batch is partial
    ready = {}
    for index, count in enumerate(sizes):
        ready.update(encoder.add(index, prepare_regions(model.preprocessor, scene(index), BOXES[:count], FALIP)))
    ready.update(encoder.flush())
    # rows of one image share its pixels: images [0, 1, 2(1 of 3)], [2(2 of 3), 3, 4(1 of 2)], [4(1 of 2)]
    assert calls == [(3, 4, [0, 1, 1, 2]), (3, 4, [0, 0, 1, 2]), (1, 1, None)]
    assert encoder.image_forwards == 9 and encoder.unbiased_layer_rows == 7
    monkeypatch.undo()
    for index, count in enumerate(sizes):
        assert torch.allclose(ready[index], encode_regions(model, scene(index), BOXES[:count], FALIP), atol=1e-5)


def test_edited_regions_pass_one_pixel_row_each(model, monkeypatch):
    """RedCircle+FALIP edits each region: no pixels are shared, so no image_index is passed."""
    calls = []
    encode = model.encode_image
    monkeypatch.setattr(model, "encode_image", lambda p, b=None, l=None, image_index=None, **kw: (
        calls.append((p.shape[0], image_index)), encode(p, b, l, image_index=image_index, **kw))[1])
    encoder = RegionEncoder(model, RED_CIRCLE_FALIP, batch_size=4)
    encoder.add(0, prepare_regions(model.preprocessor, scene(0), BOXES, RED_CIRCLE_FALIP))
    encoder.add(1, prepare_regions(model.preprocessor, scene(1), BOXES[:2], RED_CIRCLE_FALIP))
    encoder.flush()
    assert calls == [(4, None), (1, None)] and encoder.unbiased_layer_rows == 5


def test_a_region_of_boxes_is_encoded_with_the_union_bias(model):
    from falip.geometry import Region, resize_geometry

    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    boxes = [(2.0, 3.0, 20.0, 18.0), (30.0, 20.0, 48.0, 38.0)]
    prompt = VisualPrompt("F", bias=FovealBias(alpha=2.0, layers=None))
    one = encode_regions(model, image, [boxes[0]], prompt)
    assert torch.equal(one, encode_regions(model, image, [Region((boxes[0],))], prompt))
    union = encode_regions(model, image, [Region(tuple(boxes))], prompt)
    geometry = resize_geometry(50, 40, model.image_size)
    weights = foveal_token_weights([geometry.box_to_input(b) for b in boxes], model.image_size, model.patch_size,
                                   alpha=2.0).amax(0, keepdim=True)
    bias = bias_from_token_weights(weights.float())
    expected = model.encode_image(model.preprocess(image), bias, None)
    assert torch.allclose(union, expected, atol=1e-6) and not torch.allclose(union, one, atol=1e-4)
