"""Predict, no labels needed: what each of your boxes shows, or which box each of your texts picks.

Two modes (exactly one is set):

* ``classes``: zero-shot classification of every box over the classes (CLIP's classifier: per class, the
  renormalised mean of its templated names' embeddings). One line per box: the image, the box, per prompt
  every class's score and probability, the top-k and the top class.
* ``texts``: every text against the boxes of each image (REC without a target). One line per (image, text):
  per prompt every box's score and probability, the picked box.

A score is the model's logit, ``logit_scale * cos + logit_bias`` (``logit_bias`` is SigLIP's, 0 for CLIP);
a probability is the model family's own reading of it: softmax over the classes (the boxes) for CLIP's
contrastive training, an independent sigmoid per pair for SigLIP's (``FoveatedCLIP.probability``).
:func:`predict` is the same in one Python call.

The summary table (no accuracy without labels): per prompt, the mean probability of the top class (pick)
and the share of boxes (texts) whose top class (pick) differs from the first prompt's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from ..data.classnames import class_names_from
from ..data.regions import RegionsImage, RegionsSet
from ..encoding.regions import encode_regions
from ..encoding.text import TextCache
from ..errors import ConfigError
from ..geometry import Box
from ..prompts import FALIP, ORIGINAL_CLIP
from .base import Line, Task, check_option, check_resize
from .classification import resolve_templates

MODES = ("classes", "texts")


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """``logits`` ``(..., N)`` read as the model family reads them: ``softmax`` over the last axis, or
    ``sigmoid`` of each."""
    return logits.softmax(-1) if kind == "softmax" else logits.sigmoid()


@dataclass(frozen=True)
class _Context:
    matrix: torch.Tensor          # (C, D) class classifier or (T, D) text embeddings
    names: list[str]              # the class names or the texts
    logit_scale: float
    logit_bias: float
    probability: str


def _logits(region_embeddings: torch.Tensor, context: _Context) -> torch.Tensor:
    """``(K, D)`` region embeddings -> ``(K, N)`` logits against the classes (texts)."""
    return context.logit_scale * region_embeddings.float() @ context.matrix.float().T + context.logit_bias


def _round(values: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]


def class_lines(record: RegionsImage, embeddings: Mapping[str, torch.Tensor], context: _Context,
                top_k: int) -> list[Line]:
    """One line per box: every class's score and probability per prompt, the top ``top_k`` and the top class."""
    per_prompt = {name: _logits(embedding, context) for name, embedding in embeddings.items()}
    lines = []
    for position, (box, box_id) in enumerate(zip(record.boxes, record.box_ids)):
        line: Line = {"image_id": record.image_id, "file_name": record.file_name, "box_id": box_id,
                      "box": list(box), "scores": {}, "probs": {}, "top": {}, "pred": {}}
        for name, logits in per_prompt.items():
            probs = probabilities(logits[position], context.probability)
            order = torch.argsort(probs, descending=True, stable=True)[:top_k].tolist()
            line["scores"][name] = _round(logits[position])
            line["probs"][name] = _round(probs)
            line["top"][name] = [[context.names[i], round(float(probs[i]), 6)] for i in order]
            line["pred"][name] = context.names[order[0]]
        lines.append(line)
    return lines


def text_lines(record: RegionsImage, embeddings: Mapping[str, torch.Tensor], context: _Context) -> list[Line]:
    """One line per text: every box's score and probability per prompt, and the box it picks."""
    per_prompt = {name: _logits(embedding, context).T for name, embedding in embeddings.items()}  # (T, K)
    lines = []
    for position, text in enumerate(context.names):
        line: Line = {"image_id": record.image_id, "file_name": record.file_name, "text": text,
                      "box_ids": list(record.box_ids), "scores": {}, "probs": {}, "pred": {}, "box": {}}
        for name, logits in per_prompt.items():
            probs = probabilities(logits[position], context.probability)
            pick = int(torch.argmax(logits[position]))  # the first maximum on ties, as the REC task
            line["scores"][name], line["probs"][name] = _round(logits[position]), _round(probs)
            line["pred"][name], line["box"][name] = record.box_ids[pick], list(record.boxes[pick])
        lines.append(line)
    return lines


def _top_probability(line: Line, name: str) -> float:
    return max(line["probs"][name])


