"""Fixtures shared by every test: tiny random CLIPs, the shipped sandbox CLIP, in-format datasets.

One seed for every random model (``TINY_SEED``), so that a claim that holds for "a random CLIP" is
checked on the same one everywhere.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from falip.data.classification.boxes import write_box_classification
from falip.model.clip import FoveatedCLIP
from falip.model.random_clip import random_clip
from falip.sandbox import MODEL_DIR as SANDBOX_MODEL_DIR
from falip.sandbox.datasets import write_shapes_rec

TINY_SEED = 3
REFCOCO_SPLITS = {"val": 3, "testA": 2, "testB": 4}  # split -> objects per scene
BOX_CLASSES = ["red circle", "blue square", "green cross"]


@pytest.fixture(scope="session")
def tiny_clip() -> FoveatedCLIP:
    """A seeded random tiny CLIP (32 px input, patch 8, 4 layers), sdpa attention."""
    return random_clip("tiny", seed=TINY_SEED)


@pytest.fixture(scope="session", params=["eager", "sdpa"])
def tiny_clip_each_attention(request) -> FoveatedCLIP:
    """The same weights as :func:`tiny_clip`, once per attention implementation that takes a bias."""
    return random_clip("tiny", seed=TINY_SEED, attn_implementation=request.param)


@pytest.fixture(scope="session")
def sandbox_clip() -> FoveatedCLIP:
    """The shipped sandbox CLIP (falip/sandbox/model)."""
    return FoveatedCLIP.from_pretrained(SANDBOX_MODEL_DIR)


@pytest.fixture(scope="session")
def refcoco_root(tmp_path_factory):
    """Sandbox scenes written as RefCOCO in the refer toolkit's layout (refcoco/instances.json, refs(unc).p,
    COCO-named JPEGs): 10 scenes per split, val / testA / testB with 3 / 2 / 4 objects."""
    root = tmp_path_factory.mktemp("refer")
    write_shapes_rec(root, seed=5, scenes_per_split=10, width=96, height=80, splits=REFCOCO_SPLITS,
                     dataset_dir="refcoco", split_by="unc", file_pattern="COCO_train2014_{:012d}.jpg")
    return root


@pytest.fixture(scope="session")
def classification_layouts(tmp_path_factory):
    """Sandbox scenes written once per test session in the four official classification layouts: cub/,
    dogs/, ins/ (ImageNet-S50, every 20th mask without its class), wb/ + wbcub/ (Waterbirds + its CUB)."""
    from falip.sandbox.classification_layouts import (write_cub_layout, write_imagenet_s_layout,
                                                      write_stanford_dogs_layout, write_waterbirds_layout)

    root = tmp_path_factory.mktemp("layouts")
    write_cub_layout(root / "cub", images=40)
    write_stanford_dogs_layout(root / "dogs", images=40)
    write_imagenet_s_layout(root / "ins", images=40, empty_mask_every=20)
    write_waterbirds_layout(root / "wb", root / "wbcub", images=48)
    return root


@pytest.fixture
def box_jsonl_root(tmp_path):
    """A box-classification dataset (classes.txt + test.jsonl + PNGs): 6 noise images, box i = (2+i, 3, 30, 33),
    label i % 3."""
    rng = np.random.default_rng(0)
    samples = [(f"s{i}", Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)),
                (2.0 + i, 3.0, 30.0, 33.0), i % 3) for i in range(6)]
    return write_box_classification(tmp_path / "boxes", BOX_CLASSES, {"test": samples})


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shapes_rec_on(tmp_path):
    """``falip-run experiment=shapes_rec model.name=<name> <extra>`` offline in a subprocess (4 scenes per split),
    asserted to exit 0; returns its stable sidecar and CSV text."""
    import json
    import os
    import subprocess
    import sys

    def run(model_name: str, *extra: str) -> tuple[dict, str]:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "FALIP_CACHE": str(tmp_path / "cache")}
        done = subprocess.run([sys.executable, "-m", "falip.cli", "experiment=shapes_rec", f"model.name={model_name}",
                               "model.path=null", "dataset.generator.scenes_per_split=4", "run.progress=false",
                               f"run.output_dir={tmp_path}/results", *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        results = tmp_path / "results"
        return json.loads((results / "shapes_rec.json").read_text()), (results / "shapes_rec.csv").read_text()

    return run
