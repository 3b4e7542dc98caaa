"""Zero-shot classification of a region: which class is the object inside the ROA?

Each sample is (image, ROA box, label). The text classifier is CLIP's zero-shot recipe: per class,
the renormalised mean of the normalised embeddings of its templated names. The region embedding
under each prompt is scored against it; top-1 accuracy in %. Skipped samples count as wrong.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..clip import FoveatedCLIP
from ..data.box_classification import ClsSplit
from ..data.rec import DatasetError
from ..prompts import VisualPrompt
from ..regions import encode_items
from ..text import TextCache


def evaluate_classification_split(model: FoveatedCLIP, split: ClsSplit, prompts: list[VisualPrompt],
                                  templates: list[str], texts: TextCache, *, resize: str = "squash",
                                  batch_size: int = 64, num_workers: int = 0, prefetch_images: int = 64,
                                  skip_bad_samples: bool = False,
                                  progress: bool = True, predictions_path: Path | None = None) -> dict:
    """Top-1 accuracy per prompt over ``split``, with counts, skips and timings."""
    started = time.perf_counter()
    classifier = texts.classifier(split.classes, templates)
    names = [prompt.name for prompt in prompts]
    correct = {name: 0 for name in names}
    skipped, forwards, pixel_rows = [], {}, {}
    with open(predictions_path, "w") if predictions_path else nullcontext() as handle:
        for index, outcome in encode_items(model, split.samples, [[sample.box] for sample in split.samples], prompts,
                                           resize=resize, batch_size=batch_size, num_workers=num_workers,
                                           prefetch_images=prefetch_images,
                                           progress=progress, desc=f"{split.dataset} {split.split}",
                                           forwards=forwards, pixel_rows=pixel_rows):
            sample = split.samples[index]
            if isinstance(outcome, str):
                if not skip_bad_samples:
                    raise DatasetError(outcome + " (set run.skip_bad_samples=true to record a skip counted as wrong)")
                skipped.append({"sample_id": sample.sample_id, "reason": outcome})
                continue
            line = {"sample_id": sample.sample_id, "label": sample.label, "pred": {}}
            for name in names:
                pred = int(torch.argmax(outcome[name][0] @ classifier.T))
                correct[name] += pred == sample.label
                line["pred"][name] = pred
            if handle:
                handle.write(json.dumps(line) + "\n")
    total = len(split.samples)
    return {"split": split.split, "num_samples": total, "num_classes": len(split.classes),
            "accuracy": {name: 100.0 * hits / total for name, hits in correct.items()}, "correct": correct,
            "image_forwards": forwards, "unbiased_layer_rows": pixel_rows, "skipped": skipped, "templates": templates,
            "wall_time_s": round(time.perf_counter() - started, 3), "source": split.source, "notes": split.notes}


def run_classification_experiment(config: dict, model: FoveatedCLIP, prompts: list[VisualPrompt], record) -> None:
    """Every split of ``config['dataset']['splits']`` becomes one column of the record's table."""
    from ..sources import load_classification_dataset_split

    task, run = config["task"], config["run"]
    texts = TextCache(model)
    for split_name in config["dataset"]["splits"]:
        if record.cached(split_name):
            continue
        split = load_classification_dataset_split(config["dataset"], split_name)
        limit = run.get("limit")
        if limit:
            split.samples = split.samples[:limit]
            split.notes.append(f"limited to the first {limit} samples")
        predictions = record.predictions_path(split_name) if run.get("save_predictions", True) else None
        details = evaluate_classification_split(
            model, split, prompts, list(task["templates"]), texts, resize=task.get("resize", "squash"),
            batch_size=int(run.get("batch_size", 64)), num_workers=int(run.get("num_workers", 0)),
            prefetch_images=int(run.get("prefetch_images", 64)), skip_bad_samples=bool(run.get("skip_bad_samples")),
            progress=bool(run.get("progress", True)),
            predictions_path=predictions)
        record.add_column(split_name, details["accuracy"], details)
