"""The point-cloud task: views encoded as a hand-written computation would, no bias on empty views, the
box vs foreground-token ROA, PointCLIP's view-weight search, and a shape nothing can be seen of."""
import itertools

import numpy as np
import pytest
import torch

from falip.data.pointcloud.projection import depth_maps, foreground_region, model_inputs
from falip.data.pointcloud.types import PointCloudSample, PointCloudSplit
from falip.encoding.text import TextCache
from falip.errors import ConfigError, DatasetError
from falip.experiments.runner import evaluate_split
from falip.geometry import Region
from falip.prompts import FALIP, ORIGINAL_CLIP, RED_CIRCLE, FovealBias, VisualPrompt
from falip.tasks.pointcloud import PointCloudItem, PointCloudTask, search_view_weights, view_weight_grid

CLASSES = ["red circle", "blue square", "green cross"]  # words the tiny random CLIP's tokenizer knows


def split_of(clouds, labels):
    samples = [PointCloudSample(f"s{i}", cloud, int(label)) for i, (cloud, label) in enumerate(zip(clouds, labels))]
    return PointCloudSplit("toy", "test", CLASSES, samples, "memory")


def toy_split(count=4, seed=0):
    rng = np.random.default_rng(seed)
    clouds = [rng.normal(0, 0.3, (300, 3)).astype(np.float32) * rng.uniform(0.5, 1.5, 3).astype(np.float32)
              for _ in range(count)]
    return split_of(clouds, [i % 3 for i in range(count)])


def test_lines_equal_a_hand_computation_over_the_same_views(tiny_clip):
    split, task = toy_split(), PointCloudTask(view_weights=[1.0, 0.5, 1.0, 0.25, 1.0, 0.75])
    prompts = [ORIGINAL_CLIP, FALIP, VisualPrompt("tokens", bias=FovealBias(roa="mask"))]
    result = evaluate_split(tiny_clip, task, split, prompts, TextCache(tiny_clip))
    text = TextCache(tiny_clip).classifier(CLASSES, [task.template])
    bias_spec = FALIP.bias.for_model(tiny_clip)
    for line, sample in zip(result.lines, split.samples):
        pixels = model_inputs(depth_maps(torch.from_numpy(sample.points)[None]), tiny_clip.image_size)
        regions = [foreground_region(view) for view in pixels]
        boxes_only = [Region(region.boxes) for region in regions]
        expected = {
            "Original CLIP": tiny_clip.encode_image(pixels),
            "FALIP": tiny_clip.encode_image(pixels, bias_spec.build(boxes_only, tiny_clip.image_size,
                                                                    tiny_clip.patch_size), list(bias_spec.layers)),
        }
        # the default FovealBias keeps a region's mask: only the foreground tokens, not the whole box
        assert not torch.equal(bias_spec.build(regions, tiny_clip.image_size, tiny_clip.patch_size),
                               bias_spec.build(boxes_only, tiny_clip.image_size, tiny_clip.patch_size))
        for name, embeddings in expected.items():
            scores = torch.tensor(task.view_weights) @ (embeddings @ text.T)
            assert line["pred"][name] == int(scores.argmax())
    assert result.image_forwards == {"Original CLIP": 24, "FALIP": 24, "tokens": 24}  # 6 views x 4 shapes


def test_foveal_bias_roa_boxes_ignores_the_mask_and_none_gets_no_bias():
    mask = np.zeros((32, 32), bool)
    mask[4:8, 4:28] = True
    region = Region(((4.0, 4.0, 28.0, 28.0),), mask)
    bias = FovealBias(alpha=1.0, layers=None)
    plain = bias.build([Region(region.boxes)], 32, 8)
    assert torch.equal(FovealBias(alpha=1.0, layers=None, roa="boxes").build([region], 32, 8), plain)
    masked = bias.build([region], 32, 8)
    assert (masked[0, 0] != 0).sum() < (plain[0, 0] != 0).sum()
    none_and_box = bias.build([None, Region(region.boxes)], 32, 8)
    assert none_and_box[0].abs().sum() == 0 and torch.equal(none_and_box[1], plain[0])
    with pytest.raises(ValueError, match="roa must be one of"):
        FovealBias(roa="tokens")


def test_view_weight_search_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.normal(size=(30, 6, 4)))
    labels = torch.from_numpy(rng.integers(0, 4, 30))
    weights, accuracy = search_view_weights(scores, labels, chunk=97)
    best, best_weights = -1, None
    for candidate in itertools.product((0.25, 0.5, 0.75, 1.0), repeat=6):  # PointCLIP's nested loops, strict >
        correct = int(((torch.tensor(candidate, dtype=torch.float64) @ scores).argmax(-1) == labels).sum())
        if correct > best:
            best, best_weights = correct, list(candidate)
    assert weights == best_weights and accuracy == pytest.approx(100 * best / 30)
    assert len(view_weight_grid()) == 4 ** 6


def test_search_adds_a_labelled_column_and_its_weights(tiny_clip):
    task = PointCloudTask(search_view_weights=True)
    result = evaluate_split(tiny_clip, task, toy_split(6), [ORIGINAL_CLIP], TextCache(tiny_clip))
    columns = task.columns("test", result.metrics)
    assert list(columns) == ["test", "test searched view weights (tuned on this split)"]
    assert columns["test searched view weights (tuned on this split)"]["Original CLIP"] >= columns["test"]["Original CLIP"]
    assert len(result.description["searched_view_weights"]["Original CLIP"]) == 6


def test_a_shape_with_no_visible_point_is_a_recorded_skip_and_empty_views_are_counted(tiny_clip):
    rng = np.random.default_rng(0)
    aside = (rng.normal(0, 0.4, (2000, 3)) + [0, 3, 0]).astype(np.float32)  # seen well by one view, barely or not by others
    invisible = np.full((10, 3), 40.0, np.float32)  # far away: one pixel of one 128-map, lost at 32 px
    nothing = np.zeros((0, 3), np.float32)  # every point was non-finite
    split = split_of([aside, invisible, nothing], [0, 1, 2])
    with pytest.raises(DatasetError, match="no finite point"):
        PointCloudItem(split.samples[2]).load_views(32)
    with pytest.raises(DatasetError, match="none of its 6 depth maps"):
        PointCloudItem(split.samples[1]).load_views(32)
    views = model_inputs(depth_maps(torch.from_numpy(aside)[None]), 32)
    empty = sum(foreground_region(view) is None for view in views)
    assert 0 < empty < 6
    from falip.experiments.runner import LoopOptions

    result = evaluate_split(tiny_clip, PointCloudTask(), split, [ORIGINAL_CLIP, FALIP], TextCache(tiny_clip),
                            LoopOptions(skip_bad_samples=True))
    assert [skip["sample_id"] for skip in result.skipped] == ["s1", "s2"]
    assert result.lines[2]["skipped"] and result.lines[2]["correct"] == {"Original CLIP": 0, "FALIP": 0}
    assert result.empty_regions == {"Original CLIP": 0, "FALIP": empty}  # the empty views got no bias


def test_prompts_that_edit_pixels_are_refused():
    with pytest.raises(ConfigError, match="bias-only prompts"):
        PointCloudTask().check_prompts([FALIP, RED_CIRCLE])
