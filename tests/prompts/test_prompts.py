"""Image edits and prompt configs: each edit checked pixel-wise, configs checked for clear errors."""
import numpy as np
import pytest
from PIL import Image

from falip.geometry import Region
from falip.prompts import (BlurOutside, Crop, FovealBias, GrayscaleOutside, RedCircle, VisualPrompt,
                           prompt_from_config, prompts_from_config)


def noise_image(w=300, h=240, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_red_circle_outline_inside_box_with_released_width():
    image = Image.new("RGB", (400, 300), (0, 0, 0))
    box = (50.0, 40.0, 250.0, 200.0)
    edited, out_box = RedCircle().apply_one(image, box)
    assert out_box.boxes == (box,) and image.getextrema() == ((0, 0),) * 3, "the original is untouched"
    arr = np.asarray(edited)
    red = (arr[..., 0] == 255) & (arr[..., 1] == 0) & (arr[..., 2] == 0)
    ys, xs = np.nonzero(red)
    assert xs.min() >= 50 and xs.max() <= 250 and ys.min() >= 40 and ys.max() <= 200
    assert not red[120, 150], "outline only, the centre stays"
    assert red[120, 50:53].sum() == 2  # width int(400 / 200) = 2 at the left extreme
    small, _ = RedCircle().apply_one(Image.new("RGB", (64, 64)), (10, 10, 40, 40))
    assert (np.asarray(small)[..., 0] == 255).any(), "images under 200 px still get a 1 px outline"


def test_blur_outside_keeps_region_and_blurs_once(monkeypatch):
    image = noise_image()
    calls = []
    original_filter = Image.Image.filter
    monkeypatch.setattr(Image.Image, "filter", lambda self, f: calls.append(f) or original_filter(self, f))
    boxes = [(10.0, 20.0, 110.0, 120.0), (150.0, 30.0, 290.0, 200.0)]
    results = BlurOutside(radius=5).apply(image, boxes)
    assert len(calls) == 1
    for (edited, box), (x0, y0, x1, y1) in zip(results, boxes):
        arr, src = np.asarray(edited).astype(int), np.asarray(image).astype(int)
        assert np.array_equal(arr[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1],
                              src[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1])
        assert np.abs(arr[230:, :] - src[230:, :]).mean() > 20  # outside is smoothed noise
        assert arr[230:, :].std() < src[230:, :].std() / 2


def test_grayscale_outside_ellipse():
    image = noise_image()
    edited, _ = GrayscaleOutside().apply_one(image, (100, 60, 200, 180))
    arr, src = np.asarray(edited), np.asarray(image)
    assert (arr[5, 5, 0] == arr[5, 5, 1] == arr[5, 5, 2])
    assert np.array_equal(arr[120, 150], src[120, 150])  # centre of the ellipse keeps its colour
    assert np.array_equal(arr[62, 102][0] == arr[62, 102][1], True)  # box corner is outside the ellipse


def test_grayscale_fgvp_weights_swap_red_and_blue():
    """FGVP runs OpenCV's BGR->gray on RGB data: gray = 0.114 R + 0.587 G + 0.299 B (by hand, +-1 level)."""
    image = noise_image()
    src = np.asarray(image).astype(float)
    plain = np.asarray(GrayscaleOutside().background(image))[..., 0].astype(float)
    fgvp = np.asarray(GrayscaleOutside(weights="fgvp").background(image))[..., 0].astype(float)
    assert np.abs(plain - (0.299 * src[..., 0] + 0.587 * src[..., 1] + 0.114 * src[..., 2])).max() <= 1
    assert np.abs(fgvp - (0.114 * src[..., 0] + 0.587 * src[..., 1] + 0.299 * src[..., 2])).max() <= 1
    assert np.abs(plain - fgvp).max() > 10
    with pytest.raises(ValueError, match="weights"):
        GrayscaleOutside(weights="bgr")


def test_crop_returns_region_frame():
    edited, region = Crop().apply_one(noise_image(), (10.4, 20.6, 60.2, 90.0))
    assert edited.size == (50, 69) and region.boxes == ((0.0, 0.0, 50.0, 69.0),)


def test_edit_chains_apply_in_order():
    image = Image.new("RGB", (400, 300), (0, 200, 0))
    prompt = VisualPrompt("blur+circle", edits=(BlurOutside(shape="ellipse"), RedCircle()))
    [(edited, _)] = prompt.apply_edits(image, [(100, 100, 300, 250)])
    arr = np.asarray(edited)
    assert (arr[..., 0] == 255).any() and tuple(arr[175, 200]) == (0, 200, 0)


def test_prompt_config_round_trip_and_errors():
    prompts = prompts_from_config({
        "Original CLIP": None,
        "FALIP": {"bias": {"name": "foveal", "alpha": 0.5, "layers": [-2, -1]}},
        "RedCircle+FALIP": {"edits": ["red_circle"], "bias": "foveal"},
    })
    assert [p.name for p in prompts] == ["Original CLIP", "FALIP", "RedCircle+FALIP"]
    assert not prompts[0].region_dependent and prompts[1].region_dependent
    assert prompts[1].bias == FovealBias(alpha=0.5, layers=(-2, -1))
    assert prompts[2].edits == (RedCircle(),) and prompts[2].bias == FovealBias()
    assert prompts[1].config()["bias"]["layers"] == [-2, -1]
    with pytest.raises(ValueError, match="unknown edit 'circle'.*red_circle"):
        prompt_from_config("x", {"edits": ["circle"]})
    with pytest.raises(ValueError, match="no option"):
        prompt_from_config("x", {"bias": {"name": "foveal", "beta": 1}})
    with pytest.raises(ValueError, match="formulation"):
        prompt_from_config("x", {"bias": {"name": "foveal", "formulation": "rows"}})
    with pytest.raises(ValueError, match="unknown key"):
        prompt_from_config("x", {"edit": ["crop"]})


def test_several_boxes_make_one_region_for_every_edit():
    image = Image.new("RGB", (300, 240), (0, 0, 0))
    region = Region(((20.0, 30.0, 80.0, 90.0), (150.0, 100.0, 260.0, 200.0)))
    circled, same = RedCircle().apply_one(image, region)
    red = (np.asarray(circled)[..., 0] == 255)
    assert same is region and red[:, :100].any() and red[:, 140:].any(), "an ellipse per box"
    noisy = noise_image(300, 240)
    blurred, _ = BlurOutside().apply_one(noisy, region)
    kept = np.asarray(blurred) == np.asarray(noisy)
    assert kept[40:80, 30:70].all() and kept[110:190, 160:250].all() and not kept[5:15, 120:140].all()
    gray, _ = GrayscaleOutside().apply_one(noisy, region)
    g = np.asarray(gray)
    assert (g[220, 10, 0] == g[220, 10, 1] == g[220, 10, 2]) and (g[150, 205] == np.asarray(noisy)[150, 205]).all()
    cropped, inside = Crop().apply_one(noisy, region)
    assert cropped.size == (240, 170)  # the box around both: (20, 30) .. (260, 200)
    assert inside.boxes == ((0.0, 0.0, 60.0, 60.0), (130.0, 70.0, 240.0, 170.0))
