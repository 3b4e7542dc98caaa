"""The classification task through the experiment loop, against a hand-computed zero-shot classifier."""
import torch

from falip.data.classification.boxes import load_box_classification_split
from falip.prompts import CROP, FALIP, ORIGINAL_CLIP
from falip.encoding.regions import encode_regions
from falip.experiments.runner import LoopOptions, evaluate_split
from falip.tasks.classification import ClassificationTask
from falip.encoding.text import TextCache


def test_task_matches_manual_zero_shot(tmp_path, tiny_clip, box_jsonl_root):
    model = tiny_clip
    split = load_box_classification_split(box_jsonl_root, "test")
    templates = ["a photo of a {}.", "a {}."]
    prompts = [ORIGINAL_CLIP, FALIP, CROP]
    result = evaluate_split(model, ClassificationTask(templates=templates), split, prompts, TextCache(model),
                            LoopOptions(progress=False, batch_size=4), tmp_path / "p.jsonl")
    weights = []
    for name in split.classes:
        mean = model.encode_text([t.format(name) for t in templates]).mean(0)
        weights.append(mean / mean.norm())
    weights = torch.stack(weights)
    for prompt in prompts:
        hits = 0
        for sample in split.samples:
            emb = encode_regions(model, sample.load_image(), [sample.box], prompt)
            hits += int((emb[0] @ weights.T).argmax()) == sample.label
        assert result.correct[prompt.name] == hits
    assert result.image_forwards == {"Original CLIP": 6, "FALIP": 6, "Crop": 6}
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 6
