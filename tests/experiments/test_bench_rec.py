"""scripts/bench_rec.py measures what it says: its released-style loop answers like the pipeline, and its
RefCOCO-like workload has the stated shape."""
from __future__ import annotations

import pytest
from conftest import load_script

from falip.data.rec.loading import load_rec_split
from falip.prompts import FovealBias, VisualPrompt
from falip.sandbox.datasets import write_shapes_rec

@pytest.fixture(scope="module")
def bench():
    return load_script("bench_rec")


def test_coco_like_workload_has_refcoco_testa_shape(bench, tmp_path):
    root = bench.write_coco_like(tmp_path, images=3, candidates=10).parent
    split = load_rec_split("shapes", "testA", root=root, layout="refer", split_by="synthetic")
    assert [len(image.candidates) for image in split.images] == [10, 10, 10]
    assert [len(image.sentences) for image in split.images] == [8, 8, 7]
    assert [len({s.ref_id for s in image.sentences}) for image in split.images] == [3, 3, 3]
    image = split.images[0].load_image()
    assert image.size == (640, 480) and split.images[0].image_path.suffix == ".jpg"


def test_released_style_loop_answers_like_the_pipeline(bench, sandbox_clip, tmp_path):
    """Batch-1 forwards through every row vs the batched, trimmed, image-sharing pipeline: the same
    accuracy (same computation up to GEMM rounding), and the loop leaves the model's trims as they were."""
    write_shapes_rec(tmp_path, seed=4, scenes_per_split=12, width=96, height=80, splits={"objects3": 3})
    split = load_rec_split("shapes", "objects3", root=tmp_path, layout="refer", split_by="synthetic")
    bias = FovealBias()
    released = bench.released_style_loop(sandbox_clip, split, bias, None)
    piped = bench.pipeline(sandbox_clip, split, VisualPrompt("FALIP", bias=bias), 16, tmp_path / "pred.jsonl")
    assert released["accuracy"] == pytest.approx(piped["accuracy"])
    assert released["accuracy"] > 60  # FALIP on the sandbox: well above the 33.3 of Original CLIP
    assert not [name for name in ("trims", "cls_stream", "last_trims") if hasattr(sandbox_clip, name)]  # no state
