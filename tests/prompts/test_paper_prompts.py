"""The Python API's FALIP is the released code's setting, with the model's own alpha."""
import json

import pytest
import torch

from falip import encode_regions
from falip.cli import compose
from falip.model.bias import DEFAULT_ALPHA
from falip.prompts import FALIP, ORIGINAL_CLIP, RED_CIRCLE_FALIP, FovealBias, VisualPrompt
from falip.sandbox import MODEL_DIR
from falip.sandbox.evaluation import rec_accuracy, scene_rec_split
from falip.sandbox.scenes import generate_scene


def test_falip_is_the_released_setting_with_the_models_alpha():
    for prompt in (FALIP, RED_CIRCLE_FALIP):
        assert prompt.bias == FovealBias(alpha=None, sigma=100.0, formulation="cls", layers=(-4, -3, -2, -1),
                                         cell_rule="released", eps=1e-6)


def test_model_alpha_comes_from_the_checkpoint(sandbox_clip, tiny_clip):
    assert sandbox_clip.foveal_alpha == 8.0 and tiny_clip.foveal_alpha == DEFAULT_ALPHA == 0.2
    assert json.loads((MODEL_DIR / "config.json").read_text())["foveal_alpha"] == sandbox_clip.foveal_alpha
    assert compose(["model=sandbox"])["foveal"]["alpha"] == sandbox_clip.foveal_alpha  # the CLI agrees
    assert FALIP.bias.for_model(sandbox_clip).alpha == 8.0
    with pytest.raises(ValueError, match="for_model"):
        FALIP.bias.build([(0, 0, 10, 10)], 64, 8)


def test_api_falip_uses_the_models_alpha_and_finds_the_object(sandbox_clip):
    import numpy as np

    scene = generate_scene(np.random.default_rng(1), 3, 96, 80)
    boxes = [obj.box for obj in scene.objects]
    explicit = VisualPrompt("F", bias=FovealBias(alpha=8.0, sigma=100.0, layers=(-4, -3, -2, -1), cell_rule="released"))
    with torch.inference_mode():
        assert torch.equal(encode_regions(sandbox_clip, scene.image, boxes, FALIP),
                           encode_regions(sandbox_clip, scene.image, boxes, explicit))
        accuracy = rec_accuracy(sandbox_clip, [ORIGINAL_CLIP, FALIP], scene_rec_split(40, 3, seed=99))
    assert accuracy["FALIP"] >= accuracy["Original CLIP"] + 30, accuracy
