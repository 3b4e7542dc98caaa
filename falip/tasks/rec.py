"""Referring expression comprehension (REC): pick the candidate box an expression refers to.

Protocol (released FALIP code = ReCLIP harness, ``--method baseline``): every sentence is one test
item; candidates are all annotation boxes of the image (or detector proposals); the text is
``"a photo of " + expression.lower()``; the image is squashed to the model's square input; each
candidate is scored ``logit_scale * cos(V(image, prompt(box)), T(text))`` and the argmax (first on
ties) is correct iff its IoU with the referred object's box is > 0.5. Accuracy = 100 * correct /
sentences; skipped samples (``skip_bad_samples``) count as wrong.

"Subtract" (RedCircle's post-processing, off by default as in the released code): each box's
score minus its mean score against ``num_captions`` captions sampled (seeded, without replacement,
once per split) from the split's own templated captions. Since the score is linear in the text
embedding, that mean is the score against the mean caption embedding.

Efficiency: each image is loaded and edited once per prompt (optionally in dataloader workers),
forwards are batched across images, each distinct text is encoded once per run.
"""
from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..clip import FoveatedCLIP
from ..data.rec import DatasetError, RecImage, RecSplit
from ..geometry import iou
from ..prompts import VisualPrompt
from ..regions import encode_items
from ..text import TextCache


@dataclass
class SubtractOptions:
    enabled: bool = False
    num_captions: int = 500
    seed: int = 0


@dataclass
class RecOptions:
    text_template: str = "a photo of {}"
    iou_threshold: float = 0.5
    resize: str = "squash"
    batch_size: int = 64
    num_workers: int = 0
    prefetch_images: int = 64
    skip_bad_samples: bool = False
    subtract: SubtractOptions = field(default_factory=SubtractOptions)
    progress: bool = True


@dataclass
class RecSplitResult:
    """Outcome of one split: per-prompt correct counts over ``num_sentences`` items, and what it cost."""

    split: str
    num_images: int
    num_sentences: int
    num_candidates: int
    correct: dict[str, int]
    image_forwards: dict[str, int]
    unbiased_layer_rows: dict[str, int]
    skipped: list[dict]
    wall_time_s: float
    notes: list[str]

    @property
    def accuracy(self) -> dict[str, float]:
        return {name: 100.0 * hits / self.num_sentences for name, hits in self.correct.items()}

    def summary(self) -> dict:
        return {"split": self.split, "num_images": self.num_images, "num_sentences": self.num_sentences,
                "num_candidates": self.num_candidates, "accuracy": self.accuracy, "correct": self.correct,
                "image_forwards": self.image_forwards, "unbiased_layer_rows": self.unbiased_layer_rows,
                "skipped": self.skipped,
                "num_skipped_sentences": sum(s["sentences"] for s in self.skipped),
                "wall_time_s": round(self.wall_time_s, 3), "notes": self.notes}


def limit_split(split: RecSplit, limit: int | None) -> RecSplit:
    """The first ``limit`` sentences of a split (whole images first, the last one trimmed)."""
    if limit is None or limit >= split.num_sentences:
        return split
    if limit <= 0:
        raise ValueError(f"limit must be a positive number of sentences, got {limit}")
    kept, left = [], limit
    for image in split.images:
        if left <= 0:
            break
        sentences = image.sentences[:left]
        left -= len(sentences)
        kept.append(RecImage(**{**image.__dict__, "sentences": sentences}))
    return RecSplit(split.dataset, split.split, kept, split.source, split.candidate_setting,
                    split.notes + [f"limited to the first {limit} of {split.num_sentences} sentences"])


def _subtract_direction(split: RecSplit, options: RecOptions, texts: TextCache) -> tuple[torch.Tensor | None, list[str]]:
    if not options.subtract.enabled:
        return None, []
    bank = split.captions(options.text_template)
    count = min(options.subtract.num_captions, len(bank))
    sample = random.Random(options.subtract.seed).sample(bank, count)
    note = (f"subtract: score minus mean score against {count} captions sampled with seed "
            f"{options.subtract.seed} from the split's {len(bank)} captions")
    return texts.embed(sample).mean(0), [note]


