"""Zero-shot classification of a region: which class is the object inside the ROA?

Each sample is (image, ROA box, label). The text classifier is CLIP's zero-shot recipe: per class,
the renormalised mean of the normalised embeddings of its templated names. The region embedding
under each prompt is scored against it; top-1 accuracy in %. Skipped samples count as wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch

from ..data.classification.types import ClassificationSample, ClassificationSplit
from ..encoding.text import TextCache
from ..geometry import Box
from .base import Line, Task, check_option, check_resize, check_template


@dataclass
class ClassificationTask(Task):
    """Region classification over a :class:`~falip.data.classification.types.ClassificationSplit`."""

    name = "classification"
    unit = "sample"
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    resize: str = "squash"

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> "ClassificationTask":
        templates = task_cfg.get("templates")
        check_option(isinstance(templates, list) and len(templates) > 0, "templates", templates,
                     "a non-empty list of texts with {} for the class name")
        for template in templates:
            check_template("templates", template)
        check_resize(task_cfg.get("resize", "squash"))
        return cls(templates=list(templates), resize=task_cfg.get("resize", "squash"))

    def items(self, split: ClassificationSplit) -> list[ClassificationSample]:
        return split.samples

    def regions(self, split: ClassificationSplit) -> list[list[Box]]:
        return [[sample.box] for sample in split.samples]

    def limit(self, split: ClassificationSplit, count: int) -> ClassificationSplit:
        if count <= 0:
            raise ValueError(f"limit must be a positive number of samples, got {count}")
        if count >= len(split.samples):
            return split
        return replace(split, samples=split.samples[:count],
                       notes=split.notes + [f"limited to the first {count} samples"])

    def describe(self, split: ClassificationSplit) -> dict[str, Any]:
        return {"num_samples": len(split.samples), "num_classes": len(split.classes), "source": split.source,
                "templates": list(self.templates)}

    def item_key(self, split: ClassificationSplit, index: int) -> dict[str, Any]:
        return {"sample_id": split.samples[index].sample_id}

    def prepare(self, split: ClassificationSplit, texts: TextCache, logit_scale: float) -> torch.Tensor:
        return texts.classifier(split.classes, self.templates)  # (C, D)

    def lines(self, split: ClassificationSplit, index: int) -> list[Line]:
        sample = split.samples[index]
        return [{"sample_id": sample.sample_id, "label": sample.label}]

    def score(self, split: ClassificationSplit, index: int, embeddings: Mapping[str, torch.Tensor],
              context: torch.Tensor) -> list[Line]:
        line = self.lines(split, index)[0]
        line["pred"], line["correct"] = {}, {}
        for name, embedding in embeddings.items():
            pred = int(torch.argmax(embedding[0] @ context.T))
            line["pred"][name], line["correct"][name] = pred, int(pred == line["label"])
        return [line]
