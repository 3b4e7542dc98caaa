"""Referring expression comprehension (REC): pick the candidate box an expression refers to.

Protocol (released FALIP code = ReCLIP harness, ``--method baseline``): every sentence is one test
item; candidates are all annotation boxes of the image (or detector proposals); the text is
``"a photo of " + expression.lower()``; the image is squashed to the model's square input; each
candidate is scored ``logit_scale * cos(V(image, prompt(box)), T(text))`` and the argmax (first on
ties) is correct iff its IoU with the referred object's box is > 0.5. Accuracy = 100 * correct /
sentences; skipped images' sentences count as wrong.

"Subtract" (RedCircle's post-processing, off by default as in the released code): each box's
score minus its mean score against ``num_captions`` captions sampled without replacement from the
split's own templated captions. ``sampling=per_expression`` (default) draws a fresh sample for every
expression, as the released code's (commented-out) call does (``np.random.choice(caption_bank, 500,
replace=False)`` per sentence, main.py) -- here seeded by (seed, the sentence's row in the split), so
reruns, resumes and any number of ranks give the same numbers; ``sampling=per_split`` draws one sample
for the whole split. Since the score is linear in the text embedding, the mean score is the score
against the mean caption embedding.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy
import torch

from ..data.rec.types import RecImage, RecSplit
from ..encoding.text import TextCache
from ..geometry import Box, iou
from .base import Line, Task, check_option, check_resize, check_template


SUBTRACT_SAMPLING = ("per_expression", "per_split")


@dataclass(frozen=True)
class SubtractOptions:
    enabled: bool = False
    num_captions: int = 500
    seed: int = 0
    sampling: str = "per_expression"  # per_expression (released code) | per_split


@dataclass
class _RecContext:
    sentence_embeddings: torch.Tensor      # (sentences of the split, D), in image order
    first_sentence: list[int]              # per image: its first row in sentence_embeddings
    subtract: torch.Tensor | None          # (sentences, D) mean caption embedding per sentence, or None
    logit_scale: float
    notes: list[str]


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
                    split.notes + [f"limited to the first {limit} of {split.num_sentences} sentences"],
                    split.zero_area_candidates)


@dataclass
class RecTask(Task):
    """REC over a :class:`~falip.data.rec.types.RecSplit`: one line per sentence."""

    name = "rec"
    unit = "sentence"
    text_template: str = "a photo of {}"
    iou_threshold: float = 0.5
    resize: str = "squash"
    subtract: SubtractOptions = field(default_factory=SubtractOptions)

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> "RecTask":
        check_template("text_template", task_cfg.get("text_template", "a photo of {}"))
        threshold = task_cfg.get("iou_threshold", 0.5)
        check_option(isinstance(threshold, (int, float)) and 0 < threshold <= 1, "iou_threshold", threshold,
                     "a number in (0, 1]")
        check_resize(task_cfg.get("resize", "squash"))
        subtract = dict(task_cfg.get("subtract") or {})
        check_option(set(subtract) <= {"enabled", "num_captions", "seed", "sampling"}, "subtract", subtract,
                     "keys enabled, num_captions, seed, sampling")
        check_option(subtract.get("sampling", "per_expression") in SUBTRACT_SAMPLING, "subtract.sampling",
                     subtract.get("sampling"), f"one of {list(SUBTRACT_SAMPLING)}")
        return cls(text_template=task_cfg.get("text_template", "a photo of {}"),
                   iou_threshold=float(task_cfg.get("iou_threshold", 0.5)), resize=task_cfg.get("resize", "squash"),
                   subtract=SubtractOptions(**dict(task_cfg.get("subtract") or {})))

    def items(self, split: RecSplit) -> list[RecImage]:
        return split.images

    def regions(self, split: RecSplit) -> list[list[Box]]:
        return [image.candidates for image in split.images]

    def limit(self, split: RecSplit, count: int) -> RecSplit:
        return limit_split(split, count)

    def describe(self, split: RecSplit) -> dict[str, Any]:
        return {"num_images": len(split.images), "num_sentences": split.num_sentences,
                "num_candidates": split.num_candidates, "source": split.source,
                "candidate_setting": split.candidate_setting,
                **({"zero_area_candidates_dropped": split.zero_area_candidates} if split.zero_area_candidates else {})}

    def item_key(self, split: RecSplit, index: int) -> dict[str, Any]:
        return {"image_id": split.images[index].image_id}

    def prepare(self, split: RecSplit, texts: TextCache, logit_scale: float) -> _RecContext:
        template = self.text_template
        embeddings = texts.embed([template.format(s.text.lower()) for image in split.images for s in image.sentences])
        first_sentence, row = [], 0
        for image in split.images:
            first_sentence.append(row)
            row += len(image.sentences)
        subtract, notes = None, []
        if self.subtract.enabled:
            bank = split.captions(template)  # the same texts, in the same order, as the sentence embeddings
            count = min(self.subtract.num_captions, len(bank))
            if self.subtract.sampling == "per_split":
                sample = random.Random(self.subtract.seed).sample(bank, count)
                subtract = texts.embed(sample).mean(0).expand(len(bank), -1)
            else:
                subtract = torch.stack([embeddings[numpy.random.default_rng([self.subtract.seed, row]).choice(
                    len(bank), count, replace=False)].mean(0) for row in range(len(bank))])
            notes.append(f"subtract: score minus mean score against {count} captions sampled ({self.subtract.sampling}) "
                         f"with seed {self.subtract.seed} from the split's {len(bank)} captions")
        return _RecContext(embeddings, first_sentence, subtract, logit_scale, notes)

    def notes(self, context: _RecContext) -> list[str]:
        return context.notes

    def lines(self, split: RecSplit, index: int) -> list[Line]:
        record = split.images[index]
        return [{"image_id": record.image_id, "sent_id": sentence.sent_id, "text": sentence.text,
                 "target_ann_ids": list(sentence.target_ann_ids), "num_candidates": len(record.candidates)}
                for sentence in record.sentences]

    def score(self, split: RecSplit, index: int, embeddings: Mapping[str, torch.Tensor],
              context: _RecContext) -> list[Line]:
        record = split.images[index]
        names = list(embeddings)
        if not record.candidates:  # every candidate had zero area: nothing to pick, every sentence wrong
            return [{**line, "pred": {name: None for name in names}, "correct": {name: 0 for name in names}}
                    for line in self.lines(split, index)]
        start = context.first_sentence[index]
        text = context.sentence_embeddings[start:start + len(record.sentences)]  # (S, D)
        regions = torch.stack([embeddings[name] for name in names])  # (P, K, D)
        logits = context.logit_scale * regions @ text.T  # (P, K, S)
        if context.subtract is not None:
            negatives = context.subtract[start:start + len(record.sentences)]  # (S, D)
            logits = logits - context.logit_scale * regions @ negatives.T
        predictions = dict(zip(names, logits.argmax(1).tolist()))  # first maximum on ties, as np.argmax
        lines = self.lines(split, index)
        for position, (sentence, line) in enumerate(zip(record.sentences, lines)):
            targets = record.target_boxes(sentence)
            line["pred"], line["correct"] = {}, {}
            for name in names:
                pred = predictions[name][position]
                line["pred"][name] = pred
                line["correct"][name] = int(any(iou(record.candidates[pred], target) > self.iou_threshold
                                                for target in targets))
        return lines
