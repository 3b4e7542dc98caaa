"""The one experiment loop: config -> model + prompts + task -> every split -> table + sidecar.

:func:`run_experiment` runs a resolved config; :func:`evaluate_split` is the loop every task shares:
items of a split -> region embeddings under every prompt (:func:`falip.encoding.regions.encode_items`)
-> the task's lines (written to the predictions file as they come) -> the task's metrics. Skips,
limits, resume, progress and counters live here, once, for every task.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..data.registry import check_dataset, load_dataset_split
from ..encoding.regions import encode_items
from ..encoding.text import TextCache
from ..errors import ConfigError, DatasetError
from ..model.clip import FoveatedCLIP
from ..prompts.config import prompts_from_config
from ..prompts.prompt import VisualPrompt
from ..tasks import TASKS
from ..tasks.base import Line, Task
from .generated import materialize
from .record import ExperimentRecord
from .reports import REPORTS


@dataclass(frozen=True)
class LoopOptions:
    """The ``run.*`` settings that shape the loop (not what it computes, except ``skip_bad_samples``)."""

    batch_size: int = 64
    num_workers: int = 0
    prefetch_images: int = 64
    skip_bad_samples: bool = False
    progress: bool = True

    @classmethod
    def from_config(cls, run_cfg: Mapping[str, Any]) -> "LoopOptions":
        return cls(batch_size=int(run_cfg.get("batch_size", 64)), num_workers=int(run_cfg.get("num_workers", 0)),
                   prefetch_images=int(run_cfg.get("prefetch_images", 64)),
                   skip_bad_samples=bool(run_cfg.get("skip_bad_samples", False)),
                   progress=bool(run_cfg.get("progress", True)))


@dataclass
class SplitResult:
    """One evaluated split: its lines, metrics, counters and what it cost."""

    split: str
    lines: list[Line]
    metrics: dict[str, dict[str, float]]
    description: dict[str, Any]
    image_forwards: dict[str, int]
    unbiased_layer_rows: dict[str, int]
    skipped: list[dict]
    wall_time_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> dict[str, float]:
        return self.metrics["accuracy"]

    @property
    def correct(self) -> dict[str, int]:
        names = self.metrics["accuracy"]
        return {name: sum(line["correct"][name] for line in self.lines) for name in names}

    def summary(self) -> dict[str, Any]:
        return {"split": self.split, **self.description, "num_lines": len(self.lines), "metrics": self.metrics,
                "correct": self.correct, "image_forwards": self.image_forwards,
                "unbiased_layer_rows": self.unbiased_layer_rows, "skipped": self.skipped,
                "num_skipped_lines": sum(s["lines"] for s in self.skipped),
                "wall_time_s": round(self.wall_time_s, 3), "notes": self.notes}


def _image_available(item) -> bool:
    return getattr(item, "embedded_image", None) is not None or Path(item.image_path).is_file()


def evaluate_split(model: FoveatedCLIP, task: Task, split, prompts: Sequence[VisualPrompt], texts: TextCache,
                   options: LoopOptions = LoopOptions(), predictions_path: Path | None = None,
                   desc: str = "") -> SplitResult:
    """Score every unit of ``split`` under every prompt; per-unit lines go to ``predictions_path`` as they come.

    An unusable item (missing or corrupt image, size mismatch, bad box) stops the run with a
    :class:`DatasetError`, or with ``options.skip_bad_samples`` becomes a recorded skip whose lines count
    as wrong. Missing image files are all reported before any forward.
    """
    started = time.perf_counter()
    items, names = task.items(split), [prompt.name for prompt in prompts]
    description = task.describe(split)
    where = f"{getattr(split, 'dataset', '?')} {getattr(split, 'split', '')}".strip()
    if not items or not any(task.lines(split, index) for index in range(len(items))):
        raise DatasetError(f"{where} has no {task.unit}s ({description.get('source', '')})")
    missing = [item for item in items if not _image_available(item)]
    if missing and not options.skip_bad_samples:
        listing = ", ".join(str(item.image_path) for item in missing[:5])
        raise DatasetError(f"{len(missing)} of {len(items)} images of {where} are missing, e.g. {listing}. "
                           f"Check dataset.root / dataset.image_dir, or set run.skip_bad_samples=true to count "
                           f"their {task.unit}s as wrong.")
    context = task.prepare(split, texts, model.logit_scale)
    lines: list[Line] = []
    skipped: list[dict] = []
    image_forwards: dict[str, int] = {}
    unbiased_layer_rows: dict[str, int] = {}
    with open(predictions_path, "w") if predictions_path else nullcontext() as handle:
        for index, outcome in encode_items(
                model, items, task.regions(split), prompts, resize=task.resize, batch_size=options.batch_size,
                num_workers=options.num_workers, prefetch_images=options.prefetch_images,
                progress=options.progress, desc=desc or where, image_forwards=image_forwards,
                unbiased_layer_rows=unbiased_layer_rows):
            if isinstance(outcome, str):
                if not options.skip_bad_samples:
                    raise DatasetError(outcome + f" (set run.skip_bad_samples=true to record a skip and count "
                                                 f"its {task.unit}s as wrong)")
                new = [{**line, "skipped": outcome, "correct": {name: 0 for name in names}}
                       for line in task.lines(split, index)]
                skipped.append({**task.item_key(split, index), "reason": outcome, "lines": len(new)})
            else:
                new = task.score(split, index, {name: outcome[name] for name in names}, context)
            lines.extend(new)
            if handle:
                handle.write("".join(json.dumps(line, default=str) + "\n" for line in new))
    return SplitResult(split=getattr(split, "split", ""), lines=lines, metrics=task.aggregate(lines, names),
                       description=description, image_forwards=image_forwards,
                       unbiased_layer_rows=unbiased_layer_rows, skipped=skipped,
                       wall_time_s=time.perf_counter() - started,
                       notes=list(getattr(split, "notes", [])) + task.notes(context))


def load_model(model_cfg: Mapping[str, Any], run_cfg: Mapping[str, Any]) -> FoveatedCLIP:
    """``model.path`` (a local directory) wins over ``model.name`` (a HF Hub id, read from the HF cache offline)."""
    source = model_cfg.get("path") or model_cfg.get("name")
    if not source:
        raise ConfigError("set model.name (a HF Hub id) or model.path (a local CLIP directory)")
    return FoveatedCLIP.from_pretrained(source, device=run_cfg.get("device", "auto"),
                                        dtype=run_cfg.get("dtype", "float32"),
                                        attn_implementation=model_cfg.get("attn_implementation", "sdpa"))


def run_experiment(config: Mapping[str, Any]) -> ExperimentRecord | None:
    """Run ``config`` (a plain dict: the resolved Hydra config) and return its record (None for a report)."""
    config = dict(config)
    task_name = config["task"]["name"]
    if task_name in REPORTS:
        REPORTS[task_name](config)
        return None
    if task_name not in TASKS:
        raise ConfigError(f"unknown task.name {task_name!r}; known: {sorted(TASKS) + sorted(REPORTS)}")
    task = TASKS[task_name].from_config(config["task"])
    run = config["run"]
    torch.manual_seed(int(run.get("seed", 0)))
    prompts = prompts_from_config(config.get("prompts") or {}, foveal=config.get("foveal"))
    if not prompts:
        raise ConfigError("the experiment has no prompts: set prompts=<group> or prompts.<name>={...}")
    dataset = materialize(config["dataset"])
    check_dataset(dataset)
    model = load_model(config["model"], run)
    record = ExperimentRecord(config["experiment_name"], config, run["output_dir"],
                              [prompt.name for prompt in prompts], model, resume=bool(run.get("resume")))
    options, texts, limit = LoopOptions.from_config(run), TextCache(model), run.get("limit")
    try:
        with torch.inference_mode():
            for split_name in dataset["splits"]:
                if record.cached(split_name):
                    print(f"[falip] {split_name}: reusing the finished split from {record.split_path(split_name)}")
                    continue
                split = load_dataset_split(dataset, split_name)
                if limit:
                    split = task.limit(split, int(limit))
                predictions = record.predictions_path(split_name) if run.get("save_predictions", True) else None
                result = evaluate_split(model, task, split, prompts, texts, options, predictions)
                details = {**result.summary(), "text_encoder_distinct_texts": texts.num_encoded,
                           "predictions": str(predictions) if predictions else None}
                record.add_split(split_name, task.columns(split_name, result.metrics), details)
    except BaseException as error:
        record.fail(error)
        raise
    record.finish()
    return record