def evaluate_rec_split(
    model: FoveatedCLIP,
    split: RecSplit,
    prompts: list[VisualPrompt],
    options: RecOptions,
    texts: TextCache,
    predictions_path: Path | None = None,
) -> RecSplitResult:
    """Score every sentence of ``split`` under every prompt; write per-sentence predictions as it goes."""
    if not split.images or split.num_sentences == 0:
        raise DatasetError(f"{split.dataset} split {split.split!r} has no sentences ({split.source})")
    started = time.perf_counter()
    missing = [image for image in split.images if image.embedded_image is None and not Path(image.image_path).is_file()]
    if missing and not options.skip_bad_samples:
        listing = ", ".join(str(image.image_path) for image in missing[:5])
        raise DatasetError(f"{len(missing)} of {len(split.images)} images of {split.dataset} {split.split} are "
                           f"missing, e.g. {listing}. Check dataset.image_dir, or set "
                           f"run.skip_bad_samples=true to count their sentences as wrong.")

    template = options.text_template
    sentence_embeddings = texts.embed([template.format(s.text.lower()) for image in split.images for s in image.sentences])
    first_sentence, row = [], 0  # per image: the row of its first sentence in sentence_embeddings
    for image in split.images:
        first_sentence.append(row)
        row += len(image.sentences)
    subtract, notes = _subtract_direction(split, options, texts)
    scale = model.logit_scale
    names = [prompt.name for prompt in prompts]
    correct = {name: 0 for name in names}
    skipped: list[dict] = []
    forwards: dict[str, int] = {}
    pixel_rows: dict[str, int] = {}

    def score(position: int, embeddings: dict[str, torch.Tensor], handle) -> None:
        record = split.images[position]
        start = first_sentence[position]
        text_emb = sentence_embeddings[start:start + len(record.sentences)]  # (S, D)
        regions = torch.stack([embeddings[name] for name in names])  # (P, K, D)
        logits = scale * regions @ text_emb.T  # (P, K, S)
        if subtract is not None:
            logits = logits - (scale * regions @ subtract)[:, :, None]
        # first maximum on ties, as np.argmax in the released code
        predictions = dict(zip(names, logits.argmax(1).tolist()))
        lines = []
        for index, sentence in enumerate(record.sentences):
            targets = record.target_boxes(sentence)
            line = {"image_id": record.image_id, "sent_id": sentence.sent_id, "text": sentence.text,
                    "target_ann_ids": list(sentence.target_ann_ids), "num_candidates": len(record.candidates),
                    "pred": {}, "correct": {}}
            for name in names:
                pred = predictions[name][index]
                hit = any(iou(record.candidates[pred], target) > options.iou_threshold for target in targets)
                correct[name] += hit
                line["pred"][name], line["correct"][name] = pred, int(hit)
            lines.append(json.dumps(line, default=str) + "\n")
        if handle:
            handle.write("".join(lines))

    with open(predictions_path, "w") if predictions_path else nullcontext() as handle:
        for index, outcome in encode_items(
                model, split.images, [image.candidates for image in split.images], prompts,
                resize=options.resize, batch_size=options.batch_size, num_workers=options.num_workers,
                prefetch_images=options.prefetch_images,
                progress=options.progress, desc=f"{split.dataset} {split.split}", forwards=forwards,
                pixel_rows=pixel_rows):
            if isinstance(outcome, str):
                record = split.images[index]
                if not options.skip_bad_samples:
                    raise DatasetError(outcome + " (set run.skip_bad_samples=true to record a skip and count "
                                                 "its sentences as wrong)")
                skipped.append({"image_id": record.image_id, "reason": outcome, "sentences": len(record.sentences)})
                continue
            score(index, outcome, handle)
    return RecSplitResult(
        split=split.split, num_images=len(split.images), num_sentences=split.num_sentences,
        num_candidates=split.num_candidates, correct=correct, image_forwards=forwards,
        unbiased_layer_rows=pixel_rows, skipped=skipped,
        wall_time_s=time.perf_counter() - started, notes=list(split.notes) + notes)


def rec_options(task_cfg: dict, run_cfg: dict) -> RecOptions:
    """RecOptions from the ``task`` and ``run`` config sections."""
    subtract = SubtractOptions(**dict(task_cfg.get("subtract") or {}))
    return RecOptions(text_template=task_cfg.get("text_template", "a photo of {}"),
                      iou_threshold=float(task_cfg.get("iou_threshold", 0.5)),
                      resize=task_cfg.get("resize", "squash"), batch_size=int(run_cfg.get("batch_size", 64)),
                      num_workers=int(run_cfg.get("num_workers", 0)),
                      prefetch_images=int(run_cfg.get("prefetch_images", 64)),
                      skip_bad_samples=bool(run_cfg.get("skip_bad_samples", False)), subtract=subtract,
                      progress=bool(run_cfg.get("progress", True)))


def run_rec_experiment(config: dict, model: FoveatedCLIP, prompts: list[VisualPrompt], record) -> None:
    """Every split of ``config['dataset']['splits']`` becomes one column of the record's table."""
    from ..sources import load_rec_dataset_split

    options = rec_options(config["task"], config["run"])
    texts = TextCache(model)
    limit = config["run"].get("limit")
    for split_name in config["dataset"]["splits"]:
        if record.cached(split_name):
            print(f"[falip] {split_name}: reusing the finished column from {record.column_path(split_name)}")
            continue
        split = limit_split(load_rec_dataset_split(config["dataset"], split_name), limit)
        predictions = record.predictions_path(split_name) if config["run"].get("save_predictions", True) else None
        result = evaluate_rec_split(model, split, prompts, options, texts, predictions)
        details = {**result.summary(), "source": split.source, "candidate_setting": split.candidate_setting,
                   "text_encoder_distinct_texts": texts.num_encoded,
                   "predictions": str(predictions) if predictions else None}
        record.add_column(split_name, result.accuracy, details)
