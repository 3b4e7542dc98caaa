"""The foveal bias against the formula written out by hand, cell by cell."""
import math

import numpy as np
import pytest
import torch

from falip.geometry import Region
from falip.model.bias import (bias_from_token_weights, foveal_attention_bias, foveal_region_weights,
                              foveal_token_weights, mask_token_coverage, released_roa_gaussian, roa_cells)


def expected_rn(h, w, alpha=0.2, sigma=100.0, eps=1e-6):
    """The paper's R and Rn over an h x w ROA, in plain Python floats."""
    values = [[math.exp(-((i - (h - 1) / 2) ** 2 + (j - (w - 1) / 2) ** 2) / (2 * sigma ** 2))
               for j in range(w)] for i in range(h)]
    low = min(min(row) for row in values)
    high = max(max(row) for row in values)
    return [[alpha * (v - low + eps) / (high - low + eps) for v in row] for row in values]


def check_cls_bias(bias, cells, grid, alpha=0.2, sigma=100.0):
    r0, r1, c0, c1 = cells
    rn = expected_rn(r1 - r0 + 1, c1 - c0 + 1, alpha, sigma)
    expected = torch.zeros(grid * grid + 1, grid * grid + 1, dtype=torch.float64)
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            expected[0, 1 + r * grid + c] = rn[r - r0][c - c0]
    assert torch.allclose(bias.double(), expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("box, cells", [
    ((0, 0, 224, 224), (0, 13, 0, 13)),          # whole image
    ((0, 0, 16, 16), (0, 0, 0, 0)),               # exactly one cell at the top-left border
    ((208, 208, 224, 224), (13, 13, 13, 13)),     # one cell at the bottom-right border
    ((20.5, 3.2, 21.7, 4.0), (0, 0, 1, 1)),       # fractional, inside one cell
    ((15.9, 16.1, 32.0, 47.99), (1, 2, 0, 1)),    # fractional edges straddling boundaries
    ((100.0, 50.0, 300.0, 230.0), (3, 13, 6, 13)),  # partly outside: clipped to the frame
    ((-10.0, -5.0, 40.0, 17.0), (0, 1, 0, 2)),    # negative start clipped to 0
])
def test_cls_bias_matches_formula(box, cells):
    """The overlap rule computes the formula exactly (float64, cast); the released rule is tested below."""
    assert roa_cells(box, 224, 16, "overlap") == cells
    bias = foveal_attention_bias(torch.tensor([box]), 224, 16, cell_rule="overlap")
    assert bias.shape == (1, 197, 197) and bias.dtype == torch.float32
    check_cls_bias(bias[0], cells, 14)


def test_one_cell_roa_gets_alpha_and_shape_peaks_at_centre():
    bias = foveal_attention_bias([(16, 16, 32, 32)], 224, 16, alpha=0.3, cell_rule="overlap")
    assert bias[0, 0, 1 + 14 + 1].item() == pytest.approx(0.3)
    assert (bias != 0).sum() == 1
    big = foveal_token_weights([(0, 0, 80, 80)], 224, 16, cell_rule="overlap")[0]  # 5x5 ROA
    assert big[2, 2] == pytest.approx(0.2) and big[0, 0] < 1e-3 and big[0, 0] > 0
    assert big[1, 2] < big[2, 2] and big[0, 2] < big[1, 2]


def test_sigma_does_not_change_shape_once_large():
    a = foveal_token_weights([(0, 0, 160, 96)], 224, 16, sigma=100.0)
    b = foveal_token_weights([(0, 0, 160, 96)], 224, 16, sigma=50.0)
    c = foveal_token_weights([(0, 0, 160, 96)], 224, 16, sigma=1.0)
    assert torch.allclose(a, b, atol=2e-4)
    assert not torch.allclose(a, c, atol=1e-2)
    check_cls_bias(foveal_attention_bias([(0, 0, 160, 96)], 224, 16, sigma=1.0, cell_rule="overlap")[0],
                   (0, 5, 0, 9), 14, sigma=1.0)


def test_formulations_place_the_same_weights():
    boxes = [(30, 40, 90, 100), (0, 0, 16, 200)]
    weights = foveal_token_weights(boxes, 224, 16).reshape(2, -1).float()
    cls = foveal_attention_bias(boxes, 224, 16, formulation="cls")
    all_rows = foveal_attention_bias(boxes, 224, 16, formulation="all")
    diag = foveal_attention_bias(boxes, 224, 16, formulation="diag")
    for b in range(2):
        assert torch.equal(cls[b, 0, 1:], weights[b]) and cls[b, 1:].abs().sum() == 0 and cls[b, :, 0].abs().sum() == 0
        for row in range(197):
            assert torch.equal(all_rows[b, row, 1:], weights[b])
        assert all_rows[b, :, 0].abs().sum() == 0
        assert torch.equal(torch.diagonal(diag[b])[1:], weights[b])
        assert diag[b].abs().sum() == pytest.approx(weights[b].sum().item(), rel=1e-6)


def test_cell_rules_differ_only_on_patch_boundaries():
    on_boundary = (16.0, 32.0, 48.0, 64.0)
    assert roa_cells(on_boundary, 224, 16, "overlap") == (2, 3, 1, 2)
    assert roa_cells(on_boundary, 224, 16, "released") == (1, 3, 0, 2)
    inside = (17.3, 33.1, 47.2, 63.5)
    assert roa_cells(inside, 224, 16, "overlap") == roa_cells(inside, 224, 16, "released")


def test_non_square_grid_and_other_patch_size():
    bias = foveal_attention_bias([(8, 0, 24, 8)], (16, 32), 8, cell_rule="overlap")  # 2 x 4 grid
    assert bias.shape == (1, 9, 9)
    assert torch.nonzero(bias[0, 0]).flatten().tolist() == [2, 3]


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (10, 20, 30, 5), (300, 0, 400, 10), (0, -50, 10, -1)])
def test_bad_boxes_raise(box):
    with pytest.raises(ValueError):
        foveal_attention_bias([box], 224, 16)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="formulation"):
        bias_from_token_weights(torch.zeros(1, 4, 4), "rows")
    with pytest.raises(ValueError, match="sigma"):
        foveal_attention_bias([(0, 0, 10, 10)], 224, 16, sigma=0)
    with pytest.raises(ValueError, match="cell_rule"):
        roa_cells((0, 0, 10, 10), 224, 16, "touch")


