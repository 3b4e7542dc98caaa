"""Zero-shot classification of a region: which class is the object inside the ROA?

Each sample is (image, ROA = one or more boxes or a mask, label, optional group). The text classifier
is CLIP's zero-shot recipe: per class, the renormalised mean of the normalised embeddings of its
templated names; templates are data (``falip/tasks/templates.json``: ``simple`` = "a photo of a {}.",
``openai_imagenet`` = CLIP's 80, per-dataset sets) or a list in the config. Metrics (``task.metrics``):
``accuracy`` (top-1 %), ``mean_per_class`` (mean of the per-class top-1), ``worst_group`` (the lowest
group accuracy, groups present only) and ``groups`` (every group's accuracy). Skipped samples count
as wrong in all of them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..data.classification.types import ClassificationSample, ClassificationSplit
from ..encoding.text import TextCache
from ..errors import ConfigError
from ..geometry import Region
from .base import Line, Task, check_option, check_resize, check_template

TEMPLATES_FILE = Path(__file__).resolve().parent / "templates.json"
METRICS = ("accuracy", "mean_per_class", "worst_group", "groups")


def template_sets() -> dict[str, list[str]]:
    """The named template sets (``task.templates=<name>``)."""
    return {name: value for name, value in json.loads(TEMPLATES_FILE.read_text()).items() if not name.startswith("_")}


def resolve_templates(value: Any) -> list[str]:
    """``task.templates``: a set's name, or a list of templates with ``{}`` for the class name."""
    if isinstance(value, str):
        sets = template_sets()
        if value not in sets:
            raise ConfigError(f"task.templates={value!r} is not a template set; known: {sorted(sets)} "
                              f"(or give a list: task.templates='[\"a photo of a {{}}.\"]')")
        return list(sets[value])
    check_option(isinstance(value, list) and len(value) > 0, "templates", value,
                 "a template set's name or a non-empty list of texts with {} for the class name")
    for template in value:
        check_template("templates", template)
    return list(value)


def _accuracy(lines: Sequence[Line], name: str) -> float:
    return 100.0 * sum(line["correct"][name] for line in lines) / len(lines)


@dataclass
class ClassificationTask(Task):
    """Region classification over a :class:`~falip.data.classification.types.ClassificationSplit`."""

    name = "classification"
    unit = "sample"
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    resize: str = "squash"
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> "ClassificationTask":
        metrics = list(task_cfg.get("metrics") or ["accuracy"])
        check_option(all(metric in METRICS for metric in metrics), "metrics", metrics, f"a list of {list(METRICS)}")
        check_resize(task_cfg.get("resize", "squash"))
        return cls(templates=resolve_templates(task_cfg.get("templates", "simple")),
                   resize=task_cfg.get("resize", "squash"), metrics=metrics)

    def items(self, split: ClassificationSplit) -> list[ClassificationSample]:
        return split.samples

    def regions(self, split: ClassificationSplit) -> list[list[Region]]:
        return [[sample.roa] for sample in split.samples]

    def limit(self, split: ClassificationSplit, count: int) -> ClassificationSplit:
        if count <= 0:
            raise ValueError(f"limit must be a positive number of samples, got {count}")
        if count >= len(split.samples):
            return split
        return replace(split, samples=split.samples[:count],
                       notes=split.notes + [f"limited to the first {count} samples"])

    def describe(self, split: ClassificationSplit) -> dict[str, Any]:
        return {"num_samples": len(split.samples), "num_classes": len(split.classes), "source": split.source,
                "templates": list(self.templates), "num_boxes": sum(len(s.roa.boxes) for s in split.samples)}

    def item_key(self, split: ClassificationSplit, index: int) -> dict[str, Any]:
        return {"sample_id": split.samples[index].sample_id}

    def prepare(self, split: ClassificationSplit, texts: TextCache, logit_scale: float) -> torch.Tensor:
        return texts.classifier(split.classes, self.templates)  # (C, D)

    def lines(self, split: ClassificationSplit, index: int) -> list[Line]:
        sample = split.samples[index]
        line: Line = {"sample_id": sample.sample_id, "label": sample.label}
        if sample.group is not None:
            line["group"] = sample.group
        return [line]

    def score(self, split: ClassificationSplit, index: int, embeddings: Mapping[str, torch.Tensor],
              context: torch.Tensor) -> list[Line]:
        line = self.lines(split, index)[0]
        line["pred"], line["correct"] = {}, {}
        for name, embedding in embeddings.items():
            pred = int(torch.argmax(embedding[0] @ context.T))
            line["pred"][name], line["correct"][name] = pred, int(pred == line["label"])
        return [line]

    def aggregate(self, split: ClassificationSplit, lines: Sequence[Line],
                  prompt_names: Sequence[str]) -> dict[str, dict[str, float]]:
        metrics = {"accuracy": {name: _accuracy(lines, name) for name in prompt_names}}
        by_class: dict[int, list[Line]] = {}
        for line in lines:
            by_class.setdefault(line["label"], []).append(line)
        metrics["mean_per_class"] = {name: sum(_accuracy(group, name) for group in by_class.values()) / len(by_class)
                                     for name in prompt_names}
        by_group: dict[int, list[Line]] = {}
        for line in lines:
            if "group" in line:
                by_group.setdefault(line["group"], []).append(line)
        if by_group:
            group_names = split.group_names or [str(g) for g in range(max(by_group) + 1)]
            for group in sorted(by_group):
                metrics[f"group {group_names[group]}"] = {name: _accuracy(by_group[group], name)
                                                          for name in prompt_names}
            metrics["worst_group"] = {name: min(_accuracy(g, name) for g in by_group.values()) for name in prompt_names}
        return metrics

    def columns(self, split_name: str, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        wanted = []
        for metric in self.metrics:
            if metric == "groups":
                wanted += [key for key in metrics if key.startswith("group ")]
            elif metric not in metrics:
                raise ConfigError(f"task.metrics asks for {metric!r}, which this split has no data for "
                                  f"(computed: {sorted(metrics)})")
            else:
                wanted.append(metric)
        if len(wanted) == 1:
            return {split_name: dict(metrics[wanted[0]])}
        return {f"{split_name} {metric}": dict(metrics[metric]) for metric in wanted}
