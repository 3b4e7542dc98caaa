"""The exact trims of a biased forward (falip/model/steering.py) against every row of every layer."""
import pytest
import torch

from falip.model.steering import FULL_ROWS, ExecutionPlan

from falip.model.bias import bias_from_token_weights, foveal_token_weights

BOXES = [(2.0, 3.0, 20.0, 30.0), (8.0, 0.0, 32.0, 14.0), (0.0, 0.0, 9.0, 9.0), (10.0, 10.0, 28.0, 31.0),
         (4.0, 16.0, 31.0, 27.0)]


def bias(model, formulation):
    weights = foveal_token_weights(BOXES, model.image_size, model.patch_size, alpha=3.0, cell_rule="overlap")
    return bias_from_token_weights(weights.float(), formulation)


@pytest.mark.parametrize("layers", [None, [-2, -1], [-1], [0], [1, 2]])
@pytest.mark.parametrize("formulation", ["cls", "all"])
@pytest.mark.parametrize("shared", [True, False])
def test_trimmed_forward_equals_the_full_forward(tiny_clip_each_attention, layers, formulation, shared):
    model = tiny_clip_each_attention
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(2 if shared else 5, 3, model.image_size, model.image_size, generator=generator)
    index = [0, 0, 1, 1, 1] if shared else None
    mask = bias(model, formulation)
    trimmed, used = model.encode_image_with_plan(pixels, mask, layers, image_index=index)
    full, none = model.encode_image_with_plan(pixels, mask, layers, image_index=index, plan=FULL_ROWS)
    assert not (none.pooled_only_last_layer or none.shared_first_biased_layer or none.cls_stream)
    assert (trimmed - full).abs().max() < 1e-5
    assert used.pooled_only_last_layer is True
    # patch rows of the first biased layer are shared only when the bias touches the [CLS] row alone
    assert used.shared_first_biased_layer is (shared and formulation == "cls")


def test_trims_leave_plain_clip_and_interventions_alone(tiny_clip):
    pixels = torch.randn(3, 3, tiny_clip.image_size, tiny_clip.image_size, generator=torch.Generator().manual_seed(2))
    plain = tiny_clip.clip.get_image_features(pixel_values=pixels).pooler_output
    assert torch.equal(tiny_clip.encode_image(pixels), plain / plain.norm(dim=-1, keepdim=True))
    zero = torch.zeros(3, tiny_clip.num_tokens, tiny_clip.num_tokens)
    assert (tiny_clip.encode_image(pixels, zero) - tiny_clip.encode_image(pixels)).abs().max() < 1e-6


def test_cls_stream_is_exact_in_its_first_layer_approximate_after_and_opt_in(tiny_clip_each_attention):
    model = tiny_clip_each_attention
    pixels = torch.randn(2, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(3))
    index = [0, 0, 1, 1, 1]
    mask = bias(model, "cls")
    exact = {layers: model.encode_image(pixels, mask, list(layers) if layers else None, image_index=index)
             for layers in ((-1,), None)}
    _, used = model.encode_image_with_plan(pixels, mask, [-1], image_index=index)
    assert used.cls_stream is False  # off by default
    stream = ExecutionPlan(cls_stream=True)
    last_only, used = model.encode_image_with_plan(pixels, mask, [-1], image_index=index, plan=stream)
    assert used.cls_stream is True
    assert (last_only - exact_of(exact, [-1])).abs().max() < 1e-5  # one biased layer = the last: exact
    every = model.encode_image(pixels, mask, None, image_index=index, plan=stream)
    cosine = (every * exact_of(exact, None)).sum(-1)
    assert cosine.min() > 0.5 and (every - exact_of(exact, None)).abs().max() > 1e-4  # an approximation
    _, used = model.encode_image_with_plan(pixels, bias(model, "all"), None, image_index=index, plan=stream)
    assert used.cls_stream is False  # not for biases on other rows
    _, used = model.encode_image_with_plan(pixels[[0, 0, 1, 1, 1]], mask, None, plan=stream)
    assert used.cls_stream is False  # nor without shared pixels


def exact_of(results, layers):
    return results[tuple(layers) if layers else None]