@dataclass
class PredictTask(Task):
    """Classes for every box, or a box for every text, over a :class:`~falip.data.regions.RegionsSet`."""

    name = "predict"
    unit = "region"
    classes: list[str] | None = None
    texts: list[str] | None = None
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    top_k: int = 5
    resize: str = "squash"

    def __post_init__(self) -> None:
        if (self.classes is None) == (self.texts is None):
            raise ConfigError("predict needs exactly one of classes=<txt or [list]> (what each box shows) and "
                              "texts=<txt or [list]> (which box each text picks)")
        self.unit = "region" if self.classes is not None else "text"

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> "PredictTask":
        top_k = task_cfg.get("top_k", 5)
        check_option(isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0, "top_k", top_k,
                     "a positive integer")
        check_resize(task_cfg.get("resize", "squash"))
        return cls(classes=class_names_from(task_cfg.get("classes"), "classes"),
                   texts=class_names_from(task_cfg.get("texts"), "texts"),
                   templates=resolve_templates(task_cfg.get("templates", "simple")), top_k=top_k,
                   resize=task_cfg.get("resize", "squash"))

    def items(self, split: RegionsSet) -> list[RegionsImage]:
        return split.images

    def regions(self, split: RegionsSet) -> list[list[Box]]:
        return [image.boxes for image in split.images]

    def limit(self, split: RegionsSet, count: int) -> RegionsSet:
        if count <= 0:
            raise ValueError(f"limit must be a positive number of images, got {count}")
        if count >= len(split.images):
            return split
        return RegionsSet(split.images[:count], split.source, split.dataset, split.split,
                          split.notes + [f"limited to the first {count} of {len(split.images)} images"])

    def describe(self, split: RegionsSet) -> dict[str, Any]:
        mode = {"classes": list(self.classes), "templates": list(self.templates)} if self.classes is not None else {
            "texts": list(self.texts)}
        return {"num_images": len(split.images), "num_boxes": split.num_boxes, "source": split.source, **mode}

    def item_key(self, split: RegionsSet, index: int) -> dict[str, Any]:
        return {"image_id": split.images[index].image_id}

    def prepare(self, split: RegionsSet, texts: TextCache, logit_scale: float) -> _Context:
        model = texts.model
        if self.classes is not None:
            matrix, names = texts.classifier(self.classes, self.templates), list(self.classes)
        else:
            matrix, names = texts.embed(self.texts), list(self.texts)
        return _Context(matrix, names, logit_scale, model.logit_bias, model.probability)

    def lines(self, split: RegionsSet, index: int) -> list[Line]:
        record = split.images[index]
        if self.classes is not None:
            return [{"image_id": record.image_id, "file_name": record.file_name, "box_id": box_id, "box": list(box)}
                    for box, box_id in zip(record.boxes, record.box_ids)]
        return [{"image_id": record.image_id, "file_name": record.file_name, "text": text} for text in self.texts]

    def score(self, split: RegionsSet, index: int, embeddings: Mapping[str, torch.Tensor],
              context: _Context) -> list[Line]:
        record = split.images[index]
        if self.classes is not None:
            return class_lines(record, embeddings, context, self.top_k)
        return text_lines(record, embeddings, context)

    def aggregate(self, split: RegionsSet, lines: Sequence[Line],
                  prompt_names: Sequence[str]) -> dict[str, dict[str, float]]:
        scored = [line for line in lines if "probs" in line]
        if not scored:
            return {"mean top probability": {}, "changed": {}}
        first = prompt_names[0]
        return {
            "mean top probability": {name: 100.0 * sum(_top_probability(line, name) for line in scored) / len(scored)
                                     for name in prompt_names},
            "changed": {name: 100.0 * sum(line["pred"][name] != line["pred"][first] for line in scored) / len(scored)
                        for name in prompt_names},
        }

    def columns(self, split_name: str, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        what = "class" if self.classes is not None else "pick"
        return {f"mean top-{what} probability %": dict(metrics["mean top probability"]),
                f"{what} differs from the first prompt's %": dict(metrics["changed"])}


def predict(model, images: Sequence[Image.Image], boxes: Sequence[Sequence[Box]], *,
            classes: Sequence[str] | None = None, texts: Sequence[str] | None = None,
            prompts: Sequence[Any] | None = None, templates: Sequence[str] = ("a photo of a {}.",),
            top_k: int = 5, resize: str = "squash") -> list[Line]:
    """FALIP on your own images and boxes, in one call: the lines ``experiment=predict`` writes.

    ``images``: PIL images; ``boxes``: per image, its xyxy pixel boxes. ``classes`` (zero-shot over them,
    one line per box) or ``texts`` (one line per image and text: which box it picks). ``prompts``: visual
    prompts (default: Original CLIP and FALIP with the model's alpha)."""
    prompts = list(prompts) if prompts is not None else [ORIGINAL_CLIP, FALIP]
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} box lists: give one list of boxes per image")
    task = PredictTask(classes=list(classes) if classes is not None else None,
                       texts=list(texts) if texts is not None else None, templates=list(templates), top_k=top_k,
                       resize=resize)
    records = [RegionsImage(index, f"image {index}", None, [tuple(map(float, box)) for box in image_boxes],
                            list(range(len(image_boxes)))) for index, image_boxes in enumerate(boxes)]
    split = RegionsSet(records, source="predict() in memory")
    context = task.prepare(split, TextCache(model), model.logit_scale)
    lines = []
    for index, image in enumerate(images):
        embeddings = {prompt.name: encode_regions(model, image, records[index].boxes, prompt, resize=resize)
                      for prompt in prompts}
        lines += task.score(split, index, embeddings, context)
    return lines
