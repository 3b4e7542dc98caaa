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
            emb = encode_regions(model, sample.load_image(), [sample.roa], prompt)
            hits += int((emb[0] @ weights.T).argmax()) == sample.label
        assert result.correct[prompt.name] == hits
    assert result.image_forwards == {"Original CLIP": 6, "FALIP": 6, "Crop": 6}
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 6


def test_text_classifier_is_cached_on_disk_per_model(tiny_clip, tmp_path):
    classes, templates = ["red circle", "blue square"], ["a photo of a {}.", "a {}."]
    first = TextCache(tiny_clip, disk_cache=tmp_path, model_key="weights-a")
    weights = first.classifier(classes, templates)
    assert first.num_encoded == 4 and len(list(tmp_path.glob("*.pt"))) == 1
    again = TextCache(tiny_clip, disk_cache=tmp_path, model_key="weights-a")
    assert torch.equal(again.classifier(classes, templates), weights)
    assert again.num_encoded == 0 and again.classifiers_from_disk == 1
    other = TextCache(tiny_clip, disk_cache=tmp_path, model_key="weights-b")
    other.classifier(classes, templates)
    assert other.num_encoded == 4 and len(list(tmp_path.glob("*.pt"))) == 2  # keyed by the model's weights


def test_metrics_mean_per_class_and_worst_group_by_hand():
    from falip.data.classification.types import ClassificationSample, ClassificationSplit
    from falip.tasks.classification import ClassificationTask

    # 6 samples, labels 0,0,0,1,1,1, groups 0,1,1,2,3,3; prompt P right on samples 0,1,3,4,5
    labels, groups, right = [0, 0, 0, 1, 1, 1], [0, 1, 1, 2, 3, 3], [1, 1, 0, 1, 1, 1]
    samples = [ClassificationSample(str(i), f"{i}.png", (0, 0, 1, 1), labels[i], group=groups[i]) for i in range(6)]
    split = ClassificationSplit("toy", "test", ["a", "b"], samples, "x", group_names=["g0", "g1", "g2", "g3"])
    lines = [{"label": labels[i], "group": groups[i], "correct": {"P": right[i]}} for i in range(6)]
    task = ClassificationTask(metrics=["accuracy", "mean_per_class", "worst_group", "groups"])
    metrics = task.aggregate(split, lines, ["P"])
    assert metrics["accuracy"]["P"] == 100 * 5 / 6
    assert metrics["mean_per_class"]["P"] == (100 * 2 / 3 + 100.0) / 2
    assert metrics["group g1"]["P"] == 50.0 and metrics["group g0"]["P"] == metrics["group g3"]["P"] == 100.0
    assert metrics["worst_group"]["P"] == 50.0
    columns = task.columns("test", metrics)
    assert list(columns) == ["test accuracy", "test mean_per_class", "test worst_group", "test group g0",
                             "test group g1", "test group g2", "test group g3"]
    assert list(ClassificationTask().columns("test", metrics)) == ["test"]