def released_gaussian_by_hand(height, width, v=0.2, sigma=100):
    """The released code's generate_gaussian_mask_region, element by element, with numpy 1.x's promotions
    written out: float64 per cell, stored float32; float32 array - float32 min + float32(1e-6); the
    denominator max + 1e-6 - min in float64 (float32 scalar + Python float -> float64 in numpy 1.x),
    rounded once to float32 by the division; times float32(v)."""
    mask = np.zeros((height, width), dtype=np.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    for x in range(width):
        for y in range(height):
            distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            mask[y, x] = np.exp(-0.5 * (distance / sigma) ** 2)
    min_val, max_val = np.min(mask), np.max(mask)
    denominator = np.float32(float(max_val) + 0.000001 - float(min_val))
    out = np.empty_like(mask)
    for y in range(height):
        for x in range(width):
            numerator = np.float32(np.float32(mask[y, x] - min_val) + np.float32(0.000001))
            out[y, x] = np.float32(np.float32(numerator / denominator) * np.float32(v))
    return out


def test_released_rule_reproduces_the_released_float32_values_bit_for_bit():
    for height in range(1, 15):
        for width in range(1, 15):
            expected = released_gaussian_by_hand(height, width)
            got = released_roa_gaussian(height, width, 0.2, 100.0, 1e-6)
            assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32)), \
                (height, width)
            # and through the bias of a box covering exactly those cells of a 224 px, patch-16 input
            col, row = min(2, 14 - width), min(3, 14 - height)
            box = [16 * col + 1, 16 * row + 1, 16 * (col + width), 16 * (row + height)]
            bias = foveal_attention_bias([box], 224, 16, alpha=0.2, cell_rule="released")
            grid = bias[0, 0, 1:].reshape(14, 14)
            assert torch.equal(grid[row:row + height, col:col + width], torch.from_numpy(expected))
            assert int((grid != 0).sum()) == height * width


def test_released_and_exact_arithmetic_differ_by_float32_rounding_only():
    exact = foveal_token_weights([[0, 0, 224, 224]], 224, 16, cell_rule="overlap")[0]
    released = torch.tensor(released_roa_gaussian(14, 14, 0.2, 100.0, 1e-6), dtype=torch.float64)
    gap = (exact - released).abs().max().item()
    assert 1e-6 < gap < 2e-4 * 0.2, gap  # float32 rounding magnified by the stretch, not a different formula


def test_a_region_of_several_boxes_gets_the_max_of_their_biases():
    boxes = [(0, 0, 80, 64), (48, 32, 160, 144), (200, 200, 224, 224)]
    single = foveal_token_weights(boxes, 224, 16)
    union = foveal_region_weights([Region(tuple(boxes))], 224, 16)[0]
    assert torch.equal(union, single.amax(0))
    assert torch.equal(foveal_region_weights([boxes[1]], 224, 16)[0], single[1])  # one box: exactly its weights
    overlap = (single > 0).sum(0) > 1
    assert overlap.any() and torch.equal(union[overlap], torch.maximum(single[0], single[1])[overlap])


def test_a_masked_region_keeps_only_the_tokens_its_mask_covers():
    mask = np.zeros((224, 224), dtype=bool)
    mask[40:60, 20:100] = True  # rows 2..3, columns 1..6 of the 16 px grid
    region = Region(((20.0, 40.0, 100.0, 60.0),), mask)
    weights = foveal_region_weights([region], 224, 16)[0]
    plain = foveal_token_weights([(20.0, 40.0, 100.0, 60.0)], 224, 16)[0]
    covered = mask_token_coverage(mask, 224, 16)
    assert covered.sum() == 2 * 6 and torch.equal(weights[covered], plain[covered]) and (weights[~covered] == 0).all()
    with pytest.raises(ValueError, match="covers no patch"):
        foveal_region_weights([Region(((0.0, 0.0, 10.0, 10.0),), np.zeros((224, 224), bool))], 224, 16)
