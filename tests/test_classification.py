"""Box-classification format and the classification task."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from falip.data.box_classification import load_box_classification_split, write_box_classification
from falip.data.rec import DatasetError
from falip.prompts import CROP, FALIP, ORIGINAL_CLIP
from falip.random_models import random_clip
from falip.regions import encode_regions
from falip.tasks.classification import evaluate_classification_split
from falip.text import TextCache

CLASSES = ["red circle", "blue square", "green cross"]


def write_fixture(root, n=6):
    rng = np.random.default_rng(0)
    samples = [(f"s{i}", Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)),
                (2.0 + i, 3.0, 30.0, 33.0), i % 3) for i in range(n)]
    return write_box_classification(root, CLASSES, {"test": samples})


def test_round_trip_and_errors(tmp_path):
    root = write_fixture(tmp_path / "boxes")
    split = load_box_classification_split(root, "test")
    assert split.classes == CLASSES and len(split.samples) == 6
    assert split.samples[1].box == (3.0, 3.0, 30.0, 33.0) and split.samples[1].label == 1
    assert split.samples[0].load_image().size == (44, 36)
    with pytest.raises(DatasetError, match="splits here: \\['test'\\]"):
        load_box_classification_split(root, "val")
    (root / "bad.jsonl").write_text(json.dumps({"file_name": "x.png", "box": [0, 0, 1], "label": 0}) + "\n")
    with pytest.raises(DatasetError, match="bad.jsonl:1: field 'box'"):
        load_box_classification_split(root, "bad")
    (root / "bad.jsonl").write_text(json.dumps({"file_name": "x.png", "box": [0, 0, 1, 1], "label": 7}) + "\n")
    with pytest.raises(DatasetError, match="field 'label' = 7"):
        load_box_classification_split(root, "bad")
    with pytest.raises(DatasetError, match="classes.txt"):
        load_box_classification_split(tmp_path, "test")


def test_task_matches_manual_zero_shot(tmp_path):
    model = random_clip("tiny", seed=4)
    split = load_box_classification_split(write_fixture(tmp_path / "boxes"), "test")
    templates = ["a photo of a {}.", "a {}."]
    prompts = [ORIGINAL_CLIP, FALIP, CROP]
    details = evaluate_classification_split(model, split, prompts, templates, TextCache(model), progress=False,
                                            batch_size=4, predictions_path=tmp_path / "p.jsonl")
    weights = []
    for name in CLASSES:
        mean = model.encode_text([t.format(name) for t in templates]).mean(0)
        weights.append(mean / mean.norm())
    weights = torch.stack(weights)
    for prompt in prompts:
        hits = 0
        for sample in split.samples:
            emb = encode_regions(model, sample.load_image(), [sample.box], prompt)
            hits += int((emb[0] @ weights.T).argmax()) == sample.label
        assert details["correct"][prompt.name] == hits
    assert details["image_forwards"] == {"Original CLIP": 6, "FALIP": 6, "Crop": 6}
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 6
