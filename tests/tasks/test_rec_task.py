"""The REC evaluation loop on hand-built splits: scoring, counts, skips, limit, subtract."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from falip.data.rec.types import RecImage, RecSentence, RecSplit
from falip.errors import DatasetError
from falip.prompts import CROP, FALIP, ORIGINAL_CLIP, FovealBias, VisualPrompt
from falip.encoding.regions import encode_regions
from falip.encoding.text import TextCache
from falip.experiments.runner import LoopOptions, evaluate_split
from falip.tasks.rec import RecTask, SubtractOptions, limit_split


@pytest.fixture(scope="module")
def model(tiny_clip):
    return tiny_clip


def evaluate(model, split, prompts, options, texts, predictions_path=None):
    task, loop = options
    return evaluate_split(model, task, split, prompts, texts, loop, predictions_path)


def make_split(tmp_path, num_images=4, bad=None):
    rng = np.random.default_rng(0)
    images = []
    for i in range(num_images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        boxes = [(1.0, 1.0, 20.0, 18.0), (25.0, 5.0, 49.0, 30.0), (5.0, 22.0, 30.0, 39.0)][: 2 + i % 2]
        ids = [100 * i + k for k in range(len(boxes))]
        sentences = [RecSentence(f"{i}-{k}", text, (ids[k],)) for k, text in
                     enumerate(["A Red Circle", "blue square", "the green cross"][: len(boxes)])]
        images.append(RecImage(i, path, boxes, ids, dict(zip(ids, boxes)), sentences, 50, 40))
    if bad == "missing":
        images[1].image_path = tmp_path / "nope.png"
    if bad == "box":
        images[2].candidates = [(60.0, 50.0, 70.0, 60.0)] + images[2].candidates[1:]
    return RecSplit("toy", "val", images, source="in-memory")


def options(subtract=None, **kw):
    """(task, loop options) as the runner would build them from config."""
    task = RecTask(subtract=subtract) if subtract is not None else RecTask()
    return task, LoopOptions(progress=False, batch_size=kw.pop("batch_size", 3), **kw)


def test_scores_match_manual_argmax_and_counts(model, tmp_path):
    split = make_split(tmp_path)
    prompts = [ORIGINAL_CLIP, VisualPrompt("F", bias=FovealBias(alpha=3.0, layers=None)), CROP]
    result = evaluate(model, split, prompts, options(), TextCache(model), tmp_path / "pred.jsonl")
    assert result.description['num_sentences'] == 10 and result.description['num_candidates'] == 10
    assert result.image_forwards == {"Original CLIP": 4, "F": 10, "Crop": 10}
    # FALIP regions share their image's pixels before the first biased layer; batches of 3 rows over
    # images of 2, 3, 2, 3 regions read 2, 2, 2, 1 images. Crop's pixels differ per region.
    assert result.unbiased_layer_rows == {"Original CLIP": 4, "F": 7, "Crop": 10}
    lines = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(lines) == 10
    expected = {p.name: 0 for p in prompts}
    for record in split.images:
        texts = model.encode_text([f"a photo of {s.text.lower()}" for s in record.sentences])
        for prompt in prompts:
            emb = encode_regions(model, record.load_image(), record.candidates, prompt)
            preds = (emb @ texts.T).argmax(0)
            for sentence, pred in zip(record.sentences, preds.tolist()):
                line = next(l for l in lines if l["sent_id"] == sentence.sent_id)
                assert line["pred"][prompt.name] == pred
                expected[prompt.name] += record.candidate_ids[pred] in sentence.target_ann_ids
    assert result.correct == expected
    assert all(l["pred"]["Original CLIP"] == 0 for l in lines), "identical scores: first box wins"
    assert result.accuracy["F"] == pytest.approx(100 * expected["F"] / 10)


def test_missing_image_is_an_error_or_a_recorded_skip(model, tmp_path):
    split = make_split(tmp_path, bad="missing")
    with pytest.raises(DatasetError, match="nope.png.*skip_bad_samples"):
        evaluate(model, split, [FALIP], options(), TextCache(model))
    result = evaluate(model, split, [ORIGINAL_CLIP], options(skip_bad_samples=True), TextCache(model),
                      tmp_path / "pred.jsonl")
    assert [s["image_id"] for s in result.skipped] == [1] and result.description['num_sentences'] == 10
    assert result.skipped[0]["lines"] == 3 and "nope.png" in result.skipped[0]["reason"]
    assert result.correct["Original CLIP"] <= 10 - 3  # the 3 skipped sentences count as wrong
    lines = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    skipped = [line for line in lines if "skipped" in line]
    assert len(lines) == 10 and [line["image_id"] for line in skipped] == [1, 1, 1]
    assert all(line["correct"] == {"Original CLIP": 0} and "pred" not in line for line in skipped)


def test_box_outside_image_is_an_error_or_a_recorded_skip(model, tmp_path):
    split = make_split(tmp_path, bad="box")
    with pytest.raises(DatasetError, match="outside the 50x40 image"):
        evaluate(model, split, [FALIP], options(), TextCache(model))
    result = evaluate(model, split, [CROP], options(skip_bad_samples=True), TextCache(model))
    assert len(result.skipped) == 1 and "outside" in result.skipped[0]["reason"]


def test_limit_and_empty_split(tmp_path, model):
    split = make_split(tmp_path)
    limited = limit_split(split, 5)
    assert limited.num_sentences == 5 and len(limited.images) == 2 and "limited" in limited.notes[-1]
    with pytest.raises(DatasetError, match="no sentences"):
        evaluate(model, RecSplit("toy", "val", [], "x"), [FALIP], options(), TextCache(model))


def test_subtract_changes_scores_and_is_seeded(model, tmp_path):
    split = make_split(tmp_path)
    prompt = [VisualPrompt("F", bias=FovealBias(alpha=3.0, layers=None))]
    texts = TextCache(model)
    on = options(subtract=SubtractOptions(enabled=True, num_captions=4, seed=1, sampling="per_split"))
    a = evaluate(model, split, prompt, on, texts, tmp_path / "a.jsonl")
    b = evaluate(model, split, prompt, on, texts, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert any("subtract" in note for note in a.notes)
    # by hand for one image: score - mean over the sampled captions
    import random
    bank = split.captions("a photo of {}")
    sample = random.Random(1).sample(bank, 4)
    record = split.images[0]
    emb = encode_regions(model, record.load_image(), record.candidates, prompt[0])
    text = model.encode_text(["a photo of " + record.sentences[0].text.lower()])[0]
    mean = model.encode_text(sample).mean(0)
    pred = int(torch.argmax(emb @ text - emb @ mean))
    first = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
    assert first["pred"]["F"] == pred


def test_dataloader_workers_give_the_same_predictions(model, tmp_path):
    """Images prepared in a worker process (pixels sent back as numpy) score exactly as in-process."""
    split = make_split(tmp_path, num_images=5, bad="box")
    prompts = [ORIGINAL_CLIP, VisualPrompt("F", bias=FovealBias(alpha=3.0, layers=(-1,))), CROP]
    results = {}
    for workers in (0, 1):
        out = tmp_path / f"pred{workers}.jsonl"
        result = evaluate(model, split, prompts, options(num_workers=workers, skip_bad_samples=True),
                                    TextCache(model), out)
        results[workers] = (result.correct, result.image_forwards, result.skipped,
                            sorted(out.read_text().splitlines()))
    assert results[0] == results[1] and len(results[0][2]) == 1


def test_clipped_boxes_are_counted_and_summarised(model, tmp_path):
    split = make_split(tmp_path)
    split.images[0].candidates[0] = (-5.0, 1.0, 20.0, 18.0)     # sticks out on the left
    split.images[1].candidates[1] = (25.0, 5.0, 60.0, 30.0)     # sticks out on the right (image is 50 wide)
    result = evaluate(model, split, [ORIGINAL_CLIP, FALIP], options(), TextCache(model))
    assert result.clipped_boxes == 2 and result.summary()["clipped_boxes"] == 2
    assert result.console_summary("sentence") == "val: 2 box(es) partly outside their image clipped to it"
    assert evaluate(model, make_split(tmp_path), [FALIP], options(), TextCache(model)).console_summary("sentence") is None


def test_a_box_with_three_numbers_is_a_clear_error(model, tmp_path):
    split = make_split(tmp_path)
    split.images[0].candidates[0] = (1.0, 1.0, 20.0)
    with pytest.raises(DatasetError, match=r"img0.png: box \[1.0, 1.0, 20.0\] must have 4 numbers"):
        evaluate(model, split, [FALIP], options(), TextCache(model))


def test_subtract_per_expression_draws_a_seeded_sample_for_every_sentence(model, tmp_path):
    """The released code's semantics: np.random.choice(caption_bank, 500, replace=False) per sentence; here
    seeded by (seed, the sentence's row), so a rerun is identical."""
    import numpy as np

    split = make_split(tmp_path)
    prompt = [VisualPrompt("F", bias=FovealBias(alpha=3.0, layers=None))]
    on = options(subtract=SubtractOptions(enabled=True, num_captions=3, seed=7))
    evaluate(model, split, prompt, on, TextCache(model), tmp_path / "a.jsonl")
    evaluate(model, split, prompt, on, TextCache(model), tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    bank = split.captions("a photo of {}")
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    row = 0
    for record in split.images:
        emb = encode_regions(model, record.load_image(), record.candidates, prompt[0])
        for sentence in record.sentences:
            text = model.encode_text(["a photo of " + sentence.text.lower()])[0]
            chosen = np.random.default_rng([7, row]).choice(len(bank), 3, replace=False)
            mean = model.encode_text([bank[i] for i in chosen]).mean(0)
            scores = emb @ text - emb @ mean
            assert lines[row]["pred"]["F"] == int(torch.argmax(scores)), row
            row += 1
