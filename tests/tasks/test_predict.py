"""Predict without labels (falip/tasks/predict.py): the experiment on a COCO-format file and on box-jsonl, with
classes and with texts, writes the scores that encode_regions + encode_text give when computed by hand, and the
Python call returns the same lines."""
from __future__ import annotations

import json

import pytest
import torch

from falip.experiments.record import latest_run_folder
import falip
from falip import FoveatedCLIP, encode_regions
from falip.cli import compose
from falip.errors import ConfigError, DatasetError
from falip.experiments.runner import run_experiment
from falip.prompts import FALIP, ORIGINAL_CLIP
from falip.sandbox import MODEL_DIR
from falip.sandbox.scenes import generate_scene

CLASSES = ["red circle", "green square", "blue triangle", "yellow cross", "purple square"]
TEXTS = ["a photo of a yellow cross", "a photo of the purple circle"]


@pytest.fixture(scope="module")
def model():
    return FoveatedCLIP.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three sandbox scenes as PNGs, their boxes as box-jsonl and as a COCO file (one image without boxes)."""
    import numpy as np

    root = tmp_path_factory.mktemp("regions")
    (root / "photos").mkdir()
    rng = np.random.default_rng(3)
    jsonl, coco = [], {"images": [], "annotations": []}
    for index in range(3):
        scene = generate_scene(rng, 3, 96, 80)
        scene.image.save(root / "photos" / f"s{index}.png")
        boxes = [list(obj.box) for obj in scene.objects]
        jsonl.append({"file_name": f"s{index}.png", "boxes": boxes})
        coco["images"].append({"id": index + 1, "file_name": f"s{index}.png", "width": 96, "height": 80})
        for box in boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": index + 1,
                                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    coco["images"].append({"id": 9, "file_name": "s0.png", "width": 96, "height": 80})  # no boxes: left out
    (root / "boxes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in jsonl))
    (root / "instances.json").write_text(json.dumps(coco))
    return root, jsonl


def by_hand(model, image, boxes, matrix):
    """Per prompt, logit_scale * cos (+ the model's logit bias) and the softmax over the columns."""
    out = {}
    for prompt in (ORIGINAL_CLIP, FALIP):
        logits = model.logit_scale * encode_regions(model, image, boxes, prompt) @ matrix.T + model.logit_bias
        out[prompt.name] = (logits, logits.softmax(-1))
    return out


def run(root, tmp_path, regions, *overrides):
    out = tmp_path / "out"
    run_experiment(compose(["experiment=predict", f"regions={root / regions}", f"image_root={root / 'photos'}",
                            "run.progress=false", f"run.output_dir={out}", *overrides]))
    lines = [json.loads(line) for line in (latest_run_folder(out, "predict") / "predictions" / "all.jsonl").read_text().splitlines()]
    return lines, out


@pytest.mark.parametrize("regions", ["boxes.jsonl", "instances.json"])
def test_classes_mode_scores_are_encode_regions_against_the_zero_shot_classifier(model, photos, tmp_path, regions):
    root, jsonl = photos
    lines, out = run(root, tmp_path, regions, f"classes=[{','.join(CLASSES)}]")
    assert len(lines) == 9 and {line["file_name"] for line in lines} == {"s0.png", "s1.png", "s2.png"}
    classifier = falip.TextCache(model).classifier(CLASSES, ["a photo of a {}."])
    for index, record in enumerate(jsonl):
        from PIL import Image

        image = Image.open(root / "photos" / record["file_name"])
        expected = by_hand(model, image, record["boxes"], classifier)
        mine = [line for line in lines if line["file_name"] == record["file_name"]]
        for position, line in enumerate(mine):
            assert line["box"] == record["boxes"][position]
            for name, (logits, probs) in expected.items():
                assert line["scores"][name] == pytest.approx(logits[position].tolist(), abs=1e-4)
                assert line["probs"][name] == pytest.approx(probs[position].tolist(), abs=1e-5)
                assert line["pred"][name] == CLASSES[int(probs[position].argmax())]
                assert [name_ for name_, _ in line["top"][name]][0] == line["pred"][name]
    table = (out / "predict.csv").read_text()
    assert "mean top-class probability %" in table and "FALIP" in table
    sidecar = json.loads((out / "predict.json").read_text())
    assert sidecar["status"] == "complete"


def test_texts_mode_picks_a_box_per_text_and_the_python_call_returns_the_same_lines(model, photos, tmp_path):
    root, jsonl = photos
    lines, _ = run(root, tmp_path, "boxes.jsonl", f"texts=[{','.join(TEXTS)}]")
    assert len(lines) == 3 * len(TEXTS)
    from PIL import Image

    images = [Image.open(root / "photos" / record["file_name"]) for record in jsonl]
    api = falip.predict(model, images, [record["boxes"] for record in jsonl], texts=TEXTS)
    texts = falip.TextCache(model).embed(TEXTS)
    for line, mine in zip(lines, api):
        assert line["text"] == mine["text"] and line["pred"] == mine["pred"] and line["box"] == mine["box"]
        assert line["scores"]["FALIP"] == pytest.approx(mine["scores"]["FALIP"], abs=1e-4)
    for index, record in enumerate(jsonl):
        expected = by_hand(model, images[index], record["boxes"], texts)
        for position in range(len(TEXTS)):
            line = api[index * len(TEXTS) + position]
            for name, (logits, _) in expected.items():
                assert line["scores"][name] == pytest.approx(logits[:, position].tolist(), abs=1e-4)
                assert line["probs"][name] == pytest.approx(logits[:, position].softmax(0).tolist(), abs=1e-5)
                assert line["pred"][name] == int(logits[:, position].argmax())


def test_predict_needs_exactly_one_of_classes_and_texts_and_a_readable_regions_file(photos, tmp_path):
    root, _ = photos
    with pytest.raises(ConfigError, match="exactly one of classes"):
        run(root, tmp_path, "boxes.jsonl")
    with pytest.raises(ConfigError, match="exactly one of classes"):
        run(root, tmp_path, "boxes.jsonl", "classes=[a,b]", "texts=[c]")
    (root / "bad.jsonl").write_text('{"file_name": "s0.png", "boxes": [[1, 2, 3]]}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl line 1: box \[1, 2, 3\] is not 4 numbers"):
        run(root, tmp_path, "bad.jsonl", "classes=[a,b]")
    (root / "escape.jsonl").write_text('{"file_name": "../../etc/passwd", "boxes": [[1, 2, 3, 4]]}\n')
    with pytest.raises(DatasetError, match="leaves the image folder"):
        run(root, tmp_path, "escape.jsonl", "classes=[a,b]")
    (root / "boxes.txt").write_text("x")
    with pytest.raises(DatasetError, match="unknown format '.txt'"):
        run(root, tmp_path, "boxes.txt", "classes=[a,b]")
    with pytest.raises(DatasetError, match="is used twice"):
        (root / "twice.jsonl").write_text('{"id": 1, "file_name": "s0.png", "boxes": [[1, 2, 30, 40]]}\n' * 2)
        run(root, tmp_path, "twice.jsonl", "classes=[a,b]")


def test_the_python_call_checks_its_arguments(model):
    from PIL import Image

    with pytest.raises(ValueError, match="2 images but 1 box lists"):
        falip.predict(model, [Image.new("RGB", (8, 8))] * 2, [[(0, 0, 4, 4)]], classes=["a"])
    lines = falip.predict(model, [Image.new("RGB", (64, 48), (255, 0, 0))], [[(0, 0, 32, 24), (32, 24, 64, 48)]],
                          classes=CLASSES, top_k=2)
    assert len(lines) == 2 and all(len(line["top"]["FALIP"]) == 2 for line in lines)
    assert all(abs(sum(line["probs"]["Original CLIP"]) - 1) < 1e-4 for line in lines)


def test_texts_with_words_the_tokenizer_does_not_know_are_warned_about_once(model, photos, tmp_path):
    root, _ = photos
    with pytest.warns(UserWarning, match=r"1 of 2 texts have words .* \(e.g. 'the man in the red jacket'\)"):
        model.encode_text(["the man in the red jacket", "a red circle"])
    _, out = run(root, tmp_path, "boxes.jsonl", "texts=[the man in the red jacket,a photo of a red circle]")
    unknown = json.loads((out / "predict.json").read_text())["texts_with_unknown_words"]
    assert unknown["count"] == 1 and unknown["examples"] == ["the man in the red jacket"]
    assert 0 < unknown["unknown_token_share_%"] < 50
